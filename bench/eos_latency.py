"""Diagnostic: where exactly_once's event -> prompt latency goes, prompt by prompt.

    python bench/eos_latency.py [--runs 3] [--rate 10000] [--seconds 10] [--env NAME=VALUE ...]

One exactly_once worker on fresh topics (bench/latency.py's mix, paced at --rate), read by three
consumers of the prompts topic at once: `read_committed` with aiokafka's fetch wait (500 ms) and with
5 ms, and `read_uncommitted`. The worker's per-batch timings (UPSELL_BATCH_TIMINGS_FILE) place each
prompt in its batch (the batch during which its record was created), so each prompt's latency splits
into: event handed to the producer -> its batch began (waiting for the loop, and in aiokafka's buffer)
-> the prompt's record created (fetch, apply) -> the batch's transactions committed -> the prompt
received by the `read_committed` consumer (the commit markers, the consumer's fetch). Per run: those
parts' p50, the batch cycle (p50 of the time between batch ends), how many batch cycles an event
waited before its batch began, the three consumers' p50/p99, and the CPU pressure during the run (the
machine may be shared). Writes bench/results/<--name>.json (eos-latency.json by default).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafkabench import (
    bootstrap,
    create_topics,
    delete_created_topics_at_exit,
    median,
    run_id,
    start_service,
    write_result,
)
from latency import Run, percentile

CONSUMERS: dict[str, dict[str, Any]] = {
    "read_committed": {"isolation_level": "read_committed"},
    "read_committed_wait_5ms": {"isolation_level": "read_committed", "fetch_max_wait_ms": 5},
    "read_uncommitted": {"isolation_level": "read_uncommitted"},
}
PHASES = ("fetch", "lock", "apply", "deliver", "txn_send", "txn_offsets", "txn_end")


def ms(xs: list[float], q: float) -> float | None:
    return round(1000 * percentile(xs, q), 1) if xs else None


def psi_total_us() -> int:
    """Linux PSI: microseconds in which some runnable task waited for a CPU, so far."""
    return int(Path("/proc/pressure/cpu").read_text().split("total=")[1].split()[0])


async def measure(
    bs: str, topics: dict[str, str], rate: int, seconds: float
) -> tuple[Run, dict[str, dict[str, float]], dict[str, float]]:
    consumers = {}
    for name, cfg in CONSUMERS.items():
        c = AIOKafkaConsumer(
            topics["prompts"], bootstrap_servers=bs, auto_offset_reset="latest", group_id=None, **cfg
        )
        await c.start()
        await c.seek_to_end()
        consumers[name] = c
    producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=1)
    await producer.start()
    run = Run()
    arrived: dict[str, dict[str, float]] = {k: {} for k in CONSUMERS}
    created: dict[str, float] = {}
    stop = asyncio.Event()

    async def receive(name: str) -> None:
        while not stop.is_set():
            got = await consumers[name].getmany(timeout_ms=200)
            now = time.time()
            for msgs in got.values():
                for m in msgs:
                    eid = orjson.loads(m.value)["trigger_event_id"]
                    arrived[name][eid] = now
                    created[eid] = m.timestamp / 1000

    async def send(key: bytes, value: bytes) -> None:
        await producer.send(topics["events"], value, key=key)

    tasks = [asyncio.create_task(receive(k)) for k in CONSUMERS]
    await run.pace(send, rate, seconds, 1.0)
    await producer.flush()
    await asyncio.sleep(3)
    stop.set()
    await asyncio.gather(*tasks)
    await producer.stop()
    for c in consumers.values():
        await c.stop()
    return run, arrived, created


def analyse(
    run: Run, arrived: dict[str, dict[str, float]], created: dict[str, float], timings: Path
) -> dict[str, Any]:
    sent = run.sent
    out: dict[str, Any] = {}
    for name, got in arrived.items():
        lat = [got[e] - t for e, t in sent.items() if e in got]
        out[name] = {"prompts": len(lat), "p50_ms": ms(lat, 0.5), "p99_ms": ms(lat, 0.99)}
    batches = []
    for line in timings.read_bytes().splitlines():
        b = orjson.loads(line)
        if "event" not in b and "records" in b and b["t"] >= run.t0 + 1.0:
            batches.append(b)
    if not batches:
        return out
    starts = [b["t"] for b in batches]
    ends = [
        b["t"] + sum(b.get(p + "_ms", 0.0) for p in ("fetch", "lock", "apply", "deliver")) / 1000
        for b in batches
    ]
    parts: dict[str, list[float]] = {
        "to_batch_start": [],
        "to_prompt_created": [],
        "to_committed": [],
        "to_read_committed_arrival": [],
    }
    rc = arrived["read_committed"]
    for e, t in sent.items():
        if e not in created or e not in rc:
            continue
        i = bisect.bisect_right(starts, created[e]) - 1
        if i < 0:
            continue
        parts["to_batch_start"].append(starts[i] - t)
        parts["to_prompt_created"].append(created[e] - starts[i])
        parts["to_committed"].append(ends[i] - created[e])
        parts["to_read_committed_arrival"].append(rc[e] - ends[i])
    out["per_prompt_p50_ms"] = {k: ms(v, 0.5) for k, v in parts.items()}
    cycle = ms([ends[i] - ends[i - 1] for i in range(1, len(ends))], 0.5)
    out["batch_cycle_p50_ms"] = cycle
    wait = out["per_prompt_p50_ms"]["to_batch_start"]
    out["cycles_before_batch_start"] = round(wait / cycle, 2) if wait is not None and cycle else None
    out["batches_per_s"] = round(len(batches) / (max(ends) - min(starts)), 1)
    out["records_per_batch_p50"] = percentile([b["records"] for b in batches], 0.5)
    out["early_records_p50"] = percentile([b.get("early", 0) for b in batches], 0.5)
    for phase in PHASES:
        xs = [b[phase + "_ms"] for b in batches if phase + "_ms" in b]
        if xs:
            out[phase + "_p50_ms"] = round(percentile(xs, 0.5), 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for the worker")
    ap.add_argument("--name", default="eos-latency", help="results file bench/results/<name>.json")
    a = ap.parse_args()
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    env = {"UPSELL_PROCESSING_GUARANTEE": "exactly_once", **dict(kv.split("=", 1) for kv in a.env)}
    runs = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i in range(a.runs):
            rid = f"{run_id()}-e"
            topics = {k: f"lat-{k}-{rid}" for k in ("events", "feedback", "prompts", "dlq")}
            asyncio.run(create_topics(bs, topics.values(), 4))
            timings = tmp / f"timings-{rid}.jsonl"
            w = start_service(
                bs, tmp, topics, f"lat-{rid}", {**env, "UPSELL_BATCH_TIMINGS_FILE": str(timings)}
            )
            try:
                w.wait_ready(120)
                time.sleep(2)
                p0, t0 = psi_total_us(), time.monotonic()
                run, arrived, created = asyncio.run(measure(bs, topics, a.rate, a.seconds))
                pressure = round((psi_total_us() - p0) / 1e6 / (time.monotonic() - t0), 2)
            finally:
                w.stop()
            r = {"run": i + 1, "cpu_pressure_during": pressure, **analyse(run, arrived, created, timings)}
            print(orjson.dumps(r).decode(), flush=True)
            runs.append(r)
    summary = {
        k: median([r[k] for r in runs if r.get(k) is not None])
        for k in ("batch_cycle_p50_ms", "cycles_before_batch_start", "batches_per_s")
    }
    for name in CONSUMERS:
        summary[name + "_p50_ms"] = median([r[name]["p50_ms"] for r in runs])
        summary[name + "_p99_ms"] = median([r[name]["p99_ms"] for r in runs])
    print("median of runs:", orjson.dumps(summary).decode())
    print(
        "wrote",
        write_result(
            a.name, {"rate": a.rate, "seconds": a.seconds, "env": env, "summary": summary, "runs": runs}
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
