"""Faust's consumer with a batch drain loop for the hot topics.

Faust keeps doing what it is good at: group membership, partition assignment, the commit timer, and
changelog recovery of the table. What it is slow at is per-message delivery: its drain loop wraps every
record in a ConsumerMessage, schedules a callback and waits on it with `wait_first` (measured: a plain
agent moves ~9k events/s on this machine class). Here each fetch's records of the hot topics go to one
sink at once; the states they changed are written when this consumer decides (after the batch when
caught up, at each commit or at the sink's bound while behind), and only then are their offsets acked
the way `Consumer.ack()` does, so Faust's commit (which flushes the producer first) moves the committed
offsets. During recovery, the records of each active changelog partition go to the table's store in
one `apply_changelog_batch` per fetch (Faust's own per-record path took 67-125 s for 1M accounts on
this machine, this one 9 s); records of any other topic (standby changelogs, anything else) keep
Faust's path.

This depends on private members of faust-streaming's Consumer (`_drain_messages`, `_wait_next_records`,
`_read_offset`, `_committed_offset`, `_n_acked`, `_add_gap`, `_buffered_partitions`,
`maybe_wait_for_commit_to_finish`; it overrides `_new_offset` and `_filter_tps_with_pending_acks`
to keep the hot partitions' acked offsets as ranges), of Faust's Recovery (`in_recovery`,
`active_tps`, `tp_to_table`, `active_offsets`, and the changelog queue its loop waits on) and replaces
aiokafka's `PartitionRecords._consumer_record`; pyproject.toml pins faust-streaming==0.15.3, aiokafka
0.14.x, and tests/integration exercise restart, rebalance and exactness against a real broker. See
README, Design.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, cast

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service

from upsell_triggers.runtime.offset_ranges import add_range, committable

log = logging.getLogger("upsell_triggers.consumer")


class BatchSink(Protocol):
    """Where the hot topics' fetches go. State changes are kept in memory and written later, in one go
    for many batches (the write-behind cache of Kafka Streams): while the worker is behind, an account
    that appears in several fetches is serialized and written once, not once per fetch."""

    async def deliver(self, batch: Mapping[TP, Sequence[Any]]) -> None:
        """Applies (tp, records) of every hot partition of one fetch and returns once its outputs are
        acknowledged by the broker. Raising crashes the worker (nothing of the batch is acked)."""

    async def write_state(self) -> None:
        """Writes every state changed since the last call (store, and changelog records queued in the
        producer, which Faust's commit flushes before it commits offsets)."""

    def must_write(self) -> bool:
        """Whether the unwritten states reached their bound (they are held in memory until written)."""


async def run_to_end(aw: Coroutine[Any, Any, None]) -> None:
    """Awaits a batch to its end even when the awaiting task is cancelled meanwhile, then passes the
    cancellation on. Faust cancels the drain loop on stop (Fetcher.on_stop, again every second while it
    runs); cancelled between applying a batch and acking it, the batch was in the account states but
    not among the unwritten batches, so the clean stop's commit left its offsets out (a CI run of
    test_rebalance_commits_what_was_acked) and the states written later said applied while its offsets
    were not acked. The caller holds in_flight, so the stop's commit waits for the batch."""
    task = asyncio.ensure_future(aw)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


class BatchConsumer(faust_aiokafka.Consumer):
    """Reads its hot topics and handler from its BatchTransport."""

    _in_flight: asyncio.Lock | None = None
    # Offsets of batches applied whose states are not written yet: acked (committable) only once they
    # are. (generation, tp, first, last) in the order applied.
    _unwritten: list[tuple[int, TP, int, int]] | None = None
    # Acked offsets of the hot partitions, as ranges (offset_ranges); Faust's per-offset _acked list
    # and set keep serving the other topics.
    _acked_ranges: dict[TP, list[list[int]]] | None = None

    @property
    def unwritten(self) -> list[tuple[int, TP, int, int]]:
        if self._unwritten is None:
            self._unwritten = []
        return self._unwritten

    @property
    def acked_ranges(self) -> dict[TP, list[list[int]]]:
        if self._acked_ranges is None:
            self._acked_ranges = {}
        return self._acked_ranges

    @property
    def in_flight(self) -> asyncio.Lock:
        """Held while a batch is applied, its outputs queued and its offsets acked."""
        if self._in_flight is None:
            self._in_flight = asyncio.Lock()
        return self._in_flight

    async def wait_empty(self) -> None:
        """Faust calls this on rebalance and shutdown before flushing the producer and committing. Our
        batches are not Faust messages, so wait for the one in flight here: otherwise its changelog
        records could reach the broker after the partition's next owner read the changelog, and that
        owner would resume from a state missing events whose offsets we committed (seen in
        tests/integration/test_exactness.py before this)."""
        async with self.in_flight:
            pass
        await super().wait_empty()

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit what was acked before Faust forgets it. Faust's revoke drops the acked offsets of every
        revoked partition (with the eager protocol: all of them, also those this worker keeps) before
        its own wait_empty/flush, and commits only on its timer. A worker that processed a partition to
        its end within one commit interval kept it after a rebalance with its committed offset unmoved
        (-1 if never committed) until new records came: lag tools saw lag on an idle partition and a
        crash reprocessed it (tests/integration/test_exactness.py::test_rebalance_commits_what_was_acked).
        Kafka accepts commits of the current generation until the member rejoins, as in the Java
        client's onPartitionsRevoked. The batch in flight finishes first, and the states not written
        yet are written (the next owner of a partition recovers them from the changelog), so all the
        offsets applied are included."""
        async with self.in_flight:
            try:
                await self._write_state()
                if not self.app.client_only:
                    # A commit already under way (the timer's) may predate the acks just made; Faust
                    # coalesces a commit requested meanwhile into it, so wait for it and commit again.
                    await self.maybe_wait_for_commit_to_finish()
                    await super().commit()
            except Exception as exc:  # the next owner reprocesses; offset dedup makes that exact
                log.warning("write and commit before revoke failed: %r", exc)
            self.unwritten.clear()  # not written: reprocessed by the partition's next owner
        for tp in revoked:  # as Faust drops its acked offsets of revoked partitions
            self.acked_ranges.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Any:
        tps = list(super()._filter_tps_with_pending_acks(topics))
        tps += [
            tp
            for tp, ranges in self.acked_ranges.items()
            if ranges and (topics is None or tp in topics or tp.topic in topics) and tp not in tps
        ]
        return iter(tps)

    def _new_offset(self, tp: TP) -> int | None:
        ranges = self.acked_ranges.get(tp)
        if ranges is None:
            result: int | None = super()._new_offset(tp)
            return result
        return committable(ranges, self._committed_offset[tp])

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        """Faust's commit (on its timer, at stop, on rebalance) commits acked offsets only: write the
        pending states first so that their batches' offsets are acked and committed with them."""
        async with self.in_flight:
            await self._write_state()
        result: bool = await super().commit(*args, **kwargs)
        return result

    async def _write_state(self) -> None:
        """Writes the pending states, then acks the batches they came from (call with in_flight held)."""
        if not self.unwritten:
            return
        transport = cast(BatchTransport, self.transport)
        try:
            await transport.sink.write_state()
        except Exception as exc:
            # As for a failed delivery: nothing unwritten is acked; crash rather than go on (or, raised
            # into the drain loop, stop the fetcher and leave a worker that reads nothing).
            log.exception("writing account states failed; crashing the worker to reprocess")
            self.unwritten.clear()
            await self.app.crash(exc)
            raise
        generation = self.app.consumer_generation_id
        active = self._active_partitions
        for gen, tp, first, last in self.unwritten:
            # Revoked meanwhile, or from before a rebalance: Faust dropped its bookkeeping, and the
            # partition's owner resumes from the committed offset (offset dedup in the state).
            if gen == generation and (active is None or tp in active):
                self._ack_range(tp, first, last)
        self.unwritten.clear()

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                await self.sleep(0)
                if self.should_stop:
                    break
                await self._drain_once()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("broker stopped consumer, shutting down")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            log.exception("drain loop raised: %r", exc)
            raise

    async def _drain_once(self) -> None:
        records, active = await self._wait_next_records(1.0)
        # Stamped after the fetch, as Faust's getmany does (stamping before left recovery stuck).
        generation = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        transport = cast(BatchTransport, self.transport)
        if not self.flow_active:
            await self._rewind({tp: r for tp, r in records.items() if tp.topic in transport.hot_topics})
            return
        hot: dict[TP, Sequence[Any]] = {}
        other: dict[TP, Sequence[Any]] = {}
        buffered = self._buffered_partitions
        paused: dict[TP, Sequence[Any]] = {}
        for tp, recs in records.items():
            if active is not None and tp not in active and tp not in buffered:
                if tp.topic in transport.hot_topics:
                    paused[tp] = recs  # fetched before its partition was paused: read it again later
                continue
            if tp.topic in transport.hot_topics:
                fresh = self._unread(tp, recs)
                if fresh:
                    hot[tp] = fresh
            else:
                other[tp] = recs
        if paused:
            await self._rewind(paused)
        if hot:
            async with self.in_flight:
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    # A rebalance began while this batch waited for the lock (the commit before a
                    # revoke holds it): apply nothing after the revoke started, and read it again.
                    await self._rewind(hot)
                    return
                await run_to_end(self._handle_hot(transport, hot, generation))
        if other:
            await self._deliver_other(other, generation)

    async def _rewind(self, records: Mapping[TP, Sequence[Any]]) -> None:
        """Puts a fetch back: each partition still assigned is sought to its first record, so the
        records are read again. Faust drops such a fetch and seeks to the committed offsets instead;
        when that seek moved nothing (after a rebalance that kept a worker its partitions, Faust's read
        and committed offsets were unset), the next fetch started past the dropped one, nothing
        marked the hole, and the commit went past it: ~600 records per kept partition lost under CPU
        contention (RELIABILITY.md, test_rebalance_two_three_one)."""
        assigned = self.assignment()
        for tp, recs in records.items():
            if not recs or tp not in assigned:
                continue  # revoked: its next owner starts from the committed offset
            try:
                await self.seek(tp, recs[0].offset)
            except Exception as ex:  # unassigned meanwhile: the new assignment positions it
                log.warning(
                    "could not seek %s[%d] back to %d: %r", tp.topic, tp.partition, recs[0].offset, ex
                )

    def _unread(self, tp: TP, recs: Sequence[Any]) -> Sequence[Any]:
        """Drops records below the read offset, with Faust's semantics: after a seek (rebalance,
        recovery) the read offset is the next offset to read, so a record AT it is kept (a strict test
        here once skipped the first record after every seek: caught by test_exactness.py)."""
        r_offset = self._read_offset[tp]
        if r_offset is None or recs[0].offset >= r_offset:
            return recs
        return [r for r in recs if r.offset >= r_offset]

    async def _handle_hot(
        self, transport: BatchTransport, hot: dict[TP, Sequence[Any]], generation: int
    ) -> None:
        for tp in hot:
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        try:
            await transport.sink.deliver(hot)
        except Exception as exc:
            # Outputs could not be delivered (e.g. the producer gave up). The batch's state changes were
            # not written yet and its offsets are not acked: crash the worker so that it (or another)
            # reprocesses from the committed offsets, rather than keep a fetcher-less zombie.
            log.exception("batch handler failed; crashing the worker to reprocess from committed offsets")
            await self.app.crash(exc)
            return
        on_lag = transport.on_lag
        behind = False
        for tp, recs in hot.items():
            lag = max(0, self.highwater(tp) - recs[-1].offset - 1)
            behind = behind or lag > 0
            if on_lag is not None:
                on_lag(tp, lag)
        if self.app.consumer_generation_id != generation:
            # Revoked while outputs were queued: do not ack; the new owner reprocesses from the committed
            # offset and offset-dedup in the account state makes that a no-op for what we applied.
            log.info("rebalance during a batch: not acking it")
            return
        active = self._active_partitions
        unwritten = self.unwritten
        for tp, recs in hot.items():
            if active is not None and tp not in active:
                continue  # revoked while in flight: Faust already dropped its offset bookkeeping
            # One range from the first record to the last: offsets the broker skipped before and
            # between them (transaction markers, compacted records) are done too, or the commit would
            # stall at them (Faust records them as gaps one by one).
            first, prev = recs[0].offset, self._read_offset[tp]
            if prev is not None and first - prev > 1:
                first = prev + 1
            unwritten.append((generation, tp, first, recs[-1].offset))
            self._read_offset[tp] = recs[-1].offset
        # Caught up: write now, so that state is durable within a batch (and the flush never delays a
        # prompt at low load). Behind: keep writing behind until the commit timer or the bound.
        if not behind or transport.sink.must_write():
            try:
                await self._write_state()
            except Exception:  # logged, and the worker is crashing
                return
        commit_every = self._commit_every
        if not behind and commit_every is not None and self._n_acked >= commit_every:
            # Faust's commit every N acked records, kept when caught up. While behind the commit timer
            # commits alone: inline, a commit waits until the producer delivered all it was given (every
            # state just written) and stalled the batch loop after each write at the bound.
            self._n_acked = 0
            await super().commit()

    def _ack_range(self, tp: TP, first: int, last: int) -> None:
        """Consumer.ack() for offsets first..last of one partition (no Message objects)."""
        committed = self._committed_offset[tp]
        if committed is not None:
            first = max(first, committed)
        if first > last:
            return
        add_range(self.acked_ranges.setdefault(tp, []), first, last)
        self._n_acked += last - first + 1

    async def _deliver_other(self, records: Mapping[TP, Sequence[Any]], generation: int) -> None:
        """Records of the topics that are not hot: the active changelog partitions under recovery are
        restored in one batch each, the rest go through Faust's per-message path."""
        tables: Any = self.app.tables  # faust's TableManagerT does not declare its recovery
        recovery = tables.recovery
        restoring = recovery.active_tps if recovery.in_recovery else ()
        slow: list[tuple[TP, Any]] = []
        for tp, recs in records.items():
            table = recovery.tp_to_table.get(tp) if tp in restoring else None
            if table is None:
                slow.extend((tp, r) for r in recs)
            elif not await self._restore(tables, table, tp, recs, generation):
                return  # a rebalance began: Faust seeks again afterwards
        if slow:
            await self._deliver(slow, generation)

    async def _restore(self, tables: Any, table: Any, tp: TP, recs: Sequence[Any], generation: int) -> bool:
        """Applies one fetch of an active changelog partition to the table's store, as Faust's recovery
        loop would record by record: what the store does with each record (a put, a tombstone's delete,
        RocksDB's persisted offset) is its own apply_changelog_batch's. Then the loop's offset for the
        partition moves to the last record, and the loop is woken with that offset (which it skips as
        seen) so that it checks, as after every record, whether recovery is complete.

        Every record of an active partition takes this path while recovery runs (Recovery sets
        in_recovery before it resumes those partitions), so none waits in Faust's buffers to be applied
        after a newer one. Faust's loop also awaits table.on_changelog_event per record: a user hook that
        this table does not set. False if a rebalance began: nothing of the fetch was applied."""
        rebalancing = self.suspend_flow.is_set() or not self.flow_active
        if rebalancing or generation != self.app.consumer_generation_id:
            return False
        recs = self._unread(tp, recs)
        if not recs:
            return True
        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        wake = recs[-1]
        last = wake.offset
        recovery = tables.recovery
        seen = recovery.active_offsets.get(tp)
        if seen is not None and recs[0].offset <= seen:
            recs = [r for r in recs if r.offset > seen]
        step = table.recovery_buffer_size  # as many light events alive at once as Faust buffers
        for i in range(0, len(recs), step):
            table.apply_changelog_batch([_ChangelogEvent(tp, r) for r in recs[i : i + step]])
        if recs:
            recovery.active_offsets[tp] = last
            on_restored = cast(BatchTransport, self.transport).on_restored
            if on_restored is not None:
                on_restored(len(recs))
        self._read_offset[tp] = last
        await tables.changelog_queue.put(_ChangelogEvent(tp, wake))
        return True

    async def _deliver(self, items: list[tuple[TP, Any]], generation: int) -> None:
        """Faust's per-message path (standby changelogs and any other topic that is not hot)."""
        to_message = self._to_message
        callback = self.callback
        for n, (tp, record) in enumerate(items):
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return
            r_offset = self._read_offset[tp]
            if r_offset is not None and record.offset < r_offset:
                continue
            if (
                r_offset is not None
                and record.offset - r_offset > 1
                and self.app.topics.acks_enabled_for(tp.topic)
            ):
                await self._add_gap(tp, r_offset + 1, record.offset)
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if self.suspend_flow.is_set():
                return  # a rebalance began: Faust seeks again afterwards
            # Faust wraps this in wait_first(callback, suspend_flow.wait()): two tasks per record, which
            # made changelog recovery ~2x slower; the callback only queues the record for the recovery.
            await callback(to_message(tp, record))
            self._read_offset[tp] = record.offset
            if n % 100 == 99:
                await asyncio.sleep(0)


class _ChangelogEvent:
    """What a store's apply_changelog_batch and Faust's recovery loop read of a changelog event: key
    and value (raw codecs: the record's bytes) and message.{tp, partition, offset, key, value}. One
    light object per record, instead of Faust's ConsumerMessage, Event and a queue round trip."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: TP, record: Any) -> None:
        self.tp, self.partition = tp, tp.partition
        self.offset, self.key, self.value = record.offset, record.key, record.value

    @property
    def message(self) -> _ChangelogEvent:
        return self


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer

    def __init__(
        self,
        url: Any,
        app: Any,
        hot_topics: frozenset[str],
        sink: BatchSink,
        on_lag: Callable[[TP, int], None] | None = None,
        on_restored: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(url, app)
        self.hot_topics = hot_topics
        self.sink = sink
        self.on_lag = on_lag  # (partition, records behind its high watermark) after each batch
        self.on_restored = on_restored  # (changelog records applied) after each restored fetch


_RAW_RECORD_TOPICS: set[str] = set()


def _serve_raw_records(topics: frozenset[str]) -> None:
    """aiokafka wraps every fetched record in a ConsumerRecord (a dataclass of 11 fields, with sizes and
    a headers tuple computed in Python): 7.7% of the worker's samples, on the consumer thread that
    shares the GIL with the handler. The batch path reads only offset, timestamp, key and value, which
    aiokafka's own (Cython) record object already has, so for the hot topics that object is handed on
    as is. Other topics (the changelog, read by Faust's path) keep ConsumerRecord. Patches
    aiokafka.consumer.fetcher.PartitionRecords (aiokafka pinned to 0.14.x)."""
    from aiokafka.consumer.fetcher import PartitionRecords

    _RAW_RECORD_TOPICS.update(topics)
    if getattr(PartitionRecords, "_upsell_raw", False):
        return
    wrap = PartitionRecords._consumer_record

    def _consumer_record(self: Any, tp: Any, record: Any) -> Any:
        if (
            tp.topic in _RAW_RECORD_TOPICS
            and self._key_deserializer is None
            and self._value_deserializer is None
        ):
            return record
        return wrap(self, tp, record)

    PartitionRecords._consumer_record = _consumer_record
    PartitionRecords._upsell_raw = True


def install(
    app: Any,
    hot_topics: frozenset[str],
    sink: BatchSink,
    on_lag: Callable[[TP, int], None] | None = None,
    on_restored: Callable[[int], None] | None = None,
) -> None:
    """Makes `app` consume `hot_topics` through BatchConsumer (call before the worker starts)."""
    _serve_raw_records(hot_topics)
    app.transport = BatchTransport(app.conf.broker_consumer, app, hot_topics, sink, on_lag, on_restored)
