"""ensure_topics when replicas start together (a fake admin client: the broker's answers are scripted).

Found by the scaling benchmark: the replica that lost the topic-creation race described the new topic
before its metadata had partitions and exited with a partition-count 'mismatch'."""

from __future__ import annotations

from typing import Any

import pytest

from upsell_triggers.runtime.kafka import topics
from upsell_triggers.settings import Settings


class FakeAdmin:
    def __init__(self, describes: list[dict[str, int]], create_errors: list[tuple[Any, ...]]) -> None:
        self.describes = describes
        self.create_errors = create_errors
        self.created: list[str] = []

    def __call__(self, **_: Any) -> FakeAdmin:
        return self

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        return []

    async def create_topics(self, topics: list[Any]) -> Any:
        self.created += [t.name for t in topics]
        return type("Resp", (), {"topic_errors": self.create_errors})()

    async def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        counts = self.describes.pop(0) if len(self.describes) > 1 else self.describes[0]
        return [{"topic": n, "partitions": [0] * counts[n]} for n in names]


def settings() -> Settings:
    return Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_events="ev", topic_feedback="fb")


async def test_waits_for_partitions_of_a_topic_another_replica_just_created(monkeypatch) -> None:
    fake = FakeAdmin([{"ev": 4, "fb": 0}, {"ev": 4, "fb": 0}, {"ev": 4, "fb": 4}], [("ev", 36, "exists")])
    monkeypatch.setattr("aiokafka.admin.AIOKafkaAdminClient", fake)
    await topics.ensure_topics(settings())  # no SystemExit: it waited for fb's partitions
    assert fake.describes == [{"ev": 4, "fb": 4}]


async def test_a_real_mismatch_still_stops_start_up(monkeypatch) -> None:
    monkeypatch.setattr("aiokafka.admin.AIOKafkaAdminClient", FakeAdmin([{"ev": 4, "fb": 2}], []))
    with pytest.raises(SystemExit, match="same partition count"):
        await topics.ensure_topics(settings())


async def test_other_creation_errors_stop_start_up(monkeypatch) -> None:
    fake = FakeAdmin([{"ev": 4, "fb": 4}], [("ev", 29, "TOPIC_AUTHORIZATION_FAILED")])
    monkeypatch.setattr("aiokafka.admin.AIOKafkaAdminClient", fake)
    with pytest.raises(SystemExit, match="cannot create topic ev"):
        await topics.ensure_topics(settings())
