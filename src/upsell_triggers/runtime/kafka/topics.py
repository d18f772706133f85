"""The service's topics: created if missing, and checked for co-partitioning before the worker starts."""

from __future__ import annotations

import asyncio
import time

from upsell_triggers.runtime.kafka.auth import aiokafka_auth
from upsell_triggers.settings import Settings

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


async def ensure_topics(s: Settings) -> None:
    """Creates missing topics with the configured partition count; refuses to start on a mismatch
    between co-partitioned topics (an account's events and state would land on different workers)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(
        bootstrap_servers=s.kafka_bootstrap_servers,
        security_protocol=s.security_protocol,
        **aiokafka_auth(s),
    )
    await admin.start()
    try:
        topics = [s.topic_events, s.topic_feedback, s.topic_prompts, s.topic_leads, s.topic_dlq]
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            resp = await admin.create_topics(
                [NewTopic(t, s.topic_partitions, s.topic_replication) for t in missing]
            )
            for err in getattr(resp, "topic_errors", []):
                topic, code, *detail = err
                if code not in (0, TOPIC_ALREADY_EXISTS):  # already exists: another replica won the race
                    raise SystemExit(f"cannot create topic {topic}: Kafka error code {code} {tuple(detail)}")
        # Replicas start together: a topic just created may show no partitions yet. Wait for metadata.
        deadline = time.monotonic() + 30
        while True:
            described = await admin.describe_topics([s.topic_events, s.topic_feedback])
            counts = {d["topic"]: len(d["partitions"]) for d in described}
            if all(counts.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if len(set(counts.values())) != 1:
            raise SystemExit(
                f"topics {s.topic_events} and {s.topic_feedback} must have the same partition count "
                f"(they are co-partitioned by account_id); found {counts}"
            )
    finally:
        await admin.close()
