"""Fencing by consumer-group generation on the real broker (KIP-447: TxnOffsetCommit version 3 and
OffsetFetch with require_stable, runtime/kafka/kip447.py), with real group members:

- a worker that lost its partition (a zombie after a long pause) has its next transaction's offsets
  refused, the transaction aborted, and none of its records reach a read_committed reader; the new
  owner's transactions do;
- a transaction whose offsets the group accepted just before it moved on holds the new owner at its
  assignment until it ends, and what it committed is what the new owner starts from; so does one
  whose changelog records are on the log, its offsets not sent yet;
- offsets of an older generation, or of no membership, are refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP

from devkit.exactness import read_all
from tests.polling import until
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.runtime.kafka.transactions import BatchTransactions, PartitionWrites

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


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


class Member:
    """A consumer in the group and the worker's transactions fenced by its membership."""

    def __init__(self, bs: str, app: str, topics: tuple[str, str, str], events: str) -> None:
        self.consumer = AIOKafkaConsumer(events, bootstrap_servers=bs, group_id=app, enable_auto_commit=False)
        self.membership: Callable[[], tuple[int, str, str | None]] = lambda: compat.aiokafka_membership(
            self.consumer
        )

        def new_producer(tid: str, membership: compat.GroupMetadata) -> Any:
            producer = AIOKafkaProducer(
                bootstrap_servers=bs, transactional_id=tid, transaction_timeout_ms=10_000
            )
            compat.commit_offsets_with_group_metadata(producer, membership)  # the batch's membership
            return producer

        self.txns = BatchTransactions(new_producer, app, app, lambda: topics)
        self.events, self.group = events, app

    async def join(self) -> dict[TP, int | None]:
        await self.enter()
        return await self.txns.assign({TP(self.events, 0)})

    async def enter(self) -> None:
        """Joins the group, until it is assigned the partition."""
        await self.consumer.start()
        assert await until(self.consumer.assignment, 60, every=0.1), "never assigned"

    async def commit(self, tag: str, offset: int) -> None:
        """A batch admitted with the membership this member holds now."""
        await self.txns.commit(writes(tag, offset, self.events), self.membership())

    async def stop(self) -> None:
        await self.txns.stop()
        await self.consumer.stop()


async def committed_offset(bs: str, group: str, events: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return int(offsets[TopicPartition(events, 0)].offset)


async def committed_prompts(bs: str, topic: str) -> list[str]:
    """The prompt ids a read_committed consumer of `topic` receives, in order."""
    return [orjson.loads(r.value)["prompt_id"] for r in await read_all(bs, topic, read_committed=True)]


async def take_over_held_by_open_transaction(
    previous: Member, successor: Member, topics: tuple[str, str, str], record: bytes, offset: int | None
) -> tuple[Any, asyncio.Future[dict[TP, int | None]]]:
    """`previous` opens a transaction with a changelog record (and, with `offset`, its input offset,
    which the group accepts), then leaves the group; `successor` joins and starts its take-over, which
    must still be waiting 2 s later. Returns the open transaction's producer and the take-over."""
    await previous.join()
    previous.txns.membership = previous.membership()
    producer = previous.txns.producer
    await producer.begin_transaction()
    await (await producer.send(topics[2], record, key=b"acct", partition=0))
    if offset is not None:
        await producer.send_offsets_to_transaction(
            {TopicPartition(previous.events, 0): offset}, previous.group
        )
    await previous.consumer.stop()  # the group moves on before EndTxn
    await successor.enter()  # in the group and assigned: now the take-over waits
    events = successor.events
    taking_over = asyncio.ensure_future(successor.txns.assign({TP(events, 0)}, {TP(topics[2], 0)}))
    await asyncio.sleep(2.0)
    assert not taking_over.done(), "the new owner must wait for the open transaction"
    return producer, taking_over


async def setup(bs: str) -> tuple[str, tuple[str, str, str], str]:
    app = f"fence{uuid.uuid4().hex[:8]}"
    topics = (f"{app}-prompts", f"{app}-dlq", f"{app}-changelog")
    events = f"{app}-events"
    await make_topics(bs, [*topics, events])
    return app, topics, events


async def test_a_zombie_is_refused_by_generation_and_its_transaction_aborted(kafka_bootstrap: str) -> None:
    app, topics, events = await setup(kafka_bootstrap)
    zombie = Member(kafka_bootstrap, app, topics, events)
    successor = Member(kafka_bootstrap, app, topics, events)
    try:
        assert await zombie.join() == {TP(events, 0): None}
        await zombie.commit("zombie-1", 10)  # committed while it owned partition 0
        # The zombie is paused past its session: the group removes it and gives partition 0 to another
        # member. (Leaving stands in for the removal; the zombie still holds its old membership.)
        kept = zombie.membership()
        zombie.membership = lambda: kept
        await zombie.consumer.stop()
        assert await successor.join() == {TP(events, 0): 10}
        assert successor.membership()[0] > kept[0]
        # It resumes and finishes its batch: the offsets are refused, the transaction aborted.
        with pytest.raises(compat.GroupMovedOn, match="UNKNOWN_MEMBER_ID"):
            await zombie.commit("zombie-2", 20)
        await successor.commit("successor-1", 15)

        assert await committed_prompts(kafka_bootstrap, topics[0]) == ["zombie-1", "successor-1"]
        changelog = [r.value for r in await read_all(kafka_bootstrap, topics[2], read_committed=True)]
        assert changelog == [b"zombie-1", b"successor-1"]
        assert await committed_offset(kafka_bootstrap, app, events) == 15
        # The refused transaction's records reached the log, and read_committed readers skip them
        # (read_all reads to the last stable offset: had the transaction stayed open until its
        # timeout, the reads above would have stopped before the successor's records).
        uncommitted = [r.value for r in await read_all(kafka_bootstrap, topics[2])]
        assert uncommitted == [b"zombie-1", b"zombie-2", b"successor-1"]
    finally:
        await zombie.txns.stop()
        await successor.stop()


async def test_a_transaction_with_accepted_offsets_holds_the_next_owner_until_it_ends(
    kafka_bootstrap: str,
) -> None:
    app, topics, events = await setup(kafka_bootstrap)
    previous = Member(kafka_bootstrap, app, topics, events)
    successor = Member(kafka_bootstrap, app, topics, events)
    try:
        producer, taking_over = await take_over_held_by_open_transaction(
            previous, successor, topics, b"last", 12
        )
        await producer.commit_transaction()
        assert await asyncio.wait_for(taking_over, 30) == {TP(events, 0): 12}
        changelog = [r.value for r in await read_all(kafka_bootstrap, topics[2], read_committed=True)]
        assert changelog == [b"last"]
    finally:
        await previous.txns.stop()
        await successor.stop()


async def test_an_open_transaction_on_the_changelog_holds_the_take_over_until_it_ends(
    kafka_bootstrap: str,
) -> None:
    """Its offsets not sent yet, a transaction's changelog records hold the next owner too: recovery
    reads to the last stable offset, which must have reached the log's end (last_stable)."""
    app, topics, events = await setup(kafka_bootstrap)
    previous = Member(kafka_bootstrap, app, topics, events)
    successor = Member(kafka_bootstrap, app, topics, events)
    try:
        producer, taking_over = await take_over_held_by_open_transaction(
            previous, successor, topics, b"open", None
        )
        await producer.abort_transaction()
        assert await asyncio.wait_for(taking_over, 30) == {TP(events, 0): None}
    finally:
        await previous.txns.stop()
        await successor.stop()


async def test_offsets_of_an_older_generation_are_refused(kafka_bootstrap: str) -> None:
    app, topics, events = await setup(kafka_bootstrap)
    member = Member(kafka_bootstrap, app, topics, events)
    try:
        await member.join()
        generation, member_id, instance = member.membership()
        with pytest.raises(compat.GroupMovedOn, match="ILLEGAL_GENERATION"):
            await member.txns.commit(writes("old", 3, events), (generation - 1, member_id, instance))
        prompts = await read_all(kafka_bootstrap, topics[0], read_committed=True)
        assert prompts == []
    finally:
        await member.stop()


async def test_a_worker_without_membership_commits_nothing(kafka_bootstrap: str) -> None:
    """Once aiokafka learns that the group removed it, it resets its generation to -1, and the broker
    commits transactional offsets of generation -1 without any check: the worker never sends them."""
    app, topics, events = await setup(kafka_bootstrap)
    worker = Member(kafka_bootstrap, app, topics, events)
    try:
        await worker.join()
        await worker.commit("first", 5)
        await worker.consumer.stop()
        with pytest.raises(compat.GroupMovedOn, match="not a member"):
            await worker.txns.commit(writes("second", 9, events), (-1, "", None))
        assert await committed_prompts(kafka_bootstrap, topics[0]) == ["first"]
        assert await committed_offset(kafka_bootstrap, app, events) == 5
    finally:
        await worker.txns.stop()
