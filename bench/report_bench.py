"""`report` over 1M prompt/feedback/plan records and `replay --sweep` with 5 values over the replay
benchmark's 1M-event file (the "typical" workload), each beside one plain `replay` of that file, in
one sitting.

    python bench/report_bench.py [--runs 3]

Each run times, in turn: a plain replay, the 5-value sweep (one pass, five engines), and the report
(read, attribute, count, intervals, text); the ratios to the replay of the same run are what the
issue's "small multiple" is about. Writes bench/results/report.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import orjson
from replay_bench import files

from upsell_triggers import gctune
from upsell_triggers.backtest import parse_sweep, run_pass, swept_ruleset
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.timeutil import DAY, HOUR, to_iso
from upsell_triggers.replay import replay
from upsell_triggers.report.analysis import analyse
from upsell_triggers.report.command import build
from upsell_triggers.report.text import render_text

ROOT = Path(__file__).resolve().parent.parent
SWEEP = "seats-80.ratio=0.7:0.9:0.05"
START = 1_793_491_200_000  # 2026-11-01T00:00:00Z


def outcome_records(total: int, accounts: int, seed: int = 3) -> tuple[bytes, bytes, bytes]:
    """(prompts, events, holdout) JSON lines, `total` records in all: a prompt is shown 85% of the
    time, then clicked or dismissed; a tenth of accounts are held out; some accounts upgrade."""
    rng = random.Random(seed)
    rules = ("seats-80", "seats-100", "storage-80", "api-calls-80", "paywall-repeat")
    prompts, events, holdout = [], [], []
    n = i = 0
    while n < total:
        i += 1
        account = f"acct-{rng.randrange(accounts):06d}"
        rule = rng.choice(rules)
        ts = START + rng.randrange(30 * DAY)
        if rng.random() < 0.1:
            holdout.append(orjson.dumps({"account_id": account, "rule_id": rule, "ts": to_iso(ts)}))
            n += 1
        else:
            pid = f"pr_{i:024x}"
            prompts.append(
                orjson.dumps(
                    {"prompt_id": pid, "account_id": account, "rule_id": rule, "created_at": to_iso(ts)}
                )
            )
            n += 1
            if rng.random() < 0.85:
                ev = {"event_id": f"s{i}", "account_id": account, "ts": ts + HOUR, "prompt_id": pid}
                events.append(orjson.dumps({**ev, "type": "prompt_shown"}))
                action = "prompt_clicked" if rng.random() < 0.25 else "prompt_dismissed"
                events.append(orjson.dumps({**ev, "event_id": f"a{i}", "type": action, "ts": ts + 2 * HOUR}))
                n += 2
        if rng.random() < 0.1:
            plan = rng.choice(("team", "business"))
            ev = {"event_id": f"p{i}", "account_id": account, "type": "plan_changed", "plan": plan}
            events.append(orjson.dumps({**ev, "ts": ts + rng.randrange(14 * DAY)}))
            n += 1
    return (b"\n".join(x) + b"\n" for x in (prompts, events, holdout))  # type: ignore[return-value]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--records", type=int, default=1_000_000, help="report input: prompt/feedback/plan records"
    )
    ap.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the generated files are kept")
    a = ap.parse_args()
    # The replay benchmark's "typical" file: 1M events over 100k accounts (bench/workloads.py).
    data = files(a.dir, 1_000_000, 100_000)["typical"].read_bytes()
    n_events = data.count(b"\n")
    gctune.tune()
    rules = load_ruleset(ROOT / "rules")
    sweep = parse_sweep(SWEEP)
    swept = [swept_ruleset(ROOT / "rules", sweep, v) for v in sweep.values]
    prompts, events, holdout = outcome_records(a.records, 100_000)
    n_records = sum(x.count(b"\n") for x in (prompts, events, holdout))
    runs: list[dict[str, float]] = []
    for i in range(a.runs):
        t = time.perf_counter()
        replay(rules, io.BytesIO(data), io.BytesIO(), io.StringIO())
        t_replay = time.perf_counter() - t

        t = time.perf_counter()
        run_pass(swept, io.BytesIO(data), io.StringIO())
        t_sweep = time.perf_counter() - t

        t = time.perf_counter()
        out = build(
            rules,
            io.BytesIO(prompts),
            io.BytesIO(events),
            io.BytesIO(holdout),
            None,
            None,
            None,
            io.StringIO(),
        )
        text = render_text(analyse(out.cells()))
        t_report = time.perf_counter() - t
        assert "seats-80" in text
        runs.append({"replay_s": t_replay, "sweep5_s": t_sweep, "report_s": t_report})
        print(
            f"run {i + 1}: replay {t_replay:.2f}s; sweep x5 {t_sweep:.2f}s ({t_sweep / t_replay:.2f}x); "
            f"report {t_report:.2f}s ({t_report / t_replay:.2f}x)"
        )
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    sweep_ratio = statistics.median(r["sweep5_s"] / r["replay_s"] for r in runs)
    report_ratio = statistics.median(r["report_s"] / r["replay_s"] for r in runs)
    result = {
        "benchmark": "report and replay --sweep beside a plain replay (one core, one sitting)",
        "replay_events": n_events,
        "report_records": n_records,
        "sweep": SWEEP,
        "median_s": med,
        "median_sweep5_over_replay": sweep_ratio,
        "median_report_over_replay": report_ratio,
        "runs": runs,
        "note": "the machine is shared (2 cores, several engineers): ratios within a run, not absolutes",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": "python bench/report_bench.py " + " ".join(sys.argv[1:]),
    }
    print(
        f"median: replay {med['replay_s']:.2f}s, sweep x5 {sweep_ratio:.2f}x replay, "
        f"report over {n_records:,} records {report_ratio:.2f}x replay"
    )
    (ROOT / "bench" / "results" / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
