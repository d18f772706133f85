"""Fencing on the real broker: once another worker was assigned a partition (its transactional producer
got its epoch), the previous owner (a zombie after a long pause) can neither commit a transaction it
had open nor start a new one, and a read_committed consumer and the group's offsets see only the new
owner's transactions."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from faust.types import TP

from devkit.exactness import read_all
from upsell_triggers.runtime.kafka.transactions import PartitionTransactions, PartitionWrites

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


async def make_topics(bs: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names])
    finally:
        await admin.close()


def writes(tag: str, offset: int, events: str) -> dict[int, PartitionWrites]:
    prompt = orjson.dumps({"prompt_id": tag})
    return {0: PartitionWrites([(b"acct", prompt)], [], [(b"acct", tag.encode())], {TP(events, 0): offset})}


async def test_a_fenced_zombie_cannot_commit_and_its_open_transaction_is_aborted(
    kafka_bootstrap: str,
) -> None:
    app = f"fence{uuid.uuid4().hex[:8]}"
    topics = (f"{app}-prompts", f"{app}-dlq", f"{app}-changelog")
    events = f"{app}-events"
    await make_topics(kafka_bootstrap, [*topics, events])

    def worker() -> PartitionTransactions:
        def new_producer(tid: str) -> Any:
            return AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=tid)

        return PartitionTransactions(new_producer, app, app, lambda: topics)

    zombie, successor = worker(), worker()
    try:
        await zombie.assign({0})
        await zombie.commit(writes("zombie-1", 10, events))  # committed while it owned partition 0
        # The zombie pauses in the middle of its next batch: records sent, transaction open.
        producer = zombie.producers[0]
        await producer.begin_transaction()
        await (await producer.send(topics[0], orjson.dumps({"prompt_id": "zombie-open"}), key=b"acct"))
        await successor.assign({0})  # the group gave partition 0 to another worker
        with pytest.raises(KafkaError):
            await producer.commit_transaction()
        # A fresh transaction of the zombie is refused as well (aiokafka's state machine asserts that a
        # fenced producer cannot begin one; the broker would reject its records with the old epoch).
        with pytest.raises((KafkaError, AssertionError)):
            await zombie.commit(writes("zombie-2", 20, events))
        await successor.commit(writes("successor-1", 15, events))

        prompts = [
            orjson.loads(r.value)["prompt_id"]
            for r in await read_all(kafka_bootstrap, topics[0], read_committed=True)
        ]
        assert prompts == ["zombie-1", "successor-1"]
        changelog = [r.value for r in await read_all(kafka_bootstrap, topics[2], read_committed=True)]
        assert changelog == [b"zombie-1", b"successor-1"]
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(app)
        finally:
            await admin.close()
        assert offsets[TopicPartition(events, 0)].offset == 15
    finally:
        await zombie.stop()
        await successor.stop()
