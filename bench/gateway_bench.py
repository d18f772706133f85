"""Delivery gateway: open streams one process holds, prompt latency, feedback rate, rebuild rate.

    python bench/gateway_bench.py [--streams 10000] [--clients 1000] [--prompts 300] [--follow 50000]
                                  [--feedback 4000] [--rebuild 200000]

One `upsell-triggers gateway` process on fresh topics of the local broker, clients in this process,
all on loopback:
1. idle streams: opens --streams SSE streams (raw sockets, 10 users per account), waits one heartbeat
   round, and reads the gateway's resident memory before and after (per stream = difference / streams).
   Target: >= 10,000 streams.
2. latency: --clients streams connected (10 users per account); --prompts account-wide prompts
   produced one at a time at 50/s; latency = from just before the producer's send to the frame read
   by each client of the account (through the broker, the gateway's consumer, its hub and the socket).
   Target: p99 <= 100 ms with 1,000 clients.
3. feedback: --feedback POSTs of distinct (prompt, user, action), 64 in flight, each produced to the
   feedback topic with acks=all before the answer; requests/s.
4. follow: --follow prompts produced at once while --clients streams are open (over ten times as
   many accounts, so a tenth of the prompts fan out to 10 streams each): prompts per second one
   replica takes in live, against the rate the workers emit them at.
5. rebuild: --rebuild prompts on a fresh prompts topic, then a new gateway: seconds until /readyz, i.e.
   the prompts per second one replica takes in (each replica reads every partition; compare with the
   rate the workers emit prompts at).
Writes bench/results/gateway.json. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession, TCPConnector
from aiokafka import AIOKafkaProducer
from kafkabench import (
    bootstrap,
    create_topics,
    delete_created_topics_at_exit,
    produce_fast,
    rss_kib,
    run_id,
    write_result,
)

from devkit.gateway import SECRET, GatewayProc
from upsell_triggers.engine.timeutil import to_iso
from upsell_triggers.gateway.tokens import sign

USERS_PER_ACCOUNT = 10
PID = re.compile(rb'"prompt_id":"(b[pf]-\d+)"')


def prompt(pid: str, account: str) -> bytes:
    now = int(time.time() * 1000)
    return orjson.dumps(
        {
            "schema_version": 1,
            "prompt_id": pid,
            "account_id": account,
            "user_id": None,
            "rule_id": "seats-80",
            "placement": "banner",
            "title": "You're using 4 of 5 seats",
            "body": "Your team is growing.",
            "cta": {"label": "Upgrade", "url": "/billing/upgrade?plan=team"},
            "created_at": to_iso(now),
            "expires_at": to_iso(now + 3_600_000),
        }
    )


def token(i: int) -> tuple[str, str]:
    account, user = f"acct-{i // USERS_PER_ACCOUNT}", f"u-{i % USERS_PER_ACCOUNT}"
    return account, sign(SECRET.encode(), account, user, int(time.time()) + 3600)


class Stream:
    """One SSE client on a raw socket: records when each prompt id first arrives."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.seen: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def open(self, port: int, tok: str) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(
            f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())

    def follow(self) -> None:
        async def loop() -> None:
            assert self.reader is not None
            buf = b""
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                t = time.perf_counter()
                buf = buf[-64:] + chunk
                for m in PID.finditer(buf):
                    self.seen.setdefault(m.group(1).decode(), t)

        self.task = asyncio.create_task(loop())

    def close(self) -> None:
        if self.task:
            self.task.cancel()
        if self.writer:
            self.writer.close()


async def open_many(port: int, n: int, follow: bool) -> list[Stream]:
    sem = asyncio.Semaphore(200)
    streams = [Stream() for _ in range(n)]

    async def one(i: int) -> None:
        async with sem:
            await streams[i].open(port, token(i)[1])
            if follow:
                streams[i].follow()

    await asyncio.gather(*(one(i) for i in range(n)))
    return streams


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def idle_streams(g: GatewayProc, n: int, heartbeat_s: float) -> dict[str, Any]:
    assert g.proc is not None
    base = rss_kib(g.proc.pid)
    t0 = time.monotonic()
    streams = await open_many(g.port, n, follow=True)
    opened_s = time.monotonic() - t0
    await asyncio.sleep(heartbeat_s + 1)  # one heartbeat round on every stream
    open_now = int(
        re.search(r"^upsell_gateway_streams (\S+)$", g.get("/metrics")[1], re.M).group(1).split(".")[0]
    )  # type: ignore[union-attr]
    held = rss_kib(g.proc.pid)
    alive = sum(1 for s in streams if s.task is not None and not s.task.done())
    for s in streams:
        s.close()
    return {
        "streams": n,
        "open_on_gateway": open_now,
        "alive_after_heartbeat": alive,
        "open_seconds": round(opened_s, 2),
        "rss_idle_mib": round(base / 1024, 1),
        "rss_with_streams_mib": round(held / 1024, 1),
        "kib_per_stream": round((held - base) / n, 2),
    }


async def latency(g: GatewayProc, bs: str, topic: str, clients: int, prompts: int) -> dict[str, Any]:
    streams = await open_many(g.port, clients, follow=True)
    accounts = clients // USERS_PER_ACCOUNT
    sent: dict[str, float] = {}
    p = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=0, acks=1)
    await p.start()
    try:
        await asyncio.sleep(1)
        t_start = time.perf_counter()
        for i in range(prompts):
            pid, account = f"bp-{i}", f"acct-{i % accounts}"
            await asyncio.sleep(max(0.0, t_start + i / 50 - time.perf_counter()))
            sent[pid] = time.perf_counter()
            await p.send(topic, prompt(pid, account), key=account.encode())
        want = prompts * USERS_PER_ACCOUNT
        for _ in range(75):  # at most 15 s for the last frames
            if sum(len(s.seen) for s in streams) >= want:
                break
            await asyncio.sleep(0.2)
    finally:
        await p.stop()
    lat = [(t - sent[pid]) * 1000 for s in streams for pid, t in s.seen.items()]
    for s in streams:
        s.close()
    return {
        "clients": clients,
        "prompts": prompts,
        "deliveries_expected": prompts * USERS_PER_ACCOUNT,
        "deliveries_received": len(lat),
        "p50_ms": round(pct(lat, 0.50), 2),
        "p99_ms": round(pct(lat, 0.99), 2),
        "max_ms": round(max(lat), 2),
        "mean_ms": round(statistics.fmean(lat), 2),
    }


def delivered(g: GatewayProc) -> float:
    m = re.search(r'^upsell_gateway_prompts_total\{outcome="delivered"\} (\S+)$', g.get("/metrics")[1], re.M)
    return float(m.group(1)) if m else 0.0


async def follow(g: GatewayProc, bs: str, topic: str, clients: int, n: int) -> dict[str, Any]:
    """Prompts per second one replica takes in while it serves `clients` streams: n prompts produced
    at once over 10x as many accounts as have streams (a tenth of them fan out to 10 streams)."""
    streams = await open_many(g.port, clients, follow=True)
    accounts = clients // USERS_PER_ACCOUNT * 10
    before = delivered(g)
    recs = [(f"acct-{i % accounts}".encode(), prompt(f"bf-{i}", f"acct-{i % accounts}")) for i in range(n)]
    t0 = time.perf_counter()
    await produce_fast(bs, topic, recs, 4)
    produced_s = time.perf_counter() - t0
    for _ in range(600):  # at most 120 s
        if delivered(g) - before >= n:
            break
        await asyncio.sleep(0.2)
    took = time.perf_counter() - t0
    got = delivered(g) - before
    with_streams = clients // USERS_PER_ACCOUNT
    expected = sum(USERS_PER_ACCOUNT for i in range(n) if i % accounts < with_streams)
    for _ in range(100):  # the clients share this process: give them up to 20 s to read the rest
        frames = sum(1 for s in streams for pid in s.seen if pid.startswith("bf-"))
        if frames >= expected:
            break
        await asyncio.sleep(0.2)
    for s in streams:
        s.close()
    return {
        "clients": clients,
        "prompts": n,
        "accounts": accounts,
        "produced_seconds": round(produced_s, 2),
        "all_read_seconds": round(took, 2),
        "prompts_per_second": round(got / took),
        "frames_expected": expected,
        "frames_read_by_clients": frames,
    }


async def feedback(g: GatewayProc, clients: int, prompts: int, n: int) -> dict[str, Any]:
    accounts = clients // USERS_PER_ACCOUNT
    jobs = []
    for i in range(prompts):
        for u in range(USERS_PER_ACCOUNT):
            for action in ("shown", "clicked", "dismissed"):
                jobs.append((f"bp-{i}", (i % accounts) * USERS_PER_ACCOUNT + u, action))
    jobs = jobs[:n]
    toks = {i: token(i)[1] for i in range(clients)}
    codes: dict[int, int] = {}
    it = iter(jobs)
    async with ClientSession(connector=TCPConnector(limit=64)) as s:

        async def worker() -> None:
            for pid, i, action in it:
                r = await s.post(
                    g.url + "/v1/feedback",
                    data=orjson.dumps({"prompt_id": pid, "action": action}),
                    headers={"Authorization": "Bearer " + toks[i], "Content-Type": "application/json"},
                )
                await r.read()
                codes[r.status] = codes.get(r.status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(64)))
        dt = time.perf_counter() - t0
    return {
        "requests": len(jobs),
        "seconds": round(dt, 2),
        "per_second": round(len(jobs) / dt),
        "status": codes,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=1_000)
    ap.add_argument("--prompts", type=int, default=300)
    ap.add_argument("--feedback", type=int, default=4_000)
    ap.add_argument("--follow", type=int, default=50_000)
    ap.add_argument("--rebuild", type=int, default=200_000)
    a = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the gateway inherits it
    if hard < a.streams + 1000:
        print(f"ulimit -n is {hard}: {a.streams} streams need more (raise the hard limit)")
        return 2
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    rid = run_id()
    topics = {"prompts": f"gwb-{rid}-prompts", "feedback": f"gwb-{rid}-feedback"}
    asyncio.run(create_topics(bs, topics.values(), 4))
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    env = {
        "UPSELL_LOG_LEVEL": "warning",
        "UPSELL_GATEWAY_HEARTBEAT_S": "5",
        "UPSELL_GATEWAY_FEEDBACK_RATE": "1000",
        "UPSELL_GATEWAY_FEEDBACK_BURST": "1000",
    }
    result: dict[str, Any] = {}
    g = GatewayProc(bs, topics, tmp / "gateway.log", extra_env=env).start()
    try:
        g.wait_ready()
        if a.streams:
            result["idle_streams"] = asyncio.run(idle_streams(g, a.streams, 5))
            print("idle streams:", result["idle_streams"], flush=True)
            time.sleep(2)
        result["latency"] = asyncio.run(latency(g, bs, topics["prompts"], a.clients, a.prompts))
        print("latency:", result["latency"], flush=True)
        result["feedback"] = asyncio.run(feedback(g, a.clients, a.prompts, a.feedback))
        print("feedback:", result["feedback"], flush=True)
        # last: its prompts evict the earlier ones at the per-account bound
        result["follow"] = asyncio.run(follow(g, bs, topics["prompts"], a.clients, a.follow))
        print("follow:", result["follow"], flush=True)
    finally:
        g.stop()
    if not a.rebuild:
        print("wrote", write_result("gateway-partial", result))
        return 0
    rtopics = {"prompts": f"gwb-{rid}-rprompts", "feedback": f"gwb-{rid}-rfeedback"}
    asyncio.run(create_topics(bs, rtopics.values(), 4))
    accounts = max(1, a.rebuild // 10)
    recs = (
        (f"acct-{i % accounts}".encode(), prompt(f"bp-{i}", f"acct-{i % accounts}")) for i in range(a.rebuild)
    )
    asyncio.run(produce_fast(bs, rtopics["prompts"], recs, 4))
    g2 = GatewayProc(bs, rtopics, tmp / "gateway2.log", extra_env=env).start()
    try:
        secs = g2.wait_ready(timeout=300)
        assert g2.proc is not None
        pending = re.search(r"^upsell_gateway_pending_prompts (\S+)$", g2.get("/metrics")[1], re.M)
        result["rebuild"] = {
            "prompts": a.rebuild,
            "accounts": accounts,
            "seconds_to_ready": round(secs, 2),
            "prompts_per_second": round(a.rebuild / secs),
            "pending_after": float(pending.group(1)) if pending else None,
            "rss_mib": round(rss_kib(g2.proc.pid) / 1024, 1),
        }
        print("rebuild:", result["rebuild"], flush=True)
    finally:
        g2.stop()
    result["targets"] = {
        "idle_streams_10k": result.get("idle_streams", {}).get("alive_after_heartbeat", 0) >= 10_000,
        "latency_p99_100ms_at_1000": result["latency"]["p99_ms"] <= 100 and a.clients >= 1000,
    }
    result["note"] = "loopback; clients and broker on the same shared 2-core machine as the gateway"
    print("wrote", write_result("gateway", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
