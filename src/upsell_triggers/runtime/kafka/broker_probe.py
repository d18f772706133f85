"""Whether the broker answers: the Kafka half of the worker's readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.protocol.metadata import MetadataRequest


async def broker_answers(client: Any, per_broker_s: float = 1.0) -> bool:
    """Whether some known broker answers a metadata request for no topics (its reply lists brokers only).

    Not aiokafka's force_metadata_update, which for the producer's client asks for every topic of the
    cluster: with ~1,300 topics on the broker, building and parsing that reply held the producer's
    requests for 30-60 ms once a second, the whole p99 of event -> prompt latency (bench/latency.py;
    p99 at 10k events/s 42 ms with that probe off against 59 ms with it, one run each). A request, not
    only a connection check, so that a broker that accepts connections but does not answer is noticed.
    """
    for broker in client.cluster.brokers():
        try:
            await asyncio.wait_for(client.send(broker.nodeId, MetadataRequest([])), per_broker_s)
            return True
        except Exception:  # refused, timed out, disconnected: try the next broker
            continue
    return False
