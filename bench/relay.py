"""The floor of the latency benchmark's Kafka path: a bare relay with the worker's Kafka client settings.

    python bench/relay.py    (configured like the worker, from its environment: KAFKA_BOOTSTRAP_SERVERS,
                              UPSELL_TOPIC_EVENTS, UPSELL_TOPIC_PROMPTS, UPSELL_FETCH_PARTITION_BYTES, ...)

`bench/latency.py --mode floor` runs it in place of the worker and measures it exactly as it measures the
worker. It reads every partition of the events topic and, for each event that prompts in the
benchmark's mix (the seats usage event of a new account: `type` usage, `metric` seats), produces a
small record `{"trigger_event_id": <its event_id>}` keyed by the account to the prompts topic. No
engine, no state, no rules: what it measures is the path producer → broker → fetch → produce → broker
→ fetch on the machine, i.e. the part of the benchmark's latency no worker code can remove.

Its clients are configured as the worker's: the consumer and producer settings are read from the
runtime's own configuration (`faust_app(Settings())`'s producer acks, linger, batch and request sizes,
compression, fetch size per partition, records per poll, offset reset; the fetch wait of
`runtime/kafka/fetch_wait.py`; read_committed with exactly_once), so they stay the same when the
worker's change. Like the worker's batch loop it hands each batch's records to the producer without
waiting for their acknowledgements (a failed send ends the relay with status 1).

What it leaves out on purpose, all of it worker work rather than transport: decoding into typed events,
the engine, state writes and offset commits, Faust's group membership (the relay reads every partition
without a group), and the idle partitions the worker also fetches (feedback, Faust's leader topic). Prints
`relay up` on stderr once its partitions are assigned and its producer has started; runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from upsell_triggers.gateway.kafka import client_options
from upsell_triggers.runtime.faust_app import faust_app
from upsell_triggers.runtime.kafka.fetch_wait import FETCH_MAX_WAIT_MS
from upsell_triggers.settings import Settings


def prompts(value: bytes) -> str | None:
    """The event id of an event that prompts in the latency benchmark's mix, else None."""
    try:
        ev = orjson.loads(value)
        if ev.get("type") == "usage" and ev.get("metric") == "seats":
            return str(ev["event_id"])
    except (orjson.JSONDecodeError, AttributeError, KeyError):
        pass
    return None


def clients(s: Settings) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """A consumer and a producer with the worker's settings (its Faust app's, and its fetch wait)."""
    conf = faust_app(s).conf
    consumer = AIOKafkaConsumer(
        s.topic_events,  # every partition (no group: no join, no commits)
        **client_options(s),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset=conf.consumer_auto_offset_reset,
        max_poll_records=conf.broker_max_poll_records,
        max_partition_fetch_bytes=conf.consumer_max_fetch_size,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        check_crcs=conf.broker_check_crcs,
        isolation_level="read_committed" if s.processing_guarantee == "exactly_once" else "read_uncommitted",
    )
    producer = AIOKafkaProducer(
        **client_options(s),
        acks=conf.producer_acks,
        linger_ms=int(conf.producer_linger * 1000),  # as Faust's producer reads it
        max_batch_size=conf.producer_max_batch_size,
        max_request_size=conf.producer_max_request_size,
        compression_type=conf.producer_compression_type,
    )
    return consumer, producer


async def relay(s: Settings) -> int:
    consumer, producer = clients(s)
    failed: list[BaseException] = []

    def sent(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            failed.append(fut.exception())  # type: ignore[arg-type]

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    await producer.start()
    try:
        for _ in range(600):
            if consumer.assignment():
                break
            await asyncio.sleep(0.05)
        else:
            print(f"relay: no partitions of {s.topic_events} in 30 s", file=sys.stderr)
            return 2
        print("relay up", file=sys.stderr, flush=True)
        while not stop.is_set() and not failed:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    eid = prompts(r.value) if r.value is not None else None
                    if eid is not None:
                        value = orjson.dumps({"trigger_event_id": eid})
                        (await producer.send(s.topic_prompts, value, key=r.key)).add_done_callback(sent)
        if failed:
            print(f"relay: a send failed: {failed[0]!r}", file=sys.stderr)
            return 1
        return 0
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> int:
    return asyncio.run(relay(Settings()))


if __name__ == "__main__":
    raise SystemExit(main())
