"""The broker probe behind /readyz: any reachable broker will do, and it sends no request."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from upsell_triggers.runtime.faust_app import broker_reachable


class FakeClient:
    """aiokafka's AIOKafkaClient surface the probe may use: cluster.brokers() and ready()."""

    def __init__(self, up: set[int], known: list[int]) -> None:
        self.up = up
        self.asked: list[int] = []
        self.cluster = SimpleNamespace(brokers=lambda: [SimpleNamespace(nodeId=n) for n in known])

    async def ready(self, node_id: int) -> bool:
        self.asked.append(node_id)
        return node_id in self.up


def test_ready_when_any_known_broker_connects() -> None:
    client = FakeClient(up={2}, known=[1, 2, 3])
    assert asyncio.run(broker_reachable(client))
    assert client.asked == [1, 2]  # stops at the first reachable one


def test_not_ready_when_no_broker_connects() -> None:
    assert not asyncio.run(broker_reachable(FakeClient(up=set(), known=[1, 2])))
    assert not asyncio.run(broker_reachable(FakeClient(up={1}, known=[])))  # nothing known yet
