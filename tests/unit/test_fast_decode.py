"""The fast decode paths (msgspec on bytes, the hand-written check on parsed JSON) must agree with the
pydantic models on every input they accept."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from upsell_triggers.engine.events import (
    _MODELS,
    MAX_TS_MS,
    MIN_TS_MS,
    InvalidEvent,
    PlanChanged,
    PromptShown,
    Usage,
    _decode_common,
    _describe,
    _fast,
    _from_model,
    _parse_ts,
    decode_event,
    validate_event,
)
from upsell_triggers.engine.eventtime import ts_ms as _ts_ms
from upsell_triggers.engine.timeutil import datetime_to_ms

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
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@st.composite
def rfc3339(draw: st.DrawFn, valid_only: bool = False) -> str:
    """An instant near either end of the accepted range or anywhere in (or far outside) it, written in
    any offset, with 0-9 fractional digits, in the spellings producers use and a few the long way
    rejects or reads differently (lowercase 'z', no offset, an offset with seconds or hours only)."""
    us = draw(
        st.one_of(
            st.integers(min_value=MIN_TS_MS * 1000 - 2000, max_value=MIN_TS_MS * 1000 + 2000),
            st.integers(min_value=MAX_TS_MS * 1000 - 2000, max_value=MAX_TS_MS * 1000 + 2000),
            st.integers(min_value=MIN_TS_MS * 1000, max_value=MAX_TS_MS * 1000 - 1),
            st.integers(min_value=-62_000_000_000 * 10**6, max_value=253_000_000_000 * 10**6),
        )
    )
    offset_min = draw(
        st.one_of(st.sampled_from([0, 0, 330, -330, 345, -60, 1439, -1439]), st.integers(-1439, 1439))
    )
    try:
        local = _EPOCH + timedelta(microseconds=us) + timedelta(minutes=offset_min)
    except OverflowError:
        assume(False)
    assume(1 <= local.year <= 9999)
    digits = draw(st.integers(min_value=0, max_value=9))
    frac = f"{local.microsecond:06d}" + "".join(
        draw(st.lists(st.sampled_from("0459"), min_size=3, max_size=3))
    )
    text = local.strftime("%Y-%m-%d") + draw(st.sampled_from("TTt ")) + local.strftime("%H:%M:%S")
    if digits:
        text += "." + frac[:digits]
    sign = "-" if offset_min < 0 else "+"
    hh, mm = divmod(abs(offset_min), 60)
    zones = [f"{sign}{hh:02d}:{mm:02d}", f"{sign}{hh:02d}{mm:02d}"] + (
        ["Z", "Z", "-00:00"] if offset_min == 0 else []
    )
    if not valid_only:
        zones += ["", "z", f"{sign}{hh:02d}:{mm:02d}:00", f"{sign}{hh:02d}:{mm:02d}:15"]
        zones += [f"{sign}{hh:02d}"] if mm == 0 else []
        zones += ["Z[Europe/Paris]", f"{sign}{hh:02d}:{mm:02d}[Asia/Kolkata]"]
    text += draw(st.sampled_from(zones))
    if not valid_only:
        how = draw(st.sampled_from(["as is", "as is", "as is", "leap second", "basic", "basic leap second"]))
        if how.endswith("leap second"):  # second 60: RFC 3339's leap second, which the contract rejects
            text = text[:17] + "60" + text[19:]
        if how.startswith("basic"):  # no separators in the date and time (ISO 8601's basic format)
            text = text[:10].replace("-", "") + text[10] + text[11:19].replace(":", "") + text[19:]
    return text


string_timestamps = st.one_of(
    rfc3339(),
    st.sampled_from(
        ["2026-11-22", "2026-11-22T10Z", "2026-02-29T10:00:00Z", "2026-11-22T10:00:60Z", "Z", ""]
    ),
    st.text(max_size=30),
)
timestamps = st.one_of(
    st.integers(min_value=MIN_TS_MS - 2, max_value=MIN_TS_MS + 2),
    st.integers(min_value=MAX_TS_MS - 2, max_value=MAX_TS_MS + 2),
    st.integers(min_value=MIN_TS_MS, max_value=MAX_TS_MS - 1),
    st.floats(min_value=MIN_TS_MS, max_value=MIN_TS_MS + 10),
    st.booleans(),
    string_timestamps,
    string_timestamps,
    st.none(),
)
anything: st.SearchStrategy[Any] = st.one_of(ids, numbers, timestamps, st.lists(st.integers(), max_size=2))
types = st.sampled_from(
    [
        "usage",
        "paywall_hit",
        "plan_changed",
        "account_updated",
        "account_deleted",
        "prompt_shown",
        "prompt_clicked",
        "prompt_dismissed",
    ]
)
trait_values = st.one_of(
    numbers, st.text(max_size=3), st.text(min_size=127, max_size=129), st.lists(st.integers(), max_size=1)
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
    "traits": {"segment": "smb", "employees": 40, "verified": True, "region": None},
}


WELL_FORMED_TS = st.one_of(st.just(WELL_FORMED["ts"]), rfc3339(valid_only=True))


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
        ("traits", st.one_of(st.none(), st.dictionaries(ids, trait_values, max_size=3))),
        ("extra", anything),
    ):
        how = draw(st.sampled_from(["absent", "well-formed", "well-formed", "any"]))
        if how == "any" or (how == "well-formed" and field not in WELL_FORMED):
            obj[field] = draw(strat)
        elif how == "well-formed" and field in ("ts", "period_start"):
            obj[field] = draw(WELL_FORMED_TS)
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
        b'{"type":"account_updated","event_id":"e","account_id":"a","ts":1700000000000,"traits":{"n":1e400}}',
        b'{"type":"account_updated","event_id":"e","account_id":"a","ts":1700000000000,"traits":{"n":7,"b":false}}',
        b'{"type":"account_updated","event_id":"e","account_id":"a","ts":1700000000000,"traits":{"":1}}',
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


@settings(max_examples=2000, deadline=None)
@given(rfc3339())
def test_string_timestamps_read_as_the_long_way_reads_them(text: str) -> None:
    """Offsets, fractional digits and both ends of the accepted range: the msgspec path returns the
    long way's epoch ms for every string the long way accepts, and rejects every string it rejects."""
    raw = json.dumps({"type": "paywall_hit", "event_id": "e", "account_id": "a", "ts": text, "feature": "f"})
    try:
        expected: int | None = _parse_ts(text)
    except ValueError:
        expected = None
    try:
        fast: int | None = _decode_common(raw.encode()).ts
    except Exception:
        fast = None
    assert fast == expected
    ev = decode_event(raw.encode())
    assert (ev.ts if not isinstance(ev, InvalidEvent) else None) == expected


@settings(max_examples=2000, deadline=None)
@given(events())
def test_only_invalid_events_take_the_long_way(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj).encode()
    long = _long_way(raw)
    if long != "not_json" and not isinstance(long, InvalidEvent):
        assert _decode_common(raw) == long


@pytest.mark.parametrize(
    ("ts", "ms"),
    [
        ("2026-11-22T10:00:00Z", 1795341600000),
        ("2026-11-22T10:00:00+00:00", 1795341600000),
        ("2026-11-22T15:30:00+05:30", 1795341600000),
        ("2026-11-22T05:00:00.250-05:00", 1795341600250),
        ("2000-01-01T00:00:00Z", MIN_TS_MS),
        ("2000-01-01T05:30:00+05:30", MIN_TS_MS),
        ("2199-12-31T23:59:59.999Z", MAX_TS_MS - 1),
    ],
)
def test_rfc3339_events_take_the_fast_path(ts: str, ms: int) -> None:
    raw = {"type": "usage", "event_id": "e", "account_id": "a", "ts": ts, "metric": "m", "value": 1}
    ev = _decode_common(json.dumps(raw).encode())  # raises if it would go the long way
    assert isinstance(ev, Usage) and ev.ts == ms


@pytest.mark.parametrize(
    "ts",
    [
        "1999-12-31T23:59:59.999Z",
        "2000-01-01T05:29:59+05:30",
        "2200-01-01T00:00:00Z",
        "2026-11-22T10:00:00",
        "2026-11-22T10:00:00Z[Europe/Paris]",
        "2026-02-29T10:00:00Z",
    ],
)
def test_rejected_string_timestamps_are_worded_by_the_models(ts: str) -> None:
    raw = {"type": "usage", "event_id": "e", "account_id": "a", "ts": ts, "metric": "m", "value": 1}
    with pytest.raises(Exception):  # noqa: B017 - the long way then words it
        _decode_common(json.dumps(raw).encode())
    ev = decode_event(json.dumps(raw).encode())
    assert isinstance(ev, InvalidEvent) and ev.reason == "invalid_field" and "'ts'" in ev.message


def test_strings_of_one_minute_read_alike() -> None:
    """Every second and fraction of a minute, in offsets that share the minute's text and in every
    spelling, reads as the long way reads it (the fast way or, for the spellings it leaves, the long way)."""
    minutes = ("2026-11-22T15:30", "2026-11-22T15:31", "2026-11-22T16:30", "2026-11-23T15:30")
    for minute in (*minutes, "2004-10-20T21:33", "2199-12-31T23:59", "2000-01-01T05:29"):
        for zone in ("+05:30", "-03:00", "+0530", "+05:30:15", "Z", "+00:00", "-00:00", "+14:00", "-11:59"):
            for rest in (":00", ":59.999", ":02.324", ":07.5", ":59.9999995", ":30.000001", ":60", ":60.5"):
                text = minute + rest + zone
                try:
                    expected: int | None = _parse_ts(text)
                except ValueError:
                    expected = None
                try:
                    got: int | None = _ts_ms(text)
                except ValueError:
                    got = None
                assert got == expected, text


@pytest.mark.parametrize("zone", ["Z", "+05:30", "-03:00"])
def test_every_millisecond_of_a_second_reads_as_written(zone: str) -> None:
    """Sub-second digits are milliseconds as written, truncated below the millisecond in integer
    arithmetic (a float product reads some, such as .123, as one less), on both the fast and the long way."""
    second = _parse_ts("2026-11-22T10:00:07" + zone)
    for milli in range(1000):
        for extra in ("", "999", "999999", "5", "9995"):
            text = f"2026-11-22T10:00:07.{milli:03d}{extra}{zone}"
            assert _ts_ms(text) == _parse_ts(text) == second + milli, text


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-11-22T10:00:00z", 1795341600000),  # RFC 3339 (5.6) allows a lowercase 'z'
        ("2026-11-22t10:00:00.123z", 1795341600123),
        ("2026-11-22T10:00:60Z", 1795341659000),  # a leap second: epoch time has none, so second 59
        ("2026-11-22T15:30:60.500+05:30", 1795341659500),
        ("2199-12-31T23:59:60.999Z", MAX_TS_MS - 1),
    ],
)
def test_rfc3339_spellings_fromisoformat_rejects_are_read(text: str, ms: int) -> None:
    """RFC 3339 allows these, `datetime.fromisoformat` rejects them: both ways read them alike."""
    with pytest.raises(ValueError):
        datetime.fromisoformat(text)
    assert _parse_ts(text) == _ts_ms(text) == ms
    raw = {"type": "usage", "event_id": "e", "account_id": "a", "ts": text, "metric": "m", "value": 1}
    ev = _decode_common(json.dumps(raw).encode())  # raises if it would go the long way
    assert isinstance(ev, Usage) and ev.ts == ms


def _fromisoformat_ms(text: str) -> int | None:
    """How the contract's strings were read before whenever: `fromisoformat`, then integer arithmetic."""
    try:
        ms = datetime_to_ms(datetime.fromisoformat(text))
    except ValueError:
        return None
    return ms if MIN_TS_MS <= ms < MAX_TS_MS else None


def _as_fromisoformat_spells_it(text: str) -> str:
    """An RFC 3339 spelling `fromisoformat` rejects, in one it accepts: 'Z' for 'z', second 59 for 60."""
    text = re.sub(r"z$", "Z", text)
    return re.sub(r"(?<=[Tt ]\d\d:\d\d:)60|(?<=[Tt ]\d{4})60", "59", text)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(rfc3339(), string_timestamps))
def test_every_string_fromisoformat_accepts_reads_as_it_reads_it(text: str) -> None:
    """Nothing valid changes meaning: a string `fromisoformat` accepts reads as it reads it (both ways),
    and a string only whenever reads is a lowercase 'z' or a leap second of one `fromisoformat` reads."""
    read = _read(text, _parse_ts)
    assert _read(text, _ts_ms) == read
    before = _fromisoformat_ms(text)
    if before is not None:
        assert read == before, text
    elif read is not None:
        assert _fromisoformat_ms(_as_fromisoformat_spells_it(text)) == read, text


def _read(text: str, read: Any) -> int | None:
    try:
        ms: int = read(text)
    except ValueError:
        return None
    return ms


@st.composite
def plain_rfc3339(draw: st.DrawFn) -> str:
    """The layout producers write (`2026-11-22T10:00:07.123Z`, `...07.123000+00:00`, `...07+05:30`),
    anywhere in the accepted range and a little past either end, in whole-minute offsets."""
    ms = draw(
        st.one_of(
            st.integers(min_value=MIN_TS_MS - 2 * 86_400_000, max_value=MIN_TS_MS + 2 * 86_400_000),
            st.integers(min_value=MAX_TS_MS - 2 * 86_400_000, max_value=MAX_TS_MS + 2 * 86_400_000),
            st.integers(min_value=MIN_TS_MS, max_value=MAX_TS_MS - 1),
        )
    )
    offset_min = draw(st.one_of(st.sampled_from([0, 330, -300, 345, 1439, -1439]), st.integers(-1439, 1439)))
    local = _EPOCH + timedelta(milliseconds=ms, minutes=offset_min)
    frac = draw(st.sampled_from(["", ".{ms:03d}", ".{ms:03d}000", ".{ms:03d}999", ".{d1}", ".{ms:03d}0"]))
    frac = frac.format(ms=local.microsecond // 1000, d1=local.microsecond // 100_000)
    sign = "-" if offset_min < 0 else "+"
    hh, mm = divmod(abs(offset_min), 60)
    zone = draw(
        st.sampled_from(
            ["Z", f"{sign}{hh:02d}:{mm:02d}"] if offset_min == 0 else [f"{sign}{hh:02d}:{mm:02d}"]
        )
    )
    return (
        local.strftime("%Y-%m-%d") + draw(st.sampled_from("TTt ")) + local.strftime("%H:%M:%S") + frac + zone
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(plain_rfc3339(), plain_rfc3339(), rfc3339()), min_size=1, max_size=8))
def test_spliced_strings_read_as_the_long_way_reads_them(texts: list[str]) -> None:
    """Strings made of the date and minute, the second, and the fraction and offset of others, in every
    combination (most of them invalid: hour 24 of an offset's day, a fraction without digits, ...),
    read as the long way reads them."""
    for text in texts:
        assert _read(text, _ts_ms) == _read(text, _parse_ts), text
    for a in texts:
        for b in texts:
            for c in texts:
                text = a[:16] + b[16:19] + c[19:]
                assert _read(text, _ts_ms) == _read(text, _parse_ts), text


def _models_only(raw: bytes) -> Any:
    """The event, or the dead-letter reason and message, as the pydantic models alone decide them."""
    obj = orjson.loads(raw)
    try:
        return _from_model(_MODELS[obj["type"]].model_validate(obj))
    except ValidationError as err:
        return InvalidEvent(*_describe(err))


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(["usage", "paywall_hit", "plan_changed", "prompt_shown"]),
    st.lists(st.one_of(plain_rfc3339(), rfc3339(), string_timestamps), min_size=1, max_size=6),
)
def test_string_timestamps_decode_or_dead_letter_as_the_models_say(etype: str, texts: list[str]) -> None:
    """Every string `ts` (the layouts producers write, any offset, 0-9 fractional digits, both ends of
    the accepted range, and invalid strings), and strings made of the parts of the others:
    decode_event returns the event the models return, or the same dead-letter reason and message."""
    fields = {"metric": "seats", "value": 3, "feature": "sso", "plan": "pro", "prompt_id": "p"}
    for text in [*texts, *(a[:16] + b[16:19] + c[19:] for a in texts for b in texts for c in texts)]:
        raw = orjson.dumps({"type": etype, "event_id": "e", "account_id": "a", "ts": text, **fields})
        got, expected = decode_event(raw), _models_only(raw)
        assert got == expected, text
        assert not isinstance(got, InvalidEvent) or got.message == expected.message
