"""Shared pieces of the Kafka benchmarks: topics, a fast producer, the service as a subprocess, results."""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from devkit.kafka_io import delete_topics, sim_records
from devkit.worker import ROOT, Worker, bootstrap

RESULTS = ROOT / "bench" / "results"
KAFKA_VERSION = "3.9.1"


def run_id() -> str:
    return uuid.uuid4().hex[:6]


# Topic names and app-id prefixes this benchmark process created; delete_created_topics_at_exit() deletes
# them at exit, so that repeated runs do not pile topics up on the local broker (they reached ~1,800 and
# slowed metadata).
_CREATED: set[str] = set()


def remember(prefix: str) -> None:
    _CREATED.add(prefix)


def delete_created_topics_at_exit(bs: str) -> None:
    def cleanup() -> None:
        try:
            n = asyncio.run(delete_topics(bs, sorted(_CREATED)))
            print(f"deleted {n} benchmark topics", flush=True)
        except Exception as exc:
            print(f"could not delete benchmark topics: {exc!r}", flush=True)

    atexit.register(cleanup)


async def create_topics(bs: str, names: Iterable[str], partitions: int) -> None:
    names = list(names)
    _CREATED.update(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def produce_fast(bs: str, topic: str, records: Iterable[tuple[bytes, bytes]], partitions: int) -> int:
    """Keyed records through aiokafka batch builders (Kafka's default murmur2 partitioning)."""
    p = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=20, max_batch_size=512 * 1024, acks=1)
    await p.start()
    part = DefaultPartitioner()
    all_parts = list(range(partitions))
    batches: dict[int, Any] = {}
    futs = []
    n = 0
    try:
        for key, value in records:
            i = part(key, all_parts, all_parts)
            b = batches.get(i)
            if b is None:
                b = batches[i] = p.create_batch()
            if b.append(key=key, value=value, timestamp=None) is None:
                futs.append(await p.send_batch(b, topic, partition=i))
                b = batches[i] = p.create_batch()
                b.append(key=key, value=value, timestamp=None)
            n += 1
        for i, b in batches.items():
            if b.record_count():
                futs.append(await p.send_batch(b, topic, partition=i))
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return n


def start_service(
    bs: str, tmp: Path, topics: dict[str, str], app_id: str, env: dict[str, str] | None = None
) -> Worker:
    _CREATED.add(f"{app_id}-")  # its changelog and Faust's assignor topic
    _CREATED.update(topics.values())  # the service creates the ones that do not exist yet
    w = Worker(bs, app_id, tmp, ROOT / "rules", app_id, env)
    w.topics = topics
    for k, v in topics.items():
        w.env[f"UPSELL_TOPIC_{k.upper()}"] = v
    w.env["UPSELL_LOG_LEVEL"] = "warning"
    return w.start()


_CONSUMED = ("upsell_events_consumed_total", "upsell_invalid_events_total", "upsell_redelivered_events_total")
_UNWRITTEN = "upsell_state_unwritten_accounts"


def wait_consumed(ws: list[Worker], n: int, timeout: float) -> tuple[float, float, float]:
    """Polls the workers' counters until together they consumed n records and wrote every state they
    changed (store and changelog): (first seen, done, records consumed when first seen).

    The rate counts the records consumed after the first count was seen,
    `(n - consumed at first) / (done - first)`: the first count can arrive only after the first batch
    (a fetch of up to UPSELL_FETCH_PARTITION_BYTES per partition), and dividing all n by the time
    after it would leave that batch's work out and overstate the rate by its share of the run (~7% of
    the throughput topic with 4 x 4 MiB fetches); the raw and Faust baselines time their first batch.

    Only exact without rebalances (a redelivered record counts again): the 1-worker runs."""
    first = None
    at_first = 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in ws:
            assert w.proc is not None
            if w.proc.poll() is not None:
                raise RuntimeError(f"service exited:\n{w.log.read_text()[-3000:]}")
        scraped = [w.metrics(*_CONSUMED, _UNWRITTEN) for w in ws]  # one scrape per worker and poll
        c = sum(m[k] for m in scraped for k in _CONSUMED)
        now = time.monotonic()
        if c > 0 and first is None:
            first, at_first = now, c
        if c >= n and sum(m[_UNWRITTEN] for m in scraped) == 0:
            if first is None or first == now:
                raise RuntimeError("all records were consumed in one batch: too few to time")
            return first, now, at_first
        time.sleep(0.1)
    raise TimeoutError(f"service consumed {sum(consumed(w) for w in ws):.0f} of {n} in {timeout}s")


def consumed(w: Worker) -> float:
    return sum(w.metrics(*_CONSUMED).values())


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def hwm_kib(pid: int) -> int:
    """Peak resident memory of the process."""
    return rss_kib(pid, "VmHWM")


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "kafka": KAFKA_VERSION,
        # The checkout's hot path as the worker it starts imports it: compiled or pure Python
        # (docs/architecture.md#compiled-modules); the service's rates differ by it.
        "code": code_mode(),
    }


def code_mode() -> str:
    """'native' (mypyc-compiled modules) or 'pure', as a process of this checkout imports them."""
    from upsell_triggers import native

    return native.mode()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {**result, "machine": machine(), "command": "python " + shlex.join(sys.argv)}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def python_subprocess(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


__all__ = ["bootstrap", "sim_records"]
