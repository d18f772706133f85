"""BatchSink: outputs, then state, then ack, against a fake producer that logs what it is given and
when the broker would acknowledge it; a delivery that fails acks nothing and writes no state. The batch
loop does not wait for the acknowledgements: the state write does."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from upsell_triggers.deadletter import DeadLetter
from upsell_triggers.metrics import Metrics
from upsell_triggers.runtime.batch_apply import Outputs
from upsell_triggers.runtime.sink import BatchSink, SinkTopics

EVENTS = TP("events", 0)


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, key: bytes, value: bytes, timestamp: None) -> object:
        self.records.append((key, value))
        return object()


class FakeProducer:
    """aiokafka's producer as the sink uses it. `fail` names a topic whose deliveries fail."""

    def __init__(self, log: list[str], fail: str | None = None) -> None:
        self.log, self.fail = log, fail

    def _future(self, topic: str, what: str, offset: int = 0) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def acknowledge() -> None:
            if topic == self.fail:
                self.log.append(f"failed {what}")
                fut.set_exception(ConnectionError("broker gave up"))
            else:
                self.log.append(f"acknowledged {what}")
                fut.set_result(SimpleNamespace(offset=offset))

        asyncio.get_running_loop().call_soon(acknowledge)
        return fut

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: list[Any] | None = None
    ) -> asyncio.Future[Any]:
        self.log.append(f"send {topic} {value.decode()}")
        return self._future(topic, f"{topic} {value.decode()}")

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future[Any]:
        self.log.append(f"send {topic} {[k.decode() for k, _ in batch.records]}")
        return self._future(topic, topic, offset=100)


class FakeStates:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.dirty: dict[bytes, bytes] = {}
        self.persisted: list[tuple[Any, int]] = []

    def trim(self) -> None: ...

    def flush(self) -> dict[int, list[tuple[bytes, bytes]]]:
        self.log.append(f"flush {len(self.dirty)} states")
        out = {0: list(self.dirty.items())} if self.dirty else {}
        self.dirty.clear()
        return out

    def must_flush(self) -> bool:
        return len(self.dirty) >= 2

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted.append((tp, offset))


def make(fail: str | None = None) -> tuple[BatchSink, list[str], FakeStates]:
    log: list[str] = []
    states = FakeStates(log)

    def apply(batch: Mapping[TP, Sequence[Any]]) -> Outputs:
        out = Outputs(newest_ts=1)
        for r in batch[EVENTS]:
            log.append(f"apply {r.offset}")
            states.dirty[f"acct{r.offset}".encode()] = b"state"
            if r.value == b"bad":
                out.dead_letters.append(DeadLetter("invalid_json", "not JSON", b"bad", None, {"line": 1}))
            else:
                out.prompts.append((b"acct", f"prompt{r.offset}".encode()))
        return out

    producer = FakeProducer(log, fail)
    sink = BatchSink(
        apply, lambda: producer, SinkTopics("prompts", "dlq", lambda: "changelog"), states, Metrics()
    )
    return sink, log, states


def records(*offsets: int, value: bytes = b"ok") -> dict[TP, list[Any]]:
    return {EVENTS: [SimpleNamespace(offset=o, value=value) for o in offsets]}


async def test_outputs_are_acknowledged_before_state_is_written_and_offsets_acked_after_it() -> None:
    sink, log, states = make()
    acks: list[tuple[int, TP, int, int]] = []

    def ack(generation: int, tp: TP, first: int, last: int) -> None:
        log.append(f"ack {first}..{last}")
        acks.append((generation, tp, first, last))

    await sink.deliver(records(5, 6))
    sink.hold(1, EVENTS, 5, 6)
    # Handed to the producer; the batch loop goes on before the broker acknowledges them.
    assert log == ["apply 5", "apply 6", "send prompts prompt5", "send prompts prompt6"]
    assert not sink.acknowledged()
    await asyncio.sleep(0)
    assert log[-2:] == ["acknowledged prompts prompt5", "acknowledged prompts prompt6"]
    assert sink.acknowledged()
    await sink.deliver(records(7, value=b"bad"))  # write-behind: a second batch before any write
    sink.hold(1, EVENTS, 7, 7)
    assert acks == [] and "flush" not in " ".join(log)
    assert sink.must_write()  # three states unwritten, bound two
    del log[:]
    await sink.write(ack)
    await asyncio.sleep(0)  # the changelog batch's acknowledgement
    assert log == [
        "acknowledged dlq bad",  # the write waited for the second batch's dead letter
        "flush 3 states",
        "send changelog ['acct5', 'acct6', 'acct7']",
        "ack 5..6",
        "ack 7..7",
        "acknowledged changelog",  # before the commit of the acked offsets: Faust flushes first
    ]
    await asyncio.sleep(0.01)  # the acknowledgement's done-callback
    assert acks == [(1, EVENTS, 5, 6), (1, EVENTS, 7, 7)]
    assert states.persisted == [(TP("changelog", 0), 102)]  # the last of 3 records from offset 100
    await sink.write(ack)  # nothing held: nothing written, nothing acked again
    assert acks == [(1, EVENTS, 5, 6), (1, EVENTS, 7, 7)]


async def test_a_write_waits_for_outputs_still_on_their_way() -> None:
    sink, log, _ = make()
    await sink.deliver(records(3))
    sink.hold(1, EVENTS, 3, 3)
    await sink.write(lambda *a: log.append("ack"))
    assert log.index("acknowledged prompts prompt3") < log.index("flush 1 states") < log.index("ack")


async def test_a_failed_delivery_raises_at_the_write_and_nothing_is_acked_or_written() -> None:
    sink, log, _ = make(fail="dlq")
    acks: list[object] = []
    await sink.deliver(records(8, value=b"bad"))
    sink.hold(1, EVENTS, 8, 8)
    await sink.deliver(records(9))  # a batch applied before the failure was known
    sink.hold(1, EVENTS, 9, 9)
    with pytest.raises(ConnectionError):
        await sink.write(lambda *a: acks.append(a))
    assert "failed dlq bad" in log
    assert acks == [] and sink.held == [] and "flush" not in " ".join(log)
    assert not sink.acknowledged()  # the failure stays: every later write raises it too
    await sink.deliver(records(10))
    sink.hold(1, EVENTS, 10, 10)
    with pytest.raises(ConnectionError):
        await sink.write(lambda *a: acks.append(a))
    assert acks == [] and "flush" not in " ".join(log)


async def test_a_send_refused_at_once_writes_no_state_afterwards() -> None:
    """A send that raises at once (not a delivery that fails later): the batch's state changes are in
    memory and its outputs not all sent. The write the worker's final commit makes must not write them
    (its events would count as applied, their prompts never sent), nor the earlier batches' states."""
    sink, log, states = make()
    await sink.deliver(records(1))  # an earlier batch, delivered and held
    sink.hold(1, EVENTS, 1, 1)
    producer = sink.producer()

    async def refuse(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        raise KafkaTimeoutLike("metadata not available")

    producer.send = refuse  # type: ignore[method-assign]
    with pytest.raises(KafkaTimeoutLike):
        await sink.deliver(records(2))
    assert b"acct2" in states.dirty  # applied in memory
    acks: list[object] = []
    with pytest.raises(RuntimeError):
        await sink.write(lambda *a: acks.append(a))
    assert acks == [] and sink.held == [] and "flush" not in " ".join(log)
    with pytest.raises(RuntimeError):  # and no batch after it is applied
        await sink.deliver(records(3))
    assert b"acct3" not in states.dirty


class KafkaTimeoutLike(Exception):
    pass


async def test_a_failed_state_write_acks_nothing_and_holds_nothing() -> None:
    sink, _, _ = make()
    await sink.deliver(records(9))
    sink.hold(1, EVENTS, 9, 9)
    sink.producer = lambda: (_ for _ in ()).throw(RuntimeError("producer not started"))
    acks: list[object] = []
    with pytest.raises(RuntimeError):
        await sink.write(lambda *a: acks.append(a))
    assert acks == [] and sink.held == []
