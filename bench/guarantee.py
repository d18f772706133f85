"""Benchmark: what exactly_once costs against at_least_once, in alternating pairs of one sitting.

    python bench/guarantee.py [--pairs 3] [--capacity-events 200000] [--rate 10000] [--seconds 10]
                              [--worker-core 1]

Each pair measures both guarantees, the order alternating from pair to pair (a machine slowing down
during the sitting must not always favour the same one): the worker's capacity working off a backlog
of the latency benchmark's mix (events/s, as bench/latency.py's capacity), then event -> prompt
latency at --rate events/s (p50/p99, read by a read_committed consumer, as bench/latency.py measures
it). The CPU pressure of the machine (/proc/pressure/cpu, avg10) is noted before each measurement:
the machine is shared. The summary gives, per guarantee, the medians, and the median of the pairs'
ratios (exactly_once / at_least_once). Each latency run also keeps the worker's per-batch timings
(UPSELL_BATCH_TIMINGS_FILE) and reports where a batch's time went: p50/p90 of each phase the
guarantee laps (at_least_once: `send`, the outputs handed to the producer, `write`, `commit`;
exactly_once: `deliver`, the batch's transaction committed, and its `txn_send`, `txn_offsets`,
`txn_end`: records acknowledged, offsets added, transaction ended), and batches per second. With
--worker-core the latency runs give the worker a CPU of its own (the broker and the benchmark share
the others), as a worker host separate from the brokers would; capacity runs are never pinned. The
workers take their settings from the environment, so UPSELL_TRANSACTION_RETRY_BACKOFF_MS=20 measures
exactly_once with aiokafka's own retry wait; the results record the value used. Writes
bench/results/guarantee.json.

Targets (issue: exactly-once): throughput cost <= 20%, p99 <= 50 ms at 10k events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from kafkabench import (
    bootstrap,
    create_topics,
    delete_created_topics_at_exit,
    median,
    run_id,
    start_service,
    write_result,
)
from latency import broker_pid, capacity, measure_kafka, percentile, pin, worker_core

from upsell_triggers.settings import Settings

PHASES = (
    "fetch",
    "lock",
    "apply",
    "send",
    "deliver",
    "txn_send",
    "txn_offsets",
    "txn_end",
    "write",
    "commit",
)

GUARANTEES = ("at_least_once", "exactly_once")


def cpu_pressure() -> float | None:
    """The share of the last 10 s in which some runnable task waited for a CPU (Linux PSI)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(line.split()[1].split("=")[1]) / 100
    return None


def phases(path: Path, t0: float, seconds: float) -> dict[str, Any]:
    """Where the worker's batches spent their time during the measured run (ms, p50 and p90 per phase,
    over the batches that handled records; a phase the guarantee does not have is left out)."""
    if not path.exists():
        return {}
    batches = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            r = orjson.loads(line)
            if "event" not in r and "records" in r and r["t"] >= t0:
                batches.append(r)
    out: dict[str, Any] = {"batches_per_s": round(len(batches) / seconds, 1)}
    if not batches:
        return out
    out["records_per_batch_p50"] = percentile([b["records"] for b in batches], 0.5)
    for phase in PHASES:
        xs = [b[phase + "_ms"] for b in batches if phase + "_ms" in b]
        if xs:
            out[phase] = {"p50_ms": round(percentile(xs, 0.5), 1), "p90_ms": round(percentile(xs, 0.9), 1)}
    return out


def latency_run(
    bs: str, tmp: Path, env: dict[str, str], rate: int, seconds: float, core: int | None = None
) -> dict[str, Any]:
    """One latency run on fresh topics; with `core`, the worker alone on that CPU and the benchmark and
    the broker on the others (as bench/latency.py --worker-core)."""
    rid = f"{run_id()}-g"
    topics = {k: f"lat-{k}-{rid}" for k in ("events", "feedback", "prompts", "dlq")}
    asyncio.run(create_topics(bs, topics.values(), 4))
    timings = tmp / f"timings-{rid}.jsonl"
    with worker_core(core, broker_pid(bs) if core is not None else None) as worker_cpus:
        w = start_service(bs, tmp, topics, f"lat-{rid}", {**env, "UPSELL_BATCH_TIMINGS_FILE": str(timings)})
        try:
            w.wait_ready(120)
            time.sleep(2)
            if core is not None:
                assert w.proc is not None
                pin(w.proc.pid, worker_cpus)
            run = asyncio.run(measure_kafka(bs, topics, rate, seconds, 1.0))
        finally:
            w.stop()
    return {**run.summary(), "phases": phases(timings, run.t0 + 1.0, seconds)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--capacity-events", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument(
        "--worker-core",
        type=int,
        default=None,
        help="latency runs: the worker alone on this CPU, the benchmark and the broker on the others",
    )
    ap.add_argument("--name", default="guarantee", help="results file bench/results/<name>.json")
    a = ap.parse_args()
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i in range(a.pairs):
            order = GUARANTEES if i % 2 == 0 else tuple(reversed(GUARANTEES))
            pair: dict[str, Any] = {"pair": i + 1, "order": list(order)}
            for g in order:
                env = {"UPSELL_PROCESSING_GUARANTEE": g}
                r: dict[str, Any] = {"cpu_pressure_before_capacity": cpu_pressure()}
                r["capacity"] = capacity(bs, tmp, a.capacity_events, env)
                r["cpu_pressure_before_latency"] = cpu_pressure()
                r.update(latency_run(bs, tmp, env, a.rate, a.seconds, a.worker_core))
                pair[g] = r
                print(
                    f"pair {i + 1} {g:<13}: capacity {r['capacity']:>8,.0f} events/s; at {a.rate:,}/s "
                    f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms "
                    f"({r['prompts']} prompts); CPU pressure {r['cpu_pressure_before_capacity']}, "
                    f"{r['cpu_pressure_before_latency']}",
                    flush=True,
                )
                print(f"       phases: {orjson.dumps(r['phases']).decode()}", flush=True)
            eos, alo = pair["exactly_once"], pair["at_least_once"]
            pair["capacity_ratio"] = eos["capacity"] / alo["capacity"]
            pair["p99_ratio"] = eos["p99_ms"] / alo["p99_ms"]
            print(
                f"pair {i + 1}: exactly_once capacity {pair['capacity_ratio']:.0%} of at_least_once, "
                f"p99 {pair['p99_ratio']:.2f}x",
                flush=True,
            )
            runs.append(pair)
    summary: dict[str, Any] = {
        g: {k: median([p[g][k] for p in runs]) for k in ("capacity", "p50_ms", "p99_ms", "max_ms")}
        for g in GUARANTEES
    }
    for g in GUARANTEES:  # the median over pairs of each phase's p50
        summary[g]["phases_p50_ms"] = {
            ph: median([p[g]["phases"][ph]["p50_ms"] for p in runs])
            for ph in PHASES
            if all(ph in p[g]["phases"] for p in runs)
        }
        summary[g]["batches_per_s"] = median([p[g]["phases"].get("batches_per_s", 0.0) for p in runs])
    summary["capacity_ratio_median"] = median([p["capacity_ratio"] for p in runs])
    summary["p99_ratio_median"] = median([p["p99_ratio"] for p in runs])
    print(
        f"median of {len(runs)} pairs: exactly_once capacity {summary['capacity_ratio_median']:.0%} of "
        f"at_least_once ({summary['exactly_once']['capacity']:,.0f} vs "
        f"{summary['at_least_once']['capacity']:,.0f} events/s); p99 at {a.rate:,}/s "
        f"{summary['exactly_once']['p99_ms']:.1f} vs {summary['at_least_once']['p99_ms']:.1f} ms"
    )
    for g in GUARANTEES:
        print(f"  {g} batch phases, median p50 (ms): {summary[g]['phases_p50_ms']}")
    print(
        "wrote",
        write_result(
            a.name,
            {
                "benchmark": "exactly_once against at_least_once (alternating pairs)",
                "capacity_events": a.capacity_events,
                "rate": a.rate,
                "seconds": a.seconds,
                "worker_core": a.worker_core,
                "transaction_retry_backoff_ms": Settings().transaction_retry_backoff_ms,
                "summary": summary,
                "pairs": runs,
                "targets": {"capacity_cost_max": 0.20, "p99_ms_at_10k": 50},
            },
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
