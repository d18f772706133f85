"""send_keyed: a run of keyed records goes through batch builders to the partitions aiokafka's send()
would choose, in order within each partition, with the same bytes; a short run goes through send()."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.producer.producer import AIOKafkaProducer

from upsell_triggers.runtime.kafka.keyed_batches import BATCH_FROM, send_keyed


class _Metadata:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3, 4, 5}

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3, 4, 5}


class FakeProducer:
    """The members of aiokafka's producer that send_keyed and compat.keyed_partitions use; batches of
    `batch_size` bytes so that some fill up."""

    def __init__(self, batch_size: int = 4096) -> None:
        self._metadata = _Metadata()
        self._partitioner = DefaultPartitioner()
        self.batch_size = batch_size
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes]]]] = []  # (topic, partition, records)
        self.single: list[tuple[str, bytes, bytes]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return self._metadata.partitions_for_topic(topic)

    def create_batch(self) -> Any:
        batch = BatchBuilder(self.batch_size, 0)
        batch.records = []  # type: ignore[attr-defined]
        append = batch.append

        def logged(*, timestamp: None, key: bytes, value: bytes) -> Any:
            meta = append(timestamp=timestamp, key=key, value=value)
            if meta is not None:
                batch.records.append((key, value))  # type: ignore[attr-defined]
            return meta

        batch.append = logged  # type: ignore[method-assign]
        return batch

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.records))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.single.append((topic, key, value))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


def _records(n: int) -> list[tuple[bytes, bytes]]:
    return [
        (f"acct-{i % 97}".encode(), f'{{"prompt":{i},"pad":"{"x" * (i % 50)}"}}'.encode()) for i in range(n)
    ]


async def test_a_long_run_goes_in_batches_to_the_partitions_send_would_choose_in_order() -> None:
    producer = FakeProducer()
    records = _records(3 * BATCH_FROM)
    futures = await send_keyed(producer, "prompts", records)
    assert producer.single == []
    assert len(futures) == len(producer.sent) > 6  # some builders filled up and were sent early
    got: dict[int, list[tuple[bytes, bytes]]] = {}
    for topic, partition, recs in producer.sent:
        assert topic == "prompts" and recs
        got.setdefault(partition, []).extend(recs)
    want: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in records:
        # aiokafka's own choice for the record, with the producer's partitioner and metadata
        p = AIOKafkaProducer._partition(producer, "prompts", None, key, value, key, value)  # type: ignore[arg-type]
        want.setdefault(p, []).append((key, value))
    assert got == want


async def test_a_short_run_goes_through_send() -> None:
    producer = FakeProducer()
    records = _records(BATCH_FROM - 1)
    futures = await send_keyed(producer, "leads", records)
    assert producer.sent == [] and len(futures) == len(records)
    assert producer.single == [("leads", k, v) for k, v in records]
