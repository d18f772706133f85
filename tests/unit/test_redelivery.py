"""A record redelivered after a crash or rebalance (at-least-once) is applied, and dead-lettered, once."""

from __future__ import annotations

import orjson

from upsell_triggers.processor import EVENTS, FEEDBACK, REDELIVERED, Processor, RecordSource

from .helpers import T0, fixture_rules


def _raw(**fields: object) -> bytes:
    base: dict[str, object] = {"event_id": "e1", "account_id": "acme", "ts": T0, "type": "usage"}
    return orjson.dumps({**base, **fields})


def test_a_redelivered_malformed_keyed_record_is_dead_lettered_once() -> None:
    proc = Processor(fixture_rules())
    bad = b'{"event_id": "e1", "account_id": "acme", "ts": '  # not JSON
    first = proc.handle(bad, b"acme", source=RecordSource(EVENTS, 5))
    assert first.invalid is not None and first.invalid.reason == "not_json"
    again = proc.handle(bad, b"acme", source=RecordSource(EVENTS, 5))
    assert again.outcome is REDELIVERED and again.invalid is None
    # The next record of the partition is applied as usual, and its redelivery skipped.
    ok = _raw(event_id="e2", metric="seats", value=3)
    assert proc.handle(ok, b"acme", source=RecordSource(EVENTS, 6)).invalid is None
    assert proc.handle(ok, b"acme", source=RecordSource(EVENTS, 6)).outcome is REDELIVERED
    assert proc.store.get("acme").events_offset == 6
    assert proc.metrics.redelivered.values[()] == 2


def test_a_record_the_engine_rejects_is_dead_lettered_once() -> None:
    proc = Processor(fixture_rules())
    unknown = _raw(metric="no_such_metric", value=1)
    assert proc.handle(unknown, b"acme", source=RecordSource(EVENTS, 9)).invalid is not None
    assert proc.handle(unknown, b"acme", source=RecordSource(EVENTS, 9)).outcome is REDELIVERED
    # The feedback topic's offsets are apart from the events topic's.
    fb = orjson.dumps({"event_id": "f", "account_id": "acme", "ts": T0, "type": "prompt_shown"})
    assert proc.handle(fb, b"acme", source=RecordSource(FEEDBACK, 3)).invalid is not None  # no prompt_id
    assert proc.handle(fb, b"acme", source=RecordSource(FEEDBACK, 3)).outcome is REDELIVERED
    assert proc.handle(fb, b"acme", source=RecordSource(FEEDBACK, 4)).invalid is not None
    st = proc.store.get("acme")
    assert (st.events_offset, st.feedback_offset) == (9, 4)


def test_a_key_mismatch_is_remembered_by_the_key_that_placed_it() -> None:
    proc = Processor(fixture_rules())
    other = _raw(account_id="globex", metric="seats", value=1)
    assert proc.handle(other, b"acme", source=RecordSource(EVENTS, 2)).invalid is not None
    assert proc.handle(other, b"acme", source=RecordSource(EVENTS, 2)).outcome is REDELIVERED
    assert proc.store.get("acme").events_offset == 2


def test_a_malformed_record_without_a_usable_key_is_dead_lettered_again() -> None:
    """Nothing names an account to remember it by: the documented bound (RELIABILITY.md)."""
    proc = Processor(fixture_rules())
    for key in (None, b"", b"\xff\xfe", b"k" * 300):
        for _ in range(2):
            res = proc.handle(b"not json", key, source=RecordSource(EVENTS, 1))
            assert res.invalid is not None and res.invalid.reason == "not_json"
    assert len(proc.store) == 0  # no state made up for such keys
