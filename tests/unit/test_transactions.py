"""exactly_once in the sink: a batch becomes one transaction per partition holding that partition's
prompts, dead letters, changelog records and next input offsets; every record is acknowledged before
the offsets join the transaction and it commits; a failed transaction raises. Fencing on the real
broker is tests/integration/test_transactions_kafka.py."""

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
from upsell_triggers.runtime.kafka.transactions import PartitionTransactions, transactional_id
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
    """aiokafka's transactional producer as PartitionTransactions uses it; logs per transactional id."""

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


async def started(log: list[str], partitions: set[int], fail_commit: bool = False) -> PartitionTransactions:
    txns = PartitionTransactions(
        lambda tid: FakeTxnProducer(tid, log, fail_commit), "app", "app", lambda: ("prompts", "dlq", "cl")
    )
    await txns.assign(partitions)
    return txns


async def test_each_partition_commits_its_own_outputs_states_and_offsets_in_one_transaction() -> None:
    log: list[str] = []
    txns = await started(log, {0, 1})
    changelog: dict[int, list[tuple[bytes, bytes | None]]] = {
        0: [(b"a", b"s")],
        1: [(b"b", b"s"), (b"c", None)],
    }
    sink = BatchSink(
        apply,
        lambda: None,
        SinkTopics("prompts", "dlq", lambda: "cl"),
        FakeStates(changelog),
        Metrics(),
        transactions=txns,
    )
    batch = {TP("events", 0): recs(5, 6, bad=6), TP("feedback", 1): recs(9), TP("events", 1): recs(3)}
    await sink.deliver_atomically(batch)
    by_tid = {
        t: [line.removeprefix(f"{t} ") for line in log if line.startswith(f"{t} ")]
        for t in ("app-eos-0", "app-eos-1")
    }
    assert by_tid["app-eos-0"] == [
        "start",
        "epoch",
        "begin",
        "acknowledged prompts p0-5",
        "acknowledged dlq bad",
        "acknowledged cl[0] a",
        "offsets events[0]=7 group=app",
        "commit",
    ]
    assert by_tid["app-eos-1"] == [
        "start",
        "epoch",
        "begin",
        "acknowledged prompts p1-9",
        "acknowledged prompts p1-3",
        "acknowledged cl[1] b,c",
        "offsets events[1]=4,feedback[1]=10 group=app",
        "commit",
    ]


async def test_each_transaction_calls_on_ending_as_it_sends_endtxn() -> None:
    """The next batch's early take (runtime/fresh_take.py) starts during the last round trip."""
    log: list[str] = []
    txns = await started(log, {0, 1})
    sink = BatchSink(
        apply,
        lambda: None,
        SinkTopics("prompts", "dlq", lambda: "cl"),
        FakeStates({}),
        Metrics(),
        transactions=txns,
    )
    await sink.deliver_atomically(
        {TP("events", 0): recs(1), TP("events", 1): recs(2)}, lambda: log.append("ending")
    )
    assert log.count("ending") == 2
    for tid in ("app-eos-0", "app-eos-1"):
        assert log.index(f"{tid} offsets events[{tid[-1]}]={int(tid[-1]) + 2} group=app") < log.index(
            f"{tid} commit"
        )
    first_commit = min(log.index("app-eos-0 commit"), log.index("app-eos-1 commit"))
    assert log.index("ending") < first_commit


async def test_a_partition_with_only_expired_accounts_commits_their_tombstones() -> None:
    log: list[str] = []
    txns = await started(log, {0, 1})
    sink = BatchSink(
        apply,
        lambda: None,
        SinkTopics("prompts", "dlq", lambda: "cl"),
        FakeStates({1: [(b"gone", None)]}),
        Metrics(),
        transactions=txns,
    )
    await sink.deliver_atomically({TP("events", 0): recs(1)})
    assert "app-eos-1 acknowledged cl[1] gone" in log and "app-eos-1 commit" in log


async def test_a_failed_commit_raises_out_of_the_batch() -> None:
    log: list[str] = []
    txns = await started(log, {0}, fail_commit=True)
    sink = BatchSink(
        apply,
        lambda: None,
        SinkTopics("prompts", "dlq", lambda: "cl"),
        FakeStates({}),
        Metrics(),
        transactions=txns,
    )
    with pytest.raises(RuntimeError, match="ProducerFenced"):
        await sink.deliver_atomically({TP("events", 0): recs(1)})


async def test_a_batch_of_a_partition_not_owned_here_is_refused() -> None:
    txns = await started([], {0})
    sink = BatchSink(
        apply,
        lambda: None,
        SinkTopics("prompts", "dlq", lambda: "cl"),
        FakeStates({}),
        Metrics(),
        transactions=txns,
    )
    with pytest.raises(RuntimeError, match="partition 3 has no transactional producer"):
        await sink.deliver_atomically({TP("events", 3): recs(1)})


async def test_each_assignment_starts_and_fences_a_new_producer_per_partition() -> None:
    log: list[str] = []
    txns = await started(log, {0, 1})
    assert sorted(log) == ["app-eos-0 epoch", "app-eos-0 start", "app-eos-1 epoch", "app-eos-1 start"]
    assert log.index("app-eos-0 start") < log.index("app-eos-0 epoch")
    first = dict(txns.producers)
    log.clear()
    await txns.assign({1, 2})  # partition 1 kept: another worker may have owned it meanwhile
    assert log[:2] == ["app-eos-0 stop", "app-eos-1 stop"]
    assert sorted(log[2:]) == ["app-eos-1 epoch", "app-eos-1 start", "app-eos-2 epoch", "app-eos-2 start"]
    assert sorted(txns.producers) == [1, 2] and txns.producers[1] is not first[1]
    assert transactional_id("app", 2) == "app-eos-2"


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


async def test_timed_batches_record_each_transaction_phase_of_their_slowest_partition(tmp_path: Any) -> None:
    log: list[str] = []
    txns = await started(log, {0, 1})
    txns.producers[1].commit_s = 0.05  # partition 1's EndTxn is the slow one
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
    await sink.deliver_atomically({TP("events", 0): recs(1), TP("events", 1): recs(2)})
    timings.note(records=2)
    timings.end()
    timings.close()
    (line,) = (orjson.loads(x) for x in (tmp_path / "t.jsonl").read_bytes().splitlines() if b"records" in x)
    assert line["txns"] == 2
    assert 50 <= line["txn_end_ms"] <= line["deliver_ms"]  # partition 1's, not partition 0's (~0 ms)
    assert line["txn_send_ms"] >= 0 and line["txn_offsets_ms"] >= 0
    # the whole transaction: partition 1's took the 50 ms, partition 0's next to nothing
    assert 50 <= line["txn_slowest_ms"] <= line["deliver_ms"]
    assert line["txn_fastest_ms"] < 40
