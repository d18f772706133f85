from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson

from upsell_triggers import replay as replay_mod

from .helpers import RULES, T0, fixture_rules


def test_replay_prints_prompts_summary_and_reports_bad_lines(tmp_path: Path):
    lines = [
        orjson.dumps(
            {"event_id": "a1", "account_id": "a", "type": "usage", "metric": "seats", "value": 4, "ts": T0}
        ),
        b"this is not json",
        orjson.dumps(
            {"event_id": "b1", "account_id": "b", "type": "usage", "metric": "seats", "value": 5, "ts": T0}
        ),
        orjson.dumps(
            {"event_id": "b1", "account_id": "b", "type": "usage", "metric": "seats", "value": 5, "ts": T0}
        ),
    ]
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    p = subprocess.run(
        [sys.executable, "-m", "upsell_triggers", "replay", str(f), "--rules", str(RULES), "--explain"],
        capture_output=True,
        check=True,
    )
    prompts = [orjson.loads(x) for x in p.stdout.splitlines()]
    assert [x["rule_id"] for x in prompts] == ["seats-80", "seats-100"]
    err = p.stderr.decode()
    assert "line 2: not_json" in err
    assert '"outcome":"superseded"' in err  # --explain
    summary = err.splitlines()
    row = next(ln for ln in summary if ln.startswith("seats-80"))
    assert row.split()[1] == "1"  # fired once
    assert "duplicates: 1" in err and "invalid: 1" in err and "accounts: 2" in err


def _ev(eid: str, account: str, at: int, **fields: object) -> bytes:
    return orjson.dumps({"event_id": eid, "account_id": account, "ts": T0 + at, **fields})


def _replay(tmp_path: Path, lines: list[bytes], *args: str) -> subprocess.CompletedProcess[bytes]:
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    return subprocess.run(
        [sys.executable, "-m", "upsell_triggers", "replay", str(f), "--rules", str(RULES), *args],
        capture_output=True,
        check=True,
    )


def _table(err: str) -> dict[str, dict[str, str]]:
    lines = err.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("rule "))
    head = lines[start].split()
    rows = {}
    for ln in lines[start + 1 :]:
        if ln.startswith("events:"):
            break
        cells = ln.split()
        rows[cells[0]] = dict(zip(head, cells, strict=True))
    return rows


def test_summary_lists_every_rule_with_feedback_rates_accounts_and_event_time(tmp_path: Path):
    first = _replay(tmp_path, [_ev("a1", "a", 0, type="usage", metric="seats", value=4)])
    pid = orjson.loads(first.stdout)["prompt_id"]
    lines = [
        _ev("a1", "a", 0, type="usage", metric="seats", value=4),
        _ev("b1", "b", 1000, type="usage", metric="seats", value=4),
        _ev("a2", "a", 2000, type="prompt_shown", prompt_id=pid),
        _ev("a3", "a", 3000, type="prompt_clicked", prompt_id=pid),
        _ev("a4", "a", 4000, type="prompt_shown", prompt_id=pid),
        _ev("a5", "a", 5000, type="prompt_dismissed", prompt_id=pid),
        _ev("c1", "c", 86_400_000, type="prompt_shown", prompt_id="pr_000000000000000000000000"),
    ]
    err = _replay(tmp_path, lines).stderr.decode()
    rows = _table(err)
    assert list(rows) == [
        r.id for r in fixture_rules().rules
    ]  # zero rows included, in file order; no "unknown"
    s80 = rows["seats-80"]
    assert (s80["fired"], s80["accounts"], s80["shown"], s80["clicked"], s80["dismissed"]) == (
        "2",
        "2",
        "2",
        "1",
        "1",
    )
    assert (s80["ctr"], s80["dismiss_rate"]) == ("50.0%", "50.0%")
    assert rows["storage-100"]["fired"] == "0" and rows["storage-100"]["ctr"] == "-"
    assert "accounts prompted: 2" in err
    assert "event time: 2026-11-22T10:00:00Z .. 2026-11-23T10:00:00Z" in err
    assert "feedback on prompts not made in this replay (made before the file's first event): 1 shown" in err


def test_explain_carries_event_time_and_filters_by_rule_and_account(tmp_path: Path):
    lines = [
        _ev("a1", "a", 0, type="usage", metric="seats", value=5),
        _ev("b1", "b", 60_000, type="usage", metric="seats", value=5),
    ]
    explained = [
        orjson.loads(ln)
        for ln in _replay(tmp_path, lines, "--explain").stderr.splitlines()
        if ln.startswith(b"{")
    ]
    assert {(d["rule_id"], d["account_id"]) for d in explained} == {
        ("seats-80", "a"),
        ("seats-100", "a"),
        ("seats-80", "b"),
        ("seats-100", "b"),
    }
    assert {d["ts"] for d in explained if d["account_id"] == "b"} == {"2026-11-22T10:01:00Z"}
    only = [
        orjson.loads(ln)
        for ln in _replay(tmp_path, lines, "--rule", "seats-100", "--account", "b").stderr.splitlines()
        if ln.startswith(b"{")
    ]
    assert [(d["rule_id"], d["account_id"], d["outcome"]) for d in only] == [("seats-100", "b", "emitted")]


def test_unknown_rule_filter_suggests_the_closest_rule(tmp_path: Path):
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "upsell_triggers",
            "replay",
            str(f),
            "--rules",
            str(RULES),
            "--rule",
            "seats-8",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and "did you mean 'seats-80'?" in p.stderr and "Traceback" not in p.stderr


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_shows_rate_and_eta_and_ends_its_line(monkeypatch):
    monkeypatch.setattr(replay_mod, "PROGRESS_EVERY", 2)
    lines = [_ev(f"e{i}", f"a{i}", i, type="usage", metric="seats", value=1) + b"\n" for i in range(6)]
    data = b"".join(lines)
    err = _Tty()
    replay_mod.replay(fixture_rules(), io.BytesIO(data), io.BytesIO(), err, total_bytes=len(data))
    text = err.getvalue()
    updates = text.split("\r")[1:]
    assert re.match(r" 33\.3%  2 events  [\d,]+/s  ETA \d+:\d\d\x1b\[K$", updates[0]), updates
    assert re.match(r"read 6 events in [\d.]+s \([\d,]+/s\)\x1b\[K\n$", updates[-1]), updates


def test_replay_and_its_backtests_honour_the_retention_setting(tmp_path: Path):
    """UPSELL_STATE_RETENTION_DAYS, as the workers read it: 999 accounts idle for two days expire once
    1,001 newer ones come (the sweep runs per 1,000 new accounts) with a retention of one day, and stay
    with the default of 400 days; `replay --compare` counts the same accounts."""
    day = 86_400_000
    old = [_ev(f"o{i}", f"old-{i}", 0, type="usage", metric="seats", value=1) for i in range(999)]
    new = [_ev(f"n{i}", f"new-{i}", 2 * day, type="usage", metric="seats", value=1) for i in range(1001)]
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"\n".join(old + new) + b"\n")

    for retention, accounts in (("1", 1001), (None, 2000)):
        env = {k: v for k, v in os.environ.items() if k != "UPSELL_STATE_RETENTION_DAYS"}
        if retention is not None:
            env["UPSELL_STATE_RETENTION_DAYS"] = retention
        base = [sys.executable, "-m", "upsell_triggers", "replay", str(f), "--rules", str(RULES)]
        p = subprocess.run(base, capture_output=True, check=True, env=env)
        assert f"accounts: {accounts} " in p.stderr.decode()
        c = subprocess.run([*base, "--compare", str(RULES)], capture_output=True, check=True, env=env)
        assert f"accounts: {accounts:,} " in c.stdout.decode()
