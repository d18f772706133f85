"""Exactly-once: one Kafka transaction per batch, through one transactional producer per worker.

A batch's prompts, leads, dead letters, changelog records and the next offsets of its input records,
of every partition it touched, are committed together (`send_offsets_to_transaction` with the
consumer group), or not at all: a `read_committed` consumer of any output topic, and the group's
committed offsets, see all of a batch's effects or none.

Fencing follows KIP-447, as Kafka Streams' exactly-once v2 does, instead of one producer per
partition: the worker's producer sends its offsets with TxnOffsetCommit version 3, which carries the
consumer group's generation and member id (kafka.kip447, installed by
`compat.commit_offsets_with_group_metadata`). A worker that lost its partitions (paused past its
session, or a rebalance it missed) has its offsets refused, its transaction aborted and stops; none
of that transaction's records reach a `read_committed` reader. A transaction whose offsets the
coordinator accepted just before the group moved on can still commit; so a worker that is assigned
partitions first waits until no transaction holds pending offsets of them (OffsetFetch with
`require_stable`) and only then reads the committed offsets and lets Faust's recovery read the
changelog: whatever such a transaction committed is part of what it starts from.

The same take-over also waits until every transaction that wrote to its changelog partitions has
ended (last_stable): on a cluster the changelog's commit marker can land after the offsets' one.

A batch's offsets carry the membership it was admitted in (batch_consumer reads it once, under the
batch lock, and drops a batch whose fetch is of another generation), not what the consumer holds
when they are sent: aiokafka takes a new generation from the JoinGroup answer and resets it to -1
when the group removed the worker, and the broker commits transactional offsets of generation -1
without a check.

The transactional id is new at each start (`{app_id}-eos-<random>`): two live workers never share
one, so neither fences the other by id. The transaction of a worker that died mid-batch stays open
until the broker aborts it, at its first check after the transaction timeout (`TRANSACTION_TIMEOUT_S`,
at most the session timeout; the broker checks every 10 s by default): 10 to 20 s after it began with
the defaults, about when the group reassigns the dead worker's partitions (15 s session). The new
owner waits for it, within a bound below the session timeout (aiokafka sends no heartbeat during the
assignment callback); past the bound it stops, and the restart waits again. One producer, one
transaction and one chain of coordinator round trips per batch, where a producer per partition made
one chain per partition touched: bench/ANALYSIS.md measures the difference.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import TopicPartition
from faust.types import TP

from upsell_triggers.deadletter import DeadLetter
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.runtime.kafka.keyed_batches import send_keyed
from upsell_triggers.runtime.kafka.kip447 import stable_committed_offsets
from upsell_triggers.runtime.kafka.last_stable import wait_settled

log = logging.getLogger("upsell_triggers.transactions")

TRANSACTION_TIMEOUT_S = 10.0  # Kafka Streams' exactly-once default; at most the session timeout
ABORT_WAIT_S = 5.0  # how long a failed batch's worker tries to abort its transaction before it stops


def transactional_id(app_id: str) -> str:
    """This process's transactional id: unique among live workers, several on one host included."""
    return f"{app_id}-eos-{uuid.uuid4().hex[:16]}"


# (started producer, group id, topic -> partitions, how long to wait) -> (topic, partition) -> offset
StableOffsets = Callable[
    [Any, str, dict[str, list[int]], float], Awaitable[dict[tuple[str, int], int | None]]
]
# (started producer, changelog partitions, how long to wait) -> once their transactions ended
Settled = Callable[[Any, list[TopicPartition], float], Awaitable[None]]


async def _stable_offsets(
    producer: Any, group_id: str, partitions: dict[str, list[int]], wait_s: float
) -> dict[tuple[str, int], int | None]:
    """Through the producer's own client, which runs on the worker's loop (Faust's consumer runs on
    another thread's)."""
    return await stable_committed_offsets(producer.client, group_id, partitions, wait_s)


async def _settled(producer: Any, partitions: list[TopicPartition], wait_s: float) -> None:
    await wait_settled(producer.client, partitions, wait_s)


@dataclass(slots=True)
class PartitionWrites:
    """What one partition contributes to a batch's transaction."""

    prompts: list[tuple[bytes, bytes]]
    dead_letters: list[DeadLetter]
    changelog: list[tuple[bytes, bytes | None]]
    offsets: dict[TP, int]  # input partition -> the next offset to read
    leads: list[tuple[bytes, bytes]] = field(default_factory=list)


class BatchTransactions:
    """The worker's transactional producer: one transaction per batch, fenced by group generation."""

    def __init__(
        self,
        new_producer: Callable[[str, compat.GroupMetadata], Any],
        app_id: str,
        group_id: str,
        topics: Callable[[], tuple[str, str, str]],
        leads_topic: str = "expansion-leads",
        stable_offsets: StableOffsets | None = None,
        settled: Settled | None = None,
        stable_wait_s: float = TRANSACTION_TIMEOUT_S,
    ) -> None:
        # (transactional id, membership) -> a new, unstarted aiokafka producer that sends its
        # offsets with the group membership `membership()` gives (compat.transactional_producer)
        self.new_producer = new_producer
        self.transactional_id = transactional_id(app_id)
        self.group_id = group_id
        self.topics = topics  # (prompts, dead letters, changelog)
        self.leads_topic = leads_topic
        self.stable_offsets = stable_offsets or _stable_offsets
        self.settled = settled or _settled
        self.stable_wait_s = stable_wait_s
        self.producer: Any = None
        self.owned: frozenset[TP] = frozenset()  # the hot input partitions of the last assignment
        # The group membership the batch under way was admitted in (batch_consumer): its offsets are
        # sent with exactly this, read once, not with what the consumer holds when they are sent.
        self.membership: tuple[int, str, str | None] = (-1, "", None)

    def _membership(self) -> tuple[int, str, str | None]:
        return self.membership

    def _new_producer(self) -> Any:
        return self.new_producer(self.transactional_id, self._membership)

    async def assign(self, partitions: Iterable[TP], changelog: Iterable[TP] = ()) -> dict[TP, int | None]:
        """At each assignment, before Faust's recovery reads the changelog: the producer is started
        once; this waits until no transaction of this worker or of a previous owner holds pending
        offsets of `partitions` (the hot input partitions now owned), then until every transaction
        that wrote to the active `changelog` partitions assigned has ended (last_stable), and returns
        the committed offsets of `partitions` (None: nothing committed). Both waits together take at
        most `stable_wait_s`, then raise: aiokafka sends no heartbeat while the assignment callback
        runs, so a wait longer than the session timeout would have the group remove this worker."""
        if self.producer is None:
            producer = self._new_producer()
            await producer.start()
            try:
                await compat.wait_for_producer_id(producer)
            except BaseException:
                await producer.stop()
                raise
            self.producer = producer
            log.info("transactional producer ready", extra={"fields": {"id": self.transactional_id}})
        self.owned = frozenset(partitions)
        by_topic: dict[str, list[int]] = {}
        for tp in self.owned:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        found = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stable_wait_s  # both waits: heartbeats stop while they run
        if by_topic:
            found = await self.stable_offsets(self.producer, self.group_id, by_topic, self.stable_wait_s)
        changelog_topic = self.topics()[2]
        active = {tp.partition for tp in self.owned}  # standby partitions are waited for once active
        logs = sorted(
            TopicPartition(tp.topic, tp.partition)
            for tp in changelog
            if tp.topic == changelog_topic and tp.partition in active
        )
        if logs:
            await self.settled(self.producer, logs, max(0.0, deadline - loop.time()))
        return {TP(topic, p): offset for (topic, p), offset in found.items()}

    async def stop(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:  # fenced or cut off: nothing of it is needed any more
                log.warning("stopping the transactional producer: %r", exc)

    async def commit(
        self,
        writes: Mapping[int, PartitionWrites],
        membership: tuple[int, str, str | None],
        phases: dict[str, float] | None = None,
        on_ending: Callable[[], None] | None = None,
    ) -> None:
        """One transaction with every partition's writes; returns once it committed. Raises if it
        failed (refused offsets, fenced, timed out, cut off) after asking the broker to abort it: the
        worker must then stop, since its memory holds the effects of a transaction that did not
        commit. `membership`: the group generation, member id and instance id the batch was admitted
        in, which its offsets carry. `phases` (batch timings), if given, receives the seconds of each
        phase; `on_ending` is called as the transaction sends EndTxn (fresh_take)."""
        producer = self.producer
        if producer is None:
            raise RuntimeError("no transactional producer: no partition was assigned here")
        for w in writes.values():
            for tp in w.offsets:
                if tp not in self.owned:  # the batch loop drops such batches first; never commit one
                    raise RuntimeError(f"{tp.topic}[{tp.partition}] is not assigned here")
        self.membership = membership
        try:
            await self._commit(producer, writes, phases, on_ending)
        except Exception:
            await self._abort(producer)
            raise

    async def _commit(
        self,
        producer: Any,
        writes: Mapping[int, PartitionWrites],
        phases: dict[str, float] | None,
        on_ending: Callable[[], None] | None,
    ) -> None:
        prompts_topic, dlq_topic, changelog_topic = self.topics()
        lap = _Laps(phases) if phases is not None else None
        await producer.begin_transaction()
        sent: list[Any] = []
        offsets: dict[TopicPartition, int] = {}
        for partition, w in writes.items():
            sent += await send_keyed(producer, prompts_topic, w.prompts)
            sent += await send_keyed(producer, self.leads_topic, w.leads)
            sent += [
                await producer.send(dlq_topic, d.raw, key=d.key, headers=d.kafka_headers())
                for d in w.dead_letters
            ]
            sent += await _send_changelog(producer, changelog_topic, partition, w.changelog)
            for tp, o in w.offsets.items():
                offsets[TopicPartition(tp.topic, tp.partition)] = o
        # aiokafka's commit does not wait for records still queued: every one must be acknowledged
        # before the transaction ends, or it would land outside it. The offsets go after them: sent
        # alongside, a 3.x broker answered Produce with NOT_ENOUGH_REPLICAS while it raced
        # AddOffsetsToTxn, and the producer retried 100 ms later (docs/operations.md).
        if sent:
            await asyncio.gather(*sent)
        if lap is not None:
            lap("txn_send")
        if offsets:
            await producer.send_offsets_to_transaction(offsets, self.group_id)
        if lap is not None:
            lap("txn_offsets")
        if on_ending is not None:
            on_ending()
        await producer.commit_transaction()
        if lap is not None:
            lap("txn_end", last=True)

    async def _abort(self, producer: Any) -> None:
        """After a failed commit: stop the producer and abort its open transaction on the broker, by
        starting a producer with the same transactional id (InitProducerId aborts it and fences the
        old one). Without this the transaction would hold back every read_committed reader of the
        partitions it wrote, the next owner's changelog recovery included, until its timeout.
        aiokafka's abort_transaction sends no EndTxn once a transaction failed. Best effort and
        bounded (each step ABORT_WAIT_S; a producer's stop waits for its queued batches, which a
        transactional producer retries without end): the transaction times out anyway."""
        self.producer = None
        try:
            await asyncio.wait_for(producer.stop(), ABORT_WAIT_S)
        except Exception as exc:
            log.warning("stopping the failed transactional producer: %r", exc)
        try:
            await asyncio.wait_for(self._start_stop(self._new_producer()), ABORT_WAIT_S)
        except Exception as exc:
            log.warning("aborting the failed transaction: %r", exc)

    @staticmethod
    async def _start_stop(producer: Any) -> None:
        try:
            await producer.start()
            await compat.wait_for_producer_id(producer)
            log.info("aborted the failed transaction")
        finally:
            await producer.stop()


class _Laps:
    """The batch transaction's phases, and its whole time (`txn_slowest`, `txn_fastest`: the names
    the batch timings have kept since a batch had one transaction per partition)."""

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
