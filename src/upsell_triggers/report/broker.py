"""`report --kafka`: the service's own topics as the report's input.

Each topic is read whole, from its first retained record to its end when the report starts: plan
changes from before `--since` say which plan an account was on, feedback arrives after its prompt, and
the engine that finds the holdout (report/holdout.py) sees as much history as the topic keeps. An
account whose rule state depends on events the topic no longer holds (a cooldown started before the
retention window) can be decided differently there than it was by the service: the holdout from the
topics is exact when the topic holds the account's whole history, close otherwise.
`--since`/`--until` then select the prompts and holdout decisions that count, by event time.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


@dataclass(frozen=True, slots=True)
class Topics:
    prompts: list[bytes]
    events: list[bytes]  # the events topic, then the feedback topic
    usage: list[bytes]  # the events topic alone (for finding the holdout)
    names: tuple[str, str]


async def read_topic(bootstrap: str, topic: str, client: dict[str, Any]) -> list[bytes]:
    """Every record value of `topic`, partition by partition (an account's records stay in order),
    up to the end offsets seen at the start."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)
    await admin.start()
    try:
        (desc,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if desc.get("error_code") or not desc.get("partitions"):
        raise SystemExit(f"report: topic {topic!r} does not exist at {bootstrap} (set UPSELL_TOPIC_*)")
    # read_committed: with exactly_once workers, the records of aborted transactions are not prompts.
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
        **client,
    )
    await c.start()
    try:
        tps = [
            TopicPartition(topic, p["partition"])
            for p in sorted(desc["partitions"], key=lambda p: p["partition"])
        ]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        out: dict[int, list[bytes]] = {tp.partition: [] for tp in tps}
        pending = {tp for tp in tps if end[tp] > await c.position(tp)}
        while pending:
            batch = await c.getmany(*pending, timeout_ms=1000, max_records=50_000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < end[tp] and r.value is not None:
                        out[tp.partition].append(r.value)
                if await c.position(tp) >= end[tp]:
                    pending.discard(tp)
        return [v for p in sorted(out) for v in out[p]]
    finally:
        await c.stop()


def read_topics(err: IO[str] = sys.stderr) -> Topics:
    from upsell_triggers import startup
    from upsell_triggers.gateway.kafka import client_options
    from upsell_triggers.runtime.kafka.auth import aiokafka_auth

    s = startup.load_settings({})
    if not s.kafka_bootstrap_servers:
        raise startup.StartupError(
            "report --kafka: set KAFKA_BOOTSTRAP_SERVERS to the service's brokers", startup.USAGE
        )
    startup.broker_answers(s, client_options(s))  # unreachable: one line, in time, as for `run`

    client = {"security_protocol": s.security_protocol, **aiokafka_auth(s)}

    async def all_three() -> list[list[bytes]]:
        bs = s.kafka_bootstrap_servers or ""
        return [await read_topic(bs, t, client) for t in (s.topic_prompts, s.topic_events, s.topic_feedback)]

    prompts, usage, feedback = asyncio.run(all_three())
    err.write(
        f"read {len(prompts):,} prompts ({s.topic_prompts}), {len(usage):,} events ({s.topic_events}), "
        f"{len(feedback):,} feedback events ({s.topic_feedback})\n"
    )
    return Topics(prompts, usage + feedback, usage, (s.topic_prompts, f"{s.topic_events}+{s.topic_feedback}"))
