"""The Kafka runtime: a Faust worker-group member around the same Processor.

Faust gives group membership, partition assignment, offset commits, and the changelog-backed table that
holds each account's engine state (recovered on restart or rebalance). Topics are keyed by account_id
and co-partitioned, so an account's events, feedback and state live on one partition.

The hot topics do not go through a Faust agent: BatchConsumer hands each fetch to the BatchSink, which
applies it (BatchApplier) and delivers its prompts and dead letters (broker-acknowledged). Touched
accounts are written (store + changelog) once per batch when the worker is caught up, and once per
commit interval while it is behind (write-behind); only then are the batches' offsets acked. See
docs/architecture.md.

`create_app` composes those parts and returns a Worker: the Faust app to run, and what the process
around it serves (HTTP, readiness, reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from aiohttp import web
from faust.types import TP

from upsell_triggers import native
from upsell_triggers.engine.ruleset import RuleSet, load_ruleset
from upsell_triggers.engine.statecodec import STATE_WRITERS
from upsell_triggers.engine.timeutil import DAY
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import EVENTS, FEEDBACK, HotTopic, Processor
from upsell_triggers.runtime.batch_apply import BatchApplier
from upsell_triggers.runtime.batch_timings import open_timings
from upsell_triggers.runtime.http import make_app, serve_in_thread
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.runtime.kafka.auth import faust_credentials
from upsell_triggers.runtime.kafka.broker_probe import broker_answers
from upsell_triggers.runtime.kafka.partitioner import partition
from upsell_triggers.runtime.kafka.topics import ensure_topics
from upsell_triggers.runtime.kafka.transactions import TRANSACTION_TIMEOUT_S, BatchTransactions
from upsell_triggers.runtime.kafka.transport import HotPath, install
from upsell_triggers.runtime.memory_release import ReleasePolicy, malloc_trim, pin_mmap_threshold
from upsell_triggers.runtime.reload import try_reload, watch_rules
from upsell_triggers.runtime.sink import BatchSink, SinkTopics
from upsell_triggers.runtime.stall import StallDetector
from upsell_triggers.runtime.table_state import TableState, decoded_bound
from upsell_triggers.runtime.watchdog import REQUEST_TIMEOUT_S, Probes, Watchdog, tick_interval
from upsell_triggers.settings import Settings

log = logging.getLogger("upsell_triggers.worker")


@dataclass(frozen=True, slots=True)
class Worker:
    """A configured worker: the Faust app to run, and what the process around it serves."""

    app: faust.App
    processor: Processor
    metrics: Metrics
    http: web.Application  # /metrics, /healthz, /readyz
    ready: Callable[[], bool]
    reload: Callable[[], object]  # re-reads the rules (SIGHUP)


def faust_app(s: Settings) -> faust.App:
    """The Faust app with this service's settings: durable table, producer and fetch sizes."""
    return faust.App(
        s.app_id,
        broker=[f"kafka://{h}" for h in (s.kafka_bootstrap_servers or "").split(",")],
        broker_credentials=faust_credentials(s),
        broker_commit_interval=s.commit_interval_s,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 5),
        store=s.store,
        datadir=s.data_dir,
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication,
        web_enabled=False,
        producer_linger_ms=1,  # prompts are awaited before state is written: linger is latency
        # aiokafka queues one batch per partition at a time: small batches serialise the changelog on
        # broker round trips (measured: half the worker's time idle at the 16 KiB default).
        producer_max_batch_size=512 * 1024,
        producer_max_request_size=2 * 1024 * 1024,
        # aiokafka's DefaultPartitioner's choice, compiled (its murmur2 is pure Python, ~2 µs a record);
        # Faust passes it to aiokafka's producer, and compat.transactional_producer copies it.
        producer_partitioner=partition,
        consumer_max_fetch_size=s.fetch_partition_bytes,
        # Uncapped, a backlog's fetches (4 x 8 MiB, ~180k records) are one batch: all its records and the
        # decoded states of all its accounts alive at once. 20k per batch: peak memory per account 549 B
        # against 929 B at 1M accounts, 1,922 against 2,489 B at 100k; events/s the same (bench/ANALYSIS.md).
        broker_max_poll_records=s.max_batch_records,
        consumer_auto_offset_reset="earliest",
    )


def started_producer(app: faust.App) -> Any:
    """aiokafka's producer under Faust's; Faust's commit flushes it before committing offsets."""
    producer = compat.aiokafka_producer(app)
    if producer is None:
        raise RuntimeError("producer not started")
    return producer


class Readiness:
    """Ready: the table recovered, no rebalance under way, and the broker answered the last probe."""

    def __init__(self, app: faust.App, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        self.broker_ok = True

    def __call__(self) -> bool:
        recovered = compat.RecoveryView(self.app.tables).completed
        return bool(recovered and not self.app.rebalancing and self.broker_ok)

    async def probe(self) -> None:
        """Once a second. A worker cut off from Kafka is not ready (aiokafka reconnects in the background;
        this only reports it)."""
        producer = compat.aiokafka_producer(self.app)
        if producer is not None:
            try:
                self.broker_ok = await asyncio.wait_for(broker_answers(producer.client), 3.0)
            except Exception:
                self.broker_ok = False
        self.metrics.ready.set(1 if self() else 0)


class PartitionWatch:
    """Per-partition observations of the batch path: lag and restored records to the metrics and to the
    memory release policy, forgotten when a partition is revoked."""

    def __init__(self, metrics: Metrics, release: ReleasePolicy, states: TableState) -> None:
        self.metrics, self.release, self.states = metrics, release, states

    def on_lag(self, tp: TP, lag: int) -> None:
        self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        self.release.on_lag(tp, lag)

    def on_restored(self, n: int) -> None:
        self.metrics.restored.inc(n=n)
        self.release.on_restored()

    async def on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Faust's on_partitions_revoked signal: (app, revoked partitions)."""
        revoked: set[TP] = args[0]
        self.states.drop_cache()
        for tp in revoked:  # another worker reports these partitions now
            self.release.forget(tp)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))


class MemoryRelease:
    """Returns freed memory to the OS when the release policy says so, in a thread: the event loop keeps
    serving while glibc walks its heap (~20 ms at 1M accounts)."""

    def __init__(self, release: Callable[[], object], policy: ReleasePolicy) -> None:
        self.release, self.policy = release, policy

    async def tick(self) -> None:
        if self.policy.due():
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.release)
            except Exception as exc:
                log.warning("returning freed memory to the OS failed: %r", exc)


class IdleEviction:
    """Evicts idle account states (TableState.evict_idle) a budget at a time, and has the memory they
    held given back to the OS."""

    def __init__(self, states: TableState, release: ReleasePolicy) -> None:
        self.states, self.release = states, release

    async def tick(self) -> None:
        if self.states.evict_idle(IDLE_EVICTION_BUDGET):
            self.release.on_freed()


# 2,000 states looked at per second at most when no batch comes, each tick's pause ~1 ms (an eviction
# encodes and compresses a state, ~2 us); while batches come, each batch looks at some too
# (TableState.trim).
IDLE_EVICTION_INTERVAL_S = 0.25
IDLE_EVICTION_BUDGET = 500


def create_app(s: Settings) -> Worker:
    rules = load_ruleset(s.rules_dir)
    metrics = Metrics(runtime="kafka")
    app = faust_app(s)
    hot_topics: dict[str, HotTopic] = {s.topic_events: EVENTS, s.topic_feedback: FEEDBACK}
    hot = app.topic(*hot_topics, key_serializer="raw", value_serializer="raw")
    app.topics.add(hot)  # subscribed; its records go to the sink, not to a stream
    table = app.Table(
        "account-state",
        default=None,
        key_type=bytes,  # bytes -> the "raw" codec: changelog records are the state bytes as is
        value_type=bytes,
        partitions=s.topic_partitions,
    )
    states = TableState(
        table,
        decoded_bound(s.state_cache_accounts, rules),
        STATE_WRITERS[s.state_write_version],
        s.state_unwritten_accounts,
        retention_ms=int(s.state_retention_days * DAY),
        on_expired=metrics.expired.inc,
        hold_ms=int(s.erasure_hold_days * DAY),
        idle_s=s.state_idle_s,
    )
    # Read at scrape time: right after every batch, write and rebalance (drop_cache), with no copy to keep.
    metrics.unwritten_accounts.set_function(lambda: len(states.dirty))
    metrics.accounts.set_function(lambda: len(states.cache))
    metrics.decoded_accounts.set_function(lambda: len(states.decoded))
    metrics.decoded_accounts_bound.set_function(lambda: states.max_cached)
    proc = Processor(rules, metrics, get_state=states.get)
    proc.engine.max_future_ms = s.max_future_skew_s * 1000
    timings = open_timings(s.batch_timings_file)

    def changelog_topic() -> str:
        name: str = table.changelog_topic.get_topic_name()
        return name

    transactions = None
    if s.processing_guarantee == "exactly_once":
        compat.set_transaction_retry_backoff(s.transaction_retry_backoff_ms / 1000)
        timeout_s = min(TRANSACTION_TIMEOUT_S, s.session_timeout_s)
        transactions = BatchTransactions(
            lambda tid, membership: compat.transactional_producer(app, tid, timeout_s, membership),
            app_id=s.app_id,
            group_id=s.app_id,  # Faust's consumer group is the app id
            topics=lambda: (s.topic_prompts, s.topic_dlq, changelog_topic()),
            leads_topic=s.topic_leads,
            # within the session timeout: aiokafka sends no heartbeat while the take-over waits
            stable_wait_s=max(2.0, s.session_timeout_s - 3.0),
        )
    sink = BatchSink(
        BatchApplier(proc, states, hot_topics, metrics),
        lambda: started_producer(app),
        SinkTopics(s.topic_prompts, s.topic_dlq, changelog_topic, s.topic_leads),
        states,
        metrics,
        timings,
        transactions,
    )
    release = malloc_trim()
    policy = ReleasePolicy(s.memory_release_interval_s)  # asked only if release is not None
    watch = PartitionWatch(metrics, policy, states)
    install(app, HotPath(frozenset(hot_topics), sink, watch.on_lag, watch.on_restored, timings))
    app.on_partitions_revoked.connect(watch.on_revoked)

    ready = Readiness(app, metrics)
    interval = tick_interval(s.stall_s)
    # Ticks may come late by a readiness probe and a tick's requests: a short window gets that margin.
    detector = StallDetector(
        s.stall_s, time.monotonic, max(s.stall_s / 2, 4 * interval + 2 * REQUEST_TIMEOUT_S)
    )
    watchdog = (
        Watchdog(app, frozenset(hot_topics), detector, metrics, lambda: ready.broker_ok, ready)
        if detector.enabled
        else None
    )
    app.add_dependency(Probes(ready.probe, watchdog, interval))
    if release is not None and s.memory_release_interval_s > 0:
        app.timer(interval=1.0)(MemoryRelease(release, policy).tick)
    if s.state_idle_s > 0:
        app.timer(interval=IDLE_EVICTION_INTERVAL_S)(IdleEviction(states, policy).tick)

    def swap_rules(new: RuleSet) -> None:
        proc.swap_rules(new)
        states.max_cached = decoded_bound(s.state_cache_accounts, new, states.max_cached)

    if s.watch_rules:

        async def watch_rule_files() -> None:
            await watch_rules(s.rules_dir, lambda: proc.rules, swap_rules, metrics, s.reload_debounce_ms)

        app.task(watch_rule_files)
    return Worker(
        app=app,
        processor=proc,
        metrics=metrics,
        # Served from process start (run_worker), in its own thread (http.serve_in_thread), not as a
        # Faust task: tasks start only after recovery, and /readyz must be reachable (and 503) while
        # the table recovers.
        http=make_app(metrics.registry, ready, detector.reason),
        ready=ready,
        reload=lambda: try_reload(s.rules_dir, proc.rules, swap_rules, metrics),
    )


async def _call_async(f: Callable[[], object]) -> None:
    f()


def run_worker(s: Settings) -> int:
    import signal

    from upsell_triggers.logs import logging_config, setup_logging

    compat.check(rocksdb=s.store.startswith("rocksdb"), exactly_once=s.processing_guarantee == "exactly_once")
    pin_mmap_threshold()  # before the first fetch: see memory_release
    asyncio.run(ensure_topics(s))
    worker = create_app(s)
    faust_worker = faust.Worker(
        worker.app,
        loglevel=s.log_level,
        logging_config=logging_config(s.log_level, s.log_format),
        quiet=True,
        redirect_stdouts=False,
    )
    setup_logging(s.log_level, s.log_format)  # until the worker applies logging_config at start
    faust_worker.loop.add_signal_handler(signal.SIGHUP, worker.reload)
    # ready() reads Faust services that Faust builds on first access, binding them to the event loop
    # of the thread it runs in: build them on the worker's loop before the HTTP thread can (a /readyz
    # there first made the table manager's loop the HTTP thread's: "Future attached to a different
    # loop", a crashed worker, in about half of the starts).
    faust_worker.loop.run_until_complete(_call_async(worker.ready))
    serve_in_thread(worker.http, s.http_host, s.http_port)
    log.info("http up", extra={"fields": {"port": s.http_port}})
    native.log_mode(log)
    faust_worker.execute_from_commandline()
    return 0
