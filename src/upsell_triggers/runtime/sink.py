"""Where the hot topics' batches go, in the order that makes the service exact: outputs, then state,
then ack.

1. `deliver` applies a batch (account states change in memory) and hands its prompts, leads and dead
   letters to the producer. Raising means nothing of the batch may be acked.
2. `hold` keeps the batch's offsets: applied and sent, not yet durable.
3. `write` waits until the broker acknowledged every output sent so far, then writes every state changed
   since the last write (store, and changelog records queued in the producer, which Faust's commit
   flushes before it commits offsets), and only then acks the offsets held. Written when the consumer
   decides: when caught up, before the next batch once the outputs are acknowledged (`acknowledged`),
   at each commit or at the bound (`must_write`) while behind, so that an account in several fetches is
   written once (the write-behind cache of Kafka Streams).

The batch loop does not wait for the broker's acknowledgements between batches: the next batch is
applied while the last one's outputs are on their way, and only the write waits for them. Waiting after
every batch would keep the records that arrive meanwhile waiting for a produce round trip too: a third
of the loop's time at 10k events/s on a shared machine (docs/operations.md#latency). A state is still never
written before every output of the events it reflects is acknowledged, so a crash between 1 and 3
re-emits the outputs on reprocessing (same ids, same content) instead of losing them; the other order
loses prompts under SIGKILL (RELIABILITY.md #5).

With exactly_once (`transactions` set), `deliver_atomically` replaces all three: a batch is applied,
and its outputs, its changed states and its input offsets, of every partition it touched, are one
transaction (kafka.transactions); nothing is held or acked, and the consumer's own commits move no
offset of the hot topics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from faust.types import TP

from upsell_triggers.metrics import Metrics
from upsell_triggers.runtime.batch_apply import Outputs
from upsell_triggers.runtime.batch_timings import BatchTimings
from upsell_triggers.runtime.kafka.changelog_writer import send_changelog
from upsell_triggers.runtime.kafka.keyed_batches import send_keyed
from upsell_triggers.runtime.kafka.transactions import BatchTransactions, PartitionWrites

Ack = Callable[[int, TP, int, int], None]  # (consumer generation, partition, first offset, last offset)


class StateBuffer(Protocol):
    """The changed account states, held in memory until written (TableState)."""

    def trim(self) -> None: ...

    def flush(self) -> dict[int, list[tuple[bytes, bytes | None]]]: ...

    def must_flush(self) -> bool: ...

    def set_persisted_offset(self, tp: Any, offset: int) -> None: ...


@dataclass(frozen=True, slots=True)
class SinkTopics:
    prompts: str
    dlq: str
    changelog: Callable[[], str]  # the table's changelog topic (named by Faust)
    leads: str = "expansion-leads"


class BatchSink:
    def __init__(
        self,
        apply: Callable[[Mapping[TP, Sequence[Any]]], Outputs],
        producer: Callable[[], Any],
        topics: SinkTopics,
        states: StateBuffer,
        metrics: Metrics,
        timings: BatchTimings | None = None,
        transactions: BatchTransactions | None = None,
    ) -> None:
        self.apply = apply
        self.transactions = transactions  # exactly_once: the worker's transactional producer
        self.timings = timings  # per-batch phase timings (batch_timings), None when off
        self.producer = producer  # aiokafka's producer (send, create_batch, send_batch), once started
        self.topics = topics
        self.states = states
        self.metrics = metrics
        self.held: list[tuple[int, TP, int, int]] = []  # applied and sent, not written: in order
        self.unacknowledged: list[asyncio.Future[Any]] = []  # outputs sent, their acks not seen yet
        self.failed: BaseException | None = None  # what a batch's sends raised (deliver): write nothing more

    async def deliver(self, batch: Mapping[TP, Sequence[Any]]) -> None:
        """Applies a batch and hands its outputs to the producer. If that raises (a send refused at once,
        not only a delivery that fails later), the batch's state changes are in memory and not all of
        its outputs are on their way: the sink writes no state from then on (`write` raises), since the
        worker's final commit would otherwise write them, and the events, marked applied, would never
        be delivered."""
        if self.failed is not None:
            raise RuntimeError("an earlier batch's outputs could not be sent") from self.failed
        t0 = time.perf_counter()
        metrics = self.metrics
        metrics.batch_records.observe(sum(map(len, batch.values())))
        try:
            out = self.apply(batch)
            self.states.trim()
            timings = self.timings
            if timings is not None:
                timings.lap("apply")
            producer, topics = self.producer(), self.topics
            sent = await send_keyed(producer, topics.prompts, out.prompts)
            if out.leads:  # delivered with the prompts, before any state that records them is written
                sent += await send_keyed(producer, topics.leads, out.leads)
            sent += [
                await producer.send(topics.dlq, d.raw, key=d.key, headers=d.kafka_headers())
                for d in out.dead_letters
            ]
        except BaseException as exc:
            self.failed = exc
            raise
        self.unacknowledged += sent
        self._delivered(out, t0, "send")

    def acknowledged(self) -> bool:
        """Whether the broker acknowledged every output sent so far (a failed one counts as not: `write`
        raises it)."""
        pending = self.unacknowledged
        if pending:
            pending[:] = [f for f in pending if not f.done() or f.cancelled() or f.exception() is not None]
        return not pending

    async def wait_acknowledged(self) -> None:
        """Until the broker acknowledged every output sent so far, including those sent meanwhile;
        raises what a failed one raised (it stays, so that every later write raises too)."""
        while not self.acknowledged():
            if any(f.cancelled() for f in self.unacknowledged):
                raise RuntimeError("an output was cancelled before the broker acknowledged it")
            await asyncio.gather(*self.unacknowledged)

    async def deliver_atomically(
        self,
        batch: Mapping[TP, Sequence[Any]],
        membership: tuple[int, str, str | None],
        on_ending: Callable[[], None] | None = None,
    ) -> None:
        """Applies a batch and commits its prompts, dead letters, changed states and the next offsets of
        its records in one transaction, grouped by partition (each partition's changelog records go to
        its changelog partition), its offsets sent with `membership`, the group membership the batch
        was admitted in. Raising means the transaction did not commit while memory holds its effects:
        the caller stops the worker. `on_ending`: called as the transaction sends EndTxn
        (BatchTransactions.commit)."""
        transactions = self.transactions
        assert transactions is not None
        t0 = time.perf_counter()
        metrics, timings = self.metrics, self.timings
        metrics.batch_records.observe(sum(map(len, batch.values())))
        out = self.apply(batch)
        changelog = self.states.flush()  # memory store only (settings): nothing to write but records
        if timings is not None:
            timings.lap("apply")
        writes: dict[int, PartitionWrites] = {}

        def of(p: int) -> PartitionWrites:
            w = writes.get(p)
            if w is None:
                w = writes[p] = PartitionWrites([], [], changelog.pop(p, []), {})
            return w

        prompts_from = dead_from = leads_from = 0
        lead_ends = out.lead_ends
        for i, (partition, prompts_end, dead_end) in enumerate(out.spans):
            w = of(partition)
            w.prompts += out.prompts[prompts_from:prompts_end]
            w.dead_letters += out.dead_letters[dead_from:dead_end]
            prompts_from, dead_from = prompts_end, dead_end
            if lead_ends:  # leads go with their partition's writes, as prompts do
                w.leads += out.leads[leads_from : lead_ends[i]]
                leads_from = lead_ends[i]
        for tp, recs in batch.items():
            if recs:
                of(tp.partition).offsets[tp] = recs[-1].offset + 1
        for p in list(changelog):  # expired accounts of a partition with no record in this batch
            of(p)
        if timings is None:
            await transactions.commit(writes, membership, on_ending=on_ending)
        else:
            phases: dict[str, float] = {}
            await transactions.commit(writes, membership, phases, on_ending)
            timings.note(
                txns=1,
                txn_partitions=len(writes),
                **{k + "_ms": round(1000 * v, 3) for k, v in phases.items()},
            )
        self._delivered(out, t0, "deliver")

    def _delivered(self, out: Outputs, t0: float, phase: str) -> None:
        """What both delivery modes record once a batch's outputs are handed to the producer (or
        committed): the phase timing, the event-to-output latency of batches with prompts, and the
        event-time lag."""
        timings, metrics = self.timings, self.metrics
        if timings is not None:
            timings.lap(phase)
            timings.note(prompts=len(out.prompts))
        if out.prompts:
            metrics.latency.observe(time.perf_counter() - t0)
        if out.newest_ts:
            metrics.lag.set(max(0.0, time.time() - out.newest_ts / 1000))

    def hold(self, generation: int, tp: TP, first: int, last: int) -> None:
        """Offsets first..last of tp were delivered: ack them once their states are written."""
        self.held.append((generation, tp, first, last))

    def drop_held(self) -> None:
        """Forgets the offsets held (revoked: the partitions' next owners reprocess them)."""
        self.held.clear()

    def must_write(self) -> bool:
        """Whether the unwritten states reached their bound (they are held in memory until written)."""
        return self.states.must_flush()

    async def write(self, ack: Ack) -> None:
        """Once every output sent is acknowledged, writes the changed states, then acks the offsets held.
        If an output failed or writing raises, nothing held is acked (and nothing stays held): the caller
        crashes the worker so that it reprocesses."""
        if self.failed is not None:
            self.held.clear()
            raise RuntimeError("a batch's outputs could not be sent: no state is written") from self.failed
        if not self.held:
            return
        try:
            await self.wait_acknowledged()
            producer = self.producer()
            topic = self.topics.changelog()
            for partition, recs in self.states.flush().items():
                await send_changelog(producer, topic, partition, recs, self.states.set_persisted_offset)
        except BaseException:
            self.held.clear()
            raise
        held, self.held = self.held, []
        for generation, tp, first, last in held:
            ack(generation, tp, first, last)
