"""`upsell-triggers gateway` against the real broker: rebuild on start, readiness, live delivery,
feedback to the topic, dismissals shared between replicas through the feedback topic."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devkit.gateway import SECRET, GatewayProc
from devkit.kafka_io import collect, delete_topics, produce
from tests.gateway.helpers import prompt
from tests.metricscheck import Scrapes
from upsell_triggers.engine.timeutil import to_iso
from upsell_triggers.gateway.tokens import sign

pytestmark = pytest.mark.kafka


async def make_topics(bootstrap: str, names: list[str], partitions: int = 2) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


def live_prompt(
    pid: str, account: str, user: str | None = None, age_s: float = 0, ttl_s: float = 3600
) -> bytes:
    now = int((time.time() - age_s) * 1000)
    p = prompt(pid, account=account, user=user)
    p["created_at"], p["expires_at"] = to_iso(now), to_iso(now + int(ttl_s * 1000))
    return orjson.dumps(p)


def token(account: str, user: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + sign(SECRET.encode(), account, user, int(time.time()) + 600)}


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    name = f"gw{uuid.uuid4().hex[:8]}"
    t = {"prompts": f"{name}-prompts", "feedback": f"{name}-feedback"}
    asyncio.run(make_topics(kafka_bootstrap, list(t.values())))
    yield t
    asyncio.run(delete_topics(kafka_bootstrap, [name + "-"]))


def test_rebuild_ready_deliver_feedback_and_replicas(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path
) -> None:
    a, b = "acct-a", "acct-b"
    asyncio.run(
        produce(
            kafka_bootstrap,
            topics["prompts"],
            [
                (a.encode(), live_prompt("p-old", a, age_s=7200, ttl_s=3600)),  # expired an hour ago
                (a.encode(), live_prompt("p1", a)),
                (a.encode(), live_prompt("p2", a, user="alice")),
                (a.encode(), live_prompt("p1", a)),  # the worker re-sent it after a crash
                (b.encode(), live_prompt("pb", b)),
                (a.encode(), b"not json"),
            ],
        )
    )
    g1 = GatewayProc(kafka_bootstrap, topics, tmp_path / "g1.log").start()
    g2 = GatewayProc(kafka_bootstrap, topics, tmp_path / "g2.log").start()
    try:
        g1.wait_ready()
        g2.wait_ready()
        for g in (g1, g2):  # every replica serves every user
            code, body = g.get("/v1/prompts", token(a, "alice"))
            assert code == 200
            assert [p["prompt_id"] for p in orjson.loads(body)["prompts"]] == ["p1", "p2"]
            assert [
                p["prompt_id"] for p in orjson.loads(g.get("/v1/prompts", token(a, "bob"))[1])["prompts"]
            ] == ["p1"]
            assert [
                p["prompt_id"] for p in orjson.loads(g.get("/v1/prompts", token(b, "x"))[1])["prompts"]
            ] == ["pb"]
        metrics = g1.get("/metrics")[1]
        assert 'upsell_gateway_prompts_total{outcome="duplicate"} 1.0' in metrics
        assert 'upsell_gateway_prompts_total{outcome="expired"} 1.0' in metrics
        assert 'upsell_gateway_prompts_total{outcome="invalid"} 1.0' in metrics
        assert "acct-a" not in metrics

        async def live_and_feedback() -> None:
            async with ClientSession() as s:
                last = orjson.loads(g1.get("/v1/prompts", token(a, "alice"))[1])["last_event_id"]
                r1 = await s.get(g1.url + "/v1/stream", headers={**token(a, "alice"), "Last-Event-ID": last})
                r2 = await s.get(g2.url + "/v1/stream", headers=token(a, "alice"))
                await produce(kafka_bootstrap, topics["prompts"], [(a.encode(), live_prompt("p3", a))])
                for r in (r1, r2):
                    got = b""
                    async with asyncio.timeout(15):
                        while b"p3" not in got:
                            got += await r.content.readany()
                    if r is r1:  # resumed after p2: only p3 came
                        assert b"p1" not in got and b"p2" not in got
                # alice dismisses p1 through replica 1; replica 2 learns it from the feedback topic
                fb = await s.post(
                    g1.url + "/v1/feedback",
                    json={"prompt_id": "p1", "action": "dismissed"},
                    headers=token(a, "alice"),
                )
                assert fb.status == 202
                got = b""
                async with asyncio.timeout(15):
                    while b"event: dismissed" not in got:
                        got += await r2.content.readany()
                r1.close()
                r2.close()

        asyncio.run(live_and_feedback())
        recs = asyncio.run(collect(kafka_bootstrap, [topics["feedback"]], 1, timeout=15))
        assert len(recs) == 1 and recs[0].key == a.encode()
        ev = orjson.loads(recs[0].value)
        assert (ev["type"], ev["prompt_id"], ev["user_id"], ev["account_id"]) == (
            "prompt_dismissed",
            "p1",
            "alice",
            a,
        )
        assert [
            p["prompt_id"] for p in orjson.loads(g2.get("/v1/prompts", token(a, "alice"))[1])["prompts"]
        ] == [
            "p2",
            "p3",
        ]
    finally:
        g1.stop()
        g2.stop()
    g3 = GatewayProc(
        kafka_bootstrap, topics, tmp_path / "g3.log"
    ).start()  # a restart rebuilds dismissals too
    try:
        g3.wait_ready()
        assert [
            p["prompt_id"] for p in orjson.loads(g3.get("/v1/prompts", token(a, "alice"))[1])["prompts"]
        ] == [
            "p2",
            "p3",
        ]
    finally:
        g3.stop()
    for g in (g1, g2, g3):  # no account id, user id or token in any log line
        text = g.log.read_text()
        assert "gateway ready" in text
        assert "acct-a" not in text and "alice" not in text and "Bearer" not in text and "v1." not in text


def test_not_ready_until_topic_exists_and_one_line_start_errors(kafka_bootstrap: str, tmp_path: Path) -> None:
    missing = {"prompts": f"gw{uuid.uuid4().hex[:8]}-nope", "feedback": f"gw{uuid.uuid4().hex[:8]}-nope"}
    g = GatewayProc(
        kafka_bootstrap, missing, tmp_path / "g.log", extra_env={"UPSELL_GATEWAY_SECRET": "short"}
    )
    g.start()
    assert g.proc is not None and g.proc.wait(30) == 2
    assert g.log.read_text().strip().splitlines()[-1].startswith("UPSELL_GATEWAY_SECRET is 5 bytes")


def test_every_gateway_metric_is_written(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path
) -> None:
    """Every family the gateway registers is written (as tests/metricscheck.py judges it) by: prompts
    delivered, duplicate, expired and invalid; one account past its pending bound (evicted); a refused
    token; a stream receiving a live prompt (streams, frames, publish time); feedback; and a worker's
    transaction left open on the prompts topic, whose records a read_committed gateway cannot read yet
    (consumer lag)."""
    a, c = "acct-a", "acct-c"
    records = [
        (a.encode(), live_prompt("p1", a)),
        (a.encode(), live_prompt("p1", a)),  # duplicate
        (a.encode(), live_prompt("p-old", a, age_s=7200, ttl_s=3600)),  # expired
        (a.encode(), b"not json"),
    ]
    records += [(c.encode(), live_prompt(f"c{i}", c)) for i in range(51)]  # one past the bound of 50
    asyncio.run(produce(kafka_bootstrap, topics["prompts"], records))
    g = GatewayProc(kafka_bootstrap, topics, tmp_path / "g.log").start()

    async def workload(scrapes: Scrapes) -> None:
        assert g.get("/v1/prompts", {"Authorization": "Bearer nope"})[0] == 401
        async with ClientSession() as s:
            stream = await s.get(g.url + "/v1/stream", headers=token(a, "alice"))
            await produce(kafka_bootstrap, topics["prompts"], [(a.encode(), live_prompt("p2", a))])
            got = b""
            async with asyncio.timeout(15):
                while b"p2" not in got:
                    got += await stream.content.readany()
            scrapes.once()  # the stream is open
            fb = await s.post(
                g.url + "/v1/feedback",
                json={"prompt_id": "p2", "action": "clicked"},
                headers=token(a, "alice"),
            )
            assert fb.status == 202
            stream.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{g.port}-open")
        await producer.start()
        try:
            await producer.begin_transaction()
            await producer.send_and_wait(topics["prompts"], live_prompt("p3", a), key=a.encode())
            # The gateway reports its lag once a second.
            await asyncio.to_thread(scrapes.wait_written, {"upsell_gateway_consumer_lag"}, 30)
            await producer.abort_transaction()
        finally:
            await producer.stop()

    try:
        g.wait_ready()
        with Scrapes(g.port) as scrapes:
            asyncio.run(workload(scrapes))
            scrapes.once()
    finally:
        g.stop()
    assert {"upsell_gateway_pending_evicted", "upsell_gateway_consumer_lag"} <= scrapes.registered
    assert scrapes.never_written() == [], (
        f"registered by the gateway but never written: {scrapes.never_written()}"
    )
