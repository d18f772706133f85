"""Engine-alone throughput: `replay` over a generated file (default 1M events, 100k accounts), one core.

    python bench/replay_bench.py [--events N] [--accounts N] [--runs 3]

Prints events/s per run and the median, and writes bench/results/replay.json.

Each run also times, just before the replay, the least any Python consumer does per event: parse the
line with orjson and count it per account (the raw aiokafka pipeline's per-event work, without Kafka).
The replay's ratio to it, taken within a run, says how the engine compares with the machine of the day;
the absolute figure moves with the machine (bench/ANALYSIS.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import orjson

from upsell_triggers import gctune
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.replay import replay
from upsell_triggers.simulate import Simulator

ROOT = Path(__file__).resolve().parent.parent


def generate(path: Path, events: int, accounts: int) -> None:
    sim = Simulator(accounts=accounts, seed=11)
    with path.open("wb") as f:
        for ev in sim.events(events):
            f.write(orjson.dumps(ev) + b"\n")


def parse_and_count(src: io.BytesIO) -> int:
    """The baseline: orjson per line and a per-account [count, newest ts], as raw_pipeline() keeps."""
    loads = orjson.loads
    state: dict[str, list[int]] = {}
    n = 0
    for line in src:
        ev = loads(line)
        st = state.get(ev["account_id"])
        if st is None:
            st = state[ev["account_id"]] = [0, 0]
        st[0] += 1
        st[1] = ev["ts"]
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--file", type=Path, default=Path("/tmp/upsell-bench-events.jsonl"))
    a = ap.parse_args()
    if not a.file.exists() or a.file.stat().st_size == 0:
        t = time.perf_counter()
        generate(a.file, a.events, a.accounts)
        print(f"generated {a.events:,} events over {a.accounts:,} accounts in {time.perf_counter() - t:.1f}s")
    data = a.file.read_bytes()
    gctune.tune()  # as `upsell-triggers replay` does
    n = data.count(b"\n")
    rules = load_ruleset(ROOT / "rules")
    rates: list[float] = []
    baselines: list[float] = []
    prompts = 0
    for i in range(a.runs):
        t = time.perf_counter()
        parse_and_count(io.BytesIO(data))
        baselines.append(n / (time.perf_counter() - t))
        out = io.BytesIO()
        t = time.perf_counter()
        s = replay(rules, io.BytesIO(data), out, io.StringIO())
        dt = time.perf_counter() - t
        prompts = out.getvalue().count(b"\n")
        rates.append(n / dt)
        print(
            f"run {i + 1}: {n:,} events in {dt:.2f}s = {n / dt:,.0f} events/s ({prompts:,} prompts, "
            f"{s.accounts:,} accounts); parse-and-count baseline {baselines[-1]:,.0f} events/s, "
            f"replay/baseline {rates[-1] / baselines[-1]:.1%}"
        )
    result = {
        "benchmark": "replay (engine alone, one core)",
        "events": n,
        "median_events_per_s": statistics.median(rates),
        "runs_events_per_s": rates,
        "prompts": prompts,
        "target_events_per_s": 200_000,
        "baseline": "orjson.loads per line + per-account counter (raw_pipeline's per-event work)",
        "baseline_median_events_per_s": statistics.median(baselines),
        "runs_baseline_events_per_s": baselines,
        "median_replay_over_baseline": statistics.median(
            r / b for r, b in zip(rates, baselines, strict=True)
        ),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": "python bench/replay_bench.py " + " ".join(sys.argv[1:]),
    }
    print(
        f"median: {result['median_events_per_s']:,.0f} events/s (target 200,000); baseline "
        f"{result['baseline_median_events_per_s']:,.0f} events/s; replay/baseline "
        f"{result['median_replay_over_baseline']:.1%}"
    )
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
