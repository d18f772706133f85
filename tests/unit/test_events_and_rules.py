from __future__ import annotations

import json
from pathlib import Path

import pytest

from upsell_triggers.cli import main
from upsell_triggers.engine.events import InvalidEvent, decode_event
from upsell_triggers.engine.ruleset import RulesError, compile_sources

from .helpers import RULES, SHIPPED_RULES


@pytest.mark.parametrize(
    ("raw", "reason", "mentions"),
    [
        (b"{", "not_json", "JSON"),
        (b"[1]", "not_object", "object"),
        (
            b'{"account_id":"a","type":"usage","ts":1795341600000,"metric":"seats","value":1}',
            "missing_field",
            "event_id",
        ),
        (b'{"event_id":"e","account_id":"a","type":"nope","ts":1}', "unknown_type", "type"),
        (
            b'{"event_id":"e","account_id":"a","type":"usage","ts":1795341600000,"metric":"seats","value":-1}',
            "invalid_field",
            "value",
        ),
        (
            b'{"event_id":"e","account_id":"a","type":"usage","ts":1795341600000,"metric":"seats","value":1,"delta":1}',
            "invalid_field",
            "exactly one",
        ),
        (
            b'{"event_id":"e","account_id":"a","type":"usage","ts":"yesterday","metric":"seats","value":1}',
            "invalid_field",
            "ts",
        ),
        (
            b'{"event_id":"e","account_id":"a","type":"usage","ts":17953416,"metric":"seats","value":1}',
            "invalid_field",
            "ts",
        ),
        (
            b'{"event_id":"e","account_id":"a","type":"usage","ts":1795341600000,"metric":"seats","value":true}',
            "invalid_field",
            "value",
        ),
        (
            b'{"event_id":"e","account_id":"a","type":"usage","ts":1795341600000,"metric":"seats","value":NaN}',
            "not_json",
            "JSON",
        ),
    ],
)
def test_decode_rejections_name_the_field(raw, reason, mentions):
    ev = decode_event(raw)
    assert isinstance(ev, InvalidEvent)
    assert ev.reason == reason
    assert mentions in ev.message


def test_decode_accepts_rfc3339_and_epoch_ms_and_ignores_extras():
    a = decode_event(
        b'{"event_id":"e","account_id":"a","type":"paywall_hit","ts":"2026-11-22T11:00:00+01:00",'
        b'"feature":"sso","extra":{"x":1}}'
    )
    b = decode_event(
        b'{"event_id":"e","account_id":"a","type":"paywall_hit","ts":1795341600000,"feature":"sso"}'
    )
    assert not isinstance(a, InvalidEvent) and not isinstance(b, InvalidEvent)
    assert a.ts == b.ts == 1_795_341_600_000


def _sources(**replace: str) -> list[tuple[str, str]]:
    out = []
    for p in sorted(RULES.glob("*.yaml")):
        out.append((p.name, replace.get(p.name, p.read_text())))
    return out


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (
            "version: 1\ngroups:\n  - id: g\n    rules:\n      - id: r\n        when: {metric: sats, ratio: 0.8}\n"
            "        prompt: {title: t, cta: {label: l, url: u}}\n",
            6,
            "unknown metric 'sats'",
        ),
        (
            "version: 1\ngroups:\n  - id: g\n    rules:\n      - id: r\n        when: {metric: seats, ratio: 0.8}\n"
            "        prompt: {title: '{value.__class__}', cta: {label: l, url: u}}\n",
            7,
            "unknown placeholder",
        ),
        (
            "version: 1\ngroups:\n  - id: g\n    rules:\n      - id: r\n        when: {metric: seats, ratio: 0.8}\n"
            "        cooldwn: 7d\n        prompt: {title: t, cta: {label: l, url: u}}\n",
            7,
            "unknown field",
        ),
        (
            "version: 1\ngroups:\n  - id: g\n    rules:\n      - id: seats-80\n        when: {metric: seats, ratio: 0.8}\n"
            "        prompt: {title: t, cta: {label: l, url: u}}\n",
            5,
            "duplicate rule id",
        ),
        ("version: 1\ngroups: [\n", 3, "YAML syntax"),
        (
            "version: 1\ngroups:\n  - id: g\n    rules:\n      - id: r\n        when: {metric: seats, ratio: 0.8}\n"
            "        prompt: {title: '{value:>99999999}', cta: {label: l, url: u}}\n",
            7,
            "format spec",
        ),
        ("x: !!python/object/apply:os.system ['true']\n", 1, "not allowed"),
    ],
)
def test_bad_rule_files_rejected_with_file_and_line(text, line, needle):
    with pytest.raises(RulesError) as ei:
        compile_sources([*_sources(), ("bad.yaml", text)])
    msgs = [str(p) for p in ei.value.problems]
    assert any(m.startswith(f"bad.yaml:{line}:") and needle in m for m in msgs), msgs


def test_rules_check_cli(tmp_path: Path, capsys):
    assert main(["rules", "check", str(SHIPPED_RULES)]) == 0
    for p in RULES.glob("*.yaml"):
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "usage-limits.yaml").write_text(
        (RULES / "usage-limits.yaml")
        .read_text()
        .replace("metric: seats, ratio: 0.8", "metric: seat, ratio: 0.8")
    )
    assert main(["rules", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "usage-limits.yaml:" in err and "unknown metric 'seat'" in err


def test_unreachable_rule_warns(tmp_path: Path, capsys):
    for p in RULES.glob("*.yaml"):
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "extra.yaml").write_text(
        "groups:\n  - id: g\n    rules:\n      - id: ent\n        audience: [enterprise]\n"
        "        when: {metric: seats, ratio: 0.5}\n        prompt: {title: t, cta: {label: l, url: u}}\n"
    )
    assert main(["rules", "check", str(tmp_path)]) == 0
    assert "unreachable" in capsys.readouterr().err


def test_schema_is_published_and_current():
    from upsell_triggers.engine.rulefile import rules_json_schema

    shipped = json.loads((SHIPPED_RULES / "rules.schema.json").read_text())
    assert shipped == rules_json_schema(), "run: upsell-triggers rules schema -o rules/rules.schema.json"
    for p in SHIPPED_RULES.glob("*.yaml"):
        assert "$schema=./rules.schema.json" in p.read_text().splitlines()[0]


def test_shipped_rule_tests_pass(capsys):
    assert main(["rules", "test", str(SHIPPED_RULES / "tests")]) == 0
    out = capsys.readouterr().out
    for rid in (
        "seats-80",
        "seats-100",
        "storage-80",
        "storage-100",
        "api-calls-80",
        "api-calls-100",
        "paywall-repeat",
    ):
        assert rid in out


def test_rules_test_reports_failures(tmp_path: Path, capsys):
    t = tmp_path / "t.yaml"
    t.write_text(
        f"rules: {RULES}\ntests:\n  - name: wrong\n    events:\n"
        "      - {type: usage, metric: seats, value: 4}\n"
        "    expect_prompts:\n      - {rule_id: seats-100}\n"
    )
    assert main(["rules", "test", str(t)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "rule_id: expected 'seats-100', got 'seats-80'" in out
