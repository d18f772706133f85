"""`replay --compare` and `--sweep`: one pass over the events gives what separate replays give."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from upsell_triggers.backtest import parse_sweep, run_pass, swept_ruleset
from upsell_triggers.engine.ruleset import RulesError
from upsell_triggers.replay import replay
from upsell_triggers.simulate import Simulator

from .helpers import RULES, with_policy


@pytest.fixture(scope="module")
def events() -> bytes:
    return b"".join(orjson.dumps(ev) + b"\n" for ev in Simulator(accounts=400, seed=3).events(30_000))


def separate(rules, data: bytes) -> tuple[dict[str, int], dict[str, set[str]]]:
    out = io.BytesIO()
    replay(rules, io.BytesIO(data), out, io.StringIO())
    prompts: dict[str, int] = {}
    accounts: dict[str, set[str]] = {}
    for line in out.getvalue().splitlines():
        p = orjson.loads(line)
        prompts[p["rule_id"]] = prompts.get(p["rule_id"], 0) + 1
        accounts.setdefault(p["rule_id"], set()).add(p["account_id"])
    return prompts, accounts


def test_one_pass_equals_separate_replays(events: bytes) -> None:
    sweep = parse_sweep("seats-80.ratio=0.7:0.9:0.1")
    rulesets = [swept_ruleset(RULES, sweep, v) for v in sweep.values]
    held = with_policy("version: 1\npolicy: {holdout: {fraction: 0.2}}\n")
    rulesets.append(held)
    p = run_pass(rulesets, io.BytesIO(events), io.StringIO())
    assert p.accounts == 400 and p.events == 30_000 and p.days > 1
    for rs, tally in zip(rulesets, p.tallies, strict=True):
        prompts, accounts = separate(rs, events)
        assert dict(tally.prompts) == prompts
        assert {k: v for k, v in tally.accounts.items()} == accounts
    # A lower threshold prompts more; the holdout prompts fewer and suppresses more.
    assert p.tallies[0].prompts["seats-80"] > p.tallies[2].prompts["seats-80"]
    assert p.tallies[3].total_prompts < p.tallies[1].total_prompts  # [1] is the shipped 0.8
    assert sum(p.tallies[3].suppressed.values()) > sum(p.tallies[1].suppressed.values())


def test_parse_sweep() -> None:
    s = parse_sweep("seats-80.ratio=0.7:0.9:0.05")
    assert (s.rule, s.field, s.values) == ("seats-80", "ratio", (0.7, 0.75, 0.8, 0.85, 0.9))
    assert parse_sweep("paywall-repeat.at_least=2:4:1").values == (2.0, 3.0, 4.0)
    for bad in (
        "seats-80=0.7:0.9:0.05",
        "seats-80.title=1:2:1",
        "seats-80.ratio=0.9:0.7:0.05",
        "x.ratio=a:b:c",
    ):
        with pytest.raises(ValueError):
            parse_sweep(bad)


def test_sweep_values_are_checked_like_rule_files() -> None:
    """The error names the --sweep value and the rule's own line (the file is compiled re-written)."""
    text = (Path(RULES) / "usage-limits.yaml").read_text().splitlines()
    line = next(n for n, t in enumerate(text, 1) if t.strip() == "- id: seats-80")
    with pytest.raises(RulesError) as info:
        swept_ruleset(RULES, parse_sweep("seats-80.ratio=0.65:0.65:0.05"), 0.65)
    assert str(info.value.problems[0]).startswith(
        f"{Path(RULES) / 'usage-limits.yaml'}:{line}: error: rule seats-80: --sweep seats-80.ratio=0.65: rearm: "
        "re-arm level 0.7 is above the threshold 0.65"
    ), str(info.value)
    with pytest.raises(
        RulesError, match=r"--sweep seats-80\.at_least=3: rule seats-80 uses ratio, not at_least"
    ):
        swept_ruleset(RULES, parse_sweep("seats-80.at_least=3:3:1"), 3)
    with pytest.raises(RulesError, match="no rule with id 'nope'"):
        swept_ruleset(RULES, parse_sweep("nope.ratio=0.7:0.7:0.1"), 0.7)
    with pytest.raises(RulesError, match="no rule with id 'seats-8'; did you mean 'seats-80'"):
        swept_ruleset(RULES, parse_sweep("seats-8.ratio=0.7:0.7:0.1"), 0.7)


def test_compare_command_lists_accounts_that_change(events: bytes, tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    f.write_bytes(events)
    other = tmp_path / "rules-75"
    other.mkdir()
    for src in RULES.glob("*.yaml"):
        text = src.read_text()
        if src.name == "usage-limits.yaml":
            text = text.replace("when: {metric: seats, ratio: 0.8}", "when: {metric: seats, ratio: 0.75}", 1)
        (other / src.name).write_text(text)
    csv_path = tmp_path / "c.csv"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "upsell_triggers",
            "replay",
            str(f),
            "--rules",
            str(RULES),
            "--compare",
            str(other),
            "--csv",
            str(csv_path),
        ],
        capture_output=True,
        check=True,
    )
    out = p.stdout.decode()
    a_prompts, a_accounts = separate(
        swept_ruleset(RULES, parse_sweep("seats-80.ratio=0.8:0.8:0.1"), 0.8), events
    )
    b_prompts, b_accounts = separate(
        swept_ruleset(RULES, parse_sweep("seats-80.ratio=0.75:0.75:0.1"), 0.75), events
    )
    row = next(ln for ln in out.splitlines() if ln.startswith("seats-80 "))
    cols = [c.replace(",", "") for c in row.split()]
    new = b_accounts["seats-80"] - a_accounts["seats-80"]
    lost = a_accounts["seats-80"] - b_accounts["seats-80"]
    assert cols[1:4] == [
        str(a_prompts["seats-80"]),
        str(b_prompts["seats-80"]),
        f"{b_prompts['seats-80'] - a_prompts['seats-80']:+d}",
    ]
    assert cols[-2:] == [str(len(new)), str(len(lost))]
    assert new, "a lower threshold reaches accounts the old one did not"
    listed = next(ln for ln in out.splitlines() if ln.startswith("seats-80: newly prompted"))
    assert sorted(new)[0] in listed
    header, seats = [
        ln.split(",") for ln in csv_path.read_text().splitlines() if ln.startswith(("rule,", "seats-80,"))
    ]
    assert dict(zip(header, seats, strict=True))["newly_prompted"] == str(len(new))
    assert p.stdout.count(b'"prompt_id"') == 0  # the tables, not prompts


def test_sweep_command(events: bytes, tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    f.write_bytes(events)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "upsell_triggers",
            "replay",
            str(f),
            "--rules",
            str(RULES),
            "--sweep",
            "seats-80.ratio=0.7:0.9:0.1",
        ],
        capture_output=True,
        check=True,
    )
    rows = [ln.split() for ln in p.stdout.decode().splitlines()[2:5]]
    assert [r[0] for r in rows] == ["0.70", "0.80", "0.90"]
    base_prompts, _ = separate(swept_ruleset(RULES, parse_sweep("seats-80.ratio=0.8:0.8:0.1"), 0.8), events)
    assert rows[1][3].replace(",", "") == str(sum(base_prompts.values()))
    per_1k = sum(base_prompts.values()) * 1000 / 400
    assert float(rows[1][4].replace(",", "")) == pytest.approx(per_1k, abs=0.01)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "upsell_triggers",
            "replay",
            str(f),
            "--rules",
            str(RULES),
            "--sweep",
            "seats-80.ratio=0.6:0.7:0.1",
        ],
        capture_output=True,
    )
    assert (
        bad.returncode == 2
        and b"--sweep seats-80.ratio=0.6: rearm: re-arm level 0.7 is above the threshold 0.6" in bad.stderr
    )
