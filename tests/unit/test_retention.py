"""Retention: an account whose newest event is older than the retention, in event time against its
partition's newest event, is removed (with a changelog tombstone in the Kafka worker) and starts fresh
if it returns; replay and the embedded store apply the same rule."""

from __future__ import annotations

import io
from typing import Any

import orjson

from upsell_triggers.engine.retention import DEFAULT_RETENTION_MS, expired
from upsell_triggers.engine.timeutil import DAY
from upsell_triggers.processor import MemoryStore
from upsell_triggers.replay import replay
from upsell_triggers.runtime.table_state import TableState

from .helpers import T0, fixture_rules
from .test_table_state import TABLES, stored

RETENTION = 400 * DAY


def test_expiry_is_event_time_against_the_watermark() -> None:
    assert DEFAULT_RETENTION_MS == RETENTION
    assert not expired(T0, T0 + RETENTION, RETENTION)  # exactly the retention: kept
    assert expired(T0, T0 + RETENTION + 1, RETENTION)
    assert not expired(T0, T0, RETENTION)


def _apply(states: TableState, account: str, partition: int, ts: int) -> None:
    states.partition = partition
    st = states.get(account)
    st.last_seen = ts
    st.plan = "team"


def _flush_until_swept(states: TableState, times: int) -> dict[int, list[bytes]]:
    """Tombstones of `times` flushes with nothing else written (each checks one stored account)."""
    gone: dict[int, list[bytes]] = {}
    for _ in range(times):
        for partition, recs in states.flush().items():
            gone.setdefault(partition, []).extend(k for k, v in recs if v is None)
    return gone


@TABLES
def test_the_worker_store_removes_expired_accounts_with_a_tombstone(make: Any) -> None:
    table = make()
    removed: list[int] = []
    states = TableState(table, retention_ms=RETENTION, on_expired=removed.append)
    for i in range(5):
        _apply(states, f"old-{i}", 0, T0)
        _apply(states, f"p1-{i}", 1, T0)  # partition 1 sees no newer event: its accounts stay
    states.flush()
    _apply(states, "new", 0, T0 + RETENTION + DAY)
    gone = _flush_until_swept(states, 30)
    assert sorted(gone[0]) == [f"old-{i}".encode() for i in range(5)]
    assert 1 not in gone and sum(removed) == 5
    for i in range(5):
        assert stored(table, f"old-{i}".encode(), 0) is None
        assert stored(table, f"p1-{i}".encode(), 1) is not None
    assert stored(table, b"new", 0) is not None
    # An account that returns after its expiry starts from a fresh state.
    states.partition = 0
    assert states.get("old-0").plan is None


@TABLES
def test_without_retention_nothing_is_swept(make: Any) -> None:
    states = TableState(make())
    _apply(states, "old", 0, T0)
    states.flush()
    _apply(states, "new", 0, T0 + 10 * RETENTION)
    assert not any(_flush_until_swept(states, 5).values())


@TABLES
def test_the_sweep_checks_one_account_per_write_plus_one_per_16_states_written(make: Any) -> None:
    table = make()
    states = TableState(table, retention_ms=RETENTION)
    for i in range(100):
        _apply(states, f"old-{i:03}", 0, T0)
    states.flush()
    for i in range(32):  # a write of 32 states: 1 + 32 // 16 = 3 checks
        _apply(states, f"new-{i}", 0, T0 + RETENTION + DAY)
    first = [k for k, v in states.flush()[0] if v is None]
    assert len(first) <= 3
    gone = first + _flush_until_swept(states, 150).get(0, [])
    assert sorted(gone) == [f"old-{i:03}".encode() for i in range(100)]


def test_the_embedded_store_and_replay_apply_the_same_rule() -> None:
    store = MemoryStore(ttl_ms=RETENTION)
    store.get("old").last_seen = T0
    store.get("new").last_seen = T0 + RETENTION + 1
    assert store.expire_step() == 1 and [a for a, _ in store.items()] == ["new"]

    def line(account: str, n: int, ts: int) -> bytes:
        ev = {"event_id": f"e{n}", "account_id": account, "ts": ts, "type": "usage"}
        return orjson.dumps({**ev, "metric": "seats", "value": 1}) + b"\n"

    old = [line(f"old-{i}", i, T0) for i in range(999)]
    new = [line(f"new-{i}", i, T0 + RETENTION + DAY) for i in range(1001)]
    summary = replay(fixture_rules(), iter(old + new), io.BytesIO(), io.StringIO(), retention_ms=RETENTION)
    assert summary.accounts == 1001  # the 999 old accounts expired once the newer events came
