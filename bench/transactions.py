"""Benchmark: what one Kafka transaction of an exactly_once batch costs on this broker, phase by phase.

    python bench/transactions.py [--transactions 100] [--records 40] [--gap-ms 30] [--rounds 2]
                                 [--backoff-ms 5 ...]

One aiokafka transactional producer (the settings of the worker's: linger 1 ms) commits transactions
shaped like a worker's per-partition transaction: --records records split over two partitions of two
topics (prompts and changelog), then the input offsets with `send_offsets_to_transaction`, then
`commit_transaction`, each phase timed: records acknowledged (AddPartitionsToTxn, then Produce), offsets
added (AddOffsetsToTxn, then TxnOffsetCommit to the group coordinator), transaction ended (EndTxn). A
plain idempotent producer sending the same records and waiting for their acknowledgements is the
at-least-once counterpart.

Transactions run back to back (the next begins when the last one ended, as a busy worker's partition
does) and with --gap-ms between them (a worker's fetch and apply). The broker answers AddPartitionsToTxn
with CONCURRENT_TRANSACTIONS while it still writes the previous transaction's markers (KAFKA-5477), and
the producer asks again after a wait: aiokafka's own 20 ms, or the worker's
UPSELL_TRANSACTION_RETRY_BACKOFF_MS (its default, or the variable if set; kafka.compat sets it). Back to
back runs once with each, and once per --backoff-ms given; spaced runs with the worker's. Every
measurement also counts the answers that made a transactional request retry, per request type (retries
and seconds waited per transaction). The kinds alternate in order over --rounds. CPU pressure (Linux
PSI) is noted per measurement: the machine may be shared. Writes bench/results/transactions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from guarantee import cpu_pressure
from kafkabench import bootstrap, create_topics, delete_created_topics_at_exit, median, run_id, write_result
from latency import percentile

from upsell_triggers.runtime.kafka import compat
from upsell_triggers.settings import Settings

PHASES = ("records", "offsets", "end", "total")


def ms(xs: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * percentile(xs, 0.5), 1), "p90_ms": round(1000 * percentile(xs, 0.9), 1)}


async def transactions(
    bs: str, topics: tuple[str, str], n: int, records: int, gap: float, backoff: float
) -> dict[str, Any]:
    """n transactions of one producer retrying CONCURRENT_TRANSACTIONS after `backoff` s; per phase
    p50/p90, transactions per second, and the retries per transaction by request type."""
    prompts, changelog = topics
    compat.set_transaction_retry_backoff(backoff)
    retries = compat.count_transaction_retries()
    before = {k: list(v) for k, v in retries.items()}
    producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=1, transactional_id=f"bench-txn-{run_id()}")
    await producer.start()
    phases: dict[str, list[float]] = {p: [] for p in PHASES}
    start = time.perf_counter()
    try:
        for i in range(n):
            t0 = time.perf_counter()
            await producer.begin_transaction()
            sent = [
                await producer.send(prompts, b"p" * 300, key=b"%d" % j, partition=0)
                for j in range(records // 2)
            ]
            sent += [
                await producer.send(changelog, b"s" * 200, key=b"%d" % j, partition=0)
                for j in range(records // 2)
            ]
            await asyncio.gather(*sent)
            t1 = time.perf_counter()
            await producer.send_offsets_to_transaction(
                {TopicPartition(prompts, 1): i + 1}, f"bench-txn-{topics[0]}"
            )
            t2 = time.perf_counter()
            await producer.commit_transaction()
            t3 = time.perf_counter()
            for phase, s in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                phases[phase].append(s)
            if gap:
                await asyncio.sleep(gap)
    finally:
        await producer.stop()
    out: dict[str, Any] = {p: ms(xs) for p, xs in phases.items()}
    out["transactions_per_s"] = round(n / (time.perf_counter() - start), 1)
    out["retry_backoff_ms"] = round(1000 * backoff, 3)
    out["retries_per_transaction"] = {
        request: {
            "retries": round(len(waits) / n, 2),
            "waited_ms": round(1000 * sum(waits) / n, 1),
        }
        for request, all_waits in retries.items()
        if (waits := all_waits[len(before.get(request, [])) :])
    }
    return out


async def plain(bs: str, topics: tuple[str, str], n: int, records: int, gap: float) -> dict[str, Any]:
    """The same records through an idempotent producer, acknowledged batch by batch (at least once)."""
    prompts, changelog = topics
    producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=1, enable_idempotence=True)
    await producer.start()
    took: list[float] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            sent = [await producer.send(prompts, b"p" * 300, partition=0) for _ in range(records // 2)]
            sent += [await producer.send(changelog, b"s" * 200, partition=0) for _ in range(records // 2)]
            await asyncio.gather(*sent)
            took.append(time.perf_counter() - t0)
            if gap:
                await asyncio.sleep(gap)
    finally:
        await producer.stop()
    return {"records": ms(took)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transactions", type=int, default=100, help="per measurement")
    ap.add_argument("--records", type=int, default=40, help="records per transaction (two partitions)")
    ap.add_argument("--gap-ms", type=float, default=30.0, help="pause between spaced transactions")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--backoff-ms",
        type=float,
        action="append",
        default=[],
        help="also measure back to back with this retry wait (repeatable)",
    )
    ap.add_argument("--name", default="transactions", help="results file bench/results/<name>.json")
    a = ap.parse_args()
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    rid = run_id()
    topics = (f"txn-prompts-{rid}", f"txn-changelog-{rid}")
    asyncio.run(create_topics(bs, topics, 2))
    aiokafka_s = compat.set_transaction_retry_backoff(0.02)  # aiokafka's own value, read back
    worker_ms = Settings().transaction_retry_backoff_ms
    backoffs = {"aiokafka": 1000 * aiokafka_s, "worker": worker_ms} | {
        f"{b:g}ms": b for b in a.backoff_ms if b not in (1000 * aiokafka_s, worker_ms)
    }

    def back_to_back(backoff_ms: float) -> Any:
        return lambda: transactions(bs, topics, a.transactions, a.records, 0.0, backoff_ms / 1000)

    kinds = {f"transactions_back_to_back_{name}": back_to_back(ms_) for name, ms_ in backoffs.items()}
    kinds["transactions_spaced_worker"] = lambda: transactions(
        bs, topics, a.transactions, a.records, a.gap_ms / 1000, worker_ms / 1000
    )
    kinds["plain_acknowledged"] = lambda: plain(bs, topics, a.transactions, a.records, 0.0)
    rounds: list[dict[str, Any]] = []
    for i in range(a.rounds):
        r: dict[str, Any] = {"round": i + 1}
        for kind, run in kinds.items() if i % 2 == 0 else reversed(kinds.items()):
            pressure = cpu_pressure()
            r[kind] = {**asyncio.run(run()), "cpu_pressure_before": pressure}
            print(f"round {i + 1} {kind:<36}: {r[kind]}", flush=True)
        rounds.append(r)
    summary: dict[str, dict[str, float]] = {
        kind: {p: median([r[kind][p]["p50_ms"] for r in rounds]) for p in PHASES if p in rounds[0][kind]}
        for kind in kinds
    }
    for kind in kinds:
        if "transactions_per_s" in rounds[0][kind]:
            summary[kind]["transactions_per_s"] = median([r[kind]["transactions_per_s"] for r in rounds])
    print("median over rounds of the p50 (ms), and of transactions/s:")
    for kind, figures in summary.items():
        print(f"  {kind:<36} {figures}")
    print(
        "wrote",
        write_result(
            a.name,
            {
                "benchmark": "one transactional producer's transactions, phase by phase",
                "transactions": a.transactions,
                "records": a.records,
                "gap_ms": a.gap_ms,
                "retry_backoff_ms": backoffs,
                "summary_p50_ms": summary,
                "rounds": rounds,
            },
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
