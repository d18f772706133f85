"""The fast decode paths (msgspec on bytes, the hand-written check on parsed JSON) must agree with the
pydantic models on every input they accept."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine.events import (
    _MODELS,
    MAX_TS_MS,
    MIN_TS_MS,
    InvalidEvent,
    PlanChanged,
    PromptShown,
    Usage,
    _decode_common,
    _fast,
    _from_model,
    decode_event,
    validate_event,
)

ids = st.one_of(
    st.text(min_size=0, max_size=3),
    st.text(min_size=255, max_size=258),
    st.sampled_from(["acct-1", "seats", "sso", "e-1"]),
)
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
timestamps = st.one_of(
    st.integers(min_value=MIN_TS_MS - 2, max_value=MIN_TS_MS + 2),
    st.integers(min_value=MAX_TS_MS - 2, max_value=MAX_TS_MS + 2),
    st.integers(min_value=MIN_TS_MS, max_value=MAX_TS_MS - 1),
    st.floats(min_value=MIN_TS_MS, max_value=MIN_TS_MS + 10),
    st.booleans(),
    st.just("2026-11-22T10:00:00Z"),
    st.none(),
)
anything: st.SearchStrategy[Any] = st.one_of(ids, numbers, timestamps, st.lists(st.integers(), max_size=2))
types = st.sampled_from(
    ["usage", "paywall_hit", "plan_changed", "prompt_shown", "prompt_clicked", "prompt_dismissed"]
)


# A well-formed value per field: drawing it often makes accepted shapes common, so the comparison below
# runs on many events the fast path accepts, not only on rejections.
WELL_FORMED: dict[str, Any] = {
    "event_id": "e-1",
    "account_id": "acct-1",
    "ts": MIN_TS_MS + 5,
    "user_id": "u",
    "metric": "seats",
    "value": 3,
    "delta": 2.5,
    "feature": "sso",
    "prompt_id": "p",
    "plan": "pro",
    "period_start": MIN_TS_MS,
    "limits": {"seats": 5},
}


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {"type": draw(types)}
    for field, strat in (
        ("event_id", ids),
        ("account_id", ids),
        ("ts", timestamps),
        ("user_id", st.one_of(ids, st.none(), st.integers())),
        ("metric", ids),
        ("value", numbers),
        ("delta", numbers),
        ("feature", ids),
        ("prompt_id", ids),
        ("plan", ids),
        ("period_start", st.one_of(timestamps, st.none())),
        ("limits", st.one_of(st.none(), st.dictionaries(ids, numbers, max_size=2))),
        ("extra", anything),
    ):
        how = draw(st.sampled_from(["absent", "well-formed", "well-formed", "any"]))
        if how == "any" or (how == "well-formed" and field not in WELL_FORMED):
            obj[field] = draw(strat)
        elif how == "well-formed":
            obj[field] = WELL_FORMED[field]
    return obj


@settings(max_examples=3000, deadline=None)
@given(events())
def test_fast_path_agrees_with_the_models(obj: dict[str, Any]) -> None:
    fast = _fast(obj)
    if fast is None:
        return  # deferred to the models: nothing to compare
    model = _MODELS[obj["type"]].model_validate(obj)  # raises if the fast path accepted something invalid
    assert _from_model(model) == fast


def test_fast_path_takes_the_common_shapes() -> None:
    base = {"event_id": "e-1", "account_id": "a", "ts": MIN_TS_MS + 5, "user_id": "u"}
    assert isinstance(_fast({**base, "type": "usage", "metric": "seats", "value": 4}), Usage)
    assert _fast({**base, "type": "usage", "metric": "api_calls", "delta": -2.5}) is not None
    assert _fast({**base, "type": "paywall_hit", "feature": "sso"}) is not None
    assert _fast({**base, "type": "prompt_shown", "prompt_id": "p"}) is not None
    assert isinstance(_fast({**base, "type": "plan_changed", "plan": "pro"}), PlanChanged)
    assert _fast({**base, "type": "plan_changed", "plan": "pro", "period_start": MIN_TS_MS}) is not None
    # Unusual shapes go to the models, which word the error.
    assert _fast({**base, "type": "usage", "metric": "seats", "value": -1}) is None
    bad = validate_event({**base, "type": "usage", "metric": "seats", "value": -1})
    assert not isinstance(bad, Usage) and "value" in bad.message


def _long_way(raw: bytes) -> Any:
    """What decode_event returned before msgspec: orjson, then the hand-written check or the models."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "not_json"
    return (type(obj) is dict and _fast(obj)) or validate_event(obj)


@settings(max_examples=3000, deadline=None)
@given(events())
def test_msgspec_path_agrees_with_the_long_way(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj).encode()  # stdlib: also big ints and NaN/Infinity literals, which must not pass
    try:
        common = _decode_common(raw)
    except Exception:
        return  # the long way decides and words the error: nothing to compare
    assert _long_way(raw) == common


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"usage","event_id":"e","event_id":"f","account_id":"a","ts":1700000000000,"metric":"m","value":1}',
        b'{"type":"usage","type":"paywall_hit","event_id":"e","account_id":"a","ts":1700000000000,"feature":"x"}',
        b'{"type":"usage","event_id":"\\ud800","account_id":"a","ts":1700000000000,"metric":"m","value":1}',
        b'{"type":"usage","event_id":"\xff","account_id":"a","ts":1700000000000,"metric":"m","value":1}',
        b'{"type":"usage","event_id":"e","account_id":"a","ts":1700000000000,"metric":"m","value":1e400}',
        b'{"type":"usage","event_id":"e","account_id":"a","ts":1700000000000,"metric":"m","value":1,"delta":null}',
        b'{"type":"usage","event_id":"e","account_id":"a","ts":1700000000000,"metric":"m","value":1,"delta":2}',
        b'{"type":"usage","event_id":"e","account_id":"a","ts":1700000000000.0,"metric":"m","value":1}',
        b'{"type":"usage","event_id":"e","account_id":"a","ts":"2026-11-22T10:00:00Z","metric":"m","delta":-1}',
        b'{"type":"plan_changed","event_id":"e","account_id":"a","ts":1700000000000,"plan":"p","limits":{"s":-1}}',
        b'{"type":"plan_changed","event_id":"e","account_id":"a","ts":1700000000000,"plan":"p","limits":{"s":3}}',
        b'{"type":"prompt_shown","event_id":"e","account_id":"a","ts":1700000000000,"prompt_id":"p","x":[[[]]]}',
        b'{"type":"usage","event_id":"e","account_id":"a","ts":1700000000000,"metric":"m","value":1,"x":'
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
        b"[1,2]",
        b"",
    ],
)
def test_unusual_bytes_decode_as_the_long_way_says(raw: bytes) -> None:
    ev = decode_event(raw)
    long = _long_way(raw)
    if long == "not_json":
        assert isinstance(ev, InvalidEvent) and ev.reason == "not_json"
    else:
        assert ev == long


def test_feedback_types_decode_to_their_classes() -> None:
    raw = b'{"type":"prompt_shown","event_id":"e","account_id":"a","ts":1700000000000,"prompt_id":"p"}'
    ev = decode_event(raw)
    assert type(ev) is PromptShown and ev.type == "prompt_shown" and ev.prompt_id == "p"
