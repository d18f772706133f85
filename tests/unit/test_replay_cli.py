from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from .helpers import RULES, T0


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
