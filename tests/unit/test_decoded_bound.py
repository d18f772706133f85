"""UPSELL_STATE_CACHE_ACCOUNTS=auto: the Kafka worker keeps 100k account states decoded, 20k while the
rules keep per-account histories (a forecast, a distinct count or a gauge's growth: states twice the
memory); a reload that adds such a condition lowers it, and one that removes it does not raise it again
(the states keep those histories until they expire). A number given is used as is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devkit.exactness import ALL_KINDS
from upsell_triggers.engine.ruleset import RuleSet, compile_sources
from upsell_triggers.runtime.faust_app import Worker, create_app
from upsell_triggers.runtime.table_state import decoded_bound
from upsell_triggers.settings import Settings
from upsell_triggers.startup import StartupError, validated_settings

RULES = Path(__file__).resolve().parents[2] / "rules"
SHIPPED = [(str(p), p.read_text()) for p in sorted(RULES.glob("*.yaml"))]
BOUND = "upsell_state_decoded_accounts_bound"


def with_groups(*group_ids: str) -> RuleSet:
    """The shipped rules and the groups of devkit/rules/all-kinds.yaml named (its distinct metrics are
    declared either way: a catalog entry no rule reads keeps nothing)."""
    doc = yaml.safe_load(ALL_KINDS.read_text())
    doc["groups"] = [g for g in doc["groups"] if g["id"] in group_ids]
    return compile_sources([*SHIPPED, ("extra.yaml", yaml.safe_dump(doc))])


PROMPT = {"title": "t", "cta": {"label": "l", "url": "/u"}}


def test_a_rolling_counters_growth_keeps_no_history() -> None:
    """It compares the counter's own buckets, which every rolling counter keeps."""
    doc = {
        "version": 1,
        "metrics": {"api_requests": {"kind": "rolling_counter", "window": "14d", "bucket": "1d"}},
        "groups": [
            {
                "id": "g",
                "defaults": {
                    "cooldown": "7d",
                    "placement": "toast",
                    "target_plan": "next",
                    "audience": ["free"],
                },
                "rules": [
                    {
                        "id": "api-growth",
                        "when": {"metric": "api_requests", "growth": 3, "window": "7d", "over": "7d"},
                        "rearm": 2,
                        "prompt": PROMPT,
                    }
                ],
            }
        ],
    }
    rules = compile_sources([*SHIPPED, ("extra.yaml", yaml.safe_dump(doc))])
    assert decoded_bound("auto", rules) == 100_000


def test_a_distinct_count_only_the_eligibility_gate_reads_counts() -> None:
    policy = yaml.safe_load((RULES / "policy.yaml").read_text())
    policy["policy"]["eligibility"] = [{"metric": "active_users", "at_least": 2, "window": "7d"}]
    catalog = {
        "version": 1,
        "metrics": {"active_users": {"kind": "distinct", "window": "30d", "bucket": "1d"}},
    }
    sources = [(n, yaml.safe_dump(policy) if n.endswith("policy.yaml") else t) for n, t in SHIPPED]
    rules = compile_sources([*sources, ("extra.yaml", yaml.safe_dump(catalog))])
    assert decoded_bound("auto", rules) == 20_000
    # Declared but read by nothing: nothing kept.
    assert (
        decoded_bound("auto", compile_sources([*SHIPPED, ("extra.yaml", yaml.safe_dump(catalog))])) == 100_000
    )


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ((), 100_000),
        (("all-kinds-adoption",), 20_000),  # distinct counts
        (("all-kinds-growth",), 20_000),
        (("all-kinds-pace",), 20_000),  # forecasts
        (("all-kinds-adoption", "all-kinds-growth", "all-kinds-pace"), 20_000),
    ],
    ids=["shipped", "distinct", "growth", "forecast", "all"],
)
def test_auto_follows_what_the_rules_keep(groups: tuple[str, ...], expected: int) -> None:
    assert decoded_bound("auto", with_groups(*groups)) == expected


def test_a_number_is_used_as_is() -> None:
    histories = with_groups("all-kinds-pace")
    assert decoded_bound(100_000, histories) == 100_000
    assert decoded_bound(100_000, histories, current=100_000) == 100_000
    assert decoded_bound(0, with_groups()) == 0


def test_on_a_reload_auto_only_lowers_it() -> None:
    histories, none = with_groups("all-kinds-pace"), with_groups()
    assert decoded_bound("auto", histories, current=100_000) == 20_000
    assert decoded_bound("auto", none, current=20_000) == 20_000
    assert decoded_bound("auto", none, current=100_000) == 100_000


def worker(rules_dir: Path, app_id: str, cache: str = "auto") -> Worker:
    """A Kafka worker built as `run` builds it (nothing connects before it starts)."""
    s = Settings(
        kafka_bootstrap_servers="127.0.0.1:9",
        rules_dir=str(rules_dir),
        app_id=app_id,
        state_cache_accounts=cache,  # a string, as the environment gives it
    )
    return create_app(s)


def bound(w: Worker) -> float | None:
    return w.metrics.registry.get_sample_value(BOUND)


def shipped_dir(d: Path) -> Path:
    for name, text in SHIPPED:
        (d / Path(name).name).write_text(text)
    return d


def test_the_worker_applies_it_at_start_and_on_each_reload(tmp_path: Path) -> None:
    w = worker(shipped_dir(tmp_path), "bound-auto")
    assert bound(w) == 100_000
    (tmp_path / "all-kinds.yaml").write_text(ALL_KINDS.read_text())
    assert w.reload()
    assert bound(w) == 20_000
    (tmp_path / "all-kinds.yaml").unlink()
    assert w.reload()
    assert bound(w) == 20_000  # the states keep what those rules stored
    assert bound(worker(tmp_path, "bound-restarted")) == 100_000  # a new worker reads the rules only


def test_a_set_bound_stays_through_reloads(tmp_path: Path) -> None:
    w = worker(shipped_dir(tmp_path), "bound-set", cache="5000")
    assert bound(w) == 5_000
    (tmp_path / "all-kinds.yaml").write_text(ALL_KINDS.read_text())
    assert w.reload()
    assert bound(w) == 5_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", "auto"), (" AUTO ", "auto"), ("20000", 20_000), ("20_000", 20_000), ("0", 0)],
)
def test_the_setting_reads_auto_or_a_count(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: object
) -> None:
    monkeypatch.setenv("UPSELL_STATE_CACHE_ACCOUNTS", value)
    assert validated_settings(Settings).state_cache_accounts == expected


@pytest.mark.parametrize("value", ["-1", "lots", "1.5", "true"])
def test_anything_else_is_one_line_at_start_up(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("UPSELL_STATE_CACHE_ACCOUNTS", value)
    with pytest.raises(StartupError) as info:
        validated_settings(Settings)
    message = info.value.message
    assert f"UPSELL_STATE_CACHE_ACCOUNTS='{value}': give a number of accounts (0 or more), or auto" in message
    assert "\n" not in message
