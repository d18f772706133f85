"""Benchmark 5: scaling with workers on 4 partitions — events/s per worker and in total.

    python bench/scaling.py [--events 500000] [--accounts 50000] [--runs 3] [--workers 1 2]

For each worker count: start the workers on an empty topic, wait until every worker is ready and the
group has settled, then produce the events and time from the first consumed record until the group's
committed offsets reach the end of the topic. (Started on a pre-produced topic, the second worker's
join would put a rebalance inside the measurement.) Writes bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from kafkabench import (
    bootstrap,
    consumed,
    create_topics,
    delete_created_topics_at_exit,
    median,
    produce_fast,
    run_id,
    sim_records,
    start_service,
    write_result,
)

from devkit.exactness import wait_committed


def one(bs: str, tmp: Path, n: int, accounts: int, workers: int, rid: str, partitions: int) -> float:
    topic = f"scale-{rid}"
    asyncio.run(create_topics(bs, [topic], partitions))
    topics = {
        "events": topic,
        "feedback": f"scale-fb-{rid}",
        "prompts": f"scale-p-{rid}",
        "dlq": f"scale-d-{rid}",
    }
    app_id = f"scale-{rid}"
    # Commits every 0.5 s so that "committed == end" marks the end of the run within half a second.
    env = {"UPSELL_COMMIT_INTERVAL_S": "0.5"}
    ws = [start_service(bs, tmp, topics, app_id, env) for _ in range(workers)]
    try:
        for w in ws:
            w.wait_ready(120)
        time.sleep(8)  # let the group settle (joins trigger rebalances)
        for w in ws:
            w.wait_ready(120)
        records = list(sim_records(n, accounts, seed=21))
        t_prod = time.monotonic()
        asyncio.run(produce_fast(bs, topic, records, partitions))
        first, at_first = None, 0.0
        while first is None and time.monotonic() - t_prod < 60:
            c = sum(consumed(w) for w in ws)
            if c > 0:  # seen after a worker's first batch: time what is counted after it
                first, at_first = time.monotonic(), c
            time.sleep(0.05)
        assert first is not None
        asyncio.run(wait_committed(bs, app_id, topic, timeout=900))
        return (n - at_first) / (time.monotonic() - first)
    finally:
        for w in ws:
            w.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--accounts", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--partitions", type=int, default=4)
    a = ap.parse_args()
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    rid = run_id()
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.runs):
            r: dict[str, float] = {}
            for wn in a.workers:
                rate = one(bs, Path(d), a.events, a.accounts, wn, f"{rid}-{i}-{wn}", a.partitions)
                r[f"total_{wn}w"], r[f"per_worker_{wn}w"] = rate, rate / wn
                print(
                    f"run {i + 1}: {wn} worker(s): {rate:,.0f} events/s total, {rate / wn:,.0f}/worker",
                    flush=True,
                )
            runs.append(r)
    med = {k: median([r[k] for r in runs]) for k in runs[0]}
    print("median:", ", ".join(f"{k} {v:,.0f}" for k, v in med.items()))
    print(
        "wrote",
        write_result(
            "scaling",
            {
                "benchmark": "scaling: workers on one consumer group",
                "events": a.events,
                "accounts": a.accounts,
                "partitions": a.partitions,
                "median": med,
                "runs": runs,
            },
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
