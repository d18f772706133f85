"""The caught-up writer task of the Kafka worker: states are written at most every WRITE_INTERVAL_S, never
before every output of the batches they reflect is acknowledged, and a failed output crashes the worker
at once rather than after the interval."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from faust.types import TP

from upsell_triggers.runtime import batch_consumer
from upsell_triggers.runtime.batch_consumer import BatchConsumer
from upsell_triggers.runtime.sink import BatchSink, SinkTopics

TOPIC = TP("events", 0)


class _States:
    """No changed states to send: what is asserted is when the sink acks the offsets it holds."""

    def flush(self) -> dict[int, list[tuple[bytes, bytes | None]]]:
        return {}


class _App:
    def __init__(self) -> None:
        self.crashed: list[BaseException] = []

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


class _Writer:
    """BatchConsumer's write policy on a real BatchSink, without Faust's consumer around it."""

    _written_at = 0.0
    _caught_up = True
    timings = None
    _write_state = BatchConsumer._write_state
    _until_write_due = BatchConsumer._until_write_due
    _write_acknowledged = BatchConsumer._write_acknowledged

    def __init__(self) -> None:
        topics = SinkTopics("prompts", "dlq", lambda: "changelog")
        self.sink = BatchSink(lambda batch: None, lambda: None, topics, _States(), None)  # type: ignore[arg-type]
        self.in_flight = asyncio.Lock()
        self.app = _App()
        self.acked: list[tuple[int, float]] = []  # (last offset, when)

    def _ack_if_current(self, generation: int, tp: TP, first: int, last: int) -> None:
        self.acked.append((last, time.monotonic()))

    def deliver(self, last: int) -> asyncio.Future[Any]:
        """A batch up to `last` sent one output, not acknowledged yet, and holds its offsets."""
        output: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sink.unacknowledged.append(output)
        self.sink.hold(1, TOPIC, last, last)
        return output

    async def write_earlier(self, last: int) -> None:
        """An earlier batch up to `last`, acknowledged and written: the interval starts here."""
        self.deliver(last).set_result(None)
        async with self.in_flight:
            await self._write_state()


@pytest.mark.asyncio
async def test_a_batch_sent_during_the_interval_is_written_once_its_outputs_are_acknowledged() -> None:
    w = _Writer()
    await w.write_earlier(10)
    assert [last for last, _ in w.acked] == [10]
    written_at = w._written_at
    second = w.deliver(20)
    writer = asyncio.ensure_future(w._write_acknowledged())
    await asyncio.sleep(batch_consumer.WRITE_INTERVAL_S * 3)
    assert [last for last, _ in w.acked] == [10], "written before its output was acknowledged"
    second.set_result(None)
    await asyncio.wait_for(writer, 1)
    assert [last for last, _ in w.acked] == [10, 20]
    assert w.acked[1][1] - written_at >= batch_consumer.WRITE_INTERVAL_S
    assert not w.app.crashed


@pytest.mark.asyncio
async def test_states_wait_for_the_interval_after_the_last_write() -> None:
    w = _Writer()
    await w.write_earlier(10)
    w.deliver(20).set_result(None)
    await asyncio.wait_for(w._write_acknowledged(), 1)
    assert [last for last, _ in w.acked] == [10, 20]
    assert w.acked[1][1] - w.acked[0][1] >= 0.9 * batch_consumer.WRITE_INTERVAL_S


@pytest.mark.asyncio
async def test_a_failed_output_crashes_the_worker_without_waiting_for_the_interval() -> None:
    w = _Writer()
    await w.write_earlier(10)
    failed = w.deliver(20)
    failed.set_exception(RuntimeError("broker refused the prompt"))
    t0 = time.monotonic()
    await asyncio.wait_for(w._write_acknowledged(), 1)
    assert time.monotonic() - t0 < batch_consumer.WRITE_INTERVAL_S
    assert [type(e) for e in w.app.crashed] == [RuntimeError]
    assert [last for last, _ in w.acked] == [10], "nothing after the failed output is acked"


@pytest.mark.asyncio
async def test_a_commit_with_nothing_pending_does_not_push_the_next_write_back() -> None:
    w = _Writer()
    async with w.in_flight:
        await w._write_state()
    assert w._written_at == 0.0
