"""`upsell-triggers erase ACCOUNT_ID`: serves an erasure request by producing an `account_deleted` event
to the events topic, keyed by the account like every event of it, so that it lands in the account's
partition behind the events already sent and every worker, `replay` of the topic and embedded run
applies it in order (docs/erasure.md). With `--print` it writes the event as a JSON line instead, for an
events file."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

import orjson
from pydantic import ValidationError

from upsell_triggers.engine.events import AccountDeletedEvent
from upsell_triggers.engine.timeutil import to_iso
from upsell_triggers.startup import StartupError

if TYPE_CHECKING:
    from upsell_triggers.settings import Settings


def deletion_event(account_id: str, at: str | None, event_id: str | None, now_ms: int) -> bytes:
    """The event as its model accepts it. `at` (RFC 3339 or epoch ms) is the deletion's event time, up to
    which the account's events still in flight are dropped: by default now. The event id defaults to one
    derived from the deletion's time (a request produced twice is one deletion either way: the second is
    not after the first's time)."""
    ts: str | int = now_ms if at is None else int(at) if at.isdigit() else at
    try:
        ev = AccountDeletedEvent.model_validate(
            {"type": "account_deleted", "account_id": account_id, "ts": ts, "event_id": event_id or "erase"}
        )
    except ValidationError as err:
        e = err.errors(include_url=False)[0]
        where = {"account_id": "ACCOUNT_ID", "ts": "--at", "event_id": "--event-id"}.get(str(e["loc"][0]), "")
        raise StartupError(f"{where}: {e['msg'].removeprefix('Value error, ')}") from None
    value = {"event_id": event_id or f"account_deleted:{ev.ts}", "account_id": ev.account_id}
    return orjson.dumps({**value, "type": "account_deleted", "ts": to_iso(ev.ts)})


async def produce(s: Settings, key: bytes, value: bytes) -> tuple[int, int]:
    """Sends the event and waits until every in-sync replica has it: (partition, offset)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from upsell_triggers.gateway.kafka import client_options

    admin = AIOKafkaAdminClient(**client_options(s))
    await admin.start()
    try:
        topics = await admin.list_topics()
    finally:
        await admin.close()
    if s.topic_events not in topics:  # a broker that creates topics on first use would get it wrong
        raise StartupError(
            f"topic {s.topic_events!r} does not exist: check UPSELL_TOPIC_EVENTS (the workers create it)", 1
        )
    producer = AIOKafkaProducer(**client_options(s), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        md = await producer.send_and_wait(s.topic_events, value, key=key)
    except KafkaError as err:  # not enough replicas, not authorized, ...: one line, nothing was erased
        raise StartupError(f"the broker refused the event ({err!r}): nothing was erased; retry", 1) from None
    finally:
        await producer.stop()
    return md.partition, md.offset


def run_erase(s: Settings, account_id: str, at: str | None, event_id: str | None, to_stdout: bool) -> int:
    value = deletion_event(account_id, at, event_id, int(time.time() * 1000))
    if to_stdout:
        sys.stdout.buffer.write(value + b"\n")
        return 0
    if not s.kafka_bootstrap_servers:
        raise StartupError(
            "erase produces to Kafka: set KAFKA_BOOTSTRAP_SERVERS (or --print the event for an events file)"
        )
    from upsell_triggers import startup
    from upsell_triggers.gateway.kafka import client_options

    startup.broker_answers(s, client_options(s))  # a broker that does not answer: one line, in time
    partition, offset = asyncio.run(produce(s, account_id.encode(), value))
    print(f"account_deleted for {account_id!r} produced to {s.topic_events}[{partition}]@{offset}")
    print(value.decode())
    return 0
