"""Benchmark 2: event -> prompt latency at fixed input rates, on Kafka.

    python bench/latency.py [--rates 1000 10000] [--seconds 15] [--runs 3]

A producer sends events at a fixed rate (wall-clock paced, 1 ms ticks). One in ten starts a new account
that crosses 80% of its seats (plan_changed free, then seats=4: a seats-80 prompt); the rest are API-call
deltas on other accounts (load). A consumer on `upgrade-prompts` matches each prompt's
trigger_event_id to the time its event was handed to the producer. Reports p50/p99/max per rate (median
over runs) in steady state: events of the first --warmup second (1 by default) are sent but not measured,
because prompts of the first ~0.3 s after the load starts on fresh topics took 60-140 ms (measured: the
worker's first fetch came ~0.1 s after the first events were produced, and its first batch of ~1,200
records took 20-30 ms). Target: p99 <= 50 ms at 10k events/s. Writes bench/results/latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

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

from devkit.kafka_io import event


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def measure(bs: str, topics: dict[str, str], rate: int, seconds: float, warmup: float) -> list[float]:
    sent: dict[str, float] = {}
    got: list[float] = []
    cons = AIOKafkaConsumer(
        topics["prompts"], bootstrap_servers=bs, auto_offset_reset="latest", group_id=None
    )
    prod = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=1)
    await cons.start()
    await prod.start()
    await cons.seek_to_end()
    stop = asyncio.Event()

    async def receive() -> None:
        while not stop.is_set() or len(got) < len(sent):
            batch = await cons.getmany(timeout_ms=200)
            now = time.perf_counter()
            for msgs in batch.values():
                for m in msgs:
                    t = sent.get(orjson.loads(m.value)["trigger_event_id"])
                    if t is not None:
                        got.append(now - t)
            if stop.is_set() and not batch:
                break

    rx = asyncio.create_task(receive())
    t0 = time.perf_counter()
    n = 0
    base = int(time.time() * 1000) - 60_000
    while (elapsed := time.perf_counter() - t0) < warmup + seconds:
        due = int(elapsed * rate)
        while n < due:
            n += 1
            if n % 10 == 0:
                acct = f"lat-{n}"
                for key, value in (
                    event(acct, f"p{n}", base, type="plan_changed", plan="free"),
                    event(acct, f"s{n}", base + 1, type="usage", metric="seats", value=4),
                ):
                    await prod.send(topics["events"], value, key=key)
                if elapsed >= warmup:
                    sent[f"s{n}"] = time.perf_counter()
            else:
                key, value = event(
                    f"load-{n % 5000}", f"a{n}", base, type="usage", metric="api_calls", delta=1
                )
                await prod.send(topics["events"], value, key=key)
        await asyncio.sleep(0.001)
    await prod.flush()
    await asyncio.sleep(2)
    stop.set()
    await rx
    await prod.stop()
    await cons.stop()
    if len(got) < 0.99 * len(sent):
        raise RuntimeError(f"only {len(got)} of {len(sent)} prompts arrived")
    return got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds at the rate before measuring")
    a = ap.parse_args()
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.runs):
            for rate in a.rates:
                rid = f"{run_id()}-{rate}"
                topics = {k: f"lat-{k}-{rid}" for k in ("events", "feedback", "prompts", "dlq")}
                asyncio.run(create_topics(bs, topics.values(), 4))
                w = start_service(bs, Path(d), topics, f"lat-{rid}")
                try:
                    w.wait_ready(120)
                    time.sleep(2)
                    lat = asyncio.run(measure(bs, topics, rate, a.seconds, a.warmup))
                finally:
                    w.stop()
                r = results.setdefault(str(rate), {"p50_ms": [], "p99_ms": [], "max_ms": [], "prompts": []})
                r["p50_ms"].append(1000 * percentile(lat, 0.50))
                r["p99_ms"].append(1000 * percentile(lat, 0.99))
                r["max_ms"].append(1000 * max(lat))
                r["prompts"].append(len(lat))
                p50, p99, mx = r["p50_ms"][-1], r["p99_ms"][-1], r["max_ms"][-1]
                print(
                    f"run {i + 1}: {rate:>6,} events/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms "
                    f"({len(lat)} prompts)",
                    flush=True,
                )
    med = {rate: {k: median(v) for k, v in r.items()} for rate, r in results.items()}
    for rate, m in med.items():
        p50, p99, mx = m["p50_ms"], m["p99_ms"], m["max_ms"]
        print(f"median at {int(rate):,}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms")
    print(
        "wrote",
        write_result(
            "latency",
            {
                "benchmark": "event -> prompt latency",
                "seconds": a.seconds,
                "warmup_seconds": a.warmup,
                "median": med,
                "runs": results,
                "target": {"rate": 10000, "p99_ms": 50},
            },
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
