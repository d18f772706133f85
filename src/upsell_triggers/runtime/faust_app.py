"""The Kafka runtime: a Faust worker-group member around the same Processor.

Faust gives group membership, partition assignment, offset commits, and the changelog-backed table that
holds each account's engine state (recovered on restart or rebalance). Topics are keyed by account_id
and co-partitioned, so an account's events, feedback and state live on one partition.

The hot topics do not go through a Faust agent: BatchConsumer hands each fetch to `Sink.deliver`, which
applies it synchronously and delivers its prompts and dead letters (broker-acknowledged). Touched
accounts are written (store + changelog) once per batch when the worker is caught up, and once per
commit interval while it is behind (write-behind); only then are the batches' offsets acked. See README,
Design.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import faust
import orjson
from aiokafka.protocol.metadata import MetadataRequest
from faust.types import TP

from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.state import STATE_WRITERS
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import Processor
from upsell_triggers.runtime.batch_consumer import install
from upsell_triggers.runtime.http import make_app, serve_in_thread
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.runtime.kafka.compat import RecoveryView
from upsell_triggers.runtime.memory_release import ReleasePolicy, malloc_trim, pin_mmap_threshold
from upsell_triggers.runtime.reload import try_reload, watch_rules
from upsell_triggers.runtime.table_state import TableState
from upsell_triggers.settings import Settings

log = logging.getLogger("upsell_triggers.worker")
TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


def _ssl_context(s: Settings) -> Any:
    """The TLS context for SSL and SASL_SSL (None otherwise): shared by Faust and the admin client."""
    if s.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    import ssl

    ctx = ssl.create_default_context(cafile=s.ssl_cafile)
    if s.ssl_certfile:
        ctx.load_cert_chain(s.ssl_certfile, s.ssl_keyfile)
    return ctx


def _broker_credentials(s: Settings) -> Any:
    if s.security_protocol == "PLAINTEXT":
        return None
    ssl_context = _ssl_context(s)
    if s.security_protocol.startswith("SASL"):
        password = s.sasl_password.get_secret_value() if s.sasl_password else ""
        if s.sasl_mechanism and s.sasl_mechanism.startswith("SCRAM"):
            return faust.SASLCredentials(
                username=s.sasl_username,
                password=password,
                ssl_context=ssl_context,
                mechanism=s.sasl_mechanism,
            )
        return faust.SASLCredentials(username=s.sasl_username, password=password, ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


async def ensure_topics(s: Settings) -> None:
    """Creates missing topics with the configured partition count; refuses to start on a mismatch
    between co-partitioned topics (an account's events and state would land on different workers)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(
        bootstrap_servers=s.kafka_bootstrap_servers,
        security_protocol=s.security_protocol,
        **_aiokafka_auth(s),
    )
    await admin.start()
    try:
        topics = [s.topic_events, s.topic_feedback, s.topic_prompts, s.topic_dlq]
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            resp = await admin.create_topics(
                [NewTopic(t, s.topic_partitions, s.topic_replication) for t in missing]
            )
            for err in getattr(resp, "topic_errors", []):
                topic, code = err[0], err[1]
                if code not in (0, TOPIC_ALREADY_EXISTS):  # already exists: another replica won the race
                    raise SystemExit(f"cannot create topic {topic}: Kafka error code {code} {err[2:]}")
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


def _aiokafka_auth(s: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.security_protocol.startswith("SASL"):
        out.update(
            sasl_mechanism=s.sasl_mechanism or "PLAIN",
            sasl_plain_username=s.sasl_username,
            sasl_plain_password=s.sasl_password.get_secret_value() if s.sasl_password else None,
        )
    ctx = _ssl_context(s)
    if ctx is not None:
        out["ssl_context"] = ctx
    return out


class _Outputs:
    """What one batch sends; delivered before the batch's state is written (see handle_batch)."""

    __slots__ = ("dlq", "prompts")

    def __init__(self) -> None:
        self.prompts: list[tuple[bytes, bytes]] = []
        self.dlq: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []


def create_app(s: Settings) -> faust.App:
    rules = load_ruleset(s.rules_dir)
    metrics = Metrics()
    app = faust.App(
        s.app_id,
        broker=[f"kafka://{h}" for h in (s.kafka_bootstrap_servers or "").split(",")],
        broker_credentials=_broker_credentials(s),
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
        consumer_max_fetch_size=s.fetch_partition_bytes,
        # A backlog's fetches (4 x 8 MiB, ~180k records) were one batch: all its records and the decoded
        # states of all its accounts alive at once. 20k per batch: peak memory per account 929 -> 549 B
        # at 1M accounts, 2,489 -> 1,922 B at 100k; events/s unchanged (bench/ANALYSIS.md, session 8).
        broker_max_poll_records=s.max_batch_records,
        consumer_auto_offset_reset="earliest",
    )
    hot = app.topic(s.topic_events, s.topic_feedback, key_serializer="raw", value_serializer="raw")
    app.topics.add(hot)  # subscribed; its records go to handle_batch, not to a stream
    table = app.Table(
        "account-state",
        default=None,
        key_type=bytes,  # bytes -> the "raw" codec: changelog records are the state bytes as is
        value_type=bytes,
        partitions=s.topic_partitions,
    )
    states = TableState(
        table, s.state_cache_accounts, STATE_WRITERS[s.state_write_version], s.state_unwritten_accounts
    )
    # Read at scrape time: right after every batch, write and rebalance (drop_cache), with no copy to keep.
    metrics.unwritten_accounts.set_function(lambda: len(states.dirty))
    metrics.accounts.set_function(lambda: len(states.cache))
    proc = Processor(rules, metrics, get_state=states.get)
    proc.engine.max_future_ms = s.max_future_skew_s * 1000
    app.upsell_processor = proc  # type: ignore[attr-defined]
    source_index = {s.topic_events: 0, s.topic_feedback: 1}

    broker_ok = [True]  # the last broker probe answered (see readiness below)

    def ready() -> bool:
        return bool(RecoveryView(app.tables).completed and not app.rebalancing and broker_ok[0])

    def apply(batch: Mapping[TP, Sequence[Any]]) -> tuple[_Outputs, int | None]:
        """Synchronous on purpose: no rebalance can interleave with a batch's state changes."""
        out = _Outputs()
        newest_ts = None
        for tp, records in batch.items():
            states.partition = tp.partition
            src = source_index[tp.topic]
            for r in records:
                raw = r.value if r.value is not None else b""
                try:
                    res = proc.handle(raw, r.key, r.timestamp, (src, r.offset))
                    bad = (res.invalid.reason, res.invalid.message) if res.invalid is not None else None
                except Exception as exc:  # a bug must not stop the fetcher or lose the record
                    log.exception("internal error on %s[%d]@%d", tp.topic, tp.partition, r.offset)
                    bad = ("internal_error", f"{type(exc).__name__}: {str(exc)[:200]}")
                    metrics.record_invalid(bad[0])
                if bad is not None:
                    headers = [
                        ("reason", bad[0].encode()),
                        ("error", bad[1].encode()),
                        ("source_topic", tp.topic.encode()),
                        ("source_partition", str(tp.partition).encode()),
                        ("source_offset", str(r.offset).encode()),
                    ]
                    out.dlq.append((r.key, raw, headers))
                    continue
                for d in res.decisions:
                    if d.prompt is not None:
                        out.prompts.append((d.account_id.encode(), orjson.dumps(d.prompt)))
            newest_ts = records[-1].timestamp if newest_ts is None else max(newest_ts, records[-1].timestamp)
        return out, newest_ts

    class Sink:
        """BatchSink of the hot topics: apply and deliver per fetch, write states when asked."""

        async def deliver(self, batch: Mapping[TP, Sequence[Any]]) -> None:
            t0 = time.perf_counter()
            metrics.batch_records.observe(sum(map(len, batch.values())))
            out, newest_ts = apply(batch)
            states.trim()
            # Outputs first, and delivered, before the state that says they were emitted: a crash in
            # between then re-emits them on reprocessing (same ids, same content) instead of losing
            # them. The other order lost prompts under SIGKILL (tests/reliability, found in a CI run).
            producer = _producer()
            sent = [await producer.send(s.topic_prompts, value, key=key) for key, value in out.prompts]
            sent += [await producer.send(s.topic_dlq, raw, key=k, headers=h) for k, raw, h in out.dlq]
            if sent:
                await asyncio.gather(*sent)
            if out.prompts:
                metrics.latency.observe(time.perf_counter() - t0)
            if newest_ts:
                metrics.lag.set(max(0.0, time.time() - newest_ts / 1000))

        async def write_state(self) -> None:
            producer = _producer()
            changelog = states.flush()
            topic = table.changelog_topic.get_topic_name()
            for partition, recs in changelog.items():
                await _send_batches(producer, topic, partition, recs, states)

        def must_write(self) -> bool:
            return states.must_flush()

    def _producer() -> Any:
        producer = compat.aiokafka_producer(app)  # Faust's commit flushes it
        if producer is None:
            raise RuntimeError("producer not started")
        return producer

    release = malloc_trim()
    release_policy = ReleasePolicy(s.memory_release_interval_s)  # asked only if release is not None

    def on_lag(tp: TP, lag: int) -> None:
        metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        release_policy.on_lag(tp, lag)

    def on_restored(n: int) -> None:
        metrics.restored.inc(n=n)
        release_policy.on_restored()

    install(app, frozenset(source_index), Sink(), on_lag, on_restored)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        states.drop_cache()
        for tp in revoked:  # another worker reports these partitions now
            release_policy.forget(tp)
            with contextlib.suppress(KeyError):
                metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    # Served from process start (run_worker), in its own thread (http.serve_in_thread), not as a Faust
    # task: tasks start only after recovery, and /readyz must be reachable (and 503) while the table
    # recovers.
    app.upsell_http = make_app(metrics.registry, ready)  # type: ignore[attr-defined]
    app.upsell_ready = ready  # type: ignore[attr-defined]

    if s.watch_rules:

        @app.task
        async def watch() -> None:
            await watch_rules(s.rules_dir, lambda: proc.rules, proc.swap_rules, metrics, s.reload_debounce_ms)

    @app.timer(interval=1.0)
    async def readiness() -> None:
        # A worker cut off from Kafka is not ready (aiokafka reconnects in the background; this only
        # reports it).
        producer = compat.aiokafka_producer(app)
        if producer is not None:
            try:
                broker_ok[0] = await asyncio.wait_for(broker_answers(producer.client), 3.0)
            except Exception:
                broker_ok[0] = False
        metrics.ready.set(1 if ready() else 0)

    if release is not None and s.memory_release_interval_s > 0:

        @app.timer(interval=1.0)
        async def release_memory() -> None:
            if release_policy.due():
                # In a thread: the event loop keeps serving while glibc walks its heap (~20 ms at 1M
                # accounts).
                try:
                    await asyncio.get_running_loop().run_in_executor(None, release)
                except Exception as exc:
                    log.warning("returning freed memory to the OS failed: %r", exc)

    app.upsell_reload = lambda: try_reload(s.rules_dir, proc.rules, proc.swap_rules, metrics)  # type: ignore[attr-defined]
    return app


async def _call_async(f: Callable[[], object]) -> None:
    f()


async def broker_answers(client: Any, per_broker_s: float = 1.0) -> bool:
    """Whether some known broker answers a metadata request for no topics (its reply lists brokers only).

    The probe used to be aiokafka's force_metadata_update, which for the producer's client asks for
    every topic of the cluster: with ~1,300 topics on the broker, building and parsing that reply held
    the producer's requests for 30-60 ms once a second, the whole p99 of event -> prompt latency
    (bench/latency.py; p99 at 10k events/s 59 -> 42 ms with the probe off, one run each). A request, not
    only a connection check, so that a broker that accepts connections but does not answer is noticed.
    """
    for broker in client.cluster.brokers():
        try:
            await asyncio.wait_for(client.send(broker.nodeId, MetadataRequest([])), per_broker_s)
            return True
        except Exception:  # refused, timed out, disconnected: try the next broker
            continue
    return False


async def _send_batches(
    producer: Any, topic: str, partition: int, recs: list[tuple[bytes, bytes]], states: TableState
) -> None:
    """Changelog records through aiokafka's batch builder (a few µs per record, not Faust's ~50 µs)."""
    tp = TP(topic, partition)
    batch = producer.create_batch()
    n = 0
    for key, value in recs:
        if batch.append(key=key, value=value, timestamp=None) is None:
            await _submit(producer, batch, tp, n, states)
            batch, n = producer.create_batch(), 0
            batch.append(key=key, value=value, timestamp=None)
        n += 1
    if n:
        await _submit(producer, batch, tp, n, states)


async def _submit(producer: Any, batch: Any, tp: TP, n: int, states: TableState) -> None:
    fut = await producer.send_batch(batch, tp.topic, partition=tp.partition)

    def persisted(f: asyncio.Future[Any]) -> None:
        if not f.cancelled() and f.exception() is None:
            states.set_persisted_offset(tp, f.result().offset + n - 1)

    fut.add_done_callback(persisted)


def run_worker(s: Settings) -> int:
    import signal

    from upsell_triggers.logs import setup_logging

    compat.check(rocksdb=s.store.startswith("rocksdb"))
    pin_mmap_threshold()  # before the first fetch: see memory_release
    asyncio.run(ensure_topics(s))
    app = create_app(s)
    from upsell_triggers.logs import logging_config

    worker = faust.Worker(
        app,
        loglevel=s.log_level,
        logging_config=logging_config(s.log_level, s.log_format),
        quiet=True,
        redirect_stdouts=False,
    )
    setup_logging(s.log_level, s.log_format)  # until the worker applies logging_config at start
    worker.loop.add_signal_handler(signal.SIGHUP, app.upsell_reload)  # type: ignore[attr-defined]
    # ready() reads Faust services that Faust builds on first access, binding them to the event loop
    # of the thread it runs in: build them on the worker's loop before the HTTP thread can (a /readyz
    # there first made the table manager's loop the HTTP thread's: "Future attached to a different
    # loop", a crashed worker, in about half of the starts).
    worker.loop.run_until_complete(_call_async(app.upsell_ready))  # type: ignore[attr-defined]
    serve_in_thread(app.upsell_http, s.http_host, s.http_port)  # type: ignore[attr-defined]
    log.info("http up", extra={"fields": {"port": s.http_port}})
    worker.execute_from_commandline()
    return 0
