"""The stall watchdog against the real broker: a worker whose events partitions are paused in its
consumer (tests/integration/paused_worker.py) while records wait on them answers /healthz with 503 and
the partitions once UPSELL_STALL_S passed, counts them on `upsell_stalled_partitions`, logs the stall,
and answers 200 again once it consumes. A caught-up worker idle for longer than the window stays 200."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from devkit.kafka_io import event, produce
from tests.polling import until

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

STALL_S = 3


def wrapped(worker_factory, env: dict[str, str], name: str | None = None):  # type: ignore[no-untyped-def]
    """A worker run through the test wrapper (paused_worker.py), with the window STALL_S."""
    kwargs = {"name": name} if name is not None else {}
    w = worker_factory(extra_env={"UPSELL_STALL_S": str(STALL_S), **env}, **kwargs)
    w.module = "tests.integration.paused_worker"
    return w


async def test_paused_partitions_with_records_waiting_fail_healthz_until_consumed(
    worker_factory, kafka_bootstrap, tmp_path
):
    flag = tmp_path / "pause"
    w = wrapped(worker_factory, {"UPSELL_TEST_PAUSE_FILE": str(flag)})
    w.start().wait_ready()
    now = int(time.time() * 1000)
    first = [event(f"acct-{i}", f"a-{i}", now, type="usage", metric="seats", value=1) for i in range(40)]
    await produce(kafka_bootstrap, w.topics["events"], first)
    assert await until(lambda: w.metric("upsell_events_consumed_total") >= 40, 30), w.log.read_text()[-3000:]

    await asyncio.sleep(STALL_S + 2)  # caught up and idle for longer than the window: not a stall
    assert w.get("/healthz") == (200, '{"status": "ok"}')

    flag.touch()
    await asyncio.sleep(1.0)  # the hook pauses within 0.2 s
    second = [event(f"acct-{i}", f"b-{i}", now, type="usage", metric="seats", value=2) for i in range(40)]
    await produce(kafka_bootstrap, w.topics["events"], second)
    t0 = time.monotonic()
    assert await until(lambda: w.get("/healthz")[0] == 503, 20), w.log.read_text()[-3000:]
    took = time.monotonic() - t0
    assert took >= STALL_S - 0.5, took  # not before the window passed
    body = w.get("/healthz")[1]
    reason = orjson.loads(body)
    assert reason["status"] == "stalled" and f"{w.topics['events']}[" in reason["reason"], body
    assert w.get("/readyz")[0] == 200  # the broker answers: only liveness says it
    assert w.metric("upsell_stalled_partitions") >= 1
    assert w.metric("upsell_events_consumed_total") == 40

    flag.unlink()
    assert await until(lambda: w.get("/healthz")[0] == 200, 20), w.log.read_text()[-3000:]
    assert await until(lambda: w.metric("upsell_events_consumed_total") >= 80, 20)
    assert w.metric("upsell_stalled_partitions") == 0
    log = w.log.read_text()
    assert "stall: no record consumed from " + w.topics["events"] in log
    assert "stall over: " + w.topics["events"] in log


async def test_a_recovery_that_reads_nothing_fails_healthz_until_it_reads(
    worker_factory, kafka_bootstrap, tmp_path
):
    hold = tmp_path / "hold"
    env = {"UPSELL_TEST_HOLD_RECOVERY_FILE": str(hold)}
    w = wrapped(worker_factory, env)
    w.start().wait_ready()
    now = int(time.time() * 1000)
    events = [event(f"acct-{i}", f"a-{i}", now, type="usage", metric="seats", value=1) for i in range(40)]
    await produce(kafka_bootstrap, w.topics["events"], events)
    assert await until(lambda: w.metric("upsell_events_consumed_total") >= 40, 30), w.log.read_text()[-3000:]
    assert await until(lambda: w.metric("upsell_state_unwritten_accounts") == 0, 30)
    w.stop()

    hold.touch()
    again = wrapped(worker_factory, env, name=w.name)
    again.start()
    assert await until(lambda: again.get("/healthz")[0] == 503, 40), again.log.read_text()[-3000:]
    body = orjson.loads(again.get("/healthz")[1])
    assert body["status"] == "stalled" and "-changelog[" in body["reason"], body
    assert again.get("/readyz")[0] == 503
    assert again.metric("upsell_stalled_partitions") >= 1

    hold.unlink()
    assert await until(lambda: again.get("/readyz")[0] == 200, 40), again.log.read_text()[-3000:]
    assert await until(lambda: again.get("/healthz")[0] == 200, 5)  # at the watchdog's next tick
    assert again.metric("upsell_stalled_partitions") == 0
    assert again.metric("upsell_state_restored_records_total") >= 40
    assert "stall over: " in again.log.read_text()
