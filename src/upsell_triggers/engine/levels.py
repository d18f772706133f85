"""A condition's level, the number compared with its threshold: computed here and nowhere else.

The level is the condition's reading for the account (a gauge's latest value, the current billing
period's total, a rolling window's sum), divided by the account's limit for a ratio condition. measure()
is what the engine calls on the hot path; reference_measure() is the same definition written plainly,
and a property test (tests/unit/test_levels.py) holds measure() to it. skip_bound() turns the
definition around: the reading below which a group of rules cannot fire, which lets the engine answer
most events without evaluating any rule.
"""

from __future__ import annotations

import math
from typing import Final

from upsell_triggers.engine import distinct, growth, windows
from upsell_triggers.engine.forecast import forecast_level
from upsell_triggers.engine.keys import feature_key
from upsell_triggers.engine.rulemodel import DISTINCT, FORECAST, GAUGE, PERIOD, ROLLING, Cond, Plan
from upsell_triggers.engine.state import UNUSED, AccountState, BillingPeriod, Num
from upsell_triggers.engine.stateops import blob_of, gauge_readings, gauge_value, period_items, period_of
from upsell_triggers.engine.windows import window_sum

INF: Final = float("inf")
NEVER: Final = -INF  # a skip bound no reading is below
# A reading below a ratio threshold times the limit, by this margin, is below the threshold however the
# division rounds (~1e-16 each way); readings within it take the engine's exact path.
_SKIP_MARGIN: Final = 1 - 1e-9

Measure = tuple[Num, float | None, float | None]  # (reading, limit, level)


def measure(state: AccountState, plan: Plan, c: Cond, feature: str | None, ts: int) -> Measure:
    """(reading, limit, level) of condition c for the account at event time ts. The limit is the
    account's override or its plan's (None: unlimited); the level is None for a ratio of an unlimited
    metric, which no threshold reaches. `feature`: the paywall feature a per-feature condition counts.
    Written for speed: the engine calls it for every rule group an event reaches."""
    metric = c.metric
    overrides = state.limits
    limit = overrides[metric] if overrides is not None and metric in overrides else plan.limits.get(metric)
    kind = c.kind
    value: Num  # an int (a count, an empty period) stays an int: compiled, a float would convert it
    if kind == GAUGE:
        value = gauge_value(state.gauges, metric)
    elif kind == PERIOD:
        value = 0  # no period, or one that ended: a new, empty one
        ps = state.periods
        if ps is not None:  # period_of(), inline: the engine calls this for every rule group
            try:
                period: BillingPeriod = ps[ps.index(metric) + 1]  # type: ignore[assignment]
            except ValueError:
                pass
            else:
                if ts < period.end:
                    value = period.total
    elif kind == FORECAST:  # a projected level (forecast.py), of the reading a gauge or period sees
        if c.source_kind == GAUGE:
            value = gauge_value(state.gauges, metric)
        else:
            p = period_of(state.periods, metric)
            value = p.total if p and ts < p.end else 0
        return value, limit, forecast_level(state, c, value, limit, ts)
    elif kind == ROLLING:
        b = (state.rolling or UNUSED).get(metric if feature is None else feature_key(metric, feature))
        value = window_sum(b, c.window_ms) if b else 0
    elif kind == DISTINCT:
        value = distinct.count(blob_of(state.distinct, metric), c.window_ms // c.bucket_ms)
    else:
        return growth.measure(state, c, limit)
    if c.ratio is None:
        return value, limit, value
    if limit is None:
        return value, None, None
    if limit <= 0:
        return value, limit, INF if value > 0 else 0.0
    return value, limit, value / limit


def holds(state: AccountState, plan: Plan, c: Cond, feature: str | None, ts: int) -> bool:
    """Whether condition c holds for the account (a rule's second and later conditions)."""
    _, _, level = measure(state, plan, c, feature, ts)
    return level is not None and level >= c.threshold


def reference_measure(state: AccountState, plan: Plan, c: Cond, feature: str | None, ts: int) -> Measure:
    """measure()'s definition, written to be read rather than to be fast."""
    overrides = state.limits or {}
    limit = overrides[c.metric] if c.metric in overrides else plan.limits.get(c.metric)
    reading: Num
    kind = c.source_kind if c.kind == FORECAST else c.kind
    if kind not in (GAUGE, PERIOD, ROLLING, DISTINCT):
        return growth.measure(state, c, limit)  # its own reference: tests/unit/test_growth.py
    if kind == DISTINCT:
        reading = distinct.count(blob_of(state.distinct, c.metric), c.window_ms // c.bucket_ms)
    elif kind == GAUGE:
        _ts, reading = gauge_readings(state.gauges).get(c.metric, (0, 0))
    elif kind == PERIOD:
        period = period_items(state.periods).get(c.metric)
        reading = period.total if period is not None and ts < period.end else 0  # ended: the next, empty
    else:  # a rolling counter
        buckets = windows.buckets((state.rolling or {}).get(feature_key(c.metric, feature)))
        newest = max(buckets, default=0)
        reading = sum(n for start, n in buckets.items() if start > newest - c.window_ms)
    level: float | None
    if c.kind == FORECAST:
        level = forecast_level(state, c, reading, limit, ts)
    elif c.ratio is None:
        level = reading
    elif limit is None:
        level = None  # unlimited: no share of it is ever reached
    elif limit > 0:
        level = reading / limit
    else:
        level = math.inf if reading > 0 else 0.0  # a limit of 0: any use is over it
    return reading, limit, level


def skip_bound(primary: Cond, min_threshold: float, metric: str, plan: Plan) -> float:
    """The reading of `metric` below which rules whose primary condition is `primary` and whose lowest
    threshold is min_threshold cannot fire for an account on `plan` without rule state or limit
    overrides: measure()'s level below min_threshold, solved for the reading. NEVER: no such reading."""
    if primary.metric != metric or primary.feature is not None or primary.kind not in (GAUGE, PERIOD):
        return NEVER  # a level that is not this event's reading (another metric, a window, a feature)
    if primary.ratio is None:
        return min_threshold  # the level is the reading itself: the same comparison
    limit = plan.limits.get(metric)
    if limit is None:
        return INF  # unlimited: a ratio rule cannot fire
    if limit <= 0 or min_threshold <= 0:
        return NEVER
    return min_threshold * limit * _SKIP_MARGIN
