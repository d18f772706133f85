"""Benchmark 1 (and 5): end-to-end throughput on Kafka, with the ceiling and the naive alternative.

    python bench/throughput.py [--events 1000000] [--accounts 100000] [--runs 3] [--faust-events 20000]
                               [--workers 1 2]

Two pre-produced topics, one per benchmark workload (bench/workloads.py: "typical", most accounts far
from their limits, and "near-limits", a launch week; both with 60% RFC 3339 timestamps, user_id on half,
2% resent events and prompt feedback; keyed by account, 4 partitions). Each run, on the same broker: for
each workload the raw aiokafka pipeline (ceiling) on its topic, then the service with 1 worker consuming
everything with durable state; and on the typical topic the plain Faust pipeline with `faust worker`'s
defaults and tuned (bench/baselines.py; over the first --faust-events: it is slow). bench/scaling.py
does 1 vs 2 workers. Ratios are taken within a run. Writes bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path

from baselines import raw_pipeline
from kafkabench import (
    bootstrap,
    create_topics,
    delete_created_topics_at_exit,
    median,
    produce_fast,
    python_subprocess,
    remember,
    run_id,
    start_service,
    wait_consumed,
    write_result,
)
from workloads import WORKLOADS, records

HERE = Path(__file__).resolve().parent


def faust_plain(bs: str, topic: str, n: int, tmp: Path, rid: str, tuned: bool) -> float:
    log = tmp / f"faust-plain-{rid}.log"
    env = {
        "BENCH_FAUST_TUNED": "1" if tuned else "",
        "BENCH_BOOTSTRAP": bs,
        "BENCH_TOPIC": topic,
        "BENCH_N": str(n),
        "BENCH_APP_ID": f"bench-faust-{rid}",
        "BENCH_OUTPUT": f"bench-faust-out-{rid}",
    }
    remember(env["BENCH_APP_ID"] + "-")
    remember(env["BENCH_OUTPUT"])
    env["BENCH_DATADIR"] = str(tmp / f"faust-plain-{rid}-data")
    proc = python_subprocess([str(HERE / "baselines.py"), "faust"], env, log)
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    found = re.findall(r"RESULT (\S+)", log.read_text())  # Faust routes stdout through its logger
    if found:
        return float(found[-1])
    raise RuntimeError(f"plain Faust pipeline gave no result:\n{log.read_text()[-3000:]}")


def service(bs: str, topic: str, n: int, tmp: Path, rid: str, workers: int) -> tuple[float, float]:
    """(total events/s, prompts) with `workers` service processes in one group."""
    topics = {
        "events": topic,
        "feedback": f"bench-fb-{rid}",
        "prompts": f"bench-prompts-{rid}",
        "dlq": f"bench-dlq-{rid}",
    }
    app_id = f"bench-svc-{rid}"
    ws = [start_service(bs, tmp, topics, app_id) for _ in range(workers)]
    try:
        first, done, at_first = wait_consumed(ws, n, timeout=900)
        prompts = sum(w.metric("upsell_prompts_emitted_total") for w in ws)
        return (n - at_first) / (done - first), prompts
    finally:
        for w in ws:
            w.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--faust-events", type=int, default=20_000)
    ap.add_argument("--workers", type=int, nargs="*", default=[1], help="scaling: see bench/scaling.py")
    ap.add_argument("--partitions", type=int, default=4)
    a = ap.parse_args()
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    rid = run_id()
    topics = {w: f"bench-events-{w}-{rid}" for w in WORKLOADS}
    asyncio.run(create_topics(bs, topics.values(), a.partitions))
    n = a.events
    for w, topic in topics.items():
        t = time.perf_counter()
        got = asyncio.run(produce_fast(bs, topic, records(w, a.events, a.accounts), a.partitions))
        assert got == n, (got, n)
        dt = time.perf_counter() - t
        print(f"produced {n:,} {w} events over {a.accounts:,} accounts to {topic} in {dt:.1f}s")
    topic = topics["typical"]
    runs = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i in range(a.runs):
            r: dict[str, float] = {}
            sub = f"{rid}-{i}"
            # Alternate the workloads' order from run to run: a machine slowing down during a run must
            # not always favour the same one.
            for w in WORKLOADS if i % 2 == 0 else tuple(reversed(WORKLOADS)):
                ws = f"{sub}-{w}"
                outs = [f"raw-cl-{ws}", f"raw-out-{ws}"]
                asyncio.run(create_topics(bs, outs, a.partitions))
                sfx = "" if w == "typical" else f"_{w.replace('-', '_')}"
                r["raw" + sfx] = asyncio.run(
                    raw_pipeline(bs, topics[w], n, f"raw-{ws}", f"raw-cl-{ws}", f"raw-out-{ws}")
                )
                raw = r["raw" + sfx]
                print(f"run {i + 1}: {w:<12} raw aiokafka pipeline {raw:>10,.0f} events/s", flush=True)
                for wn in a.workers if w == "typical" else [1]:
                    rate, prompts = service(bs, topics[w], n, tmp, f"{ws}-w{wn}", wn)
                    r[f"service_{wn}w{sfx}"] = rate
                    r[f"prompts_{wn}w{sfx}"] = prompts
                    print(
                        f"run {i + 1}: {w:<12} service, {wn} worker(s) {rate:>10,.0f} events/s "
                        f"({rate / wn:,.0f}/worker, {prompts:,.0f} prompts)",
                        flush=True,
                    )
                r["vs_raw" + sfx] = r[f"service_1w{sfx}"] / r["raw" + sfx]
            outs = [f"bench-faust-out-{sub}", f"bench-faust-out-{sub}-d"]
            asyncio.run(create_topics(bs, outs, a.partitions))
            r["faust_defaults"] = faust_plain(bs, topic, a.faust_events, tmp, f"{sub}-d", tuned=False)
            print(f"run {i + 1}: plain Faust, defaults   {r['faust_defaults']:>10,.0f} events/s", flush=True)
            r["faust"] = faust_plain(bs, topic, a.faust_events, tmp, sub, tuned=True)
            print(f"run {i + 1}: plain Faust, tuned      {r['faust']:>10,.0f} events/s", flush=True)
            r["vs_faust_defaults"] = r["service_1w"] / r["faust_defaults"]
            r["vs_faust"] = r["service_1w"] / r["faust"]
            r["raw_vs_faust_defaults"] = r["raw"] / r["faust_defaults"]
            r["raw_vs_faust"] = r["raw"] / r["faust"]
            r["near_limits_vs_typical"] = r["service_1w_near_limits"] / r["service_1w"]
            print(
                f"run {i + 1}: service/raw typical {r['vs_raw']:.0%}, "
                f"near-limits {r['vs_raw_near_limits']:.0%}; "
                f"service/faust {r['vs_faust_defaults']:.1f}x (defaults), {r['vs_faust']:.1f}x (tuned); "
                f"raw/faust {r['raw_vs_faust_defaults']:.0f}x (defaults), {r['raw_vs_faust']:.0f}x (tuned)",
                flush=True,
            )
            runs.append(r)
    keys = runs[0].keys()
    med = {k: median([r[k] for r in runs]) for k in keys}
    result = {
        "benchmark": "end-to-end throughput on Kafka",
        "events": n,
        "accounts": a.accounts,
        "partitions": a.partitions,
        "faust_events": a.faust_events,
        "median": med,
        "runs": runs,
        # 25x is against the issue's reference pipeline, plain Faust with `faust worker`'s defaults (its
        # ceiling/plain ratio matches the issue's; the tuned variant is a stricter comparison, reported).
        "workloads": "bench/workloads.py: typical and near-limits, ts 60% RFC 3339 (Z, +00:00, +05:30), "
        "user_id on half, 2% resent, prompt feedback",
        "targets": {"vs_faust_defaults": 25, "vs_raw": 0.50, "vs_raw_near_limits": 0.35},
    }
    print(
        f"median: service typical {med['service_1w']:,.0f}/s at {med['vs_raw']:.0%} of raw (target 50%), "
        f"near-limits {med['service_1w_near_limits']:,.0f}/s at {med['vs_raw_near_limits']:.0%} of raw "
        f"(target 35%); plain Faust {med['vs_faust_defaults']:.1f}x with defaults (target 25x) and "
        f"{med['vs_faust']:.1f}x tuned"
    )
    print("wrote", write_result("throughput", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
