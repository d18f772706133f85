"""exactly_once: wait, at an assignment, until every transaction that wrote to the changelog
partitions before it has ended, so that a `read_committed` recovery reads to their end.

Faust's recovery reads a changelog partition up to its end offset as the consumer reports it, and a
`read_committed` consumer reports the last stable offset (LSO): the offset of the first record of
the oldest transaction still open. The wait for stable committed offsets (kip447) makes sure that
the previous owner's last transaction ended on the group coordinator; but the coordinator writes the
commit marker of each partition with a request of its own, so on a cluster of several brokers the
changelog partition's marker can land after the offsets' one, and a recovery that took the LSO then
would stop short of that transaction's states while the input resumes after its records (Kafka
Streams reads its changelogs' end offsets uncommitted for this reason, KAFKA-10167). So, once the
committed offsets are stable: take each partition's high watermark (read_uncommitted) and wait until
its LSO reached it. A transaction of a worker that died stays open until the broker aborts it after
its timeout: the wait includes that. aiokafka 0.14 sends ListOffsets up to version 3, without the
leader epoch of version 4+, so a leader elected during the take-over may answer a high watermark
briefly below its predecessor's; not covered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka.structs import TopicPartition

READ_UNCOMMITTED, READ_COMMITTED = 0, 1
LATEST = -1


async def end_offsets(
    client: Any, tps: Iterable[TopicPartition], isolation: int
) -> dict[TopicPartition, int]:
    """The end offsets of `tps` through a started aiokafka client (a producer's): the log end with
    READ_UNCOMMITTED, the last stable offset with READ_COMMITTED. Raises a retriable KafkaError (e.g.
    leader unknown) for the caller to ask again."""
    from aiokafka.errors import LeaderNotAvailableError, for_code
    from aiokafka.protocol.offset import OffsetRequest

    by_node: dict[int, dict[str, list[tuple[int, int]]]] = {}
    for tp in tps:
        node = client.cluster.leader_for_partition(tp)
        if node is None or node < 0:  # not in the client's metadata yet, or no leader now
            client.add_topic(tp.topic)
            await client.force_metadata_update()
            raise LeaderNotAvailableError(f"no leader known for {tp.topic}[{tp.partition}]")
        by_node.setdefault(node, {}).setdefault(tp.topic, []).append((tp.partition, LATEST))
    found: dict[TopicPartition, int] = {}
    for node, topics in by_node.items():
        resp = await client.send(node, OffsetRequest(-1, isolation, list(topics.items())))
        for topic, parts in resp.topics:
            for partition, code, *info in parts:
                if code:
                    raise for_code(code)()
                found[TopicPartition(topic, partition)] = int(info[1])
    return found


async def wait_settled(
    client: Any, tps: Iterable[TopicPartition], timeout_s: float, retry_s: float = 0.05
) -> None:
    """Until the last stable offset of every partition in `tps` reached its high watermark as of the
    call. A leader that moved (NOT_LEADER_OR_FOLLOWER and the like) refreshes the client's metadata
    before the next try. Raises TimeoutError after `timeout_s`, saying what it waited for."""
    from aiokafka.errors import KafkaError

    wanted = list(tps)
    if not wanted:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    target: dict[TopicPartition, int] | None = None
    while True:
        try:
            if target is None:
                target = await end_offsets(client, wanted, READ_UNCOMMITTED)
            stable = await end_offsets(client, wanted, READ_COMMITTED)
            behind = [tp for tp in wanted if stable[tp] < target[tp]]
            if not behind:
                return
            shown = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in behind[:4])
            waiting_for = f"transactions on {shown} stayed open"
        except KafkaError as exc:
            if not exc.retriable:
                raise
            if getattr(exc, "invalid_metadata", False):
                await client.force_metadata_update()
            waiting_for = f"the changelog's end offsets could not be read ({exc!r})"
        if loop.time() >= deadline:
            raise TimeoutError(f"{waiting_for} for {timeout_s:g} s")
        await asyncio.sleep(retry_s)
