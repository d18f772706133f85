"""Records of the topics that are not hot: the table's changelog while it recovers, and the rest.

During recovery, the records of each active changelog partition go to the table's store in one
`apply_changelog_batch` per fetch (Faust's own per-record path took 67-125 s for 1M accounts on this
machine class, this one 9 s); records of any other topic (standby changelogs, anything else) keep
Faust's per-message path, without its two tasks per record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from faust.types import TP

from upsell_triggers.runtime.kafka.compat import ConsumerAdapter, RecoveryView


class ChangelogEvent:
    """What a store's apply_changelog_batch and Faust's recovery loop read of a changelog event: key
    and value (raw codecs: the record's bytes) and message.{tp, partition, offset, key, value}. One
    light object per record, instead of Faust's ConsumerMessage, Event and a queue round trip."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: TP, record: Any) -> None:
        self.tp, self.partition = tp, tp.partition
        self.offset, self.key, self.value = record.offset, record.key, record.value

    @property
    def message(self) -> ChangelogEvent:
        return self


class _Marker:
    """The end of a partition that is not a record (a transaction marker): a changelog event of that
    offset wakes the recovery loop, which skips it as seen."""

    __slots__ = ("key", "offset", "value")

    def __init__(self, offset: int) -> None:
        self.offset, self.key, self.value = offset, None, None


def unread(consumer: ConsumerAdapter, tp: TP, recs: Sequence[Any]) -> Sequence[Any]:
    """Drops records below the read offset, with Faust's semantics: after a seek (rebalance, recovery)
    the read offset is the next offset to read, so a record AT it is kept (a strict test here once
    skipped the first record after every seek: caught by test_exactness.py)."""
    r_offset = consumer.read_offsets[tp]
    if r_offset is None or recs[0].offset >= r_offset:
        return recs
    return [r for r in recs if r.offset >= r_offset]


class ChangelogRestore:
    """Delivers one fetch's records of the topics that are not hot, for `consumer`."""

    def __init__(self, consumer: ConsumerAdapter, on_restored: Callable[[int], None] | None) -> None:
        self.consumer = consumer
        self.on_restored = on_restored  # (changelog records applied) after each restored fetch

    async def deliver(self, records: Mapping[TP, Sequence[Any]], generation: int) -> None:
        """The active changelog partitions under recovery are restored in one batch each, the rest go
        through Faust's per-message path."""
        recovery = RecoveryView(self.consumer.app.tables)
        restoring = recovery.active_tps if recovery.in_recovery else ()
        slow: list[tuple[TP, Any]] = []
        for tp, recs in records.items():
            table = recovery.table_of(tp) if tp in restoring else None
            if table is None:
                slow.extend((tp, r) for r in recs)
            elif not await self._restore(recovery, table, tp, recs, generation):
                return  # a rebalance began: Faust seeks again afterwards
        if slow:
            await self._deliver(slow, generation)

    async def _restore(
        self, recovery: RecoveryView, table: Any, tp: TP, recs: Sequence[Any], generation: int
    ) -> bool:
        """Applies one fetch of an active changelog partition to the table's store, as Faust's recovery
        loop would record by record: what the store does with each record (a put, a tombstone's delete,
        RocksDB's persisted offset) is its own apply_changelog_batch's. Then the loop's offset for the
        partition moves to the last record, and the loop is woken with that offset (which it skips as
        seen) so that it checks, as after every record, whether recovery is complete.

        Every record of an active partition takes this path while recovery runs (Recovery sets
        in_recovery before it resumes those partitions), so none waits in Faust's buffers to be applied
        after a newer one. Faust's loop also awaits table.on_changelog_event per record: a user hook that
        this table does not set. False if a rebalance began: nothing of the fetch was applied."""
        consumer = self.consumer
        rebalancing = consumer.suspend_flow.is_set() or not consumer.flow_active
        if rebalancing or generation != consumer.app.consumer_generation_id:
            return False
        recs = unread(consumer, tp, recs)
        if not recs:
            return True
        consumer.app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
        wake = recs[-1]
        last = wake.offset
        seen = recovery.active_offsets.get(tp)
        if seen is not None and recs[0].offset <= seen:
            recs = [r for r in recs if r.offset > seen]
        step = table.recovery_buffer_size  # as many light events alive at once as Faust buffers
        for i in range(0, len(recs), step):
            table.apply_changelog_batch([ChangelogEvent(tp, r) for r in recs[i : i + step]])
        if recs:
            recovery.active_offsets[tp] = last
            if self.on_restored is not None:
                self.on_restored(len(recs))
        consumer.read_offsets[tp] = last
        await recovery.wake(ChangelogEvent(tp, wake))
        return True

    async def past_markers(self, sought: set[TP]) -> None:
        """read_committed (exactly_once): a changelog partition ends in a transaction marker, and may
        end in an aborted transaction, whose offsets are never handed on as records; recovery, which
        waits until it applied the partition's end offset minus one, would wait for them forever (as
        Faust's own exactly_once recovery does for 10 s or more, faust-streaming issue #47). The
        consumer's position moves past them once they were fetched: when it passed the end, every
        record before it has been applied, so the partition is recovered. Call it in the drain loop
        once a fetch's records were applied, and only for partitions `sought` to their recovery start
        in the current assignment (before that seek, the position is an older one)."""
        recovery = RecoveryView(self.consumer.app.tables)
        if not recovery.in_recovery:
            return
        highwaters, offsets = recovery.active_highwaters, recovery.active_offsets
        for tp in list(recovery.active_tps):
            end, done = highwaters.get(tp), offsets.get(tp)
            if end is None or done is None or done >= end or tp not in sought:
                continue
            position = await self.consumer.position(tp)
            if position is not None and position > end:
                offsets[tp] = end
                await recovery.wake(ChangelogEvent(tp, _Marker(end)))

    async def _deliver(self, items: list[tuple[TP, Any]], generation: int) -> None:
        """Faust's per-message path (standby changelogs and any other topic that is not hot)."""
        consumer = self.consumer
        app = consumer.app
        to_message, callback, read_offsets = consumer.to_message, consumer.callback, consumer.read_offsets
        for n, (tp, record) in enumerate(items):
            if not consumer.flow_active or app.consumer_generation_id != generation:
                return
            r_offset = read_offsets[tp]
            if r_offset is not None and record.offset < r_offset:
                continue
            gap = r_offset is not None and record.offset - r_offset > 1
            if gap and r_offset is not None and app.topics.acks_enabled_for(tp.topic):
                await consumer.add_gap(tp, r_offset + 1, record.offset)
            app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
            if consumer.suspend_flow.is_set():
                return  # a rebalance began: Faust seeks again afterwards
            # Faust wraps this in wait_first(callback, suspend_flow.wait()): two tasks per record, which
            # made changelog recovery ~2x slower; the callback only queues the record for the recovery.
            await callback(to_message(tp, record))
            read_offsets[tp] = record.offset
            if n % 100 == 99:
                await asyncio.sleep(0)
