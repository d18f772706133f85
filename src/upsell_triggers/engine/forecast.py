"""Forecast (pace) conditions: "api_calls reaches 100% of the period limit within 7 days".

A forecast condition is a `ratio` with a horizon (`within`). Its level is the share of the limit the
metric is projected to reach at the horizon, so the engine arms, fires, re-arms and groups it like any
ratio condition; only how the level is computed differs, and that lives here (docs/rules.md, "Pace").

Projection, per metric kind, from a bounded daily history kept in `AccountState.pace` only for metrics a
forecast rule reads (every other account's state has no such field, and its bytes are unchanged). Each
history is one bytes object of little-endian doubles (at most 15 of them: 120 bytes), kept packed in
the decoded state as on the wire: a list of Python numbers took 6-7 times the memory per account. Every
number it holds (a day, an epoch-ms period start, a reading, a sum of increments) is a double exactly as
it was as a Python int or float, so projections are the same:

- period counter: a trailing-window rate. The history is the current billing period's daily increments
  (at most RATE_DAYS full days and today). The rate is the mean of the full days' increments with the
  largest day left out, so one burst (an import on the first day of the period) does not set the pace.
  At least `min_history` full days of the period must have been seen; a new period starts a new
  history; the projection stops at the period's end (the quota resets there).
- gauge: a least-squares trend over daily samples (the reading at the end of each UTC day, a day
  without readings holding the previous one), at most GAUGE_DAYS. The trend is fitted to the samples
  since the last fall only: a reading below the previous day's (seats removed, storage cleaned up)
  starts the trend afresh, so growth before a cleanup does not project through it.

Either way a rate that is not positive projects nothing, so a flat or falling series never fires, and
a reading already at the target share is the limit rules' moment, not a forecast's.
"""

from __future__ import annotations

import math
import sys
from array import array
from dataclasses import dataclass
from typing import Final

from upsell_triggers.engine.rulemodel import FORECAST, GAUGE, PERIOD, Cond, Rule
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.stateops import blob_of, period_of, set_blob
from upsell_triggers.engine.timeutil import DAY

RATE_DAYS: Final = 7  # period counters: full days the trailing rate averages
GAUGE_DAYS: Final = 14  # gauges: daily samples the trend is fitted to
DEFAULT_MIN_HISTORY_DAYS: Final = {GAUGE: 7, PERIOD: 3}  # full days of history before a forecast may fire
MIN_HISTORY_BOUNDS: Final = {GAUGE: (2, GAUGE_DAYS - 1), PERIOD: (2, RATE_DAYS)}  # what the history can hold


@dataclass(frozen=True, slots=True)
class Projection:
    """Where a forecast condition's metric is heading, at event time."""

    rate: float  # per day, > 0
    projected: float  # the reading at the horizon (a period counter's: at most at the period's end)
    days_left: float  # days until the reading reaches the condition's share of the limit

    @property
    def whole_days_left(self) -> int:
        """`{days_left}` in copy: whole days, at least 1 ("in 1 day" for a crossing later today)."""
        return max(1, math.ceil(self.days_left))


# ---- history: written on every usage event of a metric a forecast rule reads -----------------------

# A history is one flat array, its header first. A gauge's: [first day, sample, sample, ...], day
# numbers since the epoch, one sample per UTC day.
GAUGE_FIRST_DAY: Final = 0  # the day of the first sample
GAUGE_SAMPLES: Final = 1  # where the samples start
# A period counter's: [period start, first day, increment, increment, ...], days from the period start.
COUNTER_PERIOD_START: Final = 0  # the billing period's start (ms): another period's history is replaced
COUNTER_FIRST_DAY: Final = 1  # the day of the first increment
COUNTER_INCREMENTS: Final = 2  # where the daily increments start

_SWAP: Final = sys.byteorder != "little"  # the bytes are little-endian on every machine


def history(state: AccountState, metric: str) -> array[float] | None:
    """metric's daily history, unpacked (a copy: store() writes a changed one back)."""
    blob = blob_of(state.pace, metric)
    if blob is None:
        return None
    h = array("d", blob)
    if _SWAP:
        h.byteswap()
    return h


def store(state: AccountState, metric: str, h: array[float]) -> None:
    """Packs metric's history into the state."""
    if _SWAP:
        h = array("d", h)
        h.byteswap()
    state.pace = set_blob(state.pace, metric, h.tobytes())


# A gauge's history starts with a day number (days since 1970: far below this), a period counter's with
# its period's start in epoch ms (far above it), so each kind tells a history the other wrote: one kept
# from before a reload changed the metric's kind, read as none and replaced at the next reading.
_FIRST_DAY_BELOW: Final = 10**8


def gauge_history(state: AccountState, metric: str) -> array[float] | None:
    """metric's history if a gauge wrote it, else None (a period counter's, see _FIRST_DAY_BELOW)."""
    h = history(state, metric)
    return h if h is not None and h[GAUGE_FIRST_DAY] < _FIRST_DAY_BELOW else None


def record_gauge_sample(state: AccountState, metric: str, ts: int, value: float) -> None:
    """The gauge's reading at ts as its day's sample. History: [first day, sample, sample, ...], one
    sample per UTC day up to the newest, days without readings holding the previous sample. Called after
    the gauge accepted the reading, so ts is not older than the newest sample's day."""
    day = ts // DAY
    h = gauge_history(state, metric)
    if h is None:
        store(state, metric, array("d", (day, value)))
        return
    last_day = int(h[GAUGE_FIRST_DAY]) + len(h) - 1 - GAUGE_SAMPLES
    if day <= last_day:
        h[-1] = value  # the newest sample
        store(state, metric, h)
        return
    held = h[-1]
    gap = min(day - last_day - 1, GAUGE_DAYS)
    h.extend([held] * gap)
    h.append(value)
    extra = len(h) - GAUGE_SAMPLES - GAUGE_DAYS
    if extra > 0:
        del h[GAUGE_SAMPLES : GAUGE_SAMPLES + extra]
        h[GAUGE_FIRST_DAY] = day - GAUGE_DAYS + 1
    store(state, metric, h)


def record_counter_sample(state: AccountState, metric: str, period_start: int, ts: int, delta: float) -> None:
    """A period counter's increment in its day of the billing period. History: [period start, first
    day, increment, increment, ...], day numbers counted from the period start, at most RATE_DAYS + 1
    days (the full days the rate reads, and today). Another period's history is replaced."""
    day = (ts - period_start) // DAY
    h = history(state, metric)
    if h is None or h[COUNTER_PERIOD_START] != period_start:
        store(state, metric, array("d", (period_start, day, delta)))
        return
    first = int(h[COUNTER_FIRST_DAY])
    last_day = first + len(h) - 1 - COUNTER_INCREMENTS
    if day < first:
        return  # late, before the days kept: counted in the period's total, not in the rate
    if day <= last_day:
        h[COUNTER_INCREMENTS + day - first] += delta
        store(state, metric, h)
        return
    h.extend([0] * min(day - last_day - 1, RATE_DAYS + 1))
    h.append(delta)
    extra = len(h) - COUNTER_INCREMENTS - (RATE_DAYS + 1)
    if extra > 0:
        del h[COUNTER_INCREMENTS : COUNTER_INCREMENTS + extra]
        h[COUNTER_FIRST_DAY] = day - RATE_DAYS
    store(state, metric, h)


def forget_unread(state: AccountState, read: frozenset[str]) -> None:
    """Drops the history of metrics no forecast rule reads any more (after a reload): the field is
    bounded by the metrics forecast rules read, and back to None (no bytes) when none is left."""
    pace = state.pace
    if pace is not None and any(m not in read for m in pace[::2]):
        kept = [x for i in range(0, len(pace), 2) if pace[i] in read for x in pace[i : i + 2]]
        state.pace = kept or None


# ---- projection ------------------------------------------------------------------------------------


def trailing_rate(increments: list[float]) -> float:
    """The period counter's daily rate: the mean of the full days' increments without the largest one
    (a single burst day does not set the pace). At least two days."""
    return (sum(increments) - max(increments)) / (len(increments) - 1)


def trend_slope(samples: list[float]) -> float:
    """Least-squares slope, per day, of daily samples (x = 0, 1, 2, ...)."""
    n = len(samples)
    x_mean = (n - 1) / 2
    y_mean = sum(samples) / n
    num = sum((x - x_mean) * (y - y_mean) for x, y in enumerate(samples))
    den = sum((x - x_mean) ** 2 for x in range(n))
    return num / den


def rising_run(samples: list[float]) -> list[float]:
    """The samples since the last fall (the longest non-decreasing tail)."""
    i = len(samples) - 1
    while i > 0 and samples[i - 1] <= samples[i]:
        i -= 1
    return samples[i:]


def counter_rate(state: AccountState, c: Cond, ts: int) -> tuple[float, int] | None:
    """(rate per day, ms left in the period) of a period counter at ts, or None without enough of this
    period's history or without a positive rate."""
    p = period_of(state.periods, c.metric)
    h = history(state, c.metric)
    if p is None or h is None or ts >= p.end or h[COUNTER_PERIOD_START] != p.start:
        return None
    start, end = int(p.start), int(p.end)
    today = (ts - start) // DAY
    first = int(h[COUNTER_FIRST_DAY])
    lo = max(first, today - RATE_DAYS)
    if today - lo < c.min_history_days:
        return None
    last_day = first + len(h) - 1 - COUNTER_INCREMENTS
    incs = [h[COUNTER_INCREMENTS + d - first] if d <= last_day else 0 for d in range(lo, today)]
    rate = trailing_rate(incs)
    return (rate, end - ts) if rate > 0 else None


def gauge_rate(state: AccountState, c: Cond, ts: int) -> float | None:
    """The gauge's trend per day at ts (samples up to ts's day, the newest held), or None without
    min_history days since the last fall or without growth."""
    h = gauge_history(state, c.metric)
    if h is None:
        return None
    samples = h[GAUGE_SAMPLES:].tolist()
    last_day = int(h[GAUGE_FIRST_DAY]) + len(h) - 1 - GAUGE_SAMPLES
    idle = ts // DAY - last_day  # days since the newest sample: its reading held
    if idle > 0:
        samples = (samples + [samples[-1]] * min(idle, GAUGE_DAYS))[-GAUGE_DAYS:]
    run = rising_run(samples)
    if len(run) - 1 < c.min_history_days:
        return None
    slope = trend_slope(run)
    return slope if slope > 0 else None


def project(state: AccountState, c: Cond, value: float, limit: float, ts: int) -> Projection | None:
    """The projection of forecast condition c for a reading `value` under `limit` at ts; None when it
    projects nothing (too little history, no growth, a reading already at the target share)."""
    target = c.threshold * limit
    if value >= target:
        return None
    if c.source_kind == GAUGE:
        rate = gauge_rate(state, c, ts)
        if rate is None:
            return None
        horizon_ms = c.within_ms
    else:
        cr = counter_rate(state, c, ts)
        if cr is None:
            return None
        rate, period_left = cr
        horizon_ms = min(c.within_ms, period_left)
    return Projection(rate, value + rate * horizon_ms / DAY, (target - value) / rate)


def forecast_level(state: AccountState, c: Cond, value: float, limit: float | None, ts: int) -> float | None:
    """The level of forecast condition c (levels.measure): the projected share of the limit at the
    horizon; the current share when nothing is projected (below the threshold, so it re-arms the rule
    like a reading would); None when the limit is unlimited or the reading is already at the target
    share (no forecast fires, and a fired one re-arms)."""
    if limit is None or limit <= 0:
        return None
    pj = project(state, c, value, limit, ts)
    if pj is None:
        return None if value >= c.threshold * limit else value / limit
    return pj.projected / limit


# ---- one prompt a day between a metric's forecasts and its other rules -----------------------------


def day_taken(
    state: AccountState, sharers: tuple[tuple[str, ...], tuple[str, ...]], rule: Rule, ts: int
) -> str | None:
    """Why `rule` may not prompt at ts: a rule of the other side of its metric (a forecast for a limit
    rule, a limit rule for a forecast; `sharers` is RuleSet.day_sharers[metric]) prompted (or was held
    out) within the last 24 hours. None: the day is free. Whichever prompts first has the day; the
    other records `superseded` and stays armed (engine._decide)."""
    forecasts, others = sharers
    rivals = others if rule.primary.kind == FORECAST else forecasts
    rules = state.rules
    if not rules:
        return None
    for rid in rivals:
        rst = rules.get(rid)
        if rst is not None and rst.last_fired is not None and 0 <= ts - rst.last_fired < DAY:
            return (
                f"rule {rid} prompted on {rule.primary.metric} at {rst.last_fired}, within 24h: a forecast "
                "and the other rules of its metric share one prompt a day"
            )
    return None
