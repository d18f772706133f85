"""Engine-alone throughput: `replay` over the two benchmark workloads (bench/workloads.py), one core.

    python bench/replay_bench.py [--events N] [--accounts N] [--runs 3] [--repeats 1] [--name replay]

Each run, in one sitting, alternating: the parse-and-count baseline, `replay` of the "typical" mix and
of the "near-limits" mix, and the typical events written with every `ts` as epoch milliseconds and as
RFC 3339 (the decoding cost of the timestamp formats on otherwise identical files). Prints events/s per
run and the medians, and writes bench/results/replay.json.

The baseline is the least any Python consumer does per event: parse the line with orjson and count it
per account (the raw aiokafka pipeline's per-event work, without Kafka). The ratios, taken within a run,
say how the engine compares with the machine of the day; the absolute figures move with the machine.
Every rate is measured twice: in wall-clock time and in this process's CPU time. On a machine shared
with other work the CPU-time figures move much less (a process waiting for a core is not charged), so
the ratios are taken from them; both are recorded.

`--repeats K`: within a run, the files are replayed K times over, the order alternating each time,
and each file's rate is its best of the K (the least disturbed): a one-off slowdown of one replay,
which on a shared machine moved a run's ratio by 30% and more, then no longer decides the run's
ratio. `--name`: the results file (bench/results/NAME.json), so that a sitting with other settings
keeps the reference one.
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
from workloads import WORKLOADS, encode, generate, write

from upsell_triggers import gctune, native
from upsell_triggers.engine.ruleset import RuleSet, load_ruleset
from upsell_triggers.replay import replay

ROOT = Path(__file__).resolve().parent.parent
# What each run replays: a workload's mixed-format file, or the typical events in one timestamp format.
FILES = {
    "typical": ("typical", "mixed"),
    "near-limits": ("near-limits", "mixed"),
    "typical-epoch-ms": ("typical", "epoch-ms"),
    "typical-rfc3339": ("typical", "rfc3339"),
}


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


def files(directory: Path, events: int, accounts: int) -> dict[str, Path]:
    """The benchmark files, generated once per size (deterministic: the same bytes every time)."""
    paths = {name: directory / f"upsell-bench-{name}-{events}-{accounts}.jsonl" for name in FILES}
    for workload in WORKLOADS:
        todo = {n: fmt for n, (w, fmt) in FILES.items() if w == workload and not paths[n].exists()}
        if not todo:
            continue
        t = time.perf_counter()
        docs = generate(workload, events, accounts)
        for name, fmt in todo.items():
            tmp = paths[name].with_suffix(".tmp")
            write(tmp, encode(docs, fmt))
            tmp.replace(paths[name])
        dt = time.perf_counter() - t
        print(f"generated {workload}: {events:,} events over {accounts:,} accounts in {dt:.1f}s")
    return paths


def timed_replay(rules: RuleSet, data: bytes, n: int) -> tuple[float, float, int]:
    """(events/s in wall-clock time, events/s in CPU time, prompts)."""
    out = io.BytesIO()
    t, c = time.perf_counter(), time.process_time()
    replay(rules, io.BytesIO(data), out, io.StringIO())
    return n / (time.perf_counter() - t), n / (time.process_time() - c), out.getvalue().count(b"\n")


def best(r: dict[str, float], key: str, rate: float) -> None:
    """Keeps the highest rate seen for key in this run (--repeats)."""
    r[key] = max(r.get(key, 0.0), rate)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="replays of each file per run; its best is kept")
    ap.add_argument("--name", default="replay", help="results file name (bench/results/NAME.json)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the generated files are kept")
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    data = {name: p.read_bytes() for name, p in files(a.dir, a.events, a.accounts).items()}
    gctune.tune()  # as `upsell-triggers replay` does
    rules = load_ruleset(ROOT / "rules")
    runs: list[dict[str, float]] = []
    prompts: dict[str, int] = {}
    for i in range(a.runs):
        r: dict[str, float] = {}
        # Alternate the order of the pairs from run to run, so that a machine slowing down during a run
        # does not always favour the same side.
        for k in range(a.repeats):
            order = list(FILES) if (i + k) % 2 == 0 else list(reversed(FILES))
            for name in order:
                d = data[name]
                n = d.count(b"\n")
                if name in WORKLOADS:
                    t, c = time.perf_counter(), time.process_time()
                    parse_and_count(io.BytesIO(d))
                    best(r, f"baseline:{name}", n / (time.perf_counter() - t))
                    best(r, f"cpu:baseline:{name}", n / (time.process_time() - c))
                wall, cpu, prompts[name] = timed_replay(rules, d, n)
                best(r, name, wall)
                best(r, f"cpu:{name}", cpu)
        r["near_over_typical"] = r["cpu:near-limits"] / r["cpu:typical"]
        r["rfc3339_over_epoch_ms"] = r["cpu:typical-rfc3339"] / r["cpu:typical-epoch-ms"]
        for w in WORKLOADS:
            r[f"over_baseline:{w}"] = r[f"cpu:{w}"] / r[f"cpu:baseline:{w}"]
        runs.append(r)
        print(
            f"run {i + 1} (wall clock; CPU time): typical {r['typical']:,.0f}; {r['cpu:typical']:,.0f}/s "
            f"({r['over_baseline:typical']:.1%} of its baseline's CPU-time rate); near-limits "
            f"{r['near-limits']:,.0f}; {r['cpu:near-limits']:,.0f}/s ({r['over_baseline:near-limits']:.1%}); "
            f"near/typical {r['near_over_typical']:.1%}; same events, every ts RFC 3339 "
            f"{r['cpu:typical-rfc3339']:,.0f}/s vs epoch ms {r['cpu:typical-epoch-ms']:,.0f}/s CPU time "
            f"= {r['rfc3339_over_epoch_ms']:.1%}",
            flush=True,
        )
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    result = {
        "benchmark": "replay (engine alone, one core)",
        "events": a.events,
        "accounts": a.accounts,
        "workloads": "bench/workloads.py: typical and near-limits, ts 60% RFC 3339 (Z, +00:00, +05:30), "
        "user_id on half, 2% resent, prompt feedback",
        "median": med,
        "runs": runs,
        "repeats": a.repeats,
        "prompts": prompts,
        "targets": {"near_over_typical": 0.5, "rfc3339_over_epoch_ms": 0.9},
        "baseline": "orjson.loads per line + per-account counter (raw_pipeline's per-event work)",
        "ratios": "from CPU-time rates (keys cpu:*); plain keys are wall-clock rates",
        "python": sys.version.split()[0],
        "code": native.mode(),  # compiled (mypyc) or pure Python: docs/architecture.md#compiled-modules
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "command": "python bench/replay_bench.py " + " ".join(sys.argv[1:]),
    }
    print(
        f"median (CPU time): typical {med['cpu:typical']:,.0f}/s ({med['over_baseline:typical']:.1%} of "
        f"baseline), near-limits {med['cpu:near-limits']:,.0f}/s ({med['over_baseline:near-limits']:.1%}), "
        "near/typical "
        f"{med['near_over_typical']:.1%} (target 50%), RFC 3339/epoch ms {med['rfc3339_over_epoch_ms']:.1%} "
        "(target 90%)"
    )
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{a.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
