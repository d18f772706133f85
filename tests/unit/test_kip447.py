"""KIP-447's requests in aiokafka's protocol types (runtime/kafka/kip447.py): what they encode, and how
the wait for stable committed offsets retries, gives up and words a broker too old for it. The real
broker's answers are tests/integration/test_transactions_kafka.py."""

from __future__ import annotations

import io
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from upsell_triggers.runtime.kafka import kip447


def test_txn_offset_commit_v3_carries_the_generation_and_member_id_on_the_wire() -> None:
    request = kip447.TxnOffsetCommitV3(
        "app-eos-1", "app", 7, 2, 5, "member-1", {"events": [(0, 12, ""), (3, 40, "")]}
    ).prepare({28: (0, 3)})
    assert request.API_VERSION == 3 and request.FLEXIBLE_VERSION
    decoded = kip447.TxnOffsetCommitRequest_v3.SCHEMA.decode(io.BytesIO(request.encode()))
    assert decoded[:7] == ("app-eos-1", "app", 7, 2, 5, "member-1", None)
    assert decoded[7] == [("events", [(0, 12, -1, "", {}), (3, 40, -1, "", {})], {})]


def test_a_broker_without_version_3_is_not_sent_an_older_one() -> None:
    with pytest.raises(NotImplementedError):
        kip447.TxnOffsetCommitV3("t", "g", 1, 0, 1, "m", {}).prepare({28: (0, 2)})


def test_stable_offset_fetch_asks_with_require_stable() -> None:
    request = kip447.StableOffsetFetch("app", {"events": [3, 1]}).prepare({9: (0, 8)})
    assert request.API_VERSION == 7
    decoded = kip447.OffsetFetchRequest_v7.SCHEMA.decode(io.BytesIO(request.encode()))
    assert decoded == ("app", [("events", [1, 3], {})], True, {})


def answer(group_error: int, partitions: dict[int, tuple[int, int]]) -> Any:
    """An OffsetFetch v7 answer for topic `events`: partition -> (offset, error code)."""
    parts = [(p, offset, -1, "", code, {}) for p, (offset, code) in partitions.items()]
    return SimpleNamespace(topics=[("events", parts, {})], error_code=group_error)


class FakeClient:
    def __init__(self, answers: Iterator[Any]) -> None:
        self.answers = answers
        self.asked = 0

    async def coordinator_lookup(self, kind: Any, key: str) -> int:
        return 1

    async def send(self, node_id: int, request: Any, group: Any = None) -> Any:
        self.asked += 1
        found = next(self.answers)
        if isinstance(found, BaseException):
            raise found
        return found


async def test_unstable_offsets_are_asked_again_until_stable() -> None:
    client = FakeClient(
        iter(
            [
                answer(0, {0: (-1, kip447.UNSTABLE_OFFSET_COMMIT), 1: (8, 0)}),
                answer(kip447.UNSTABLE_OFFSET_COMMIT, {0: (-1, 0), 1: (8, 0)}),
                answer(0, {0: (15, 0), 1: (-1, 0)}),
            ]
        )
    )
    got = await kip447.stable_committed_offsets(client, "app", {"events": [0, 1]}, 5.0, retry_s=0.001)
    assert got == {("events", 0): 15, ("events", 1): None} and client.asked == 3


async def test_offsets_unstable_past_the_wait_raise_timeout() -> None:
    def unstable() -> Iterator[Any]:
        while True:
            yield answer(0, {0: (-1, kip447.UNSTABLE_OFFSET_COMMIT)})

    with pytest.raises(TimeoutError, match=r"stayed unstable for 0\.05 s"):
        await kip447.stable_committed_offsets(FakeClient(unstable()), "app", {"events": [0]}, 0.05, 0.01)


async def test_another_error_is_raised_at_once() -> None:
    client = FakeClient(iter([answer(30, {0: (-1, 0)})]))  # GROUP_AUTHORIZATION_FAILED
    with pytest.raises(Exception, match="GroupAuthorizationFailed"):
        await kip447.stable_committed_offsets(client, "app", {"events": [0]}, 5.0)
    assert client.asked == 1


async def test_a_broker_too_old_for_kip_447_is_one_line_saying_what_to_do() -> None:
    client = FakeClient(
        iter([NotImplementedError("Support for StableOffsetFetch v0 has not yet been added")])
    )
    with pytest.raises(kip447.TooOldBroker) as info:
        await kip447.stable_committed_offsets(client, "app", {"events": [0]}, 5.0)
    assert str(info.value) == (
        "UPSELL_PROCESSING_GUARANTEE=exactly_once needs Kafka 2.5 or newer (KIP-447: OffsetFetch version 7, "
        "TxnOffsetCommit version 3); upgrade the brokers or use at_least_once"
    )
