"""Diagnostic: where exactly_once's event -> prompt latency goes, prompt by prompt.

    python bench/eos_latency.py [--runs 3] [--rate 10000] [--seconds 10] [--env NAME=VALUE ...]
                                [--timings DIR] [--name eos-latency]

One exactly_once worker on fresh topics (bench/latency.py's mix, paced at --rate), read by three
consumers of the prompts topic at once: `read_committed` with aiokafka's fetch wait (500 ms) and with
5 ms, and `read_uncommitted`. The worker's per-batch timings (UPSELL_BATCH_TIMINGS_FILE) place each
prompt in its batch (the batch during which its record was created), so each prompt's latency splits
into: event handed to the producer -> its batch began (waiting for the loop, and in aiokafka's buffer)
-> the prompt's record created (fetch, apply) -> the batch's transactions committed -> the prompt
received by the `read_committed` consumer (the commit markers, the consumer's fetch). Per run: those
parts' p50, the batch cycle (p50 of the time between batch ends), how many batch cycles an event
waited before its batch began, the three consumers' p50/p99, and the CPU pressure during the run (the
machine may be shared). `tail` sets what the slowest 2% of prompts waited for beside the median prompt:
the parts of their latency, the phases and sizes of their batch and of the batch before it, and the
share of them whose wait overlapped a producer retry, a collector pause or a fetch of idle partitions
only (`tail()`). --timings DIR keeps the workers' per-batch timings there. Writes
bench/results/<--name>.json (eos-latency.json by default).
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
    out["tail"] = tail(sent, rc, created, batches, starts, ends, events(timings))
    return out


def events(timings: Path) -> dict[str, list[dict[str, Any]]]:
    """The timings file's lines between batches, by kind (gc, retry, fetch, ...)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for line in timings.read_bytes().splitlines():
        r = orjson.loads(line)
        if "event" in r:
            out.setdefault(r["event"], []).append(r)
    return out


def tail(
    sent: dict[str, float],
    arrived: dict[str, float],
    created: dict[str, float],
    batches: list[dict[str, Any]],
    starts: list[float],
    ends: list[float],
    between: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """What the slowest 2% of prompts (read_committed) waited for, against the median prompt: where
    their event was when the loop took it, the batch that carried the prompt and the one before it
    (the batch under way when the event arrived). For each, the p50 over the tail's prompts (and over
    all prompts: `all`) of the parts of a prompt's latency, of the two batches' phases and sizes, and
    the share of tail prompts whose wait (from the event's send to its batch's end) overlaps a producer
    retry, a collector pause or a fetch of idle partitions only."""
    rows = []
    for e, t in sent.items():
        if e not in created or e not in arrived:
            continue
        i = bisect.bisect_right(starts, created[e]) - 1
        if i < 1:
            continue
        rows.append((arrived[e] - t, t, i))
    if not rows:
        return {}
    rows.sort()
    slow = rows[int(0.98 * len(rows)) :]
    retries = [(r["t"], r) for r in between.get("retry", [])]
    gcs = [(g["t"] - g["ms"] / 1000, g["t"]) for g in between.get("gc", [])]
    # fetches of idle partitions only (no hot topic's), which the broker held for the fetch wait while
    # the hot partitions' records waited in the fetcher (runtime/kafka/fetch_wait.py)
    idle = [
        (f["t"] - f["ms"] / 1000, f["t"])
        for f in between.get("fetch", [])
        if not f["data"] and not any(t.startswith("lat-events-") for t in f["parts"])
    ]

    def summary(rs: list[tuple[float, float, int]]) -> dict[str, Any]:
        def p50(f: Any) -> float | None:
            xs = [f(r) for r in rs]
            xs = [x for x in xs if x is not None]
            return round(percentile(xs, 0.5), 1) if xs else None

        out: dict[str, Any] = {
            "prompts": len(rs),
            "latency_ms": p50(lambda r: 1000 * r[0]),
            "to_batch_start_ms": p50(lambda r: 1000 * (starts[r[2]] - r[1])),
            "batch_to_committed_ms": p50(lambda r: 1000 * (ends[r[2]] - starts[r[2]])),
            "committed_to_arrival_ms": p50(lambda r: 1000 * (r[1] + r[0] - ends[r[2]])),
        }
        for which, k in (("own", 0), ("before", 1)):
            out[which + "_records"] = p50(lambda r, k=k: batches[r[2] - k]["records"])
            for phase in ("fetch", "apply", "deliver", "txn_send", "txn_offsets", "txn_end"):
                out[f"{which}_{phase}_ms"] = p50(lambda r, k=k, ph=phase: batches[r[2] - k].get(ph + "_ms"))
        # the event arrived during the batch before its own, or earlier: from its send to its batch's end
        with_retry = with_gc = with_idle = 0
        for _, t, i in rs:
            lo, hi = t, ends[i]
            with_retry += any(lo <= rt <= hi for rt, _ in retries)
            with_gc += any(g0 < hi and g1 > lo for g0, g1 in gcs)
            with_idle += any(f0 < hi and f1 > lo for f0, f1 in idle)
        out["share_with_retry"] = round(with_retry / len(rs), 3)
        out["share_with_gc_pause"] = round(with_gc / len(rs), 3)
        out["share_with_idle_fetch"] = round(with_idle / len(rs), 3)
        return out

    kinds: dict[str, int] = {}
    for _, r in retries:
        key = f"{r['request']} {r['error']} {r['backoff_ms']:g} ms"
        kinds[key] = kinds.get(key, 0) + 1
    return {"slowest_2pct": summary(slow), "all": summary(rows), "retries": kinds}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for the worker")
    ap.add_argument("--name", default="eos-latency", help="results file bench/results/<name>.json")
    ap.add_argument("--timings", type=Path, help="keep the workers' per-batch timings in this directory")
    a = ap.parse_args()
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    env = {"UPSELL_PROCESSING_GUARANTEE": "exactly_once", **dict(kv.split("=", 1) for kv in a.env)}
    runs = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if a.timings:
            a.timings.mkdir(parents=True, exist_ok=True)
        for i in range(a.runs):
            rid = f"{run_id()}-e"
            topics = {k: f"lat-{k}-{rid}" for k in ("events", "feedback", "prompts", "dlq")}
            asyncio.run(create_topics(bs, topics.values(), 4))
            timings = (a.timings or tmp) / f"timings-{rid}.jsonl"
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
