"""Keyed records (prompts, leads) to a topic through aiokafka's batch builders, one per partition,
instead of a send() per record.

A send() costs the worker a coroutine, a delivery future, a size estimate and a metadata wait per
record: on the near-limits benchmark mix, about a tenth of a record's events emit a prompt, and those
sends were about 4% of the worker's samples. A batch builder takes a record in one append, and the
producer gets one future per builder. Each record goes to the partition send() would choose for it
(the producer's own partitioner, compat.keyed_partitions), in order within its partition, with the
same bytes, no headers and the append time as its timestamp, as send() writes them.

Only for a run of at least BATCH_FROM records: aiokafka queues a builder for a partition only once the
partition's previous batch was drained (sent to the broker), and with one broker connection that
waits for the request in flight. A caught-up worker's small batches would wait for it; send() adds
their few records to the batch already queued instead. A backlog's batches (thousands of records, the
previous batch long drained) do not wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from upsell_triggers.runtime.kafka import compat

BATCH_FROM = 256


async def send_keyed(
    producer: Any, topic: str, records: Sequence[tuple[bytes, bytes]]
) -> list[asyncio.Future[Any]]:
    """Hands (key, value) records to the producer for `topic`; their delivery futures (one per record
    or one per batch builder, each failing if a record it covers failed)."""
    if len(records) < BATCH_FROM:
        return [await producer.send(topic, value, key=key) for key, value in records]
    await producer.partitions_for(topic)  # the topic's metadata, as send() waits for it
    partition_of = compat.keyed_partitions(producer, topic)
    builders: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for key, value in records:
        partition = partition_of(key)
        builder = builders.get(partition)
        if builder is None:
            builder = builders[partition] = producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
            futures.append(await producer.send_batch(builder, topic, partition=partition))
            builder = builders[partition] = producer.create_batch()
            builder.append(key=key, value=value, timestamp=None)  # an empty builder takes any record
    for partition, builder in builders.items():
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    return futures
