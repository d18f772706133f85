"""The gateway's HTTP API on aiohttp (already the service's HTTP server):

    GET  /v1/stream     Server-Sent Events: `prompt` events (id = resume point), `dismissed` events, a
                        heartbeat comment; `Last-Event-ID` (header, or `last_event_id`) resumes.
    GET  /v1/prompts    the user's pending prompts as JSON, for pages that do not stream
    POST /v1/feedback   {"prompt_id", "action": shown|clicked|dismissed} -> a feedback event on the topic
    GET  /demo, /client/upsell.js, /client/upsell.mjs   the demo page and the JS client
    GET  /healthz, /readyz, /metrics

Every /v1 call carries a user token (`Authorization: Bearer <token>`, or `?token=` for a plain
EventSource, which cannot send headers); its account and user scope everything the call sees. An
optional `account` parameter names the account the page believes is signed in: a token of another
account is then refused with 403 (a stale token of a previous sign-in on a shared browser).

Why SSE and not WebSocket: the traffic is one-way (feedback is a rare POST), SSE has resume built into
the protocol (event ids, Last-Event-ID), passes every HTTP proxy and needs no upgrade handling."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Literal, Protocol, TypedDict

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from upsell_triggers.engine.keys import composite_key
from upsell_triggers.gateway.hub import Hub, Pending
from upsell_triggers.gateway.metrics import GatewayMetrics
from upsell_triggers.gateway.settings import GatewaySettings
from upsell_triggers.gateway.tokens import Principal, TokenError, sign, verify

log = logging.getLogger("upsell_triggers.gateway")

MAX_BODY_BYTES = 4096
MAX_RATE_KEYS = 100_000


# No access log: EventSource clients send the token in the query string, and a log line would hold it.
# Handler cancellation: a stream whose browser went away ends at once, not at its next heartbeat write
# (10,000 streams closed together otherwise all unsubscribe in the same heartbeat round).
class RunnerOptions(TypedDict):
    """The keyword arguments of web.AppRunner this server sets, typed key by key (as a dict[str, object]
    they would not type-check against AppRunner's own keyword parameters)."""

    access_log: None
    handler_cancellation: bool


RUNNER_OPTIONS: RunnerOptions = {"access_log": None, "handler_cancellation": True}


class FeedbackSink(Protocol):
    """Where feedback events go: the `prompt-feedback` topic (Kafka), or the embedded processor."""

    async def send(self, key: bytes, value: bytes) -> None: ...


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_id: Annotated[str, Field(strict=True, min_length=1, max_length=256)]
    action: Literal["shown", "clicked", "dismissed"]


class RateLimiter:
    """Token bucket per user, bounded: beyond MAX_RATE_KEYS users the longest-idle bucket is forgotten
    (a forgotten user starts with a full bucket, which is harmless)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def allow(self, key: tuple[str, str]) -> bool:
        now = self.clock()
        tokens, at = self.buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        ok = tokens >= 1
        self.buckets[key] = (tokens - 1 if ok else tokens, now)  # re-inserted: dict order = recency
        if len(self.buckets) > MAX_RATE_KEYS:
            del self.buckets[next(iter(self.buckets))]
        return ok


def feedback_event(p: Principal, prompt_id: str, action: str, now_ms: int) -> bytes:
    """The worker's feedback event. The event id is a hash of (prompt, user, action): the same feedback
    sent twice (two replicas, a retried request) carries the same id."""
    eid = hashlib.blake2b(composite_key(prompt_id, p.user_id, action).encode(), digest_size=12).hexdigest()
    return orjson.dumps(
        {
            "event_id": "fb_" + eid,
            "type": "prompt_" + action,
            "account_id": p.account_id,
            "user_id": p.user_id,
            "prompt_id": prompt_id,
            "ts": now_ms,
        }
    )


def _data(entry: Pending) -> bytes:
    """The prompt JSON inside an SSE frame (frames are stored once; the JSON is not stored twice)."""
    f = entry.frame
    return f[f.index(b"\ndata: ") + 7 : -2]


def _static(name: str) -> bytes:
    return resources.files("upsell_triggers.gateway").joinpath("static", name).read_bytes()


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        hub: Hub,
        sink: FeedbackSink,
        metrics: GatewayMetrics | None = None,
        ready: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.secret = settings.secret_bytes()
        self.hub = hub
        self.sink = sink
        self.metrics = metrics or GatewayMetrics()
        self.ready = ready
        self.clock = clock
        self.limiter = RateLimiter(settings.feedback_rate, settings.feedback_burst, time.monotonic)
        self.origins = frozenset(settings.cors_origins)
        self.closing = asyncio.Event()

    # ---- plumbing ----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._cors])
        r = app.router
        r.add_get("/v1/stream", self.stream)
        r.add_get("/v1/prompts", self.prompts)
        r.add_post("/v1/feedback", self.feedback)
        r.add_route("OPTIONS", "/v1/{tail:.*}", self.preflight)
        r.add_get("/demo", self.demo)
        r.add_get("/demo/token", self.demo_token)
        r.add_get("/client/upsell.js", self.client_js)
        r.add_get("/client/upsell.mjs", self.client_js)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.scrape)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, _: web.Application) -> None:
        self.closing.set()  # open streams end; browsers reconnect to another replica

    def _origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        return origin is None or origin in self.origins or origin == f"{request.scheme}://{request.host}"

    @web.middleware
    async def _cors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """CORS by exact allow-list. A browser call from another origin is refused outright (403), not
        only left unreadable: a feedback POST must not take effect from a page that is not allowed."""
        origin = request.headers.get("Origin")
        if request.path.startswith("/v1/") and not self._origin_ok(request):
            raise web.HTTPForbidden(text='{"error":"origin not allowed"}', content_type="application/json")
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # a refusal must be readable too: the client acts on 401/403
            if origin is not None and origin in self.origins:
                self._cors_headers(exc, origin)
            raise
        if origin is not None and origin in self.origins and not resp.prepared:
            self._cors_headers(resp, origin)
        return resp

    @staticmethod
    def _cors_headers(resp: web.StreamResponse, origin: str) -> None:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Vary"] = "Origin"

    async def preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, Last-Event-ID",
                "Access-Control-Max-Age": "600",
                "Access-Control-Allow-Origin": origin,
                "Vary": "Origin",
            },
        )

    def _error(self, cls: type[web.HTTPException], message: str) -> web.HTTPException:
        return cls(text=orjson.dumps({"error": message}).decode(), content_type="application/json")

    def _auth(self, request: web.Request) -> Principal:
        if not self.ready():
            # Until the pending prompts are rebuilt, a snapshot would miss prompts and a resumed
            # stream would receive the rebuilt ones again: the client retries (another replica).
            raise web.HTTPServiceUnavailable(
                text='{"error":"rebuilding pending prompts; retry"}',
                content_type="application/json",
                headers={"Retry-After": "2"},
            )
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else request.query.get("token", "")
        try:
            p = verify(self.secret, token, self.clock())
        except TokenError as err:
            self.metrics.auth_failures.labels(err.reason).inc()
            raise self._error(web.HTTPUnauthorized, f"token refused: {err.reason}") from None
        claimed = request.query.get("account")
        if claimed is not None and claimed != p.account_id:
            self.metrics.auth_failures.labels("other_account").inc()
            raise self._error(web.HTTPForbidden, "the token is for another account")
        return p

    # ---- /v1 ---------------------------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        p = self._auth(request)
        if self.hub.streams >= self.s.max_streams:
            raise self._error(web.HTTPServiceUnavailable, "too many open streams on this replica")
        last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        try:
            after = int(last) if last else None
        except ValueError:
            raise self._error(web.HTTPBadRequest, "Last-Event-ID must be an event id") from None
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-store",
                "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
            }
        )
        origin = request.headers.get("Origin")
        if origin is not None and origin in self.origins:
            self._cors_headers(resp, origin)
        sub, first = self.hub.subscribe(p.account_id, p.user_id, after)
        self.metrics.streams.set(self.hub.streams)
        try:
            await resp.prepare(request)
            await resp.write(b": ok\n\n" + b"".join(e.frame for e in first))
            self.metrics.frames.inc(len(first))
            hb = self.s.heartbeat_s
            while not self.closing.is_set():
                left = p.expires_s - self.clock()
                if left <= 0:
                    break  # the token expired: the client reconnects with a fresh one
                # heartbeats jittered: streams opened together do not all write in the same instant
                frames = await sub.next(min(hb * (0.75 + random.random() / 4), left))
                if sub.overflowed:
                    break  # could not keep up: the client resumes from its last event id
                await resp.write(b"".join(frames) if frames else b": hb\n\n")
                self.metrics.frames.inc(sum(1 for f in frames if f.startswith(b"id: ")))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.hub.unsubscribe(sub)
            self.metrics.streams.set(self.hub.streams)
        return resp

    async def prompts(self, request: web.Request) -> web.Response:
        p = self._auth(request)
        entries = self.hub.visible(p.account_id, p.user_id)
        last = max((e.seq for e in entries), default=None)
        body = b'{"prompts":[%s],"last_event_id":%s}' % (
            b",".join(_data(e) for e in entries),
            b"null" if last is None else b'"%d"' % last,
        )
        return web.Response(body=body, content_type="application/json")

    async def feedback(self, request: web.Request) -> web.Response:
        p = self._auth(request)
        if not self.limiter.allow((p.account_id, p.user_id)):
            self.metrics.feedback.labels("", "rate_limited").inc()
            raise web.HTTPTooManyRequests(
                text='{"error":"too many feedback requests"}',
                content_type="application/json",
                headers={"Retry-After": "1"},
            )
        body = await request.read()  # beyond MAX_BODY_BYTES aiohttp answers 413
        try:
            req = FeedbackRequest.model_validate_json(body)
        except ValidationError as err:
            self.metrics.feedback.labels("", "invalid").inc()
            first = err.errors(include_url=False)[0]
            where = ".".join(str(x) for x in first["loc"]) or "body"
            raise self._error(web.HTTPBadRequest, f"{where}: {first['msg']}") from None
        if self.hub.find(p.account_id, p.user_id, req.prompt_id) is None:
            self.metrics.feedback.labels(req.action, "unknown_prompt").inc()
            raise self._error(web.HTTPNotFound, "no such pending prompt for this user")
        if not self.hub.mark(p.account_id, p.user_id, req.prompt_id, req.action):
            self.metrics.feedback.labels(req.action, "duplicate").inc()
            return web.json_response({"status": "duplicate"})
        try:
            await self.sink.send(
                p.account_id.encode(), feedback_event(p, req.prompt_id, req.action, int(self.clock() * 1000))
            )
        except Exception as exc:
            entry = self.hub.find(p.account_id, p.user_id, req.prompt_id)
            if entry is not None:
                entry.marks.discard((p.user_id, req.action))  # not sent: a retry may send it
            self.metrics.feedback.labels(req.action, "failed").inc()
            log.warning("feedback not produced", extra={"fields": {"error": type(exc).__name__}})
            raise self._error(web.HTTPServiceUnavailable, "feedback could not be recorded; retry") from None
        self.metrics.feedback.labels(req.action, "produced").inc()
        return web.json_response({"status": "accepted"}, status=202)

    # ---- pages, probes -----------------------------------------------------------------------------

    async def demo(self, _: web.Request) -> web.Response:
        return web.Response(body=_static("demo.html"), content_type="text/html")

    async def demo_token(self, request: web.Request) -> web.Response:
        """Demo mode only (the embedded run): a token for the account and user of the newest prompt,
        so the demo page shows prompts without a backend to sign in with."""
        if not self.s.demo:
            raise web.HTTPNotFound()
        account, user = request.query.get("account"), request.query.get("user")
        if not account:
            newest = max(
                ((a, e) for a, ps in self.hub.pending.items() for e in ps.values()),
                key=lambda ae: ae[1].seq,
                default=None,
            )
            if newest is None:
                raise self._error(web.HTTPServiceUnavailable, "no prompt yet; retry in a moment")
            account, user = newest[0], newest[1].user_id
        user = user or "demo-user"
        token = sign(self.secret, account, user, int(self.clock()) + 3600)
        return web.json_response({"token": token, "account_id": account, "user_id": user})

    async def client_js(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[1]
        return web.Response(
            body=_static(name), content_type="text/javascript", headers={"Cache-Control": "max-age=300"}
        )

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        ok = self.ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def scrape(self, _: web.Request) -> web.Response:
        m = self.metrics
        m.pending.set(self.hub.total)
        m.streams.set(self.hub.streams)
        m.evicted.set(self.hub.evicted)
        return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def housekeeping(self, interval_s: float = 5.0) -> None:
        """Drops expired prompts; runs for the process's life."""
        while True:
            await asyncio.sleep(interval_s)
            self.hub.expire()
            self.metrics.pending.set(self.hub.total)


async def serve(gw: Gateway, host: str, port: int) -> tuple[web.AppRunner, asyncio.Task[None]]:
    runner = web.AppRunner(gw.app(), **RUNNER_OPTIONS)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    task = asyncio.create_task(gw.housekeeping())
    return runner, task


async def stop(runner: web.AppRunner, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await runner.cleanup()
