"""Growth conditions (docs/rules.md): a metric now against its value a while (`over`) ago, as a ratio
(`growth: 1.5`, grew by half) or a difference (`increase: 10`).

- A gauge's value `over` ago is the reading in force at the start of the history bucket that holds the
  moment `over` before its newest reading. Its history is the readings at which the value changed,
  the last one per bucket (buckets of 1/30 of the longest `over` a rule asks of the metric, at least an
  hour), kept for that longest `over` plus the one reading in force before it: at most
  MAX_POINTS points of 12 bytes, one bytes object per gauge (in `AccountState.history`). Only gauges a
  growth condition reads keep one. A reading older than the newest is stale, as everywhere: it changes
  neither the gauge nor its history, so out-of-order readings never rewrite the past.
- A rolling counter needs no history: its buckets already hold the past. Its value is its sum over
  `window` (default: `over`), compared with the sum over the same length ending `over` earlier
  ("API calls this week against last week": window 7d, over 7d). The metric must keep window + over.

A ratio needs a value to compare with: a gauge without a reading `over` ago, or a baseline of 0, holds
no growth (level None). An increase of a gauge without history is None too; a counter's earlier window
is simply its sum (0 for a new account).
"""

from __future__ import annotations

import struct
from typing import Final

from upsell_triggers.engine import windows
from upsell_triggers.engine.rulemodel import GAUGE_GROWTH, Cond
from upsell_triggers.engine.state import UNUSED, AccountState, Num
from upsell_triggers.engine.stateops import blob_of, gauge_readings, record_gauge, set_blob
from upsell_triggers.engine.windows import range_sum, window_sum

_POINT: Final = struct.Struct("<Id")  # bucket start in minutes since 1970 (any bucket size reads it), value
_MIN: Final = 60_000
POINT_LEN: Final = _POINT.size
MAX_POINTS: Final = 34  # 30 buckets of the kept span, the one in force before it, and a margin

Measure = tuple[Num, float | None, float | None]  # as levels.Measure


def history_bucket(longest_over_ms: int, hour_ms: int) -> int:
    """The resolution of a gauge's history: 1/30 of the longest `over`, in whole hours, at least one."""
    hours = -(-longest_over_ms // (30 * hour_ms))
    return max(1, hours) * hour_ms


def apply_reading(
    state: AccountState, metric: str, ts: int, value: float, bucket_ms: int, keep_ms: int
) -> bool:
    """A reading of a gauge that growth conditions read: the gauge's (False if it is stale), then its
    history's. A history whose last value is not the reading in force until now missed readings (a
    reload left the gauge without growth rules for a while): it starts again from that reading."""
    gauges = state.gauges
    prev: tuple[int, float] | None = None
    if gauges is not None and metric in gauges:
        i = gauges.index(metric)
        prev = (gauges[i + 1], gauges[i + 2])
    if not record_gauge(state, metric, ts, value):
        return False
    if prev is not None:
        prev_ts, prev_value = prev
        blob = blob_of(state.history, metric)
        if blob:
            _, last_value = _POINT.unpack_from(blob, len(blob) - POINT_LEN)
        if not blob or last_value != prev_value:
            start = _POINT.pack(prev_ts // bucket_ms * bucket_ms // _MIN, prev_value)
            state.history = set_blob(state.history, metric, start)
    record(state, metric, ts, value, bucket_ms, keep_ms)
    return True


def record(state: AccountState, metric: str, ts: int, value: float, bucket_ms: int, keep_ms: int) -> None:
    """Adds an accepted gauge reading (never older than the gauge's newest) to the metric's history."""
    blob = blob_of(state.history, metric)
    b = ts // bucket_ms * bucket_ms // _MIN
    if blob:
        last_b, last_v = _POINT.unpack_from(blob, len(blob) - POINT_LEN)
        if last_b == b:
            if last_v == value:
                return
            blob = blob[:-POINT_LEN] + _POINT.pack(b, value)
        elif last_v == value:
            return  # the value in force did not change
        else:
            blob += _POINT.pack(b, value)
        # Points before the oldest bucket a baseline can be asked of, but the last of them, are never read.
        oldest = (ts - keep_ms) // bucket_ms * bucket_ms // _MIN
        drop = 0
        for point_b, _ in _POINT.iter_unpack(blob[POINT_LEN:]):  # the points after the first
            if point_b >= oldest:
                break
            drop += 1
        drop = max(drop, len(blob) // POINT_LEN - MAX_POINTS)
        if drop:
            blob = blob[drop * POINT_LEN :]
    else:
        blob = _POINT.pack(b, value)
    state.history = set_blob(state.history, metric, blob)


def baseline(blob: bytes | None, before: int) -> float | None:
    """The value of the last point of a bucket starting before `before` (minutes), or None."""
    found: float | None = None
    for b, v in _POINT.iter_unpack(blob or b""):
        if b >= before:
            break
        found = v
    return found


def measure(state: AccountState, c: Cond, limit: float | None) -> Measure:
    """(value now, limit, level) of a growth condition; the level is None without a baseline."""
    metric = c.metric
    if c.kind == GAUGE_GROWTH:
        reading = gauge_readings(state.gauges).get(metric)
        if reading is None:
            return 0, limit, None
        newest_ts, now = reading
        start = (int(newest_ts) - c.over_ms) // c.bucket_ms * c.bucket_ms // _MIN
        then = baseline(blob_of(state.history, metric), start)
        if then is None:
            return now, limit, None
    else:  # a rolling counter: this window against the one `over` earlier
        series = (state.rolling or UNUSED).get(metric)
        if not series:
            return 0, limit, None
        w, over = c.window_ms, c.over_ms
        now = window_sum(series, w)
        newest = windows.newest(series)
        then = range_sum(series, newest - over - w, newest - over)
    if c.growth is not None:
        return now, limit, (now / then if then > 0 else None)
    return now, limit, now - then
