"""The two reference pipelines the service is measured against, on the same topic and broker.

raw: the ceiling. aiokafka getmany -> orjson -> a per-key counter -> one changelog record per dirty key
per batch -> one output record per 100 events -> manual commit. No rules, no Faust.

faust: what a typical Faust user ships. One agent iterating events, one table write per event, one
output per 100 events (`python bench/baselines.py faust`, run as its own process by the benchmark), in
two configurations, both measured in every run:
- defaults (BENCH_FAUST_TUNED unset): `faust worker` as it comes, the issue's reference pipeline
  (~3.6k events/s there). At its default WARN level Faust's terminal spinner sets the root logger to
  DEBUG (with or without a terminal), so every debug call in Faust and aiokafka builds a record; and
  the producer's linger is 0;
- tuned (BENCH_FAUST_TUNED=1): `-l info`, which avoids that, and a 5 ms producer linger (~5.5k there).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def raw_pipeline(bs: str, topic: str, n: int, group: str, changelog: str, output: str) -> float:
    """Events/s from the first record to the n-th."""
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bs,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    p = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=5, max_batch_size=512 * 1024)
    await c.start()
    await p.start()
    state: dict[bytes, list[int]] = {}
    seen = 0
    t0 = None
    try:
        while seen < n:
            batch = await c.getmany(timeout_ms=1000, max_records=10_000)
            if t0 is None and batch:
                t0 = time.perf_counter()
            for tp, msgs in batch.items():
                dirty: dict[bytes, list[int]] = {}
                out = p.create_batch()
                for m in msgs:
                    ev = orjson.loads(m.value)
                    key = m.key
                    st = state.get(key)
                    if st is None:
                        st = state[key] = [0, 0]
                    st[0] += 1
                    st[1] = ev["ts"]
                    dirty[key] = st
                    seen += 1
                    if seen % 100 == 0 and out.append(key=key, value=m.value, timestamp=None) is None:
                        await p.send_batch(out, output, partition=tp.partition)
                        out = p.create_batch()
                cl = p.create_batch()
                for key, st in dirty.items():
                    if cl.append(key=key, value=orjson.dumps(st), timestamp=None) is None:
                        await p.send_batch(cl, changelog, partition=tp.partition)
                        cl = p.create_batch()
                        cl.append(key=key, value=orjson.dumps(st), timestamp=None)
                if cl.record_count():
                    await p.send_batch(cl, changelog, partition=tp.partition)
                if out.record_count():
                    await p.send_batch(out, output, partition=tp.partition)
            if batch:
                await p.flush()
                await c.commit()
        return n / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await c.stop()
        await p.stop()


def faust_main() -> None:
    """A plain Faust agent: table write per event, output per 100. Prints events/s over N events."""
    import faust

    bs, topic, n, app_id = (
        os.environ["BENCH_BOOTSTRAP"],
        os.environ["BENCH_TOPIC"],
        int(os.environ["BENCH_N"]),
        os.environ["BENCH_APP_ID"],
    )
    tuned = os.environ.get("BENCH_FAUST_TUNED") == "1"
    app = faust.App(
        app_id,
        broker=f"kafka://{bs}",
        store="memory://",
        datadir=os.environ.get("BENCH_DATADIR", f"{app_id}-data"),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "4")),
        **({"producer_linger_ms": 5} if tuned else {}),
    )
    src = app.topic(topic, key_serializer="raw", value_serializer="raw")
    out = app.topic(os.environ["BENCH_OUTPUT"], key_serializer="raw", value_serializer="raw")
    table = app.Table("counts", default=int, key_type=bytes, value_type=int, partitions=4)
    seen = [0]
    t0: list[Any] = [None]

    @app.agent(src)
    async def process(stream: Any) -> None:
        async for key, value in stream.items():
            if t0[0] is None:
                t0[0] = time.perf_counter()
            ev = orjson.loads(value)
            table[key] += 1
            seen[0] += 1
            if seen[0] % 100 == 0:
                await out.send(key=key, value=orjson.dumps({"n": ev["ts"]}))
            if seen[0] >= n:
                rate = n / (time.perf_counter() - t0[0])
                print(f"RESULT {rate:.1f}", flush=True)
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", *(["-l", "info"] if tuned else [])]
    app.main()


if __name__ == "__main__" and sys.argv[1:2] == ["faust"]:
    faust_main()
