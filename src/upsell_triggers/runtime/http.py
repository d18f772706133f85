"""/metrics, /healthz and /readyz on aiohttp (already a dependency through Faust)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def make_app(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    stalled: Callable[[], str | None] = lambda: None,
) -> web.Application:
    """`stalled`: why the worker is stuck (runtime/stall.py), or None; /healthz answers 503 with it, so
    that the liveness probe restarts a worker that stays up but reads nothing."""

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        reason = stalled()
        if reason is not None:
            return web.json_response({"status": "stalled", "reason": reason}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def serve_in_thread(app: web.Application, host: str, port: int) -> threading.Thread:
    """Serves `app` from its own thread and event loop; returns once it listens (or raises why not).

    The Kafka worker applies each fetch synchronously on its event loop: served there, probes and
    scrapes waited for the batch in flight (over a second while behind), and a benchmark reading
    /metrics saw counts only between batches. Here a request needs only the GIL, which the batch
    loop hands over every few milliseconds (sys.getswitchinterval()). The handlers read the metrics
    registry (scrapes copy what they read) and a readiness function, nothing the batch loop changes
    in steps."""
    started: Future[None] = Future()

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(app, host, port))
        except BaseException as exc:  # e.g. the port is taken: the caller raises it
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        loop.run_forever()

    t = threading.Thread(target=run, name="http", daemon=True)
    t.start()
    started.result()
    return t
