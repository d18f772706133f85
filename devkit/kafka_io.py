"""Small aiokafka helpers for tests: produce events, collect records from topics."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient


async def produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], **client: Any
) -> None:
    """`client`: extra aiokafka settings (security_protocol, ssl_context, sasl_*)."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **client)
    await p.start()
    try:
        for key, value in records:
            await p.send(topic, value, key=key)
        await p.flush()
    finally:
        await p.stop()


async def collect(
    bootstrap: str, topics: list[str], want: int, timeout: float = 30.0, settle: float = 0.0, **client: Any
) -> list[Any]:
    """Reads records from the start of topics until `want` arrived (then `settle` more seconds) or timeout."""
    c = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **client,
    )
    await c.start()
    got: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500)
            for msgs in batch.values():
                got.extend(msgs)
            if len(got) >= want:
                if settle:
                    await asyncio.sleep(settle)
                    batch = await c.getmany(timeout_ms=500)
                    for msgs in batch.values():
                        got.extend(msgs)
                break
    finally:
        await c.stop()
    return got


async def delete_topics(bootstrap: str, prefixes: list[str]) -> int:
    """Deletes every topic whose name starts with one of `prefixes` (a run's inputs, outputs, changelog
    and Faust's assignor topic all start with its worker name or app id). Returns how many.

    Tests and benchmarks create topics per run against a broker that keeps its data between runs;
    without this it held ~1,800 topics after a few benchmark sessions, and every metadata request
    listing all topics took 60 ms."""
    if not prefixes:
        return 0
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(tuple(prefixes))]
        if doomed:
            await admin.delete_topics(doomed)
        return len(doomed)
    finally:
        await admin.close()


def event(account: str, eid: str, ts_ms: int, **fields: Any) -> tuple[bytes, bytes]:
    return account.encode(), orjson.dumps({"event_id": eid, "account_id": account, "ts": ts_ms, **fields})


def sim_records(
    events: int, accounts: int, seed: int = 11, high_touch_every: int = 0
) -> Iterator[tuple[bytes, bytes]]:
    """The simulator's realistic mix, keyed by account, event time ending about now (nothing 'in the
    future' for the service's clock). `high_touch_every`: every Nth account high-touch (leads)."""
    from upsell_triggers.simulate import Simulator

    sim = Simulator(accounts=accounts, seed=seed, high_touch_every=high_touch_every)
    rounds = events // max(1, accounts) + 2
    sim.now = int(time.time() * 1000) - rounds * sim.step_ms
    for ev in sim.events(events):
        yield ev["account_id"].encode(), orjson.dumps(ev)


def all_kinds_records(events: int, accounts: int, seed: int = 12) -> list[tuple[bytes, bytes]]:
    """A workload for devkit/exactness.all_kinds_rules: the simulator's launch-week accounts (close to
    their limits: forecasts and growth fire) with people and teams on every event (distinct counts), every
    fifth account marked by an account_updated (traits), four hours of event time per round (about two
    weeks over 80 rounds), ending an hour ago. Account ids start with `ak-`, so the records mix with
    sim_records' without sharing an account."""
    from upsell_triggers.engine.timeutil import HOUR
    from upsell_triggers.simulate import Simulator

    sim = Simulator(
        accounts=accounts, seed=seed, step_ms=4 * HOUR, near_limits=True, expansion=True, high_touch_every=5
    )
    evs = list(sim.events(events))
    # A round has fewer events than accounts at times, so the rounds are not known in advance: the
    # times are moved to end an hour ago (a worker dead-letters events ahead of its clock).
    shift = int(time.time() * 1000) - HOUR - max(ev["ts"] for ev in evs)
    out: list[tuple[bytes, bytes]] = []
    for ev in evs:
        ev["account_id"] = account = "ak-" + ev["account_id"]
        ev["ts"] += shift
        out.append((account.encode(), orjson.dumps(ev)))
    return out


def interleave(*streams: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The records of several workloads spread evenly over one stream, each workload's in its order (an
    account's events keep theirs)."""
    total = sum(map(len, streams))
    tagged = [((i + 0.5) / len(s), n, r) for n, s in enumerate(streams) for i, r in enumerate(s)]
    assert len(tagged) == total
    return [r for _, _, r in sorted(tagged, key=lambda t: (t[0], t[1]))]


def with_erasures(
    records: list[tuple[bytes, bytes]], every: int = 12, after: int = 3, final: int = 20, spread: int = 1
) -> tuple[list[tuple[bytes, bytes]], set[str]]:
    """The records with one account in `every` deleted right after its `after`-th event (with `spread`
    above 1: after its `after` to `after + spread - 1`-th, by account, so the deletions are spread over
    the stream): an `account_deleted` 1 ms after that event, then an event of it from before the
    deletion (in flight: a reading past every seat limit, dropped, so no prompt may carry its id), then
    the account's later events, which start a new account. `final` more accounts are deleted after their
    last event, so their state ends as the deletion's marker. Returns the records and the ids of the
    events in flight."""
    out: list[tuple[bytes, bytes]] = []
    seen: dict[bytes, int] = {}
    last_ts: dict[bytes, int] = {}
    in_flight: set[str] = set()
    for i, (key, value) in enumerate(records):
        out.append((key, value))
        ev = orjson.loads(value)
        account, ts = ev["account_id"], ev["ts"]
        last_ts[key] = max(ts, last_ts.get(key, ts))
        n = seen[key] = seen.get(key, 0) + 1
        crc = zlib.crc32(key)
        if crc % every or n != after + crc // every % spread:
            continue
        out.append(event(account, f"erase-{i}", ts + 1, type="account_deleted"))
        late = f"in-flight-{i}"
        out.append(event(account, late, ts, type="usage", metric="seats", value=100_000))
        in_flight.add(late)
    for key in [k for k in last_ts if zlib.crc32(k) % every][:final]:
        out.append(
            event(key.decode(), f"erase-last-{key.decode()}", last_ts[key] + 1, type="account_deleted")
        )
    return out, in_flight
