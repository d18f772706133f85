"""The Kafka runtime: a Faust worker-group member around the same Processor.

Faust gives group membership, partition assignment, offset commits, and the changelog-backed table that
holds each account's engine state (recovered on restart or rebalance). Topics are keyed by account_id
and co-partitioned, so an account's events, feedback and state live on one partition.

This first runtime uses a plain Faust agent (one table write per event). See README, Design, for the
measured cost of that path and the batch-drain plan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import orjson

from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import Processor
from upsell_triggers.runtime.http import make_app, serve
from upsell_triggers.runtime.reload import try_reload, watch_rules
from upsell_triggers.settings import Settings

log = logging.getLogger("upsell_triggers.worker")


def _broker_credentials(s: Settings) -> Any:
    if s.security_protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if s.security_protocol in ("SSL", "SASL_SSL"):
        import ssl

        ssl_context = ssl.create_default_context(cafile=s.ssl_cafile)
        if s.ssl_certfile:
            ssl_context.load_cert_chain(s.ssl_certfile, s.ssl_keyfile)
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
        existing = {t: None for t in await admin.list_topics()}
        missing = [t for t in topics if t not in existing]
        if missing:
            await admin.create_topics([NewTopic(t, s.topic_partitions, s.topic_replication) for t in missing])
        described = await admin.describe_topics([s.topic_events, s.topic_feedback])
        counts = {d["topic"]: len(d["partitions"]) for d in described}
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
    if s.security_protocol in ("SSL", "SASL_SSL"):
        import ssl

        ctx = ssl.create_default_context(cafile=s.ssl_cafile)
        if s.ssl_certfile:
            ctx.load_cert_chain(s.ssl_certfile, s.ssl_keyfile)
        out["ssl_context"] = ctx
    return out


def create_app(s: Settings) -> faust.App:
    rules = load_ruleset(s.rules_dir)
    metrics = Metrics()
    app = faust.App(
        s.app_id,
        broker=[f"kafka://{h}" for h in (s.kafka_bootstrap_servers or "").split(",")],
        broker_credentials=_broker_credentials(s),
        store=s.store,
        datadir=s.data_dir,
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication,
        web_enabled=False,
        producer_linger_ms=5,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(s.topic_events, s.topic_feedback, key_serializer="raw", value_serializer="raw")
    prompts_topic = app.topic(s.topic_prompts, key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(s.topic_dlq, key_serializer="raw", value_serializer="raw")
    table = app.Table(
        "account-state", default=None, key_type=bytes, value_type=bytes, partitions=s.topic_partitions
    )
    # The state the engine loaded for the event in hand (one at a time), to write back after it.
    loaded: list[AccountState | None] = [None]

    def get_state(account_id: str) -> AccountState:
        raw = table.get(account_id.encode())
        st = loaded[0] = AccountState.from_bytes(raw) if raw else AccountState()
        return st

    proc = Processor(rules, metrics, get_state=get_state)
    proc.engine.max_future_ms = s.max_future_skew_s * 1000
    app.upsell_processor = proc  # type: ignore[attr-defined]

    def ready() -> bool:
        tables: Any = app.tables
        return bool(tables.recovery.completed.is_set() and not app.rebalancing)

    @app.agent(source)
    async def process(stream: Any) -> None:
        async for event in stream.events():
            t0 = time.perf_counter()
            msg = event.message
            raw = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
            now_ms = int(msg.timestamp * 1000) if msg.timestamp else None
            res = proc.handle(raw, event.key, now_ms)
            st, loaded[0] = loaded[0], None
            if res.invalid is not None:
                headers = [
                    ("reason", res.invalid.reason.encode()),
                    ("error", res.invalid.message.encode()),
                    ("source_topic", msg.topic.encode()),
                    ("source_partition", str(msg.partition).encode()),
                    ("source_offset", str(msg.offset).encode()),
                ]
                await dlq_topic.send(key=event.key, value=raw, headers=headers)
                continue
            account = res.account_id
            if account is None:
                continue
            if st is not None and res.outcome is not None and res.outcome.status not in ("duplicate",):
                table[account.encode()] = st.to_bytes()
            for d in res.decisions:
                if d.prompt is not None:
                    await prompts_topic.send(key=account.encode(), value=orjson.dumps(d.prompt))
                    metrics.latency.observe(time.perf_counter() - t0)
            if msg.timestamp:
                metrics.lag.set(max(0.0, time.time() - msg.timestamp))

    @app.task
    async def start_http() -> None:
        await serve(make_app(metrics.registry, ready), s.http_host, s.http_port)
        log.info("http up", extra={"fields": {"port": s.http_port, "rules": len(rules.rules)}})

    @app.task
    async def watch() -> None:
        await watch_rules(s.rules_dir, lambda: proc.rules, proc.swap_rules, metrics, s.reload_debounce_ms)

    @app.timer(interval=1.0)
    async def readiness() -> None:
        metrics.ready.set(1 if ready() else 0)

    app.upsell_reload = lambda: try_reload(s.rules_dir, proc.rules, proc.swap_rules, metrics)  # type: ignore[attr-defined]
    return app


def run_worker(s: Settings) -> int:
    import signal

    from upsell_triggers.logs import setup_logging

    asyncio.run(ensure_topics(s))
    app = create_app(s)
    worker = faust.Worker(app, loglevel=s.log_level, quiet=True, redirect_stdouts=False)
    setup_logging(s.log_level, s.log_format)  # after Worker: its spinner would otherwise set DEBUG on root
    worker.loop.add_signal_handler(signal.SIGHUP, app.upsell_reload)  # type: ignore[attr-defined]
    worker.execute_from_commandline()
    return 0
