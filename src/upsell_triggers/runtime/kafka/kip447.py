"""The two requests of KIP-447 (Kafka 2.5+) that aiokafka 0.14 does not send, in aiokafka's own
protocol types: TxnOffsetCommit version 3 and OffsetFetch version 7.

With them one transactional producer per worker can commit the offsets of every partition it owns
and still be fenced when it loses them (runtime/kafka/transactions.py):

- TxnOffsetCommit v3 carries the consumer group's generation and member id. The group coordinator
  refuses the offsets of a member that left the group or of an older generation (ILLEGAL_GENERATION,
  UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID), so a worker that lost its partitions cannot commit its
  transaction; version 0, which aiokafka sends, carries neither and the broker cannot tell.
- OffsetFetch v7 with `require_stable` answers UNSTABLE_OFFSET_COMMIT while a transaction holds
  offsets of the partition that are not committed or aborted yet. A worker that takes partitions over
  waits for that before it reads the changelog and the committed offsets, so what a previous owner's
  transaction committed at the last moment is part of what it starts from.

Both are flexible versions (compact strings and arrays, tagged fields, request header v2), which
aiokafka's protocol module encodes (`FLEXIBLE_VERSION`). Checked against Apache Kafka 3.9
(tests/integration/test_transactions_kafka.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

NO_LEADER_EPOCH = -1
STRING = CompactString("utf-8")


def _per_topic(*partition_fields: tuple[str, Any]) -> tuple[str, Any]:
    """The `topics` field of these requests and answers: per topic its name and its partitions, each
    with `partition_fields`; every level ends in tagged fields (flexible versions)."""
    partitions = CompactArray(*partition_fields, ("tags", TaggedFields))
    return ("topics", CompactArray(("name", STRING), ("partitions", partitions), ("tags", TaggedFields)))


class TxnOffsetCommitResponse_v3(Response):  # type: ignore[misc]
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _per_topic(("partition_index", Int32), ("error_code", Int16)),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", STRING),
        ("group_id", STRING),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", STRING),
        ("group_instance_id", STRING),
        _per_topic(
            ("partition_index", Int32),
            ("committed_offset", Int64),
            ("committed_leader_epoch", Int32),
            ("committed_metadata", STRING),
        ),
        ("tags", TaggedFields),
    )


TxnOffsetCommitV3Struct: TypeAlias = TxnOffsetCommitRequest_v3


class TxnOffsetCommitV3(Request[TxnOffsetCommitV3Struct]):  # type: ignore[misc]
    """TxnOffsetCommit with the group's generation and member id. `offsets`: topic -> [(partition,
    next offset, metadata)]. aiokafka's version negotiation refuses to send it to a broker without
    version 3 (before Kafka 2.5) rather than send an older version that cannot fence; such a broker
    fails the worker's first assignment already (`stable_committed_offsets`: TooOldBroker)."""

    API_KEY = 28

    def __init__(
        self,
        transactional_id: str,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        generation_id: int,
        member_id: str,
        offsets: dict[str, list[tuple[int, int, str]]],
        group_instance_id: str | None = None,
    ) -> None:
        self.values: tuple[Any, ...] = (
            transactional_id,
            group_id,
            producer_id,
            producer_epoch,
            generation_id,
            member_id,
            group_instance_id,
            [
                (topic, [(p, o, NO_LEADER_EPOCH, m, {}) for p, o, m in partitions], {})
                for topic, partitions in offsets.items()
            ],
            {},
        )

    def build(self, request_struct_class: type[TxnOffsetCommitV3Struct]) -> TxnOffsetCommitV3Struct:
        return request_struct_class(*self.values)


def txn_offset_commit_errors(resp: Any) -> list[tuple[str, list[tuple[int, int]]]]:
    """A version 3 answer as version 0's `errors` ([(topic, [(partition, error code)])]), the shape
    aiokafka's TxnOffsetCommitHandler reads."""
    return [(topic, [(p, code) for p, code, _ in partitions]) for topic, partitions, _ in resp.topics]


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        _per_topic(
            ("partition_index", Int32),
            ("committed_offset", Int64),
            ("committed_leader_epoch", Int32),
            ("metadata", STRING),
            ("error_code", Int16),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", STRING),
        (
            "topics",
            CompactArray(
                ("name", STRING),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


OffsetFetchV7Struct: TypeAlias = OffsetFetchRequest_v7


class StableOffsetFetch(Request[OffsetFetchV7Struct]):  # type: ignore[misc]
    """The committed offsets of `partitions` (topic -> partition numbers), answered only once no
    transaction holds pending offsets of them (require_stable)."""

    API_KEY = 9

    def __init__(self, group_id: str, partitions: dict[str, list[int]]) -> None:
        self.values: tuple[Any, ...] = (
            group_id,
            [(t, sorted(ps), {}) for t, ps in partitions.items()],
            True,
            {},
        )

    def build(self, request_struct_class: type[OffsetFetchV7Struct]) -> OffsetFetchV7Struct:
        return request_struct_class(*self.values)


def fetched_offsets(resp: Any) -> tuple[int, dict[tuple[str, int], tuple[int, int]]]:
    """(the answer's group error code, (topic, partition) -> (committed offset or -1, error code))."""
    found = {
        (topic, p): (offset, code)
        for topic, partitions, _ in resp.topics
        for p, offset, _epoch, _meta, code, _ in partitions
    }
    return int(resp.error_code), found


class TooOldBroker(Exception):
    def __str__(self) -> str:
        return (
            "UPSELL_PROCESSING_GUARANTEE=exactly_once needs Kafka 2.5 or newer (KIP-447: OffsetFetch "
            "version 7, TxnOffsetCommit version 3); upgrade the brokers or use at_least_once"
        )


UNSTABLE_OFFSET_COMMIT = 88
_COORDINATOR_RETRY = {14, 15, 16}  # COORDINATOR_LOAD_IN_PROGRESS, _NOT_AVAILABLE, NOT_COORDINATOR


async def stable_committed_offsets(
    client: Any,
    group_id: str,
    partitions: dict[str, list[int]],
    timeout_s: float,
    retry_s: float = 0.05,
) -> dict[tuple[str, int], int | None]:
    """The group's committed offsets of `partitions` once no transaction holds pending offsets of them:
    asks again every `retry_s` while the coordinator answers UNSTABLE_OFFSET_COMMIT (a transaction that
    committed offsets is still open: it ends with its producer's commit or abort, or the broker aborts
    it after its transaction timeout) or is loading or moving. `client`: a started aiokafka client (a
    producer's). Raises TimeoutError after `timeout_s`; None: nothing committed."""
    from aiokafka.client import ConnectionGroup, CoordinationType
    from aiokafka.errors import IncompatibleBrokerVersion, KafkaError, for_code

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    node_id: int | None = None
    while True:
        waiting_for = "an open transaction holds offsets of them"
        try:
            if node_id is None:
                node_id = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
            try:
                resp = await client.send(
                    node_id, StableOffsetFetch(group_id, partitions), group=ConnectionGroup.COORDINATION
                )
            except (NotImplementedError, IncompatibleBrokerVersion) as exc:  # no version 7 on the broker
                raise TooOldBroker() from exc
            code, found = fetched_offsets(resp)
            codes = {code} | {c for _, c in found.values()}
            codes.discard(0)
            if not codes:
                return {tp: (offset if offset >= 0 else None) for tp, (offset, _) in found.items()}
            if codes & _COORDINATOR_RETRY:
                node_id, waiting_for = None, "the group coordinator is loading or moved"
            elif codes != {UNSTABLE_OFFSET_COMMIT}:
                raise for_code(min(codes - {UNSTABLE_OFFSET_COMMIT}))()
        except KafkaError as exc:  # coordinator unknown, connection lost, timed out: ask again
            if not exc.retriable:
                raise
            node_id, waiting_for = None, repr(exc)
        if loop.time() >= deadline:
            raise TimeoutError(
                f"the committed offsets of group {group_id} stayed unstable for {timeout_s:g} s "
                f"({waiting_for})"
            )
        await asyncio.sleep(retry_s)
