"""The gateway's HTTP API against an in-process hub: auth, resume, feedback, CORS, limits, hygiene."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from tests.gateway.helpers import NOW, SECRET, Clock, prompt
from upsell_triggers.engine.events import PromptClicked, decode_event
from upsell_triggers.gateway.hub import Hub
from upsell_triggers.gateway.server import RUNNER_OPTIONS, Gateway
from upsell_triggers.gateway.settings import GatewaySettings
from upsell_triggers.gateway.tokens import sign

pytestmark = pytest.mark.asyncio(loop_scope="session")

ACCT = "acct-secret-7"  # must never show in logs or metrics


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []
        self.fail = False

    async def send(self, key: bytes, value: bytes) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append((key, value))


def tok(account: str = ACCT, user: str = "alice", ttl: int = 600) -> str:
    return sign(SECRET, account, user, int(NOW) + ttl)


def auth(t: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + t}


@pytest.fixture
async def gw() -> AsyncIterator[tuple[TestClient, Hub, Sink, Clock]]:  # type: ignore[type-arg]
    clock = Clock()
    hub = Hub(clock)
    sink = Sink()
    s = GatewaySettings(
        secret=SECRET.decode(), cors_origins="https://app.example.com", heartbeat_s=0.2, feedback_burst=30
    )
    g = Gateway(s, hub, sink, clock=clock)
    server = TestServer(g.app())
    # the runner options the gateway serves with (TestServer always cancels handlers itself)
    await server.start_server(access_log=RUNNER_OPTIONS["access_log"])
    client = TestClient(server)
    await client.start_server()
    try:
        yield client, hub, sink, clock
    finally:
        await client.close()


async def read_events(resp: ClientResponse, n: int, timeout: float = 5) -> list[dict[str, Any]]:
    """The next n SSE events (id, event, data) of a stream; comments are skipped."""
    out: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        while len(out) < n:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line == "":
                if cur:
                    out.append(cur)
                cur = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(": ")
                cur[k] = orjson.loads(v) if k == "data" else v
    return out


async def test_refused_tokens(gw: Any) -> None:
    client, hub, _, _ = gw
    hub.publish(prompt("p1", account=ACCT))
    for path in ("/v1/stream", "/v1/prompts"):
        assert (await client.get(path)).status == 401
        assert (await client.get(path, headers=auth("garbage"))).status == 401
        assert (await client.get(path, headers=auth(tok(ttl=-1)))).status == 401
        assert (
            await client.get(path, headers=auth(sign(b"x" * 32, ACCT, "alice", int(NOW) + 60)))
        ).status == 401
        r = await client.get(path + "?account=acct-other", headers=auth(tok()))
        assert r.status == 403
        assert "p1" not in await r.text()
    r = await client.post(
        "/v1/feedback", json={"prompt_id": "p1", "action": "shown"}, headers=auth(tok(ttl=-1))
    )
    assert r.status == 401


async def test_other_accounts_token_sees_nothing(gw: Any) -> None:
    client, hub, sink, _ = gw
    hub.publish(prompt("p1", account=ACCT))
    r = await client.get("/v1/prompts", headers=auth(tok(account="acct-other")))
    assert (await r.json())["prompts"] == []
    stream = await client.get("/v1/stream", headers=auth(tok(account="acct-other")))
    hub.publish(prompt("p2", account=ACCT))
    assert await stream.content.readline() == b": ok\n"
    assert await stream.content.readline() == b"\n"
    assert await stream.content.readline() == b": hb\n"  # the next thing is a heartbeat, not p1/p2
    stream.close()
    r = await client.post(
        "/v1/feedback", json={"prompt_id": "p1", "action": "clicked"}, headers=auth(tok(account="acct-other"))
    )
    assert r.status == 404 and sink.sent == []


async def test_stream_snapshot_live_and_exact_resume(gw: Any) -> None:
    client, hub, _, _ = gw
    hub.publish(prompt("p1", account=ACCT), seq=1)
    hub.publish(prompt("p-bob", account=ACCT, user="bob"), seq=2)
    s1 = await client.get("/v1/stream", headers=auth(tok()))
    assert s1.headers["Content-Type"] == "text/event-stream"
    got = await read_events(s1, 1)
    assert [(e["id"], e["event"], e["data"]["prompt_id"]) for e in got] == [("1", "prompt", "p1")]
    assert "account_id" not in got[0]["data"]
    hub.publish(prompt("p3", account=ACCT, user="alice"), seq=3)
    assert [e["data"]["prompt_id"] for e in await read_events(s1, 1)] == ["p3"]
    s1.close()  # the connection drops; two prompts arrive meanwhile, one a re-delivery
    await asyncio.sleep(0.05)
    hub.publish(prompt("p4", account=ACCT), seq=4)
    hub.publish(prompt("p3", account=ACCT, user="alice"), seq=5)
    hub.publish(prompt("p6", account=ACCT), seq=6)
    s2 = await client.get("/v1/stream", headers={**auth(tok()), "Last-Event-ID": "3"})
    got = await read_events(s2, 2)
    assert [(e["id"], e["data"]["prompt_id"]) for e in got] == [("4", "p4"), ("6", "p6")]
    hub.publish(prompt("p7", account=ACCT), seq=7)
    assert [e["data"]["prompt_id"] for e in await read_events(s2, 1)] == ["p7"]
    s2.close()
    bad = await client.get("/v1/stream", headers={**auth(tok()), "Last-Event-ID": "x"})
    assert bad.status == 400


async def test_stream_ends_when_token_expires(gw: Any) -> None:
    client, _, _, clock = gw
    s = await client.get("/v1/stream", headers=auth(tok(ttl=1)))
    clock.t += 2
    async with asyncio.timeout(5):
        assert await s.content.read() in (b": ok\n\n", b": ok\n\n: hb\n\n")


async def test_pending_prompts_endpoint(gw: Any) -> None:
    client, hub, _, _ = gw
    hub.publish(prompt("p1", account=ACCT), seq=4)
    hub.publish(prompt("p2", account=ACCT, user="bob"), seq=5)
    hub.publish(prompt("p3", account=ACCT, user="alice"), seq=6)
    hub.mark(ACCT, "alice", "p3", "dismissed")
    body = await (await client.get("/v1/prompts", headers=auth(tok()))).json()
    assert [p["prompt_id"] for p in body["prompts"]] == ["p1"]
    assert body["last_event_id"] == "4"


async def test_feedback_produces_worker_events_once(gw: Any) -> None:
    client, hub, sink, _ = gw
    hub.publish(prompt("p1", account=ACCT))
    r = await client.post("/v1/feedback", json={"prompt_id": "p1", "action": "clicked"}, headers=auth(tok()))
    assert r.status == 202
    r = await client.post("/v1/feedback", json={"prompt_id": "p1", "action": "clicked"}, headers=auth(tok()))
    assert r.status == 200 and (await r.json())["status"] == "duplicate"
    assert len(sink.sent) == 1
    key, value = sink.sent[0]
    ev = decode_event(value, key)  # exactly what the worker decodes from prompt-feedback
    assert isinstance(ev, PromptClicked)
    assert (ev.account_id, ev.user_id, ev.prompt_id, ev.ts) == (ACCT, "alice", "p1", int(NOW * 1000))
    r = await client.post(
        "/v1/feedback", json={"prompt_id": "p1", "action": "clicked"}, headers=auth(tok(user="bob"))
    )
    assert r.status == 202  # another user's click is its own
    assert len({orjson.loads(v)["event_id"] for _, v in sink.sent}) == 2


async def test_dismiss_hides_the_prompt_from_that_user(gw: Any) -> None:
    client, hub, _, _ = gw
    hub.publish(prompt("p1", account=ACCT), seq=1)
    tab = await client.get("/v1/stream", headers=auth(tok()))
    await read_events(tab, 1)
    r = await client.post(
        "/v1/feedback", json={"prompt_id": "p1", "action": "dismissed"}, headers=auth(tok())
    )
    assert r.status == 202
    assert await read_events(tab, 1) == [{"event": "dismissed", "data": {"prompt_id": "p1"}}]
    tab.close()
    again = await client.get("/v1/prompts", headers=auth(tok()))
    assert (await again.json())["prompts"] == []
    bob = await client.get("/v1/prompts", headers=auth(tok(user="bob")))
    assert [p["prompt_id"] for p in (await bob.json())["prompts"]] == ["p1"]


async def test_feedback_validation_size_and_failures(gw: Any) -> None:
    client, hub, sink, _ = gw
    hub.publish(prompt("p1", account=ACCT))
    h = auth(tok())
    assert (await client.post("/v1/feedback", data=b"{", headers=h)).status == 400
    r = await client.post("/v1/feedback", json={"prompt_id": "p1", "action": "liked"}, headers=h)
    assert r.status == 400 and "action" in (await r.json())["error"]
    r = await client.post("/v1/feedback", json={"prompt_id": "p1", "action": "shown", "x": 1}, headers=h)
    assert r.status == 400
    r = await client.post("/v1/feedback", json={"prompt_id": "nope", "action": "shown"}, headers=h)
    assert r.status == 404
    r = await client.post("/v1/feedback", data=b'{"prompt_id":"' + b"a" * 5000 + b'"}', headers=h)
    assert r.status == 413
    sink.fail = True
    r = await client.post("/v1/feedback", json={"prompt_id": "p1", "action": "shown"}, headers=h)
    assert r.status == 503
    sink.fail = False  # not recorded as sent: the retry goes through
    r = await client.post("/v1/feedback", json={"prompt_id": "p1", "action": "shown"}, headers=h)
    assert r.status == 202 and len(sink.sent) == 1


async def test_feedback_rate_limit_per_user(gw: Any) -> None:
    client, hub, _, _ = gw
    hub.publish(prompt("p1", account=ACCT))
    codes = [
        (
            await client.post(
                "/v1/feedback", json={"prompt_id": "p1", "action": "shown"}, headers=auth(tok())
            )
        ).status
        for _ in range(35)
    ]
    assert codes[0] == 202 and set(codes[1:30]) == {200} and codes[-1] == 429
    r = await client.post(
        "/v1/feedback", json={"prompt_id": "p1", "action": "shown"}, headers=auth(tok(user="bob"))
    )
    assert r.status == 202  # another user has their own budget


async def test_cors_allow_list(gw: Any) -> None:
    client, hub, _, _ = gw
    hub.publish(prompt("p1", account=ACCT))
    ok = await client.get("/v1/prompts", headers={**auth(tok()), "Origin": "https://app.example.com"})
    assert ok.status == 200 and ok.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    refused = await client.get("/v1/stream", headers={**auth("bad"), "Origin": "https://app.example.com"})
    assert (
        refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    )
    pre = await client.options(
        "/v1/feedback",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status == 204 and "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    for method in ("get", "post", "options"):
        r = await getattr(client, method)(
            "/v1/prompts", headers={**auth(tok()), "Origin": "https://evil.example"}
        )
        assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    r = await client.post(
        "/v1/feedback",
        json={"prompt_id": "p1", "action": "clicked"},
        headers={**auth(tok()), "Origin": "https://evil.example"},
    )
    assert r.status == 403


async def test_no_account_ids_or_tokens_in_logs_or_metrics(gw: Any, caplog: pytest.LogCaptureFixture) -> None:
    client, hub, sink, _ = gw
    caplog.set_level(logging.DEBUG)
    t = tok()
    hub.publish(prompt("p1", account=ACCT))
    await client.get("/v1/prompts", headers=auth(t))
    await client.get("/v1/prompts?token=" + t)
    await client.get("/v1/prompts", headers=auth(tok(ttl=-1)))
    await client.get("/v1/prompts?account=other", headers=auth(t))
    sink.fail = True
    await client.post("/v1/feedback", json={"prompt_id": "p1", "action": "shown"}, headers=auth(t))
    metrics = await (await client.get("/metrics")).text()
    assert "upsell_gateway_auth_failures_total" in metrics
    assert 'upsell_gateway_feedback_total{action="shown",result="failed"} 1.0' in metrics
    logs = caplog.text
    assert "feedback not produced" in logs
    for secret in (ACCT, t, "alice", SECRET.decode()):
        assert secret not in metrics
        assert secret not in logs


async def test_pages_and_probes(gw: Any) -> None:
    client, _, _, _ = gw
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    js = await client.get("/client/upsell.js")
    assert js.status == 200 and "UpsellPrompts" in await js.text()
    assert "export function connect" in await (await client.get("/client/upsell.mjs")).text()
    assert (await client.get("/demo")).status == 200
    assert (await client.get("/demo/token")).status == 404  # demo tokens only in demo mode


async def test_not_served_until_ready() -> None:
    ready = False
    g = Gateway(
        GatewaySettings(secret=SECRET.decode()), Hub(Clock()), Sink(), ready=lambda: ready, clock=Clock()
    )
    server = TestServer(g.app())
    await server.start_server()
    client = TestClient(server)
    await client.start_server()
    try:
        for path in ("/v1/stream", "/v1/prompts"):
            r = await client.get(path, headers=auth(tok()))
            assert r.status == 503 and r.headers["Retry-After"] == "2"
        assert (await client.get("/readyz")).status == 503
        ready = True
        assert (await client.get("/v1/prompts", headers=auth(tok()))).status == 200
    finally:
        await client.close()
