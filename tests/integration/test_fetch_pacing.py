"""A batch loop late to take a fetch does not leave its busy partitions unfetched for 1.5 s.

aiokafka sends one fetch per broker at a time; records not taken within prefetch_backoff (0.1 s) let it
fetch the broker's other partitions without them, and with only idle partitions left the broker holds
that request for fetch_max_wait (1.5 s as Faust sets it); the worker's consumer thread sets it to
FETCH_MAX_WAIT_MS (runtime/kafka/fetch_wait.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from upsell_triggers.runtime.kafka.compat import set_fetch_max_wait
from upsell_triggers.runtime.kafka.fetch_wait import FETCH_MAX_WAIT_MS

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def _next_records_after_late_take(bs: str, busy: str, idle: str, paced: bool) -> float:
    """s from taking a fetch 0.4 s late to the records produced meanwhile, as Faust's consumer reads."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bs, group_id=None, fetch_max_wait_ms=1500)
    producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        if paced:
            set_fetch_max_wait(consumer, FETCH_MAX_WAIT_MS)
        busy_tp, idle_tp = TopicPartition(busy, 0), TopicPartition(idle, 0)
        consumer.assign([busy_tp, idle_tp])
        await consumer.seek_to_end(busy_tp, idle_tp)
        await consumer.getmany(timeout_ms=300)  # positions resolved, a fetch of both in flight
        await (await producer.send(busy, b"a"))  # the in-flight fetch returns with it: buffered
        await asyncio.sleep(0.4)  # the batch loop is busy for 0.4 s
        await (await producer.send(busy, b"b"))
        first = await consumer.getmany(timeout_ms=3000)
        assert [m.value for m in first.get(busy_tp, [])] == [b"a"]
        t0 = time.monotonic()
        got = await consumer.getmany(timeout_ms=5000)
        assert [m.value for m in got.get(busy_tp, [])] == [b"b"]
        return time.monotonic() - t0
    finally:
        await producer.stop()
        await consumer.stop()


async def test_late_batch_loop_does_not_leave_busy_partition_unfetched(kafka_bootstrap):
    busy, idle = (f"pace-{k}-{uuid.uuid4().hex[:8]}" for k in ("busy", "idle"))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(busy, 1, 1), NewTopic(idle, 1, 1)])
        # aiokafka as it is: the fetch of the idle partition alone is held for fetch_max_wait
        assert await _next_records_after_late_take(kafka_bootstrap, busy, idle, paced=False) > 0.9
        assert await _next_records_after_late_take(kafka_bootstrap, busy, idle, paced=True) < 0.3
    finally:
        await admin.delete_topics([busy, idle])
        await admin.close()


async def test_records_produced_while_the_loop_was_busy_come_only_with_a_second_take(kafka_bootstrap):
    """What runtime/fresh_take.py answers: aiokafka fetches no partition of a broker while records of
    one wait in its buffer, so a take after a busy spell (a batch's transactions) returns what was
    fetched when the spell began; the take makes it fetch again at once, and a second take gets the
    records produced meanwhile one fetch round trip later."""
    busy = f"pace-busy-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0)
    try:
        await admin.create_topics([NewTopic(busy, 1, 1)])
        await consumer.start()
        await producer.start()
        set_fetch_max_wait(consumer, FETCH_MAX_WAIT_MS)
        tp = TopicPartition(busy, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.getmany(timeout_ms=300)  # position resolved, a fetch in flight
        await (await producer.send(busy, b"a"))  # the in-flight fetch returns with it: buffered
        await asyncio.sleep(0.03)  # the batch loop is busy
        await (await producer.send(busy, b"b"))
        await asyncio.sleep(0.03)
        first = await consumer.getmany(timeout_ms=0)
        assert [m.value for m in first.get(tp, [])] == [b"a"]  # b, 30 ms old, is not fetched yet
        t0 = time.monotonic()
        second = await consumer.getmany(timeout_ms=2000)
        assert [m.value for m in second.get(tp, [])] == [b"b"]
        assert time.monotonic() - t0 < FETCH_MAX_WAIT_MS / 1000  # a round trip, not a held fetch
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.delete_topics([busy])
        await admin.close()
