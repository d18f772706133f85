"""Every metric the Kafka worker registers is written by a workload that exercises it (the embedded
runtime's test: tests/unit/test_metrics_written.py). The real worker runs against the broker while a
thread scrapes its /metrics; a registered family that no scrape saw written fails the test, by name.

The workload, step by step (the metrics each step writes):

1. tests/metricscheck.py's events, keyed by account on the events topic: prompts, feedback, leads, a lead
   held back by its cooldown, conversions, a duplicate, a stale reading, a malformed record, an
   account deleted with an event of it in flight (events consumed, decisions, prompts emitted,
   feedback, conversions, leads emitted and suppressed, lead conversions, duplicates, out-of-order,
   invalid, dead-letter records, erased-account events, event-to-prompt latency, batch records,
   event-time lag, consumer lag and unwritten accounts while the batches of 20 work off the records,
   accounts in memory, rules loaded, ready). The account 299 days newer than the others moves its
   partition's event time past the 30-day retention: the accounts it passes expire.
2. SIGHUP: a rule reload (rule reloads).
3. SIGKILL once the states are on the changelog, before any offset was committed (the commit interval
   is 600 s), then a backlog of recent events on every partition, then a restart: the changelog is
   restored (state restored records), the records of step 1 come again and are skipped
   (redelivered events), and the backlog moves every partition's event time past the retention
   (accounts expired) while the worker is behind (consumer lag, unwritten accounts).

`upsell_stalled_partitions` is non-zero only while the worker is stuck: test_stall_kafka.py makes a
worker stall for real and checks it written there; here it must be registered.

Exactly-once mode registers the same metrics and writes them through the same calls (sink._delivered,
Processor), so one mode is run.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from devkit.exactness import read_all
from devkit.kafka_io import event, produce

from ..metricscheck import ACCOUNTS, Scrapes, workload, write_rules

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

ENV = {
    "UPSELL_COMMIT_INTERVAL_S": "600",  # nothing committed before the SIGKILL: step 1 is redelivered
    "UPSELL_STATE_RETENTION_DAYS": "30",
    "UPSELL_MAX_BATCH_RECORDS": "20",  # small batches: the worker is behind for a while, and says so
    "UPSELL_WATCH_RULES": "false",  # reloads on SIGHUP only
}
WRITTEN_ELSEWHERE = {"upsell_stalled_partitions"}  # see the module docstring
BACKLOG_ACCOUNTS = 400  # on every partition
BACKLOG_ROUNDS = 10


def keyed(lines: list[bytes]) -> list[tuple[bytes | None, bytes]]:
    """The workload's lines as records keyed by their account (the malformed line by an account too:
    it is dead-lettered once, its redelivery skipped by that account's offset)."""
    out: list[tuple[bytes | None, bytes]] = []
    for line in lines:
        try:
            account = orjson.loads(line)["account_id"]
        except orjson.JSONDecodeError:
            account = "acct-001"
        out.append((account.encode(), line))
    return out


def backlog(burst: int) -> list[tuple[bytes | None, bytes]]:
    now = int(time.time() * 1000)
    return [
        event(
            f"bulk-{a:03d}", f"bulk-{burst}-{r}-{a}", now - 60_000 + r, type="usage", metric="seats", value=1
        )
        for r in range(BACKLOG_ROUNDS)
        for a in range(BACKLOG_ACCOUNTS)
    ]


async def until(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(0.3)
    return False


async def test_every_registered_metric_is_written_by_the_kafka_worker(
    worker_factory: Any, kafka_bootstrap: str, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path / "rules")
    records = keyed(workload(rules))
    w = worker_factory(rules_dir=rules, extra_env=ENV).start()
    w.wait_ready(90)
    changelog = f"{w.env['UPSELL_APP_ID']}-account-state-changelog"
    with Scrapes(w.port) as scrapes:
        # 1. the workload
        await produce(kafka_bootstrap, w.topics["events"], records)

        async def all_consumed() -> bool:
            m = w.metrics("upsell_events_consumed_total", "upsell_dlq_records_total")
            return m["upsell_events_consumed_total"] + m["upsell_dlq_records_total"] >= len(records)

        assert await until(all_consumed, 60), w.log.read_text()[-3000:]

        async def states_on_changelog() -> bool:  # every account's state (or tombstone) at the broker
            return len({r.key for r in await read_all(kafka_bootstrap, changelog)}) >= ACCOUNTS + 1

        assert await until(states_on_changelog, 60), w.log.read_text()[-3000:]

        # 2. a rule reload
        assert w.proc is not None
        w.proc.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return w.metric("upsell_rule_reloads_total") >= 1

        assert await until(reloaded, 30), w.log.read_text()[-3000:]
        scrapes.once()

        # 3. a crash, a backlog, a restart
        w.stop(kill=True)
        await produce(kafka_bootstrap, w.topics["events"], backlog(0))
        w2 = worker_factory(name=w.name, rules_dir=rules, extra_env=ENV).start()
        scrapes.port = w2.port
        w2.wait_ready(90)
        # The lag and unwritten-state gauges are non-zero only while the worker is behind: while a scrape
        # has not seen them so, another backlog comes (the first is usually enough).
        sent, deadline = len(backlog(0)), time.monotonic() + 60
        while set(scrapes.never_written()) - WRITTEN_ELSEWHERE and time.monotonic() < deadline:
            if w2.metric("upsell_events_consumed_total") >= sent:
                await produce(kafka_bootstrap, w.topics["events"], backlog(sent))
                sent += BACKLOG_ROUNDS * BACKLOG_ACCOUNTS
            await asyncio.sleep(0.3)
        scrapes.once()
    never = [name for name in scrapes.never_written() if name not in WRITTEN_ELSEWHERE]
    assert never == [], f"registered by the Kafka worker but never written: {never}"
    kafka_only = {"upsell_state_restored_records", "upsell_redelivered_events", "upsell_accounts_expired"}
    kafka_only |= WRITTEN_ELSEWHERE
    assert kafka_only <= scrapes.registered, sorted(scrapes.registered)  # the worker's own, scraped
