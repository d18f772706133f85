"""Faust's consumer with a batch drain loop for the hot topics: drain, acks and write-behind.

Faust keeps doing what it is good at: group membership, partition assignment, the commit timer, and
changelog recovery of the table. What it is slow at is per-message delivery: its drain loop wraps every
record in a ConsumerMessage, schedules a callback and waits on it with `wait_first` (measured: a plain
agent moves ~9k events/s on this machine class). Here each fetch's records of the hot topics go to one
sink at once; the states they changed are written when this consumer decides (caught up, once the
batch's outputs are acknowledged and at most every WRITE_INTERVAL_S; while behind, at each commit or at
the sink's bound), and only then are their offsets acked the way `Consumer.ack()` does, so Faust's
commit (which flushes the producer first) moves the committed offsets. Records of the other topics go
to changelog_restore; the hot topics' records reach this module as aiokafka's own record objects
(raw_records).

Faust's private members (its offset bookkeeping, the hooks overridden here) are reached through
kafka.compat.ConsumerAdapter, which checks them at start-up. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from faust.types import TP

from upsell_triggers.runtime import fresh_take
from upsell_triggers.runtime.batch_timings import BatchTimings
from upsell_triggers.runtime.changelog_restore import unread
from upsell_triggers.runtime.committed_floor import CommittedFloor
from upsell_triggers.runtime.kafka.compat import ConsumerAdapter
from upsell_triggers.runtime.kafka.fetch_wait import FETCH_MAX_WAIT_MS
from upsell_triggers.runtime.offset_ranges import AckedRanges, committable
from upsell_triggers.runtime.run_to_end import run_to_end
from upsell_triggers.runtime.sink import BatchSink

if TYPE_CHECKING:
    from upsell_triggers.runtime.kafka.transport import BatchTransport

log = logging.getLogger("upsell_triggers.consumer")

# Caught up, states are written at most this often. Writing after every batch made one changelog
# produce request per batch: at 1k events/s a batch holds two or three records, and those requests
# (and the broker's work on them) were a fifth of the worker's CPU. The price is durability: a crash
# re-emits the prompts of up to this much more of the events (the same ids and content).
WRITE_INTERVAL_S = 0.05


class BatchConsumer(ConsumerAdapter):
    """Reads its hot topics and handler from its BatchTransport."""

    fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # see kafka.fetch_wait

    _in_flight: asyncio.Lock | None = None
    _hot_acked: AckedRanges | None = None  # not Faust's _acked, which serves the other topics
    _sought: set[TP] | None = None
    _caught_up = True  # the last batch left no records behind its partitions' high watermarks
    _background_commit: asyncio.Future[None] | None = None
    _writer: asyncio.Future[None] | None = None  # writes the states once their outputs are acknowledged
    _written_at = 0.0  # time.monotonic() of the last write that had states pending
    _floor: CommittedFloor | None = None
    _early: asyncio.Future[tuple[Any, int]] | None = None  # exactly_once: the next batch's early take

    @property
    def committed_floor(self) -> CommittedFloor:
        """exactly_once: per hot partition, the offset below which every record is committed."""
        if self._floor is None:
            self._floor = CommittedFloor()
        return self._floor

    @property
    def sought(self) -> set[TP]:
        """Partitions sought by seek_wait (Faust's recovery start) since the last assignment."""
        if self._sought is None:
            self._sought = set()
        return self._sought

    @property
    def sink(self) -> BatchSink:
        return cast("BatchTransport", self.transport).sink

    @property
    def acked_ranges(self) -> AckedRanges:
        if self._hot_acked is None:
            self._hot_acked = AckedRanges()
        return self._hot_acked

    @property
    def in_flight(self) -> asyncio.Lock:
        """Held while a batch is applied, its outputs queued and its offsets acked."""
        if self._in_flight is None:
            self._in_flight = asyncio.Lock()
        return self._in_flight

    async def wait_empty(self) -> None:
        """Faust calls this on rebalance and shutdown before flushing the producer and committing. Our
        batches are not Faust messages, so wait for the one in flight here: otherwise its changelog
        records could reach the broker after the partition's next owner read the changelog
        (RELIABILITY.md #2)."""
        async with self.in_flight:
            pass
        await super().wait_empty()

    async def on_stop(self) -> None:
        """Faust's stop (it waits for the batch in flight), then the transactional producers close."""
        if self._writer is not None:
            self._writer.cancel()  # Faust's final commit writes the states
        if self._early is not None:
            self._early.cancel()  # taken, not applied: read again from the committed offsets
        if self._background_commit is not None:
            with contextlib.suppress(Exception):
                await self._background_commit  # before Faust's own, final commit
        await super().on_stop()
        transactions = self.sink.transactions
        if transactions is not None:
            async with self.in_flight:
                await transactions.stop()

    @property
    def timings(self) -> BatchTimings | None:
        return cast("BatchTransport", self.transport).timings

    @property
    def read_committed(self) -> bool:
        """exactly_once: the changelog (recovery), events and feedback are read committed only."""
        return self.sink.transactions is not None

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        timings = self.timings
        if timings is not None:
            timings.event("assigned", generation=generation_id, partitions=len(assigned))
        transactions = self.sink.transactions
        self.sought.clear()
        if transactions is not None:
            # Before the committed offsets and Faust's recovery's changelog are read: until no
            # transaction of a previous owner holds pending offsets of them (kafka.transactions).
            hot = cast("BatchTransport", self.transport).hot_topics
            try:
                stable = await transactions.assign({tp for tp in assigned if tp.topic in hot}, assigned)
            except Exception as exc:
                # Faust's recovery never starts after this: stop rather than hold the partitions idle.
                log.error("exactly_once: the assignment could not be taken over: %s", exc)
                await self.app.crash(exc)
                return
            self.committed_floor.raise_to(stable)
            await self._start_at_committed({tp for tp in assigned if tp.topic in hot})
        await super().on_partitions_assigned(assigned, generation_id)

    async def _start_at_committed(self, hot: set[TP]) -> None:
        """exactly_once, once no transaction holds pending offsets of the hot partitions (their stable
        committed offsets are the floor already, committed_floor): the partitions are sought to their
        committed offsets before Faust's recovery resumes them (aiokafka's own positions were read
        before the wait). Faust's recovery seeks them again later; records below the floor are dropped
        whatever the position."""
        if not hot:
            return  # (aiokafka's seek_to_committed refuses an empty assignment)
        try:
            committed = await self.seek_to_committed()
        except Exception as exc:  # e.g. a new rebalance began: Faust's assignment must still run
            log.warning("exactly_once: seeking to the committed offsets failed: %r", exc)
            return
        offsets = {tp: committed.get(tp) for tp in hot}
        self.committed_floor.raise_to(offsets)
        log.info(
            "exactly_once: input partitions start at their committed offsets",
            extra={
                "fields": {"offsets": {f"{tp.topic}[{tp.partition}]": o for tp, o in sorted(offsets.items())}}
            },
        )

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Commit what was acked before Faust forgets it. Faust's revoke drops the acked offsets of every
        revoked partition (with the eager protocol: all of them, also those this worker keeps) before
        its own wait_empty/flush, and commits only on its timer, which would leave a kept partition's
        processed records uncommitted (RELIABILITY.md #7). Kafka accepts commits of the current
        generation until the member rejoins, as in the Java client's onPartitionsRevoked. The batch in
        flight finishes first, and the states not written yet are written (the next owner of a
        partition recovers them from the changelog), so all the offsets applied are included."""
        async with self.in_flight:
            try:
                await self._write_state()
                if not self.app.client_only:
                    # A commit already under way (the timer's) may predate the acks just made; Faust
                    # coalesces a commit requested meanwhile into it, so wait for it and commit again.
                    await self.wait_for_commit_in_progress()
                    await super().commit()
            except Exception as exc:  # the next owner reprocesses; offset dedup makes that exact
                log.warning("write and commit before revoke failed: %r", exc)
            self.sink.drop_held()  # not written: reprocessed by the partition's next owner
        for tp in revoked:  # as Faust drops its acked offsets of revoked partitions
            self.acked_ranges.forget(tp)
        await super().on_partitions_revoked(revoked)

    def tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        tps = list(super().tps_with_pending_acks(topics))
        return iter(tps + [tp for tp in self.acked_ranges.pending(topics) if tp not in tps])

    def new_offset(self, tp: TP) -> int | None:
        ranges = self.acked_ranges.ranges.get(tp)
        if ranges is None:
            return super().new_offset(tp)
        return committable(ranges, self.committed_offsets[tp])

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        """Faust's commit (on its timer, at stop, on rebalance) commits acked offsets only: write the
        pending states first so that their batches' offsets are acked and committed with them."""
        timings = self.timings
        t0 = time.perf_counter()
        async with self.in_flight:
            t1 = time.perf_counter()
            await self._write_state()
        t2 = time.perf_counter()
        result: bool = await super().commit(*args, **kwargs)
        if timings is not None:
            ms = {"lock_ms": t1 - t0, "write_ms": t2 - t1, "commit_ms": time.perf_counter() - t2}
            timings.event("commit", **{k: round(1000 * v, 3) for k, v in ms.items()})
        return result

    def _until_write_due(self) -> float:
        """Seconds until the caught-up write may run (WRITE_INTERVAL_S after the last one); <= 0: now."""
        return self._written_at + WRITE_INTERVAL_S - time.monotonic()

    async def _write_state(self) -> None:
        """Writes the pending states, then acks the batches they came from (call with in_flight held)."""
        if self.sink.held:  # a commit with nothing pending does not push the next write back
            self._written_at = time.monotonic()
        try:
            await self.sink.write(self._ack_if_current)
        except Exception as exc:
            # As for a failed delivery: nothing unwritten is acked; crash rather than go on (or, raised
            # into the drain loop, stop the fetcher and leave a worker that reads nothing).
            log.exception("writing account states failed; crashing the worker to reprocess")
            await self.app.crash(exc)
            raise

    async def _write_state_in_loop(self, timings: BatchTimings | None) -> bool:
        """`_write_state` from the batch loop, lapped as the batch's `write` phase; False when it failed
        (logged, and the worker is crashing: the loop must stop handling the batch)."""
        try:
            await self._write_state()
        except Exception:
            return False
        if timings is not None:
            timings.lap("write")
        return True

    def _ack_if_current(self, generation: int, tp: TP, first: int, last: int) -> None:
        # Revoked meanwhile, or from before a rebalance: Faust dropped its bookkeeping, and the
        # partition's owner resumes from the committed offset (offset dedup in the state).
        active = self.active_partitions
        if generation == self.app.consumer_generation_id and (active is None or tp in active):
            self.n_acked += self.acked_ranges.ack(tp, first, last, self.committed_offsets[tp])

    async def drain(self, fetcher: Any) -> None:
        consumer_should_stop, fetcher_should_stop = self.stop_flags(fetcher)
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
        timings = self.timings
        if timings is None:
            await self._drain_fetch()
            return
        timings.start()
        try:
            await self._drain_fetch()
        finally:
            timings.end()

    async def _drain_fetch(self) -> None:
        transport = cast("BatchTransport", self.transport)
        timings = transport.timings
        early, self._early = self._early, None
        held, held_generation = (await early) if early is not None else (None, 0)
        # Holding the early take's records: wait only briefly for the fetch it started (fresh_take).
        records, active = await self.next_records(fresh_take.FRESH_WAIT_S if held else 1.0)
        if timings is not None:
            timings.lap("fetch")
        # Stamped after the fetch, as Faust's getmany does (stamping before left recovery stuck).
        generation = self.app.consumer_generation_id
        if held:
            if timings is not None:
                timings.note(early=sum(map(len, held.values())))
            if held_generation == generation and self.flow_active:
                merged, left = fresh_take.merge(held, records or {}, self.app.conf.broker_max_poll_records)
                if left:
                    await self._put_back(left)
                records = merged
            else:  # a rebalance began in between: each take with its own generation
                # A partition's records of the later take follow its records of the early one: they are
                # read again, so that nothing after the early take is applied before it is (applied, or
                # read again itself).
                later = {
                    tp: r
                    for tp, r in (records or {}).items()
                    if tp in held and tp.topic in transport.hot_topics
                }
                if later:
                    await self._put_back(later)
                    records = {tp: r for tp, r in records.items() if tp not in later}
                await self._drain_records(transport, held, active, held_generation)
        await self._drain_records(transport, records, active, generation)
        if self.sink.transactions is not None and self._current(generation):
            # Once the fetch's records were applied (an empty fetch may have passed markers too).
            await transport.restore_for(self).past_markers(self.sought)

    def _take_early(self, hot: Mapping[TP, Sequence[Any]]) -> Callable[[], None] | None:
        """exactly_once, caught up: what starts the next batch's early take once the transactions of
        this one send EndTxn (fresh_take); the first call starts it, the others do nothing."""
        transport = cast("BatchTransport", self.transport)
        if not fresh_take.caught_up(hot, self.highwater, transport.hot_topics):
            return None

        def start() -> None:
            if self._early is None:
                self._early = asyncio.ensure_future(self._taken_early())

        return start

    async def _taken_early(self) -> tuple[Any, int]:
        """(what the fetcher holds, taken without waiting, or None; its generation). Nothing while the
        flow is stopped: Faust's fetch would wait for it to resume, and a rebalance waits for this
        batch."""
        if not (self.flow_active and not self.suspend_flow.is_set()):
            return None, 0
        records, _ = await self.next_records(0)
        return records, self.app.consumer_generation_id

    def _current(self, generation: int) -> bool:
        """No rebalance began since the fetch of `generation`."""
        return (
            self.flow_active
            and not self.suspend_flow.is_set()
            and self.app.consumer_generation_id == generation
        )

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        """Faust's recovery seeks the changelog partitions to where it starts reading (past_markers)."""
        await super().seek_wait(partitions)
        self.sought.update(partitions)

    async def _drain_records(
        self, transport: BatchTransport, records: Any, active: set[TP] | None, generation: int
    ) -> None:
        timings = transport.timings
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            await self._rewind({tp: r for tp, r in records.items() if tp.topic in transport.hot_topics})
            return
        hot: dict[TP, Sequence[Any]] = {}
        other: dict[TP, Sequence[Any]] = {}
        buffered = self.buffered_partitions
        paused: dict[TP, Sequence[Any]] = {}
        floor = self.committed_floor if self.sink.transactions is not None else None
        for tp, recs in records.items():
            if active is not None and tp not in active and tp not in buffered:
                if tp.topic in transport.hot_topics:
                    paused[tp] = recs  # fetched before its partition was paused: read it again later
                continue
            if tp.topic in transport.hot_topics:
                fresh = unread(self, tp, recs)
                if fresh and floor is not None:
                    fresh = self._unapplied(floor, tp, fresh)
                if fresh:
                    hot[tp] = fresh
            else:
                other[tp] = recs
        if paused:
            await self._rewind(paused)
        if hot:
            async with self.in_flight:
                if timings is not None:
                    timings.lap("lock")
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    # A rebalance began while this batch waited for the lock (the commit before a
                    # revoke holds it): apply nothing after the revoke started, and read it again.
                    await self._rewind(hot)
                    return
                membership = self.membership() if self.sink.transactions is not None else None
                if membership is not None and (membership[0] != generation or not membership[1]):
                    # exactly_once: aiokafka already left the generation of the fetch (a rejoin under
                    # way, or the group removed this worker): its offsets must not go out in another.
                    await self._rewind(hot)
                    return
                await run_to_end(self._handle_hot(transport, hot, generation, membership))
        if other:
            await transport.restore_for(self).deliver(other, generation)

    @staticmethod
    def _unapplied(floor: CommittedFloor, tp: TP, recs: Sequence[Any]) -> Sequence[Any]:
        kept = floor.unapplied(tp, recs)
        if len(kept) < len(recs):  # the position was behind the committed offset (committed_floor)
            log.info(
                "exactly_once: dropped records committed already",
                extra={
                    "fields": {
                        "partition": f"{tp.topic}[{tp.partition}]",
                        "offsets": f"{recs[0].offset}..{recs[len(recs) - len(kept) - 1].offset}",
                        "committed": floor.get(tp),
                    }
                },
            )
        return kept

    async def _handle_atomically(
        self, sink: BatchSink, hot: dict[TP, Sequence[Any]], membership: tuple[int, str, str | None]
    ) -> None:
        """exactly_once: the batch is applied and committed (outputs, states, offsets) in one
        transaction. A batch under way when a revoke began commits too, in the generation that owned
        its partitions: the revoke waits for it (wait_empty) before the member rejoins. A transaction
        whose offsets the group refuses (this worker was removed from the group or missed a
        generation) fails, is aborted, and stops this worker."""
        try:
            await sink.deliver_atomically(hot, membership, self._take_early(hot))
        except Exception as exc:
            log.exception("a transaction failed; crashing the worker to reprocess from committed offsets")
            await self.app.crash(exc)
            return
        read_offsets, committed = self.read_offsets, self.committed_offsets
        for tp, recs in hot.items():
            read_offsets[tp] = recs[-1].offset
            committed[tp] = recs[-1].offset + 1  # as Faust's commit records it (its lag checks read it)
        self.committed_floor.raise_to({tp: recs[-1].offset + 1 for tp, recs in hot.items()})
        on_lag = cast("BatchTransport", self.transport).on_lag
        if on_lag is not None:
            for tp, recs in hot.items():
                on_lag(tp, max(0, self.highwater(tp) - recs[-1].offset - 1))

    async def _put_back(self, records: Mapping[TP, Sequence[Any]]) -> None:
        """Puts back the records that follow a batch still to be handed on (what exceeds the batch bound,
        or a later take): the position goes back to their first record, Faust's read offset stays. Faust's
        seek sets the read offset to the offset sought, and `unread` drops a fetch's records below it, so
        a plain rewind here dropped the batch before them: a stretch of the partition never applied."""
        read_offsets = self.read_offsets
        kept = {tp: read_offsets[tp] for tp in records}
        await self._rewind(records)
        for tp, offset in kept.items():
            read_offsets[tp] = offset

    async def _rewind(self, records: Mapping[TP, Sequence[Any]]) -> None:
        """Puts a fetch back: each partition still assigned is sought to its first record, so the
        records are read again. Faust drops such a fetch and seeks to the committed offsets instead,
        which after some rebalances moves nothing, so the next fetch starts past the dropped one
        (RELIABILITY.md #8)."""
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

    async def _handle_hot(
        self,
        transport: BatchTransport,
        hot: dict[TP, Sequence[Any]],
        generation: int,
        membership: tuple[int, str, str | None] | None = None,
    ) -> None:
        for tp in hot:
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        timings = transport.timings
        if timings is not None:
            oldest = min(recs[0].timestamp for recs in hot.values())
            timings.note(records=sum(map(len, hot.values())), oldest_age_ms=int(time.time() * 1000) - oldest)
        sink = transport.sink
        if membership is not None:  # exactly_once
            await self._handle_atomically(sink, hot, membership)
            return
        # The earlier batches' outputs arrived: write their states before this batch changes them (a
        # state is written only once every output of the events it reflects is acknowledged).
        caught_up_and_acknowledged = (
            self._caught_up and sink.held and self._until_write_due() <= 0 and sink.acknowledged()
        )
        if caught_up_and_acknowledged and not await self._write_state_in_loop(timings):
            return
        try:
            await sink.deliver(hot)
        except Exception as exc:
            # Outputs could not be delivered (e.g. the producer gave up). The batch's state changes were
            # not written yet and its offsets are not acked: crash the worker so that it (or another)
            # reprocesses from the committed offsets, rather than keep a fetcher-less zombie.
            log.exception("batch handler failed; crashing the worker to reprocess from committed offsets")
            await self.app.crash(exc)
            return
        on_lag = transport.on_lag
        behind = False
        total_lag = 0
        for tp, recs in hot.items():
            lag = max(0, self.highwater(tp) - recs[-1].offset - 1)
            behind = behind or lag > 0
            total_lag += lag
            if on_lag is not None:
                on_lag(tp, lag)
        self._caught_up = not behind
        if timings is not None:
            timings.note(lag=total_lag)
        if self.app.consumer_generation_id != generation:
            # Revoked while outputs were queued: do not ack; the new owner reprocesses from the committed
            # offset and offset-dedup in the account state makes that a no-op for what we applied.
            log.info("rebalance during a batch: not acking it")
            return
        active = self.active_partitions
        read_offsets = self.read_offsets
        for tp, recs in hot.items():
            if active is not None and tp not in active:
                continue  # revoked while in flight: Faust already dropped its offset bookkeeping
            # One range from the first record to the last: offsets the broker skipped before and
            # between them (transaction markers, compacted records) are done too, or the commit would
            # stall at them (Faust records them as gaps one by one).
            first, prev = recs[0].offset, read_offsets[tp]
            if prev is not None and first - prev > 1:
                first = prev + 1
            sink.hold(generation, tp, first, recs[-1].offset)
            read_offsets[tp] = recs[-1].offset
        # Caught up: the states are written once this batch's outputs are acknowledged and
        # WRITE_INTERVAL_S passed since the last write, by the writer task between batches or before
        # the next batch, whichever comes first (durable within about that interval, and the
        # acknowledgements do not hold up the next batch's prompts). Behind:
        # keep writing behind until the commit timer or the bound.
        if not behind:
            self._write_when_acknowledged()
        elif transport.sink.must_write() and not await self._write_state_in_loop(timings):
            return
        commit_every = self.commit_every
        if not behind and commit_every is not None and self.n_acked >= commit_every:
            # Faust's commit every N acked records, kept when caught up, off the batch loop: it flushes
            # the producer and waits for the broker twice, which the next batch's records would wait for.
            # While behind the commit timer commits alone.
            self.n_acked = 0
            self._commit_in_background()

    def _write_when_acknowledged(self) -> None:
        """Starts the writer task unless it runs already."""
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_acknowledged())

    async def _write_acknowledged(self) -> None:
        """Writes the states once every output sent is acknowledged and WRITE_INTERVAL_S passed since the
        last write, between batches. A batch applied meanwhile sent outputs of its own: wait for those
        too, until the worker falls behind (then the commit timer and the bound write) or a batch or
        commit wrote them."""
        sink, timings = self.sink, self.timings
        while sink.held and self._caught_up:
            try:
                await sink.wait_acknowledged()
            except Exception:
                async with self.in_flight:  # the write raises the failure and crashes the worker
                    with contextlib.suppress(Exception):
                        await run_to_end(self._write_state())
                return
            # Acknowledgements first (a failed output crashes the worker at once), then the interval;
            # the batches applied meanwhile sent outputs of their own: wait for those too.
            wait = self._until_write_due()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            async with self.in_flight:
                if sink.held and sink.acknowledged():
                    t0 = time.perf_counter()
                    with contextlib.suppress(Exception):  # logged, and the worker is crashing
                        await run_to_end(self._write_state())  # a stop cancels the wait, not the write
                    if timings is not None:
                        timings.event("write", ms=round(1000 * (time.perf_counter() - t0), 3))
                    return

    def _commit_in_background(self) -> None:
        """Commits the acked offsets in a task of its own; one at a time (Faust coalesces a commit
        requested while one is under way, and the revoke waits for it)."""
        if self._background_commit is None or self._background_commit.done():
            self._background_commit = asyncio.ensure_future(self._commit_acked())

    async def _commit_acked(self) -> None:
        try:
            await super().commit()
        except Exception as exc:  # the commit timer retries; what is not committed is reprocessed
            log.warning("commit of acked offsets failed: %r", exc)
