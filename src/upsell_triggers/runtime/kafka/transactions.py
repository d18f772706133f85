"""Exactly-once: one Kafka transaction per partition per batch, through one transactional producer per
partition this worker owns.

A batch's prompts, dead letters, changelog records and the next offsets of its input records are
committed together (`send_offsets_to_transaction` with the consumer group), or not at all: a
`read_committed` consumer of any output topic, and the group's committed offsets, see all of a
batch's effects or none.

Fencing. aiokafka 0.14 sends TxnOffsetCommit version 0, without the consumer group's generation and
member id (KIP-447), so the broker cannot reject offsets from a worker that lost its partitions.
Zombies are fenced by transactional id instead, as Kafka Streams' first exactly-once mode did: the
transactional id names the application and the partition (`{app_id}-eos-{partition}`), every record
derived from input partition p (events p, feedback p, changelog p; topics are co-partitioned) goes
through that partition's producer, and a worker that is assigned p starts its producer and obtains
its producer epoch before Faust's recovery reads changelog p. That bumps the epoch, aborts the open
transaction of the previous owner, and makes every later send or commit of the previous owner's
producer fail with ProducerFenced. A worker therefore holds one producer (and its connections) per
partition it owns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import TopicPartition
from faust.types import TP

from upsell_triggers.deadletter import DeadLetter
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.runtime.kafka.keyed_batches import send_keyed

log = logging.getLogger("upsell_triggers.transactions")


def transactional_id(app_id: str, partition: int) -> str:
    return f"{app_id}-eos-{partition}"


@dataclass(slots=True)
class PartitionWrites:
    """What one partition's transaction carries."""

    prompts: list[tuple[bytes, bytes]]
    dead_letters: list[DeadLetter]
    changelog: list[tuple[bytes, bytes | None]]
    offsets: dict[TP, int]  # input partition -> the next offset to read
    leads: list[tuple[bytes, bytes]] = field(default_factory=list)


class PartitionTransactions:
    """The transactional producers of the partitions this worker owns (by partition number)."""

    def __init__(
        self,
        new_producer: Callable[[str], Any],
        app_id: str,
        group_id: str,
        topics: Callable[[], tuple[str, str, str]],
        leads_topic: str = "expansion-leads",
    ) -> None:
        self.new_producer = new_producer  # transactional id -> a new, unstarted aiokafka producer
        self.app_id, self.group_id = app_id, group_id
        self.topics = topics  # (prompts, dead letters, changelog)
        self.leads_topic = leads_topic
        self.producers: dict[int, Any] = {}

    async def assign(self, partitions: Iterable[int]) -> None:
        """The partitions owned from now on (each assignment): every one gets a new producer, started,
        with its epoch (fencing any other holder) before this returns; the previous producers stop.
        Not only the new partitions: a worker that was paused past its session and rejoined keeps
        partitions that another worker owned meanwhile, and its producers of them are fenced."""
        for p in sorted(self.producers):
            await self._stop(p)
        wanted = sorted(set(partitions))
        if wanted:
            await asyncio.gather(*(self._start(p) for p in wanted))
            log.info("transactional producers ready", extra={"fields": {"partitions": wanted}})

    async def _start(self, partition: int) -> None:
        producer = self.new_producer(transactional_id(self.app_id, partition))
        await producer.start()
        try:
            await compat.wait_for_producer_id(producer)
        except BaseException:
            await producer.stop()
            raise
        self.producers[partition] = producer

    async def _stop(self, partition: int) -> None:
        producer = self.producers.pop(partition)
        try:
            await producer.stop()
        except Exception as exc:  # fenced or cut off: nothing of it is needed any more
            log.warning("stopping the transactional producer of partition %d: %r", partition, exc)

    async def stop(self) -> None:
        for p in list(self.producers):
            await self._stop(p)

    async def commit(
        self,
        writes: Mapping[int, PartitionWrites],
        phases: dict[str, float] | None = None,
        on_ending: Callable[[], None] | None = None,
    ) -> None:
        """One transaction per partition, all under way at once; returns when every one committed.
        Raises if one failed (fenced, timed out, cut off): the worker must then stop, since its memory
        holds the effects of a transaction that may not have committed. `phases` (batch timings), if
        given, receives the slowest partition's seconds in each phase of its transaction; `on_ending`
        is called as each partition's transaction sends EndTxn (fresh_take)."""
        results = await asyncio.gather(
            *(self._commit_one(p, w, phases, on_ending) for p, w in writes.items()), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _commit_one(
        self,
        partition: int,
        w: PartitionWrites,
        phases: dict[str, float] | None,
        on_ending: Callable[[], None] | None,
    ) -> None:
        producer = self.producers.get(partition)
        if producer is None:
            raise RuntimeError(f"partition {partition} has no transactional producer: not assigned here")
        prompts_topic, dlq_topic, changelog_topic = self.topics()
        # On an error the transaction stays open: the worker stops, and the partition's next producer
        # (this worker's after a restart, or another's) aborts it when it gets its epoch.
        lap = _Laps(phases) if phases is not None else None
        await producer.begin_transaction()
        sent = await send_keyed(producer, prompts_topic, w.prompts)
        sent += await send_keyed(producer, self.leads_topic, w.leads)
        sent += [
            await producer.send(dlq_topic, d.raw, key=d.key, headers=d.kafka_headers())
            for d in w.dead_letters
        ]
        sent += await _send_changelog(producer, changelog_topic, partition, w.changelog)
        # aiokafka's commit does not wait for records still queued: every one must be acknowledged
        # before the transaction ends, or it would land outside it.
        if sent:
            await asyncio.gather(*sent)
        if lap is not None:
            lap("txn_send")
        if w.offsets:
            offsets = {TopicPartition(tp.topic, tp.partition): o for tp, o in w.offsets.items()}
            await producer.send_offsets_to_transaction(offsets, self.group_id)
        if lap is not None:
            lap("txn_offsets")
        if on_ending is not None:
            on_ending()
        await producer.commit_transaction()
        if lap is not None:
            lap("txn_end", last=True)


class _Laps:
    """One transaction's phases, each kept as the slowest of the batch's partitions; and the whole
    transaction's time as the slowest and the fastest partition's (`txn_slowest`, `txn_fastest`): the
    batch waits for its slowest partition, and the gap is what that costs it."""

    __slots__ = ("_first", "_last", "phases")

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self._first = self._last = time.perf_counter()

    def __call__(self, phase: str, last: bool = False) -> None:
        now = time.perf_counter()
        phases = self.phases
        phases[phase] = max(phases.get(phase, 0.0), now - self._last)
        self._last = now
        if last:
            took = now - self._first
            phases["txn_slowest"] = max(phases.get("txn_slowest", 0.0), took)
            phases["txn_fastest"] = min(phases.get("txn_fastest", took), took)


async def _send_changelog(
    producer: Any, topic: str, partition: int, recs: Sequence[tuple[bytes, bytes | None]]
) -> list[Any]:
    """Account states through aiokafka's batch builder (see changelog_writer); the delivery futures."""
    futures = []
    batch = producer.create_batch()
    n = 0
    for key, value in recs:
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch, n = producer.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None)
        n += 1
    if n:
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
