"""levels.measure(), the engine's fast computation of a condition's level, agrees with its plain
reference twin on any account state; skip_bound() never skips a reading whose level reaches the
threshold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine import windows
from upsell_triggers.engine.keys import feature_key
from upsell_triggers.engine.levels import NEVER, measure, reference_measure, skip_bound
from upsell_triggers.engine.rulemodel import GAUGE, PERIOD, ROLLING, Cond, Plan
from upsell_triggers.engine.state import AccountState, BillingPeriod
from upsell_triggers.engine.timeutil import DAY, HOUR

METRICS = ("m1", "m2", "m3")
FEATURES = ("sso", "scim")
T = 1_800_000_000_000

_num = st.one_of(st.integers(0, 10**9), st.floats(0, 1e12, allow_nan=False))
_limit = st.one_of(st.none(), st.just(0), st.just(-1), _num)


@st.composite
def _states(draw: st.DrawFn) -> AccountState:
    s = AccountState()
    gauges: list[str | int | float] = []
    for m in draw(st.lists(st.sampled_from(METRICS), unique=True)):
        gauges += (m, draw(st.integers(0, T)), draw(_num))
    s.gauges = gauges or None
    s.periods = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(METRICS),
            st.builds(
                lambda start, n, total: BillingPeriod(start, start + n, total),
                st.integers(T - DAY, T),
                st.integers(1, 2 * DAY),
                _num,
            ),
        ).map(lambda d: [x for m, p in d.items() for x in (m, p)] or None)
    )
    series = st.sampled_from(METRICS) | st.builds(
        feature_key, st.sampled_from(METRICS), st.sampled_from(FEATURES)
    )
    buckets = st.dictionaries(st.integers(0, 60).map(lambda h: T - h * HOUR), _num, min_size=1)
    s.rolling = draw(st.none() | st.dictionaries(series, buckets | buckets.map(windows.pack)))
    s.limits = draw(st.none() | st.dictionaries(st.sampled_from(METRICS), _limit))
    return s


@st.composite
def _conds(draw: st.DrawFn) -> Cond:
    kind = draw(st.sampled_from((GAUGE, PERIOD, ROLLING)))
    threshold = draw(st.floats(0, 10, allow_nan=False))
    ratio = draw(st.booleans())
    return Cond(
        draw(st.sampled_from(METRICS)),
        threshold if ratio else None,
        None if ratio else threshold,
        draw(st.integers(1, 40)) * HOUR if kind == ROLLING else 0,
        None,
        kind,
    )


_plans = st.builds(
    lambda limits: Plan("p", "P", 0, limits, frozenset()), st.dictionaries(st.sampled_from(METRICS), _limit)
)


@settings(max_examples=500, deadline=None)
@given(
    _states(), _plans, _conds(), st.none() | st.sampled_from(FEATURES), st.integers(T - 2 * DAY, T + 2 * DAY)
)
def test_measure_is_its_reference(state, plan, cond, feature, ts):
    if cond.kind != ROLLING:
        feature = None  # only rolling series are kept per feature
    assert measure(state, plan, cond, feature, ts) == reference_measure(state, plan, cond, feature, ts)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from((GAUGE, PERIOD)),
    st.booleans(),
    st.floats(0, 10, allow_nan=False),
    _limit,
    st.one_of(st.integers(-5, 10**9), st.floats(-5, 1e12, allow_nan=False)),
)
def test_a_reading_below_the_skip_bound_cannot_reach_the_threshold(kind, ratio, threshold, limit, reading):
    cond = Cond("m1", threshold if ratio else None, None if ratio else threshold, 0, None, kind)
    plan = Plan("p", "P", 0, {"m1": limit}, frozenset())
    bound = skip_bound(cond, threshold, "m1", plan)
    state = AccountState()
    if kind == GAUGE:
        state.gauges = ["m1", T, reading]
    else:
        state.periods = ["m1", BillingPeriod(T - DAY, T + DAY, reading)]
    level = reference_measure(state, plan, cond, None, T)[2]
    if reading < bound:
        assert level is None or level < threshold
    if bound == NEVER:
        return
    # The bound is tight for counts, and within its margin of the threshold for ratios.
    if not ratio:
        assert bound == threshold
    elif limit is not None and limit > 0:
        assert bound <= threshold * limit


def test_a_level_of_another_metric_or_of_a_window_is_never_skipped():
    plan = Plan("p", "P", 0, {"m1": 10, "m2": 10}, frozenset())
    assert skip_bound(Cond("m2", 0.5, None, 0, None, GAUGE), 0.5, "m1", plan) == NEVER
    assert skip_bound(Cond("m1", None, 3, DAY, None, ROLLING), 3, "m1", plan) == NEVER
    assert skip_bound(Cond("m1", None, 3, DAY, "*", ROLLING), 3, "m1", plan) == NEVER
