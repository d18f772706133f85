"""The broker probe behind /readyz: any answering broker will do, and it asks for no topic."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from upsell_triggers.runtime.kafka.broker_probe import broker_answers


class FakeClient:
    """The AIOKafkaClient surface the probe uses: cluster.brokers() and send()."""

    def __init__(self, behaviour: dict[int, str]) -> None:
        self.behaviour = behaviour  # node id -> "answers" | "refuses" | "hangs"
        self.asked: list[tuple[int, Any]] = []
        self.cluster = SimpleNamespace(brokers=lambda: [SimpleNamespace(nodeId=n) for n in behaviour])

    async def send(self, node_id: int, request: Any) -> object:
        self.asked.append((node_id, request))
        how = self.behaviour[node_id]
        if how == "refuses":
            raise ConnectionError(f"no connection to node {node_id}")
        if how == "hangs":
            await asyncio.sleep(60)
        return object()


def test_ready_when_a_broker_answers_a_metadata_request_for_no_topics() -> None:
    client = FakeClient({1: "refuses", 2: "hangs", 3: "answers"})
    assert asyncio.run(broker_answers(client, per_broker_s=0.05))
    assert [n for n, _ in client.asked] == [1, 2, 3]  # past a refusing and a silent broker
    request = client.asked[-1][1]
    assert request._topics == []  # [] is "no topics"; None would list every topic of the cluster


def test_not_ready_when_no_broker_answers() -> None:
    assert not asyncio.run(broker_answers(FakeClient({1: "refuses", 2: "hangs"}), per_broker_s=0.05))
    assert not asyncio.run(broker_answers(FakeClient({})))  # no broker known yet
