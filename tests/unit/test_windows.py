"""Rolling-window series (engine/windows.py): the packed form gives what one dict per series gives, bit
for bit and type for type, under any arrival order and any mix of int and float increments."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine import windows
from upsell_triggers.engine.timeutil import DAY, HOUR

from .helpers import T0

BUCKET, KEEP = HOUR, 3 * DAY


def dict_add(buckets: dict[int, Any], ts: int, delta: Any, bucket_ms: int, keep_ms: int) -> bool:
    """The definition: one dict per series, in insertion order (what the packed form must equal)."""
    b = ts - ts % bucket_ms
    newest = max(buckets) if buckets else b
    if b <= newest - keep_ms:
        return False
    buckets[b] = buckets.get(b, 0) + delta
    if b > newest:
        for k in [k for k in buckets if k <= b - keep_ms]:
            del buckets[k]
    return True


def typed(v: Any) -> tuple[type, Any]:
    return type(v), v


ints = st.integers(-5, 2**40) | st.integers(-5, 100)
floats = st.floats(-1e6, 1e9, allow_nan=False, allow_infinity=False)
arrival = st.tuples(st.integers(0, 6 * DAY), ints | floats)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(arrival, min_size=1, max_size=120),
    st.sampled_from(["ints", "floats", "mixed"]),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 4 * DAY), st.integers(0, 4 * DAY)), max_size=4),
    st.sampled_from([(HOUR, 3 * DAY), (1000, 36_500), (60_000, 3 * DAY + 1), (250, 3_000), (HOUR, HOUR)]),
)
def test_packed_series_equal_the_dict_definition(
    raw: list[tuple[int, Any]],
    kind: str,
    in_order: bool,
    ranges: list[tuple[int, int]],
    sizes: tuple[int, int],
) -> None:
    bucket, keep = sizes
    if kind == "ints":
        events = [(ts, int(d)) for ts, d in raw]
    elif kind == "floats":
        events = [(ts, float(d)) for ts, d in raw]
    else:
        events = raw
    if in_order:
        events.sort()
    ref: dict[int, Any] = {}
    s: windows.Series | None = None
    for ts, d in events:
        ok = dict_add(ref, T0 + ts, d, bucket, keep)
        added = windows.add(s, T0 + ts, d, bucket, keep)
        assert (added is not None) == ok
        if added is not None:
            s = added
        assert s is not None
        got = windows.buckets(s)
        assert list(got) == list(ref) and list(map(typed, got.values())) == list(map(typed, ref.values()))
        assert windows.count(s) == len(ref) and windows.newest(s) == max(ref)
        for w in (HOUR, DAY, keep, 1500, 999):
            cutoff = max(ref) - w
            assert typed(windows.window_sum(s, w)) == typed(sum(c for k, c in ref.items() if k > cutoff))
        for lo, hi in ranges:
            want = sum(c for k, c in ref.items() if T0 + lo < k <= T0 + hi)
            assert typed(windows.range_sum(s, T0 + lo, T0 + hi)) == typed(want)
    if in_order and kind == "floats" and bucket % 1000 == 0:
        assert isinstance(s, bytes)  # in order, float increments, whole seconds: packed throughout


def test_a_series_keeps_to_its_bytes_budget():
    s: windows.Series | None = None
    for h in range(72):
        s = windows.add(s, T0 + h * HOUR, 1, BUCKET, KEEP)
    assert isinstance(s, bytes) and len(s) == 1 + 8 * 72
    s = windows.add(s, T0 + 72 * HOUR, 1, BUCKET, KEEP)  # the oldest bucket falls out
    assert isinstance(s, bytes) and len(s) == 1 + 8 * 72 and windows.window_sum(s, KEEP) == 72
    f = windows.add(None, T0, 2.5, BUCKET, KEEP)
    assert isinstance(f, bytes) and len(f) == 1 + 12


def test_what_the_packed_form_cannot_hold_exactly_stays_a_dict():
    assert windows.pack({2: 1, 1: 1}) == {2: 1, 1: 1}  # not ascending: a float sum would reorder
    assert windows.pack({1: 1, 2: 1.5}) == {1: 1, 2: 1.5}  # int and float sums
    assert windows.pack({T0: 2**31}) == {T0: 2**31}  # past 32 bits
    assert windows.pack({T0 + 1: 1}) == {T0 + 1: 1}  # not a whole second
    assert windows.pack({}) == {}
    big = windows.add(windows.pack({T0: 2**31 - 1}), T0, 1, BUCKET, KEEP)
    assert big == {T0: 2**31}
    late = windows.add(windows.pack({T0 + HOUR: 1.5}), T0, 2.5, BUCKET, KEEP)  # opened behind the newest
    assert late == {T0 + HOUR: 1.5, T0: 2.5}
    assert windows.pack({T0: 3, T0 + HOUR: 4}) == b"i" + b"".join(
        x.to_bytes(4, "little") for x in (T0 // 1000, (T0 + HOUR) // 1000, 3, 4)
    )
