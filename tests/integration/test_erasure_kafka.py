"""Erasure and retention in the Kafka worker, down to the compacted changelog: `upsell-triggers erase`
produces the deletion; the account's event in flight yields no prompt; its marker, and the state of an
account past the retention, leave the store with a tombstone once the partition's event time passes
the hold and the retention; after the broker's log cleaner compacted the changelog, no record of
either account holds a value; a recovery has neither; an event after the deletion starts a new account.

The changelog is compacted for real (segment.ms and min.cleanable.dirty.ratio set small on the topic the
worker created, then waiting for the log cleaner), not judged by its last record per key: the claim is
about what a compacted changelog holds, and that depends on Kafka's cleaner as well as on the worker."""

from __future__ import annotations

import asyncio
import sys
import time
from asyncio.subprocess import PIPE

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from devkit.exactness import read_all, wait_committed
from devkit.kafka_io import collect, event, produce
from tests.polling import until
from upsell_triggers.engine.statecodec import decode_state
from upsell_triggers.engine.timeutil import DAY, HOUR

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


async def compact_quickly(bs: str, topic: str) -> None:
    """Segments roll after 200 ms (on the next write) and are cleaned as soon as the cleaner looks. The
    request replaces the topic's configs: the cleanup policy Faust set is repeated."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    try:
        configs = {
            "cleanup.policy": "compact",
            "segment.ms": "200",
            "min.cleanable.dirty.ratio": "0.001",
            "min.compaction.lag.ms": "0",
        }
        res = await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)])
        assert all(code == 0 for r in res for code, *_ in r.resources), res
    finally:
        await admin.close()


async def test_erased_and_expired_accounts_leave_the_compacted_changelog(worker_factory, kafka_bootstrap):
    w = worker_factory(extra_env={"UPSELL_ERASURE_HOLD_DAYS": "1"}).start()
    w.wait_ready(90)
    changelog = f"{w.env['UPSELL_APP_ID']}-account-state-changelog"
    await compact_quickly(kafka_bootstrap, changelog)
    events = w.topics["events"]
    now = int(time.time() * 1000) - 10 * DAY  # event time: the rounds below move it to about now
    live = [f"live-{i}" for i in range(64)]  # on every partition: each one's watermark moves on
    await produce(
        kafka_bootstrap,
        events,
        [event("gone", "g1", now, type="usage", metric="seats", value=4)]  # seats-80: a prompt
        + [event("idle", "i1", now - 401 * DAY, type="usage", metric="seats", value=2)]
        + [event(a, f"{a}-0", now, type="usage", metric="seats", value=1) for a in live],
    )
    assert await until(lambda: w.metric("upsell_events_consumed_total") >= 2 + len(live), 30, every=0.3)

    # The erasure request, as an operator sends it, then an event of the account from before it.
    erase = ["-m", "upsell_triggers", "erase", "gone", "--at", str(now + HOUR)]
    proc = await asyncio.create_subprocess_exec(sys.executable, *erase, env=w.env, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert f"produced to {events}[" in out.decode()
    await produce(
        kafka_bootstrap, events, [event("gone", "g2", now + 1, type="usage", metric="seats", value=5)]
    )
    assert await until(lambda: w.metric("upsell_erased_account_events_total") == 1, 30, every=0.3)
    await wait_committed(kafka_bootstrap, w.env["UPSELL_APP_ID"], events, timeout=60)
    first = await read_all(kafka_bootstrap, changelog)
    marker = {r.key: r.value for r in first}[b"gone"]
    assert marker is not None and decode_state(marker).erased_at == now + HOUR  # no tombstone yet
    assert decode_state(marker).gauges is None

    # Event time moves 2 days on: past the hold (1 day) for the marker; "idle" is past the retention.
    # Each state write checks a few stored accounts, so rounds of writes go round the store.
    for n in range(1, 40):
        await produce(
            kafka_bootstrap,
            events,
            [event(a, f"{a}-{n}", now + 2 * DAY + n, type="usage", metric="seats", value=1) for a in live],
        )
        if w.metric("upsell_accounts_expired_total") >= 2:
            break
        await asyncio.sleep(0.3)
    assert await until(lambda: w.metric("upsell_accounts_expired_total") == 2, 15, every=0.3)
    await wait_committed(kafka_bootstrap, w.env["UPSELL_APP_ID"], events, timeout=60)

    # The log cleaner compacts the rolled segments: keep writing (a segment rolls on the next write)
    # until no record of either account holds a value.
    def valued(records: list, key: bytes) -> int:  # type: ignore[type-arg]
        return sum(1 for r in records if r.key == key and r.value is not None)

    started = time.monotonic()
    deadline = started + 90
    n = 100
    while True:
        records = await read_all(kafka_bootstrap, changelog)
        left = valued(records, b"gone") + valued(records, b"idle")
        if left == 0 or time.monotonic() > deadline:
            break
        n += 1
        await produce(
            kafka_bootstrap,
            events,
            [event(a, f"{a}-{n}", now + 2 * DAY + n, type="usage", metric="seats", value=1) for a in live],
        )
        await asyncio.sleep(2)
    assert left == 0, "the log cleaner did not compact the changelog within 90 s"
    print(
        f"changelog compacted {time.monotonic() - started:.1f} s after the tombstones: {len(records)} records"
    )
    assert sum(1 for r in records if r.key in (b"gone", b"idle")) <= 2  # at most their tombstones
    assert valued(first, b"gone") >= 2  # its states before the deletion were there before compaction

    # A recovery brings neither back; the erased id's next event is a new account: seats-80 again.
    w.stop(kill=True)
    w2 = worker_factory(name=w.name, extra_env={"UPSELL_ERASURE_HOLD_DAYS": "1"}).start()
    w2.wait_ready(90)
    await produce(
        kafka_bootstrap, events, [event("gone", "g3", now + 3 * DAY, type="usage", metric="seats", value=4)]
    )
    prompts = await collect(kafka_bootstrap, [w.topics["prompts"]], want=2, settle=1.0)
    by_trigger = {
        orjson.loads(r.value)["trigger_event_id"]: orjson.loads(r.value)["rule_id"] for r in prompts
    }
    assert by_trigger == {"g1": "seats-80", "g3": "seats-80"}  # nothing from g2, in flight
    assert await until(lambda: w2.metric("upsell_accounts_in_memory") == len(live) + 1, 30, every=0.3)
