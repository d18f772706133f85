"""send_keyed on a real broker: a run of prompts long enough for batch builders lands, byte for byte and
in order, on the partitions a send() of each record lands on."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devkit.kafka_io import collect
from tests.conftest import _TEST_TOPIC_PREFIXES
from upsell_triggers.runtime.kafka.keyed_batches import BATCH_FROM, send_keyed

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def test_batched_records_land_where_send_puts_them(kafka_bootstrap: str) -> None:
    prefix = f"keyed-{uuid.uuid4().hex[:8]}-"
    _TEST_TOPIC_PREFIXES.add(prefix)
    batched, single = prefix + "batched", prefix + "single"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 5, 1) for t in (batched, single)])
    finally:
        await admin.close()
    # Large enough values that some partitions' builders fill up and are sent before the end.
    records = [
        (f"acct-{i % 211}".encode(), f'{{"n":{i},"pad":"{"x" * 900}"}}'.encode()) for i in range(3_000)
    ]
    assert len(records) >= BATCH_FROM
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_batch_size=64 * 1024, linger_ms=1)
    await producer.start()
    try:
        futures = await send_keyed(producer, batched, records)
        assert 5 < len(futures) < len(records)  # batch builders, not a send per record; some filled up
        await asyncio.gather(*futures)
        await asyncio.gather(*[await producer.send(single, v, key=k) for k, v in records])
    finally:
        await producer.stop()

    def by_partition(recs: list) -> dict[int, list[tuple[bytes, bytes]]]:
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for r in recs:
            out.setdefault(r.partition, []).append((r.key, r.value))
        return out

    got = await collect(kafka_bootstrap, [batched], want=len(records), timeout=60)
    want = await collect(kafka_bootstrap, [single], want=len(records), timeout=60)
    assert len(got) == len(want) == len(records)
    assert by_partition(got) == by_partition(want)
    assert len(by_partition(got)) == 5
