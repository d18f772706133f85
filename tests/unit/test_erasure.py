"""Erasure: an `account_deleted` event leaves only a marker (the deletion's time and the source
offsets); the account's events up to that time which arrive later are dropped without a prompt, even
malformed ones; a later event starts a new, empty account; the marker goes after the erasure hold, in
every store; replay, the embedded store and the worker's store decide alike."""

from __future__ import annotations

import io
from typing import Any

import orjson

from upsell_triggers.engine.engine import Engine
from upsell_triggers.engine.erasure import erase
from upsell_triggers.engine.events import AccountDeleted, decode_event
from upsell_triggers.engine.retention import state_expired
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.engine.timeutil import DAY, HOUR
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import EVENTS, MemoryStore, Processor, RecordSource
from upsell_triggers.replay import replay
from upsell_triggers.runtime.table_state import TableState

from .helpers import T0, fixture_rules
from .test_table_state import TABLES, stored

HOLD = 7 * DAY
RETENTION = 400 * DAY


def _ev(n: int, ts: int, account: str = "acme", **fields: Any) -> bytes:
    body = {"event_id": f"e{n}", "account_id": account, "ts": ts, "type": "usage", "metric": "seats"}
    return orjson.dumps({**body, **fields})


def _deleted(n: int, ts: int, account: str = "acme") -> bytes:
    return orjson.dumps({"event_id": f"d{n}", "account_id": account, "ts": ts, "type": "account_deleted"})


def test_account_deleted_is_an_input_event_on_both_decoding_paths() -> None:
    ev = decode_event(_deleted(1, T0), b"acme")
    assert type(ev) is AccountDeleted and ev.ts == T0 and ev.account_id == "acme"
    slow = decode_event(
        b'{"type":"account_deleted","event_id":"d","account_id":"acme","ts":"2026-11-22T10:00:00Z"}'
    )
    assert type(slow) is AccountDeleted and slow.ts == T0
    missing = decode_event(b'{"type":"account_deleted","event_id":"d","ts":1795341600000}')
    assert not isinstance(missing, AccountDeleted) and missing.reason == "missing_field"


def test_deletion_leaves_a_marker_with_nothing_of_the_account_but_its_offsets() -> None:
    p = Processor(fixture_rules())
    assert p.handle(_ev(1, T0, value=4), source=RecordSource(EVENTS, 10)).decisions  # 4 of 5 seats: a prompt
    p.handle(
        b'{"type":"plan_changed","event_id":"p","account_id":"acme","ts":%d,"plan":"free"}' % (T0 + 1),
        source=RecordSource(EVENTS, 11),
    )
    p.handle(_deleted(1, T0 + HOUR), source=RecordSource(EVENTS, 12))
    st = p.store.get("acme")
    assert st.erased_at == T0 + HOUR and st.last_seen == T0 + HOUR
    assert (st.events_offset, st.feedback_offset) == (12, -1)
    assert (
        st.rules is None
        and st.gauges is None
        and st.plan is None
        and st.dedup == b""
        and st.recent_prompts is None
    )
    back = decode_state(encode_state(st))
    assert back == st  # the marker survives the changelog


def test_events_in_flight_are_dropped_and_a_later_event_starts_a_new_account() -> None:
    metrics = Metrics()
    p = Processor(fixture_rules(), metrics)
    assert p.handle(_ev(1, T0, value=4)).decisions
    p.handle(_deleted(1, T0 + HOUR))
    # In flight: older than the deletion, arriving after it. A prompt-worthy reading, a malformed one
    # (unknown metric, which would otherwise be a dead letter with the account's data) and feedback.
    for raw in (
        _ev(2, T0 + HOUR - 1, value=5),
        _ev(3, T0 + HOUR, metric="nope", value=1),
        b'{"type":"prompt_clicked","event_id":"c","account_id":"acme","ts":%d,"prompt_id":"x"}' % (T0 + 2),
    ):
        res = p.handle(raw)
        assert res.outcome is not None and res.outcome.status == "erased"
        assert res.invalid is None and not res.decisions
    assert metrics.erased.values == {(): 3}
    assert p.store.get("acme").erased_at == T0 + HOUR
    # After the deletion: a new account from an empty state. seats-80 fired for the old account with a
    # 7-day cooldown; the new one has no rule memory, so it fires again.
    res = p.handle(_ev(4, T0 + 2 * HOUR, value=4))
    assert [d.rule_id for d in res.decisions if d.prompt is not None] == ["seats-80"]
    st = p.store.get("acme")
    assert st.erased_at == 0 and st.last_seen == T0 + 2 * HOUR


def test_a_redelivered_record_of_an_erased_account_is_skipped_by_its_offset() -> None:
    p = Processor(fixture_rules())
    p.handle(_ev(1, T0, value=4), source=RecordSource(EVENTS, 1))
    p.handle(_deleted(1, T0 + HOUR), source=RecordSource(EVENTS, 2))
    p.handle(_ev(2, T0 + 2 * HOUR, value=1), source=RecordSource(EVENTS, 3))  # a new account under the id
    for offset, raw in ((1, _ev(1, T0, value=4)), (2, _deleted(1, T0 + HOUR))):
        res = p.handle(raw, source=RecordSource(EVENTS, offset))
        assert res.outcome is not None and res.outcome.status == "redelivered"
    st = p.store.get("acme")
    assert st.erased_at == 0 and st.gauges is not None  # the redelivered deletion did not apply again


def test_a_second_deletion_moves_the_marker_forward_never_back() -> None:
    st = AccountState()
    erase(st, T0 + HOUR)
    erase(st, T0)
    assert st.erased_at == T0 + HOUR
    Engine(fixture_rules()).process(AccountDeleted("d", "acme", T0 + 2 * HOUR), st)
    assert st.erased_at == T0 + 2 * HOUR


def test_the_marker_expires_after_the_hold_and_an_account_after_the_retention() -> None:
    marker = AccountState()
    erase(marker, T0)
    assert not state_expired(marker, T0 + HOLD, RETENTION, HOLD)
    assert state_expired(marker, T0 + HOLD + 1, RETENTION, HOLD)
    assert state_expired(marker, T0 + DAY + 1, DAY, HOLD)  # never kept longer than the retention
    account = AccountState(last_seen=T0)
    assert not state_expired(account, T0 + HOLD + 1, RETENTION, HOLD)
    store = MemoryStore(ttl_ms=RETENTION, hold_ms=HOLD)
    erase(store.get("gone"), T0)
    store.get("kept").last_seen = T0
    store.get("new").last_seen = T0 + HOLD + DAY
    assert store.expire_step() == 1 and sorted(a for a, _ in store.items()) == ["kept", "new"]


@TABLES
def test_the_worker_store_removes_the_marker_with_a_tombstone_after_the_hold(make: Any) -> None:
    table = make()
    removed: list[int] = []
    states = TableState(table, retention_ms=RETENTION, on_expired=removed.append, hold_ms=HOLD)
    states.partition = 0
    states.get("kept").last_seen = T0
    erase(states.get("gone"), T0)
    written = states.flush()
    marker = dict(written[0])[b"gone"]
    assert marker is not None and decode_state(marker).erased_at == T0
    states.get("newer").last_seen = T0 + HOLD + DAY
    tombstones = []
    for _ in range(10):
        tombstones += [k for k, v in states.flush().get(0, []) if v is None]
    assert tombstones == [b"gone"] and sum(removed) == 1
    assert stored(table, b"gone") is None and stored(table, b"kept") is not None


def test_replay_drops_events_in_flight_and_honours_the_hold() -> None:
    lines = [
        _ev(1, T0, value=4) + b"\n",
        _deleted(1, T0 + HOUR) + b"\n",
        _ev(2, T0 + HOUR - 1, value=5) + b"\n",  # in flight: dropped, no seats-100 prompt
        _ev(3, T0 + 2 * HOUR, account="other", value=1) + b"\n",
    ]
    out = io.BytesIO()
    summary = replay(fixture_rules(), iter(lines), out, io.StringIO())
    prompts = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert [(p["account_id"], p["rule_id"]) for p in prompts] == [("acme", "seats-80")]
    assert summary.accounts == 2  # the marker and "other"


def test_the_erase_command_prints_an_event_that_replay_applies(tmp_path: Any) -> None:
    import subprocess
    import sys

    from .helpers import RULES

    cmd = [
        sys.executable,
        "-m",
        "upsell_triggers",
        "erase",
        "acme",
        "--at",
        "2026-11-22T11:00:00Z",
        "--print",
    ]
    line = subprocess.run(cmd, capture_output=True, check=True).stdout
    ev = orjson.loads(line)
    assert ev == {
        "event_id": f"account_deleted:{T0 + HOUR}",
        "account_id": "acme",
        "type": "account_deleted",
        "ts": "2026-11-22T11:00:00Z",
    }
    events = tmp_path / "events.jsonl"
    events.write_bytes(_ev(1, T0, value=4) + b"\n" + line + _ev(2, T0 + HOUR - 1, value=5) + b"\n")
    p = subprocess.run(
        [sys.executable, "-m", "upsell_triggers", "replay", str(events), "--rules", str(RULES)],
        capture_output=True,
        check=True,
    )
    assert [orjson.loads(x)["rule_id"] for x in p.stdout.splitlines()] == ["seats-80"]
    bad = subprocess.run([*cmd[:4], "", "--print"], capture_output=True)
    assert bad.returncode == 2 and b"ACCOUNT_ID" in bad.stderr and b"Traceback" not in bad.stderr
