"""exactly_once's wait for the changelog's transactions at a take-over (runtime/kafka/last_stable.py):
the end offsets it reads per leader and isolation level, when it is done, what it does when a leader
moved, and what it says when it gives up. On the real broker: tests/integration/test_transactions_kafka.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import GroupAuthorizationFailedError
from aiokafka.structs import TopicPartition

from upsell_triggers.runtime.kafka import last_stable

CL0, CL1 = TopicPartition("cl", 0), TopicPartition("cl", 1)


class FakeClient:
    """Leaders per partition; per isolation level, the end offsets to answer, one list entry per ask
    (the last repeats); an error code per partition to answer instead, once."""

    def __init__(
        self, ends: dict[int, list[dict[int, int]]], leaders: dict[TopicPartition, int | None]
    ) -> None:
        self.ends = ends
        self.leaders = leaders
        self.errors: dict[int, int] = {}
        self.asked: list[tuple[int, int]] = []  # (node, isolation)
        self.refreshed = 0
        self.cluster = SimpleNamespace(leader_for_partition=lambda tp: self.leaders.get(tp))

    def add_topic(self, topic: str) -> None: ...

    async def force_metadata_update(self) -> bool:
        self.refreshed += 1
        return True

    async def send(self, node: int, request: Any) -> Any:
        isolation = request._isolation_level
        self.asked.append((node, isolation))
        answers = self.ends[isolation]
        now = answers.pop(0) if len(answers) > 1 else answers[0]
        parts = []
        for _topic, partitions in request._topics:
            for p, ts in partitions:
                assert ts == last_stable.LATEST
                code = self.errors.pop(p, 0)
                parts.append((p, code, -1, now[p]))  # ListOffsets v1-v3: partition, error, timestamp, offset
        return SimpleNamespace(topics=[("cl", parts)])


async def test_done_once_the_last_stable_offsets_reach_the_high_watermarks_taken_first() -> None:
    client = FakeClient(
        {
            last_stable.READ_UNCOMMITTED: [{0: 10, 1: 4}],
            last_stable.READ_COMMITTED: [{0: 7, 1: 4}, {0: 11, 1: 4}],
        },
        {CL0: 1, CL1: 2},
    )
    await last_stable.wait_settled(client, [CL0, CL1], 5.0, retry_s=0.001)
    # one high watermark per leader, then the stable offsets until they reached them
    assert client.asked == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 1), (2, 1)]


async def test_a_moved_leader_refreshes_the_metadata_before_asking_again() -> None:
    client = FakeClient({0: [{0: 5}], 1: [{0: 5}]}, {CL0: 1})
    client.errors[0] = 6  # NOT_LEADER_OR_FOLLOWER
    await last_stable.wait_settled(client, [CL0], 5.0, retry_s=0.001)
    assert client.refreshed == 1 and len(client.asked) == 3


async def test_an_unknown_leader_asks_for_metadata() -> None:
    client = FakeClient({0: [{0: 5}], 1: [{0: 5}]}, {})
    with pytest.raises(TimeoutError, match=r"could not be read \(LeaderNotAvailableError"):
        await last_stable.wait_settled(client, [CL0], 0.02, retry_s=0.005)
    assert client.refreshed >= 2 and client.asked == []


async def test_an_open_transaction_past_the_wait_is_named() -> None:
    client = FakeClient({0: [{0: 9}], 1: [{0: 3}]}, {CL0: 1})
    with pytest.raises(TimeoutError, match=r"transactions on cl\[0\] stayed open for 0\.02 s"):
        await last_stable.wait_settled(client, [CL0], 0.02, retry_s=0.005)


async def test_an_error_that_asking_again_cannot_fix_is_raised_at_once() -> None:
    client = FakeClient({0: [{0: 9}], 1: [{0: 3}]}, {CL0: 1})
    client.errors[0] = 30  # GROUP_AUTHORIZATION_FAILED: not retriable
    with pytest.raises(GroupAuthorizationFailedError):
        await last_stable.wait_settled(client, [CL0], 5.0)


async def test_nothing_to_wait_for_asks_nothing() -> None:
    client = FakeClient({0: [{}], 1: [{}]}, {})
    await last_stable.wait_settled(client, [], 5.0)
    assert client.asked == []
