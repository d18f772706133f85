"""`upsell-triggers gateway` (the Kafka-fed process) and the embedded run's demo gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from upsell_triggers.engine.timeutil import datetime_to_ms
from upsell_triggers.gateway.hub import Hub
from upsell_triggers.gateway.metrics import GatewayMetrics
from upsell_triggers.gateway.server import Gateway, serve, stop
from upsell_triggers.gateway.settings import GatewaySettings
from upsell_triggers.settings import Settings

log = logging.getLogger("upsell_triggers.gateway")


def _hub(g: GatewaySettings) -> Hub:
    return Hub(time.time, max_per_account=g.max_pending_per_account, max_total=g.max_pending_total)


async def run_gateway(s: Settings, g: GatewaySettings) -> int:
    from upsell_triggers.gateway.kafka import KafkaFeedbackSink, PromptFeed

    if not s.kafka_bootstrap_servers:
        print("KAFKA_BOOTSTRAP_SERVERS is not set: the gateway reads the prompts topic", file=sys.stderr)
        return 2
    try:
        g.secret_bytes()
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    metrics = GatewayMetrics()
    hub = _hub(g)
    sink = KafkaFeedbackSink(s)
    feed = PromptFeed(s, hub, metrics, g.rebuild_window_s)
    gw = Gateway(g, hub, sink, metrics, ready=lambda: feed.ready)
    try:
        runner, housekeeping = await serve(gw, g.host, g.port)
    except OSError as err:
        print(
            f"cannot listen on {g.host}:{g.port}: {err.strerror} (set UPSELL_GATEWAY_PORT)",
            file=sys.stderr,
        )
        return 2
    await sink.start()
    log.info(
        "gateway up",
        extra={"fields": {"http": f"http://{g.host}:{g.port}", "topic": s.topic_prompts}},
    )
    feed_task = asyncio.create_task(feed.run())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    stop_wait = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({feed_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if feed_task.done() and feed_task.exception() is not None:
            log.error("prompt feed failed", extra={"fields": {"error": repr(feed_task.exception())}})
            return 1
        return 0
    finally:
        stop_wait.cancel()
        feed_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feed_task
        await stop(runner, housekeeping)
        await sink.stop()


class EmbeddedBridge:
    """The embedded run's side of the demo gateway: its prompts go into the hub, feedback from the
    browser goes straight into its processor (so the funnel metrics on /metrics count it).

    The hub's "now" is the run's event time (the newest prompt's created_at): the simulator's clock
    runs hours ahead per second of wall time, and its prompts would otherwise be judged expired or
    far in the future. Feedback takes the same time, so the processor sees it in order."""

    hub: Hub

    def __init__(self) -> None:
        self.now_ms = 0
        self._handle: Callable[[bytes], object] | None = None

    def clock(self) -> float:
        return self.now_ms / 1000

    def publish(self, prompt: dict[str, Any]) -> object:
        created = prompt.get("created_at")
        if isinstance(created, str):
            self.now_ms = max(self.now_ms, datetime_to_ms(datetime.fromisoformat(created)))
        return self.hub.publish(prompt)

    def bind(self, handle: Callable[[bytes], object]) -> None:
        self._handle = handle

    async def send(self, key: bytes, value: bytes) -> None:
        if self._handle is None:
            raise RuntimeError("embedded processor not started")
        ev = orjson.loads(value)
        ev["ts"] = self.now_ms
        self._handle(orjson.dumps(ev))


async def serve_demo(g: GatewaySettings) -> tuple[EmbeddedBridge, Callable[[], Any]]:
    """Starts the gateway for the embedded run (demo tokens on, a random secret unless one is set);
    returns the bridge to hand to run_embedded and the coroutine function that stops it."""
    g = g.model_copy(update={"demo": True})
    if g.secret is None:
        from pydantic import SecretStr

        g = g.model_copy(update={"secret": SecretStr(secrets.token_urlsafe(32))})
    bridge = EmbeddedBridge()
    hub = bridge.hub = Hub(bridge.clock, g.max_pending_per_account, g.max_pending_total)
    gw = Gateway(g, hub, bridge)
    runner, housekeeping = await serve(gw, g.host, g.port)
    log.info("demo page", extra={"fields": {"url": f"http://{g.host}:{g.port}/demo"}})

    async def close() -> None:
        await stop(runner, housekeeping)

    return bridge, close


async def run_embedded_with_demo(g: GatewaySettings, run_embedded: Callable[..., Any], *args: Any) -> int:
    """The embedded run with the demo gateway beside it on the same event loop."""
    bridge, close = await serve_demo(g)
    try:
        return int(await run_embedded(*args, sink=bridge))
    finally:
        await close()
