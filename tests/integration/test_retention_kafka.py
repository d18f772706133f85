"""Retention in the Kafka worker: accounts whose newest event is more than UPSELL_STATE_RETENTION_DAYS
older than their partition's newest event leave the store with a changelog tombstone, stay gone after
a recovery, and start fresh if they return."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from devkit.exactness import read_all, wait_committed
from devkit.kafka_io import collect, event, produce
from tests.polling import until
from upsell_triggers.engine.timeutil import DAY

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
async def test_expired_accounts_leave_store_changelog_and_recovery(
    worker_factory, kafka_bootstrap, tmp_path: Path, store: str
):
    env = {}
    if store == "rocksdb":
        pytest.importorskip("rocksdict")
        env = {"UPSELL_STORE": "rocksdb://", "UPSELL_DATA_DIR": str(tmp_path / "rocks")}  # kept
    memory = store == "memory"  # upsell_accounts_in_memory counts the memory store's accounts
    w = worker_factory(extra_env=env).start()
    w.wait_ready(90)
    now = int(time.time() * 1000)
    old = [f"old-{i}" for i in range(10)]
    new = [f"new-{i}" for i in range(64)]  # on every partition: each one's watermark moves past retention
    # Each old account crosses seats-80 (a prompt), 401 days before the newest events.
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [event(a, f"{a}-1", now - 401 * DAY, type="usage", metric="seats", value=4) for a in old],
    )
    await until(lambda: w.metric("upsell_events_consumed_total") >= len(old), 30)
    # Each write of states checks a few stored accounts (one, plus one per 16 states written): rounds
    # of events go round the store.
    for n in range(40):
        await produce(
            kafka_bootstrap,
            w.topics["events"],
            [event(a, f"{a}-{n}", now + n, type="usage", metric="seats", value=1) for a in new],
        )
        if w.metric("upsell_accounts_expired_total") == len(old):
            break
        await asyncio.sleep(0.3)
    await until(lambda: w.metric("upsell_accounts_expired_total") == len(old), 10)
    assert w.metric("upsell_accounts_expired_total") == len(old)
    assert w.metric("upsell_accounts_in_memory") == len(new) or not memory
    changelog = f"{w.env['UPSELL_APP_ID']}-account-state-changelog"
    last = {r.key: r.value for r in await read_all(kafka_bootstrap, changelog)}
    assert {k for k, v in last.items() if v is None} == {a.encode() for a in old}  # tombstones, newest

    # Committed before the kill: a record of an expired account redelivered after a crash would bring
    # it back until the next sweep (docs/operations.md, Retention).
    await wait_committed(kafka_bootstrap, w.env["UPSELL_APP_ID"], w.topics["events"], timeout=60)
    w.stop(kill=True)
    w2 = worker_factory(name=w.name, extra_env=env).start()  # RocksDB: the same files, reused
    w2.wait_ready(90)

    # A returning account starts fresh: the same crossing prompts again (its old state had seats-80 fired).
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [event("old-0", "old-0-2", now + 1000, type="usage", metric="seats", value=4)],
    )
    prompts = await collect(kafka_bootstrap, [w.topics["prompts"]], want=len(old) + 1, settle=1.0)
    back = [orjson.loads(r.value) for r in prompts if orjson.loads(r.value)["trigger_event_id"] == "old-0-2"]
    assert [p["rule_id"] for p in back] == ["seats-80"]
    if memory:  # recovered without the expired accounts (the store is read once an event came)
        assert w2.metric("upsell_accounts_in_memory") == len(new) + 1
