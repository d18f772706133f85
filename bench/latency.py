"""Benchmark 2: event -> prompt latency at fixed input rates, every run reported, with the worker's capacity.

    python bench/latency.py [--rates 1000 10000] [--runs 3] [--seconds 15] [--warmup 1]
                            [--mode kafka|embedded|floor|gateway] [--capacity-events 300000] [--busy-core]
                            [--worker-core N] [--timings DIR] [--env NAME=VALUE ...] [--gateway-streams 2000]
                            [--name latency]

A producer sends events at a fixed rate (wall-clock paced, 1 ms ticks). One in ten starts a new account
that crosses 80% of its seats (plan_changed free, then seats=4: a seats-80 prompt); the rest are API-call
deltas on other accounts (load). A consumer on `upgrade-prompts` matches each prompt's
trigger_event_id to the wall-clock time its event was handed to the producer. Events of the first
--warmup second are sent but not measured (steady state).

Every run is printed and kept: p50/p99/max, where the time went (event handed to the producer ->
prompt created by the worker's producer, its record timestamp; -> prompt received by the measuring
consumer), and how far the pacing producer fell behind its schedule. The summary per rate gives the
median of runs, the worst run, how many runs' p99 exceed the target and how many stalled (p50 above
--stall-ms: the worker stayed behind). --capacity-events times the worker working off a backlog of that
many events of the same mix, before and after the runs, so the rate is stated as a share of capacity
measured in the same sitting. --busy-core keeps one core busy with a spinning process (CPU contention,
as the reliability runs do). --worker-core N gives the worker CPU N to itself and puts the broker and the
benchmark's producer and consumer on the other cores: what a deployment with the broker on other machines
sees, on a machine where all of them must share two cores. --timings DIR keeps each worker's per-batch timings
(UPSELL_BATCH_TIMINGS_FILE) and log there and prints their summary per run, with the slowest batches'
time laid out by phase (tail_attribution).

Modes, each measured the same way and reported the same way:
- kafka (default): one `upsell-triggers run` worker on fresh topics of the local broker.
- floor: bench/relay.py in place of the worker: a bare consumer -> producer relay with the worker's
  Kafka client settings, no engine, that produces a small record for each event that prompts (its
  record timestamps stand for the worker's in `worker_*`). What it
  measures is producer -> broker -> fetch -> produce -> broker -> fetch on this machine: the part of the
  kafka mode's latency that no worker code can remove. --worker-core pins the relay as it pins the
  worker; --capacity-events does not apply (there is no worker to measure).
- gateway: the worker as in kafka mode and an `upsell-triggers gateway` serving its prompts topic; the
  prompts are received as SSE frames from the gateway's streams (GET /v1/stream, one stream per account,
  as the gateway serves them), opened for the measured accounts before the first event is sent: every
  prompting account of the measured seconds, evenly thinned to at most --gateway-streams (with 15 s runs
  all of them at 1k events/s, every 8th at 10k/s; the others' prompts still pass through the gateway). The
  worker's share is read from the prompt records' timestamps by a consumer of the prompts topic; the
  rest (`consumer_p99_ms`) is the gateway's: its consumer, hub and the stream. With --worker-core the
  gateway runs on the other cores with the broker and the benchmark.
- embedded: `upsell-triggers run --embedded` end to end (events on its stdin, prompts on its stdout).

Targets: p99 <= 50 ms at 10k events/s in at least 19 of 20 runs and no run with p50 above 100 ms; p99
<= 25 ms at 1k events/s. Writes bench/results/<name>.json (latency.json by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafkabench import (
    ROOT,
    bootstrap,
    create_topics,
    delete_created_topics_at_exit,
    median,
    produce_fast,
    python_subprocess,
    run_id,
    start_service,
    wait_consumed,
    write_result,
)

from devkit.gateway import SECRET, GatewayProc
from devkit.kafka_io import event
from devkit.worker import free_port
from upsell_triggers.gateway.tokens import sign

TARGET_P99_MS = {1000: 25.0, 10000: 50.0}


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def mix(n: int, base: int) -> Iterator[tuple[str | None, bytes, bytes]]:
    """Event n of the benchmark's mix: (id of an event whose prompt is measured or None, key, value)."""
    if n % 10 == 0:
        acct = f"lat-{n}"
        key, value = event(acct, f"p{n}", base, type="plan_changed", plan="free")
        yield None, key, value
        key, value = event(acct, f"s{n}", base + 1, type="usage", metric="seats", value=4)
        yield f"s{n}", key, value
    else:
        key, value = event(f"load-{n % 5000}", f"a{n}", base, type="usage", metric="api_calls", delta=1)
        yield None, key, value


class Run:
    """One run's clocks: send times of the measured events, receive times of their prompts."""

    def __init__(self, only: set[str] | None = None) -> None:
        self.only = only  # the event ids measured (None: every prompting event after the warm-up)
        self.sent: dict[str, float] = {}  # event id -> wall clock when handed to the producer
        self.latency: list[float] = []  # s, event handed over -> prompt received
        self.worker: list[float] = []  # s, event handed over -> prompt record's timestamp (worker side)
        self.after: list[float] = []  # s, prompt record's timestamp -> prompt received
        self.behind_max = 0.0  # s, most the pacing producer was behind its schedule
        self.t0 = 0.0  # wall clock of the first event sent

    def received(self, value: bytes, created_ms: int, now: float) -> None:
        try:
            t = self.sent.get(orjson.loads(value)["trigger_event_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return  # not a prompt (a log line of the embedded runtime)
        if t is not None:
            self.latency.append(now - t)
            self.worker.append(created_ms / 1000 - t)
            self.after.append(now - created_ms / 1000)

    def pair(self, created_ms: dict[str, int], arrived: dict[str, float]) -> None:
        """The clocks of a run whose prompts were received elsewhere (the gateway's streams) than their
        records were seen (a consumer of the prompts topic): both by trigger_event_id."""
        for eid, t in self.sent.items():
            if eid in arrived:
                self.latency.append(arrived[eid] - t)
                if eid in created_ms:
                    self.worker.append(created_ms[eid] / 1000 - t)
                    self.after.append(arrived[eid] - created_ms[eid] / 1000)

    def measures(self, eid: str) -> bool:
        return self.only is None or eid in self.only

    async def pace(self, send: Any, rate: int, seconds: float, warmup: float) -> None:
        """Calls `await send(key, value)` for the mix at `rate` per second for warmup + seconds."""
        start = time.perf_counter()
        self.t0 = time.time()
        n = 0
        base = int(time.time() * 1000) - 60_000
        while (elapsed := time.perf_counter() - start) < warmup + seconds:
            due = int(elapsed * rate)
            self.behind_max = max(self.behind_max, (due - n) / rate)
            while n < due:
                n += 1
                for measured, key, value in mix(n, base):
                    await send(key, value)
                    if measured is not None and elapsed >= warmup and self.measures(measured):
                        self.sent[measured] = time.time()
            await asyncio.sleep(0.001)

    def summary(self) -> dict[str, float]:
        lat, wk = self.latency, self.worker
        return {
            "p50_ms": 1000 * percentile(lat, 0.50),
            "p99_ms": 1000 * percentile(lat, 0.99),
            "max_ms": 1000 * max(lat, default=float("nan")),
            "prompts": len(lat),
            "worker_p50_ms": 1000 * percentile(wk, 0.50),
            "worker_p99_ms": 1000 * percentile(wk, 0.99),
            "consumer_p99_ms": 1000 * percentile(self.after, 0.99),
            "producer_behind_max_ms": 1000 * self.behind_max,
        }

    def check(self) -> None:
        if len(self.latency) < 0.99 * len(self.sent):
            raise RuntimeError(f"only {len(self.latency)} of {len(self.sent)} prompts arrived")


async def prompts_reader_and_producer(bs: str, prompts: str) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
    """The measuring consumer, at the end of the prompts topic, and the pacing producer, both started.

    read_committed, as consumers of the prompts topic must read with exactly_once; without
    transactions on the topic it reads exactly what read_uncommitted does."""
    cons = AIOKafkaConsumer(
        prompts,
        bootstrap_servers=bs,
        auto_offset_reset="latest",
        group_id=None,
        isolation_level="read_committed",
    )
    prod = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=1)
    await cons.start()
    await prod.start()
    await cons.seek_to_end()
    return cons, prod


async def measure_kafka(bs: str, topics: dict[str, str], rate: int, seconds: float, warmup: float) -> Run:
    run = Run()
    cons, prod = await prompts_reader_and_producer(bs, topics["prompts"])
    stop = asyncio.Event()

    async def receive() -> None:
        # Once the producer is done, read until every prompt arrived or none came for 5 s: a worker that
        # stays behind (a shared machine) or commits in transactions delivers in bursts.
        last = time.monotonic()
        while not stop.is_set() or len(run.latency) < len(run.sent):
            batch = await cons.getmany(timeout_ms=200)
            now = time.time()
            for msgs in batch.values():
                for m in msgs:
                    run.received(m.value, m.timestamp, now)
            if batch:
                last = time.monotonic()
            elif stop.is_set() and time.monotonic() - last > 5.0:
                break

    async def send(key: bytes, value: bytes) -> None:
        await prod.send(topics["events"], value, key=key)

    rx = asyncio.create_task(receive())
    await run.pace(send, rate, seconds, warmup)
    await prod.flush()
    await asyncio.sleep(2)
    stop.set()
    await rx
    await prod.stop()
    await cons.stop()
    run.check()
    return run


def gateway_accounts(rate: int, seconds: float, warmup: float, streams: int) -> list[int]:
    """The n of the measured events whose accounts get a gateway stream: every prompting event of the
    measured seconds (n > warmup x rate is only sent once the warm-up is over), evenly thinned to at most
    `streams` (the gateway streams per account; its other prompts still pass through it)."""
    last = int((warmup + seconds) * rate)  # due only once the time is up: not sent
    ns = [n for n in range(10, last, 10) if n > warmup * rate]
    return ns[:: max(1, -(-len(ns) // streams))]


TRIGGER = re.compile(rb'"trigger_event_id":"([^"]+)"')


async def open_stream(port: int, account: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A gateway SSE stream for one user of `account` (a raw socket, as bench/gateway_bench.py's clients)."""
    tok = sign(SECRET.encode(), account, "bench", int(time.time()) + 3600)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n\r\n"
    writer.write(request.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        status = head.split(b"\r\n", 1)[0].decode()
        raise RuntimeError(f"gateway stream for {account}: {status}")
    return reader, writer


async def follow_stream(reader: asyncio.StreamReader, arrived: dict[str, float]) -> None:
    """Wall clock at which each prompt's frame was read, by trigger_event_id, until the stream ends."""
    buf = b""
    while chunk := await reader.read(65536):
        now = time.time()
        buf = buf[-64:] + chunk  # a frame split over two reads
        for m in TRIGGER.finditer(buf):
            arrived.setdefault(m.group(1).decode(), now)


async def measure_gateway(
    bs: str, topics: dict[str, str], port: int, rate: int, seconds: float, warmup: float, streams: int
) -> Run:
    """The worker's prompts through the gateway: one SSE stream per measured account, opened before the
    first event is sent; latency = event handed to the producer -> its prompt's frame read from the
    stream. A consumer of the prompts topic reads the records' timestamps (the worker's share)."""
    ns = gateway_accounts(rate, seconds, warmup, streams)
    run = Run(only={f"s{n}" for n in ns})
    arrived: dict[str, float] = {}
    created: dict[str, int] = {}
    sem = asyncio.Semaphore(100)

    async def opened(n: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with sem:
            return await open_stream(port, f"lat-{n}")

    conns = await asyncio.gather(*(opened(n) for n in ns))
    followers = [asyncio.create_task(follow_stream(r, arrived)) for r, _ in conns]
    cons, prod = await prompts_reader_and_producer(bs, topics["prompts"])
    stop = asyncio.Event()

    async def records() -> None:
        while not stop.is_set():
            for msgs in (await cons.getmany(timeout_ms=200)).values():
                for m in msgs:
                    if m.value is not None and (hit := TRIGGER.search(m.value)):
                        created[hit.group(1).decode()] = m.timestamp

    async def send(key: bytes, value: bytes) -> None:
        await prod.send(topics["events"], value, key=key)

    rx = asyncio.create_task(records())
    try:
        await run.pace(send, rate, seconds, warmup)
        await prod.flush()
        await asyncio.sleep(2)
        last, seen = time.monotonic(), -1
        while time.monotonic() - last < 5.0:  # until every prompt arrived both ways, or none for 5 s
            if all(e in arrived and e in created for e in run.sent):
                break
            if len(arrived) + len(created) != seen:
                last, seen = time.monotonic(), len(arrived) + len(created)
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await rx
        for t in followers:
            t.cancel()
        for _, w in conns:
            w.close()
        await asyncio.gather(*followers, return_exceptions=True)
        await prod.stop()
        await cons.stop()
    run.pair(created, arrived)
    run.check()
    return run


def start_relay(bs: str, topics: dict[str, str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """bench/relay.py on the run's topics, with the worker's environment; returns once it is up."""
    relay_env = {
        **env,
        "KAFKA_BOOTSTRAP_SERVERS": bs,
        "UPSELL_TOPIC_EVENTS": topics["events"],
        "UPSELL_TOPIC_PROMPTS": topics["prompts"],
    }
    proc = python_subprocess([str(ROOT / "bench" / "relay.py")], relay_env, log)
    deadline = time.monotonic() + 60
    while "relay up" not in _text(log):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"relay did not start:\n{_text(log)[-3000:]}")
        time.sleep(0.1)
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


async def measure_embedded(tmp: Path, rate: int, seconds: float, warmup: float, log: Path) -> Run:
    """`upsell-triggers run --embedded --input -`: events on stdin, prompts as JSON lines on stdout (the
    prompt's own created_at is its creation time there: no record timestamp, so worker = end to end)."""
    run = Run()
    env = {**os.environ, "UPSELL_HTTP_PORT": str(free_port()), "UPSELL_RULES_DIR": str(ROOT / "rules")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "upsell_triggers",
        "run",
        "--embedded",
        "--input",
        "-",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        env=env,
        limit=1 << 20,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    deadline = time.monotonic() + 120
    while "embedded runtime up" not in _text(log):
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"embedded runtime did not start:\n{_text(log)[-3000:]}")
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)

    async def receive() -> None:
        while line := await stdout.readline():
            now = time.time()
            run.received(line, int(now * 1000), now)

    async def send(key: bytes, value: bytes) -> None:
        stdin.write(value + b"\n")

    rx = asyncio.create_task(receive())
    run.t0 = time.time()
    await run.pace(send, rate, seconds, warmup)
    await stdin.drain()
    await asyncio.sleep(2)
    stdin.close()  # the end of its input; then it serves metrics until stopped
    await asyncio.sleep(0.5)
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
    rx.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await rx
    run.check()
    return run


def capacity(bs: str, tmp: Path, n: int, env: dict[str, str]) -> float:
    """Events/s of one worker working off a backlog of n events of the benchmark's mix."""
    rid = f"{run_id()}-cap"
    topics = {k: f"lat-{k}-{rid}" for k in ("events", "feedback", "prompts", "dlq")}
    asyncio.run(create_topics(bs, topics.values(), 4))
    base = int(time.time() * 1000) - 60_000
    records = ((k, v) for i in range(1, n + 1) for _, k, v in mix(i, base))
    total = asyncio.run(produce_fast(bs, topics["events"], records, 4))
    w = start_service(bs, tmp, topics, f"lat-{rid}", env)
    try:
        first, done, at_first = wait_consumed([w], total, timeout=600)
    finally:
        w.stop()
    return (total - at_first) / (done - first)


def _schedstat(pid: int) -> tuple[float, float]:
    """(s on a CPU, s waiting in the run queue) of all threads of a process so far (0, 0 once gone)."""
    run = wait = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                a, b, _ = (task / "schedstat").read_text().split()
                run, wait = run + int(a), wait + int(b)
    return run / 1e9, wait / 1e9


def _psi_some() -> float:
    """s during which some task waited for a CPU (Linux pressure stall information), 0 if unavailable."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(line.rsplit("total=", 1)[1]) / 1e6
    return 0.0


def _steal_s() -> float:
    """s of the machine's CPUs taken by the hypervisor for other guests (the steal column of /proc/stat,
    all CPUs summed), 0 if unavailable: time this machine's processes were ready but not run at all."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` (any address), from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f[9])
    return inodes


def broker_pid(bs: str) -> int | None:
    """The process listening on the bootstrap port: the broker the run uses, not another one on the
    machine (tests start brokers of their own, on other ports)."""
    inodes = {f"socket:[{i}]" for i in _listening_inodes(int(bs.split(",")[0].rsplit(":", 1)[1]))}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and inodes:
            with contextlib.suppress(OSError):
                for fd in (d / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd) in inodes:
                            return int(d.name)
    return None


class CpuWatch:
    """CPU time and run-queue wait of the processes of a run, and the machine's CPU pressure, between
    start() and stop(): a run that waited for a CPU much of its time measured the machine."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {k: v for k, v in pids.items() if v is not None}
        self.t = 0.0
        self.at: dict[str, tuple[float, float]] = {}
        self.psi = 0.0
        self.steal = 0.0

    def start(self) -> None:
        self.t, self.psi, self.steal = time.monotonic(), _psi_some(), _steal_s()
        self.at = {k: _schedstat(p) for k, p in self.pids.items()}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t
        out = {
            "cpu_pressure_share": round((_psi_some() - self.psi) / wall, 3),
            "steal_share": round((_steal_s() - self.steal) / wall, 3),
        }
        for k, p in self.pids.items():
            with contextlib.suppress(OSError):
                run, wait = _schedstat(p)
                out[f"{k}_cpu_share"] = round((run - self.at[k][0]) / wall, 3)
                out[f"{k}_runqueue_wait_share"] = round((wait - self.at[k][1]) / wall, 3)
        return out


def timings_summary(path: Path, t0: float, events_topic: str) -> dict[str, Any]:
    """What the worker's per-batch timings say about one run (t in s after the first event sent)."""
    if not path.exists():
        return {}
    batches, gcs, commits, assigned, idle, writes = [], [], [], [], [], []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            r = orjson.loads(line)
            kind = r.get("event")
            if kind is None:
                batches.append(r)
            elif kind == "gc":
                gcs.append(r)
            elif kind == "commit":
                commits.append(r)
            elif kind == "write":
                writes.append(r)
            elif kind == "assigned":
                assigned.append(round(r["t"] - t0, 3))
            elif kind == "fetch" and r["t"] >= t0 and events_topic not in r["parts"] and not r["data"]:
                idle.append(r["ms"])  # a fetch of idle partitions only, in flight while events waited
    during = [b for b in batches if b["t"] >= t0]
    out: dict[str, Any] = {
        "assigned_at_s": assigned,
        "batches": len(during),
        "idle_fetches": len(idle),
        "idle_fetch_sum_ms": round(sum(idle), 1),
        "idle_fetch_max_ms": round(max(idle, default=0.0), 1),
    }
    if during:
        out["records_per_batch_max"] = max(b.get("records", 0) for b in during)
        out["first_batch_at_s"] = round(during[0]["t"] - t0, 3)
        out["first_batch_oldest_age_ms"] = during[0].get("oldest_age_ms")
        out["oldest_age_p99_ms"] = percentile([b.get("oldest_age_ms", 0) for b in during], 0.99)
        for phase in PHASES:
            xs = [b.get(phase + "_ms", 0.0) for b in during]
            out[f"{phase}_sum_ms"] = round(sum(xs), 1)
            out[f"{phase}_max_ms"] = round(max(xs), 1)
    gc_during = [g for g in gcs if g["t"] >= t0]
    out["gc_pauses"] = len(gc_during)
    out["gc_max_ms"] = round(max((g["ms"] for g in gc_during), default=0.0), 1)
    out["commit_max_ms"] = round(
        max((c["lock_ms"] + c["write_ms"] + c["commit_ms"] for c in commits if c["t"] >= t0), default=0.0), 1
    )
    if during:
        cpu = sum(b.get(p + "_cpu_ms", 0.0) for b in during for p in PHASES)
        wall = sum(b.get(p + "_ms", 0.0) for b in during for p in PHASES)
        out["loop_on_cpu_share"] = round(cpu / wall, 3) if wall else None
    writes_during = [w["ms"] for w in writes if w["t"] >= t0]
    out["writes_between_batches"] = len(writes_during)
    out["writes_between_batches_sum_ms"] = round(sum(writes_during), 1)
    out["tail"] = tail_attribution(batches, gcs, t0, writes)
    return out


# "send": outputs handed to the producer (their acknowledgements are awaited by the state write);
# "deliver": the outputs acknowledged (exactly_once: the batch's transactions committed).
PHASES = ("fetch", "lock", "apply", "send", "deliver", "write", "commit")


def tail_attribution(
    batches: list[dict[str, Any]], gcs: list[dict[str, Any]], t0: float, writes: list[dict[str, Any]]
) -> dict[str, Any]:
    """Where the time of the slowest batches went. A batch's worker time is its oldest record's age when
    the batch loop got it plus what comes before its prompts are sent (lock wait, a state write, apply):
    about the worker's share of its slowest prompt. That window is laid over the worker's timeline:
    the earlier batches' phases (records arrive while the loop applies, sends, writes and commits the
    batch before), its own fetch wait (records not fetched yet: producer, broker, fetch), its own lock,
    write and apply; what is left is time between batches. Also the share of the windows the loop
    thread was on a CPU (the phases' CPU time, spread evenly over each phase), under collector pauses,
    and in the writer task's state writes (during the loop's fetch or lock waits). The slowest 2% of
    the batches with prompts (at least 3) are the ones behind the p99: ~40 prompts per batch at 10k
    events/s."""
    segs: list[tuple[float, float, str, int, float]] = []  # start, end, phase, batch, cpu share
    handoff: list[float] = []  # when the loop got the batch's records
    applied: list[float] = []  # when its apply ended (its prompts go to the producer next)
    for i, b in enumerate(batches):
        t = h = a = b["t"]
        for key in b:  # the phases in the order they were lapped (a write may come before the apply)
            phase = key[:-3]
            if not key.endswith("_ms") or phase not in PHASES:
                continue
            ms = b[key]
            cpu = b.get(phase + "_cpu_ms")
            busy = min(1.0, cpu / ms) if cpu is not None and ms > 0 else 0.0
            segs.append((t, t + ms / 1000, phase, i, busy))
            t += ms / 1000
            if phase == "fetch":
                h = t
            elif phase == "apply":
                a = t
        handoff.append(h)
        applied.append(a)
    windows = []
    for i, b in enumerate(batches):
        if b["t"] >= t0 and b.get("prompts"):
            windows.append((b["oldest_age_ms"] + 1000 * (applied[i] - handoff[i]), i))
    windows.sort(reverse=True)
    top = windows[: max(3, len(windows) // 50)]
    share: dict[str, float] = {}
    total = on_cpu = in_gc = in_writes = 0.0
    for _, i in top:
        lo, hi = handoff[i] - batches[i]["oldest_age_ms"] / 1000, applied[i]
        covered = 0.0
        for s, e, phase, j, cpu in segs:
            o = 1000 * (min(e, hi) - max(s, lo))
            if o > 0:
                label = ("own " if j == i else "earlier ") + phase
                share[label] = share.get(label, 0.0) + o
                covered += o
                on_cpu += o * cpu
        share["between batches"] = share.get("between batches", 0.0) + max(0.0, 1000 * (hi - lo) - covered)
        for g in gcs:
            in_gc += max(0.0, 1000 * (min(g["t"], hi) - max(g["t"] - g["ms"] / 1000, lo)))
        for w in writes:  # the writer task's, while the loop waited for a fetch or the lock
            in_writes += max(0.0, 1000 * (min(w["t"], hi) - max(w["t"] - w["ms"] / 1000, lo)))
        total += 1000 * (hi - lo)
    if not total:
        return {}
    return {
        "batches": len(top),
        "worker_ms": [round(w) for w, _ in top],
        "share": {k: round(v / total, 3) for k, v in sorted(share.items(), key=lambda kv: -kv[1])},
        "on_cpu_share": round(on_cpu / total, 3),
        "gc_share": round(in_gc / total, 3),
        "writes_between_batches_share": round(in_writes / total, 3),
    }


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` on `cpus` (taskset -a: the broker's JVM and the worker run several threads)."""
    subprocess.run(
        ["taskset", "-a", "-cp", ",".join(map(str, sorted(cpus))), str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def worker_core(core: int | None, broker: int | None) -> Iterator[set[int]]:
    """The benchmark (and the broker) off `core` for the block; yields the cores the worker gets."""
    every = os.sched_getaffinity(0)
    if core is None:
        yield every
        return
    if core not in every or len(every) < 2:
        raise SystemExit(f"--worker-core {core}: this process may run on {sorted(every)}; pick one of them")
    others = every - {core}
    os.sched_setaffinity(0, others)
    if broker is not None:
        pin(broker, others)
    try:
        yield {core}
    finally:
        os.sched_setaffinity(0, every)
        if broker is not None:
            pin(broker, every)


@contextlib.contextmanager
def busy_core(on: bool) -> Iterator[None]:
    """A process spinning on CPU 0 for the block (contention, as in the reliability runs)."""
    if not on:
        yield
        return
    spin = "import os; os.sched_setaffinity(0, {0})\nwhile True: pass"
    p = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield
    finally:
        p.kill()
        p.wait()


def service_run(
    a: argparse.Namespace,
    bs: str,
    tmp: Path,
    rid: str,
    rate: int,
    env: dict[str, str],
    broker: int | None,
    worker_cpus: set[int],
) -> tuple[Run, dict[str, Any]]:
    """One run of the kafka, gateway or floor mode on fresh topics: the worker (or the relay) and, with
    the gateway, a gateway process on them; the worker or relay pinned with --worker-core, the gateway
    on the benchmark's cores (as the broker)."""
    topics = {k: f"lat-{k}-{rid}" for k in ("events", "feedback", "prompts", "dlq")}
    asyncio.run(create_topics(bs, topics.values(), 4))
    wenv = dict(env)
    tfile = (a.timings or tmp) / f"timings-{rid}.jsonl"
    if a.timings and a.mode != "floor":
        wenv["UPSELL_BATCH_TIMINGS_FILE"] = str(tfile)
    with contextlib.ExitStack() as stack:
        if a.mode == "floor":
            log = tmp / f"relay-{rid}.log"
            proc = start_relay(bs, topics, wenv, log)
            stack.callback(stop_process, proc)
        else:
            w = start_service(bs, tmp, topics, f"lat-{rid}", wenv)
            stack.callback(w.stop)
            assert w.proc is not None
            proc, log = w.proc, w.log
        gateway = None
        if a.mode == "gateway":
            genv = {"UPSELL_LOG_LEVEL": "warning", "UPSELL_GATEWAY_HEARTBEAT_S": "15"}
            gateway = GatewayProc(bs, topics, tmp / f"gateway-{rid}.log", extra_env=genv).start()
            stack.callback(gateway.stop)
        if a.mode != "floor":
            w.wait_ready(120)
        if gateway is not None:
            gateway.wait_ready(120)
        time.sleep(2)
        if a.worker_core is not None:
            pin(proc.pid, worker_cpus)
        pids = {"worker": proc.pid, "bench": os.getpid(), "broker": broker}
        if gateway is not None:
            assert gateway.proc is not None
            pids["gateway"] = gateway.proc.pid
        watch = CpuWatch(pids)
        watch.start()
        if gateway is not None:
            measured = measure_gateway(bs, topics, gateway.port, rate, a.seconds, a.warmup, a.gateway_streams)
            run = asyncio.run(measured)
        else:
            run = asyncio.run(measure_kafka(bs, topics, rate, a.seconds, a.warmup))
        cpu = watch.stop()
    r: dict[str, Any] = run.summary()
    r["cpu"] = cpu
    if gateway is not None:
        r["gateway_streams"] = len(run.only or ())
    if a.timings:
        shutil.copy(log, a.timings / f"{'relay' if a.mode == 'floor' else 'worker'}-{rid}.log")
        if gateway is not None:
            shutil.copy(gateway.log, a.timings / f"gateway-{rid}.log")
        if a.mode != "floor":
            r["timings"] = timings_summary(tfile, run.t0, topics["events"])
            r["timings_file"] = str(tfile)
    return run, r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds at the rate before measuring")
    ap.add_argument("--mode", choices=["kafka", "embedded", "floor", "gateway"], default="kafka")
    ap.add_argument(
        "--gateway-streams", type=int, default=2000, help="gateway mode: at most this many accounts measured"
    )
    ap.add_argument("--capacity-events", type=int, default=300_000, help="0: do not measure capacity")
    ap.add_argument("--busy-core", action="store_true", help="keep one core busy during the runs")
    ap.add_argument("--worker-core", type=int, help="the worker alone on this CPU; the rest on the others")
    ap.add_argument("--stall-ms", type=float, default=100.0, help="a run whose p50 exceeds this stalled")
    ap.add_argument("--timings", type=Path, help="keep per-batch timings and worker logs in this directory")
    ap.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for the worker (A/B of settings)")
    ap.add_argument("--name", default="latency", help="results file bench/results/<name>.json")
    a = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in a.env)
    embedded = a.mode == "embedded"
    with_capacity = a.capacity_events and a.mode in ("kafka", "gateway")  # the worker's
    if a.mode == "gateway":  # a socket per stream, in this process and in the gateway (which inherits it)
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bs = "" if embedded else bootstrap()
    if not embedded:
        delete_created_topics_at_exit(bs)
    if a.timings:
        a.timings.mkdir(parents=True, exist_ok=True)
    broker = None if embedded else broker_pid(bs)
    runs: dict[str, list[dict[str, Any]]] = {str(r): [] for r in a.rates}
    caps: list[float] = []
    with (
        tempfile.TemporaryDirectory() as d,
        busy_core(a.busy_core),
        worker_core(a.worker_core, broker) as worker_cpus,
    ):
        tmp = Path(d)
        if with_capacity:
            caps.append(capacity(bs, tmp, a.capacity_events, env))
            print(f"capacity: {caps[-1]:,.0f} events/s working off {a.capacity_events:,} events", flush=True)
        who = "relay" if a.mode == "floor" else "worker"  # whose record timestamps worker_* are
        for i in range(a.runs):
            for rate in a.rates:
                rid = f"{run_id()}-{rate}"
                if embedded:
                    elog = tmp / f"emb-{rid}.log"
                    run = asyncio.run(measure_embedded(tmp, rate, a.seconds, a.warmup, elog))
                    r: dict[str, Any] = run.summary()
                else:
                    run, r = service_run(a, bs, tmp, rid, rate, env, broker, worker_cpus)
                r["run"] = i + 1
                r["started"] = round(run.t0, 3)
                runs[str(rate)].append(r)
                print(
                    f"run {i + 1}: {rate:>6,} events/s: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                    f"max {r['max_ms']:.1f} ms ({r['prompts']} prompts; {who} p99 "
                    f"{r['worker_p99_ms']:.1f} ms, producer behind <= {r['producer_behind_max_ms']:.0f} ms)",
                    flush=True,
                )
                if "cpu" in r:
                    print("       cpu:", orjson.dumps(r["cpu"]).decode(), flush=True)
                if "timings" in r:
                    print("       timings:", orjson.dumps(r["timings"]).decode(), flush=True)
        if with_capacity:
            caps.append(capacity(bs, tmp, a.capacity_events, env))
            print(f"capacity: {caps[-1]:,.0f} events/s working off {a.capacity_events:,} events", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for rate_s, rs in runs.items():
        rate = int(rate_s)
        target = TARGET_P99_MS.get(rate)
        worst = max(rs, key=lambda r: r["p99_ms"])
        s: dict[str, Any] = {
            "runs": len(rs),
            "median_p50_ms": median([r["p50_ms"] for r in rs]),
            "median_p99_ms": median([r["p99_ms"] for r in rs]),
            "worst_p50_ms": max(r["p50_ms"] for r in rs),
            "worst_p99_ms": worst["p99_ms"],
            "worst_max_ms": max(r["max_ms"] for r in rs),
            "stalled": sum(r["p50_ms"] > a.stall_ms for r in rs),
            "target_p99_ms": target,
        }
        if target is not None:
            s["over_target"] = sum(r["p99_ms"] > target for r in rs)
            s["over_target_share"] = s["over_target"] / len(rs)
        if caps:
            s["share_of_capacity"] = rate / median(caps)
        summary[rate_s] = s
        print(
            f"{rate:,}/s over {len(rs)} runs: median p50 {s['median_p50_ms']:.1f} ms, p99 "
            f"{s['median_p99_ms']:.1f} ms; worst run p50 {s['worst_p50_ms']:.1f} ms, p99 "
            f"{s['worst_p99_ms']:.1f} ms; {s['stalled']} stalled (p50 > {a.stall_ms:.0f} ms)"
            + (f"; p99 over {target:.0f} ms in {s['over_target']} of {len(rs)}" if target is not None else "")
            + (f"; {s['share_of_capacity']:.0%} of capacity" if caps else "")
        )
    if caps:
        listed = ", ".join(f"{c:,.0f}" for c in caps)
        print(f"capacity (events/s, backlog of {a.capacity_events:,}): {listed}")
    print(
        "wrote",
        write_result(
            a.name,
            {
                "benchmark": "event -> prompt latency",
                "mode": a.mode,
                "seconds": a.seconds,
                "warmup_seconds": a.warmup,
                "busy_core": a.busy_core,
                "worker_core": a.worker_core,
                "worker_env": env,
                "gateway_streams_max": a.gateway_streams if a.mode == "gateway" else None,
                "stall_p50_ms": a.stall_ms,
                "capacity_events_per_s": caps,
                "summary": summary,
                "median": {
                    rate: {k: median([r[k] for r in rs]) for k in ("p50_ms", "p99_ms", "max_ms", "prompts")}
                    for rate, rs in runs.items()
                },
                "runs": runs,
                "targets": {
                    "10000": {"p99_ms": 50, "runs_within": "19 of 20", "p50_ms_every_run": 100},
                    "1000": {"p99_ms": 25},
                },
            },
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
