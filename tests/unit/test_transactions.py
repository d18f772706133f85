"""exactly_once in the sink: a batch becomes one transaction of the worker's producer holding every
partition's prompts, dead letters, changelog records (to the partition's changelog partition) and next
input offsets; every record is acknowledged before the offsets join the transaction and it commits; a
failed transaction raises after its abort. Fencing by group generation on the real broker is
tests/integration/test_transactions_kafka.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from faust.types import TP

from upsell_triggers.deadletter import DeadLetter
from upsell_triggers.metrics import Metrics
from upsell_triggers.runtime.batch_apply import Outputs
from upsell_triggers.runtime.batch_timings import BatchTimings
from upsell_triggers.runtime.kafka.transactions import BatchTransactions, transactional_id
from upsell_triggers.runtime.sink import BatchSink, SinkTopics
from upsell_triggers.settings import Settings
from upsell_triggers.startup import StartupError, validated_settings


class FakeBatch:
    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def append(self, key: bytes, value: bytes | None, timestamp: None) -> object:
        self.keys.append(key)
        return object()


class FakeTxnProducer:
    """aiokafka's transactional producer as BatchTransactions uses it; logs what it is asked."""

    def __init__(self, tid: str, log: list[str], fail_commit: bool = False) -> None:
        self.tid, self.log, self.fail_commit = tid, log, fail_commit
        self.pending = 0
        self.commit_s = 0.0  # how long EndTxn takes
        self._txn_manager = SimpleNamespace(wait_for_pid=self._pid)

    async def _pid(self) -> None:
        self.log.append(f"{self.tid} epoch")

    async def start(self) -> None:
        self.log.append(f"{self.tid} start")

    async def stop(self) -> None:
        self.log.append(f"{self.tid} stop")

    def _future(self, what: str) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending += 1

        def ack() -> None:
            self.pending -= 1
            self.log.append(f"{self.tid} acknowledged {what}")
            fut.set_result(SimpleNamespace(offset=0))

        asyncio.get_running_loop().call_soon(ack)
        return fut

    async def begin_transaction(self) -> None:
        self.log.append(f"{self.tid} begin")

    async def send(self, topic: str, value: bytes, key: bytes, headers: Any = None) -> asyncio.Future[Any]:
        return self._future(f"{topic} {value.decode()}")

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future[Any]:
        return self._future(f"{topic}[{partition}] {b','.join(batch.keys).decode()}")

    async def send_offsets_to_transaction(self, offsets: Mapping[Any, int], group_id: str) -> None:
        assert self.pending == 0, "offsets added while records were still unacknowledged"
        shown = ",".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(offsets.items()))
        self.log.append(f"{self.tid} offsets {shown} group={group_id}")

    async def commit_transaction(self) -> None:
        assert self.pending == 0, "commit while records were still unacknowledged"
        await asyncio.sleep(self.commit_s)
        if self.fail_commit:
            raise RuntimeError("ProducerFenced")
        self.log.append(f"{self.tid} commit")


class FakeStates:
    def __init__(self, changelog: dict[int, list[tuple[bytes, bytes | None]]]) -> None:
        self.changelog = changelog

    def trim(self) -> None: ...

    def flush(self) -> dict[int, list[tuple[bytes, bytes | None]]]:
        out, self.changelog = self.changelog, {}
        return out

    def must_flush(self) -> bool:
        return False

    def set_persisted_offset(self, tp: Any, offset: int) -> None: ...


def apply(batch: Mapping[TP, Sequence[Any]]) -> Outputs:
    """A prompt per record, a dead letter per record whose value is b"bad"; spans per partition."""
    out = Outputs(newest_ts=1)
    for tp, recs in batch.items():
        for r in recs:
            if r.value == b"bad":
                src = {"source_topic": tp.topic, "source_partition": tp.partition, "source_offset": r.offset}
                out.dead_letters.append(DeadLetter("invalid_json", "x", b"bad", b"k", src))
            else:
                out.prompts.append((b"k", f"p{tp.partition}-{r.offset}".encode()))
        out.spans.append((tp.partition, len(out.prompts), len(out.dead_letters)))
    return out


def recs(*offsets: int, bad: int | None = None) -> list[Any]:
    return [SimpleNamespace(offset=o, value=b"bad" if o == bad else b"ok") for o in offsets]


class Started:
    """The producers made, and the stable-offset and settled-changelog requests asked, by a
    BatchTransactions."""

    def __init__(self, log: list[str], fail_commit: bool = False) -> None:
        self.log, self.fail_commit = log, fail_commit
        self.producers: list[FakeTxnProducer] = []
        self.membership: list[Any] = []  # each producer's membership function
        self.asked: list[dict[str, list[int]]] = []
        self.settled: list[list[tuple[str, int]]] = []

    def new(self, tid: str, membership: Any) -> FakeTxnProducer:
        producer = FakeTxnProducer("txn", self.log, self.fail_commit and not self.producers)
        producer.real_tid = tid  # type: ignore[attr-defined]
        self.producers.append(producer)
        self.membership.append(membership)
        return producer

    async def settle(self, producer: Any, partitions: list[Any], wait_s: float) -> None:
        assert producer is self.producers[0]
        self.settled.append([(tp.topic, tp.partition) for tp in partitions])
        self.log.append("changelog settled")

    async def stable(
        self, producer: Any, group: str, partitions: dict[str, list[int]], wait_s: float
    ) -> dict[tuple[str, int], int | None]:
        assert producer is self.producers[0] and group == "app"
        self.asked.append({t: sorted(ps) for t, ps in sorted(partitions.items())})
        self.log.append("stable offsets")
        return {(t, p): (100 + p if t == "events" else None) for t, ps in partitions.items() for p in ps}


OWNED = {TP("events", 0), TP("events", 1), TP("feedback", 0), TP("feedback", 1)}


async def started(
    log: list[str], owned: set[TP] = OWNED, fail_commit: bool = False
) -> tuple[BatchTransactions, Started]:
    made = Started(log, fail_commit)
    txns = BatchTransactions(
        made.new,
        "app",
        "app",
        lambda: ("prompts", "dlq", "cl"),
        stable_offsets=made.stable,
        settled=made.settle,
    )
    await txns.assign(owned)
    return txns, made


MEMBER = (3, "member-1", None)


def sink_of(txns: BatchTransactions, changelog: dict[int, list[tuple[bytes, bytes | None]]]) -> BatchSink:
    return BatchSink(
        apply,
        lambda: None,
        SinkTopics("prompts", "dlq", lambda: "cl"),
        FakeStates(changelog),
        Metrics(),
        transactions=txns,
    )


async def test_a_batch_is_one_transaction_with_every_partitions_outputs_states_and_offsets() -> None:
    log: list[str] = []
    txns, _ = await started(log)
    log.clear()
    sink = sink_of(txns, {0: [(b"a", b"s")], 1: [(b"b", b"s"), (b"c", None)]})
    batch = {TP("events", 0): recs(5, 6, bad=6), TP("feedback", 1): recs(9), TP("events", 1): recs(3)}
    await sink.deliver_atomically(batch, MEMBER)
    assert log == [
        "txn begin",
        "txn acknowledged prompts p0-5",
        "txn acknowledged dlq bad",
        "txn acknowledged cl[0] a",
        "txn acknowledged prompts p1-9",
        "txn acknowledged prompts p1-3",
        "txn acknowledged cl[1] b,c",
        "txn offsets events[0]=7,events[1]=4,feedback[1]=10 group=app",
        "txn commit",
    ]


async def test_the_transaction_calls_on_ending_once_as_it_sends_endtxn() -> None:
    """The next batch's early take (runtime/fresh_take.py) starts during the last round trip."""
    log: list[str] = []
    txns, _ = await started(log)
    sink = sink_of(txns, {})
    await sink.deliver_atomically(
        {TP("events", 0): recs(1), TP("events", 1): recs(2)}, MEMBER, lambda: log.append("ending")
    )
    assert log.count("ending") == 1
    assert (
        log.index("txn offsets events[0]=2,events[1]=3 group=app")
        < log.index("ending")
        < log.index("txn commit")
    )


async def test_a_partition_with_only_expired_accounts_commits_their_tombstones() -> None:
    log: list[str] = []
    txns, _ = await started(log)
    await sink_of(txns, {1: [(b"gone", None)]}).deliver_atomically({TP("events", 0): recs(1)}, MEMBER)
    assert log.index("txn acknowledged cl[1] gone") < log.index("txn commit")


async def test_a_failed_commit_aborts_the_transaction_and_raises_out_of_the_batch() -> None:
    """aiokafka sends no EndTxn once a transaction failed: a producer with the same transactional id
    gets its epoch, which aborts the open transaction on the broker, and stops."""
    log: list[str] = []
    txns, made = await started(log, fail_commit=True)
    log.clear()
    with pytest.raises(RuntimeError, match="ProducerFenced"):
        await sink_of(txns, {}).deliver_atomically({TP("events", 0): recs(1)}, MEMBER)
    assert log[-4:] == ["txn stop", "txn start", "txn epoch", "txn stop"]
    first, aborter = made.producers
    assert aborter.real_tid == first.real_tid == txns.transactional_id  # type: ignore[attr-defined]
    assert txns.producer is None
    with pytest.raises(RuntimeError, match="no transactional producer"):
        await sink_of(txns, {}).deliver_atomically({TP("events", 0): recs(2)}, MEMBER)


async def test_a_batch_of_a_partition_not_owned_here_is_refused() -> None:
    log: list[str] = []
    txns, _ = await started(log, {TP("events", 0)})
    with pytest.raises(RuntimeError, match=r"events\[3\] is not assigned here"):
        await sink_of(txns, {}).deliver_atomically({TP("events", 3): recs(1)}, MEMBER)
    assert "txn begin" not in log


async def test_each_assignment_waits_for_stable_offsets_with_one_producer_for_the_process() -> None:
    log: list[str] = []
    txns, made = await started(log)
    assert log == ["txn start", "txn epoch", "stable offsets"]
    assert made.asked == [{"events": [0, 1], "feedback": [0, 1]}]
    # cl[3]: a standby changelog partition (no input partition 3 here), waited for once it is active
    stable = await txns.assign(
        {TP("events", 2), TP("events", 1)}, {TP("cl", 2), TP("cl", 1), TP("cl", 3), TP("events", 1)}
    )
    assert stable == {TP("events", 1): 101, TP("events", 2): 102}
    # then the changelog partitions assigned (only those), once their transactions ended
    assert log[3:] == ["stable offsets", "changelog settled"] and len(made.producers) == 1
    assert made.asked[-1] == {"events": [1, 2]} and made.settled == [[("cl", 1), ("cl", 2)]]
    assert await txns.assign(set()) == {} and len(made.asked) == 2  # nothing owned: nothing asked
    tid = txns.transactional_id
    assert tid.startswith("app-eos-") and tid != transactional_id("app")  # new at each start


async def test_offsets_go_with_the_membership_the_batch_was_admitted_in() -> None:
    """The producer's membership function answers the batch's membership, read once when the batch
    was admitted, whatever the consumer holds by the time the offsets are sent."""
    log: list[str] = []
    txns, made = await started(log)
    (membership,) = made.membership
    seen: list[Any] = []
    producer = made.producers[0]
    send_offsets = producer.send_offsets_to_transaction

    async def recording(offsets: Mapping[Any, int], group_id: str) -> None:
        seen.append(membership())
        await send_offsets(offsets, group_id)

    producer.send_offsets_to_transaction = recording  # type: ignore[method-assign]
    await sink_of(txns, {}).deliver_atomically({TP("events", 0): recs(1)}, (7, "m-7", None))
    await sink_of(txns, {}).deliver_atomically({TP("events", 0): recs(2)}, (8, "m-7", None))
    assert seen == [(7, "m-7", None), (8, "m-7", None)]


def test_exactly_once_with_rocksdb_is_a_one_line_start_up_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSELL_PROCESSING_GUARANTEE", "exactly_once")
    monkeypatch.setenv("UPSELL_STORE", "rocksdb://")
    with pytest.raises(StartupError) as info:
        validated_settings(Settings)
    assert info.value.message.startswith(
        "settings: UPSELL_PROCESSING_GUARANTEE=exactly_once needs the memory store (UPSELL_STORE=memory://)"
    ), info.value.message  # both settings named (not "setting UPSELL_?=": the check is across them)
    monkeypatch.setenv("UPSELL_STORE", "memory://")
    assert validated_settings(Settings).processing_guarantee == "exactly_once"
    monkeypatch.delenv("UPSELL_PROCESSING_GUARANTEE")
    assert validated_settings(Settings).processing_guarantee == "at_least_once"


async def test_timed_batches_record_the_transactions_phases(tmp_path: Any) -> None:
    log: list[str] = []
    txns, made = await started(log)
    made.producers[0].commit_s = 0.05  # a slow EndTxn
    timings = BatchTimings(str(tmp_path / "t.jsonl"))
    sink = BatchSink(
        apply,
        lambda: None,
        SinkTopics("prompts", "dlq", lambda: "cl"),
        FakeStates({0: [(b"a", b"s")]}),
        Metrics(),
        timings,
        transactions=txns,
    )
    timings.start()
    await sink.deliver_atomically({TP("events", 0): recs(1), TP("events", 1): recs(2)}, MEMBER)
    timings.note(records=2)
    timings.end()
    timings.close()
    (line,) = (orjson.loads(x) for x in (tmp_path / "t.jsonl").read_bytes().splitlines() if b"records" in x)
    assert line["txns"] == 1 and line["txn_partitions"] == 2
    assert 50 <= line["txn_end_ms"] <= line["deliver_ms"]
    assert line["txn_send_ms"] >= 0 and line["txn_offsets_ms"] >= 0
    assert 50 <= line["txn_slowest_ms"] == line["txn_fastest_ms"] <= line["deliver_ms"]
