"""Growth conditions: a gauge against its reading `over` ago, a rolling counter's window against the one
`over` earlier; equal to a brute-force recomputation under shuffled arrival order, bounded history,
stale readings never rewriting it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine import growth, windows
from upsell_triggers.engine.rulemodel import GAUGE_GROWTH, ROLLING_GROWTH, Cond, RulesError
from upsell_triggers.engine.ruleset import compile_sources, load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.stateops import blob_names, blob_of, record_gauge

from .helpers import DAY, HOUR, T0, Account, outcomes

ROOT = Path(__file__).resolve().parents[2]
EXPANSION = ROOT / "rules" / "examples" / "expansion"
MIN = 60_000


def gauge_brute_force(
    arrivals: list[tuple[int, float]], over: int, bucket: int
) -> tuple[float, float | None]:
    """(value now, value `over` ago): readings applied in arrival order, a reading older than the newest
    ignored (stale); the value then is the last accepted reading before the start of the bucket holding
    the moment `over` before the newest reading."""
    accepted: list[tuple[int, float]] = []
    for ts, v in arrivals:
        if not accepted or ts >= accepted[-1][0]:
            accepted.append((ts, v))
    newest_ts, now = accepted[-1]
    start = (newest_ts - over) // bucket * bucket
    before = [v for ts, v in accepted if ts < start]
    return now, (before[-1] if before else None)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 90 * DAY), st.integers(1, 6)), min_size=1, max_size=120),
    st.sampled_from([DAY, 7 * DAY, 30 * DAY, 3 * HOUR]),
    st.randoms(use_true_random=False),
)
def test_gauge_growth_equals_brute_force_in_any_order(
    raw: list[tuple[int, int]], over: int, rnd: object
) -> None:
    arrivals = [(T0 + ts, float(v)) for ts, v in raw]
    rnd.shuffle(arrivals)  # type: ignore[attr-defined]
    bucket = growth.history_bucket(over, HOUR)
    state = AccountState()
    for ts, v in arrivals:
        growth.apply_reading(state, "seats", ts, v, bucket, over)
    now, then = gauge_brute_force(arrivals, over, bucket)
    for change in ("growth", "increase"):
        c = Cond("seats", None, None, 0, None, GAUGE_GROWTH, over_ms=over, bucket_ms=bucket, **{change: 1.0})
        value, _, level = growth.measure(state, c, 25)
        assert value == now
        if then is None or (change == "growth" and then == 0):
            assert level is None
        else:
            assert level == (now / then if change == "growth" else now - then)
    blob = blob_of(state.history, "seats") or b""
    assert len(blob) <= growth.MAX_POINTS * growth.POINT_LEN


def rolling_brute_force(
    arrivals: list[tuple[int, float]], bucket: int, keep: int, window: int, over: int
) -> tuple[float, float]:
    newest: int | None = None
    sums: dict[int, float] = {}
    for ts, d in arrivals:
        b = ts - ts % bucket
        if newest is not None and b <= newest - keep:
            continue  # late: older than the kept horizon when it arrived
        newest = b if newest is None else max(newest, b)
        sums[b] = sums.get(b, 0) + d
    assert newest is not None
    now = sum(d for b, d in sums.items() if newest - window < b <= newest)
    then = sum(d for b, d in sums.items() if newest - over - window < b <= newest - over)
    return now, then


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40 * DAY), st.integers(0, 50)), min_size=1, max_size=200),
    st.sampled_from([(7 * DAY, 7 * DAY), (DAY, 6 * DAY), (3 * DAY, 10 * DAY)]),
    st.randoms(use_true_random=False),
)
def test_counter_growth_equals_brute_force_in_any_order(
    raw: list[tuple[int, int]], window_over: tuple[int, int], rnd: object
) -> None:
    window, over = window_over
    keep = 14 * DAY
    arrivals = [(T0 + ts, float(d)) for ts, d in raw]
    rnd.shuffle(arrivals)  # type: ignore[attr-defined]
    state = AccountState(rolling={})
    assert state.rolling is not None
    for ts, d in arrivals:
        added = windows.add(state.rolling.get("api_requests"), ts, d, HOUR, keep)
        if added is not None:
            state.rolling["api_requests"] = added
    now, then = rolling_brute_force(arrivals, HOUR, keep, window, over)
    c = Cond(
        "api_requests", None, None, window, None, ROLLING_GROWTH, increase=1, over_ms=over, bucket_ms=HOUR
    )
    value, _, level = growth.measure(state, c, None)
    assert (value, level) == (now, now - then)
    g = Cond("api_requests", None, None, window, None, ROLLING_GROWTH, growth=2, over_ms=over, bucket_ms=HOUR)
    assert growth.measure(state, g, None)[2] == (now / then if then > 0 else None)


def test_history_keeps_changes_only_and_is_bounded() -> None:
    state = AccountState()
    over = 30 * DAY
    bucket = growth.history_bucket(over, HOUR)
    assert bucket == DAY
    for h in range(24 * 200):  # 200 days of hourly readings, changing every hour
        ts = T0 + h * HOUR
        growth.apply_reading(state, "seats", ts, float(h % 7), bucket, over)
    assert len(blob_of(state.history, "seats") or b"") <= growth.MAX_POINTS * growth.POINT_LEN
    flat = AccountState()
    for d in range(200):
        growth.apply_reading(flat, "seats", T0 + d * DAY, 4.0, bucket, over)
    assert len(blob_of(flat.history, "seats") or b"") == growth.POINT_LEN  # one change point


def test_gauge_growth_in_the_engine_fires_once_and_rearms() -> None:
    a = Account(load_ruleset(EXPANSION))
    a.send(0, type="plan_changed", plan="team")
    assert a.seats(HOUR, 8) == []
    assert a.seats(31 * DAY, 11) == []  # 1.375x
    ds = a.seats(32 * DAY, 12)  # 1.5x the 8 seats of 30 days earlier
    assert outcomes(ds) == [("seats-growth", "emitted")]
    assert ds[0].prompt is not None and ds[0].prompt["signal"] == "usage_growth"
    assert a.seats(33 * DAY, 13) == []  # disarmed until growth falls below 1.2


def test_a_history_that_missed_readings_starts_again_from_the_reading_in_force() -> None:
    """A growth rule removed and added again: the readings in between were not recorded, so the
    history restarts from the reading in force instead of comparing with a value it no longer knows."""
    state = AccountState()
    growth.apply_reading(state, "seats", T0, 4.0, DAY, 30 * DAY)
    record_gauge(state, "seats", T0 + 10 * DAY, 9.0)  # no growth rule read seats then
    growth.apply_reading(state, "seats", T0 + 41 * DAY, 10.0, DAY, 30 * DAY)
    c = Cond("seats", None, None, 0, None, GAUGE_GROWTH, growth=1.0, over_ms=30 * DAY, bucket_ms=DAY)
    assert growth.measure(state, c, None)[2] == 10 / 9  # 30 days earlier 9 seats were in force, not 4


def test_state_of_an_account_reading_no_growth_gauge_has_no_history() -> None:
    a = Account(load_ruleset(EXPANSION))
    a.send(0, type="usage", metric="storage_bytes", value=100)
    a.send(HOUR, type="usage", metric="api_calls", delta=10)
    assert a.state.history is None
    a.seats(2 * HOUR, 3)
    assert a.state.history is not None and blob_names(a.state.history) == ["seats"]


def test_growth_rule_mistakes_are_reported() -> None:
    catalog = (EXPANSION / "catalog.yaml").read_text()

    def problems(when: str) -> str:
        rule = f"groups:\n- id: g\n  rules:\n  - id: r\n    when: {when}\n    prompt: {{title: t, cta: {{label: l, url: u}}}}\n"
        with pytest.raises(RulesError) as err:
            compile_sources([("catalog.yaml", catalog), ("x.yaml", "version: 1\n" + rule)])
        return str(err.value)

    assert "need 'over'" in problems("{metric: seats, growth: 1.5}")
    assert "exactly one of" in problems("{metric: seats, growth: 1.5, at_least: 3, over: 30d}")
    assert "a period total starts at 0" in problems("{metric: api_calls, growth: 2, over: 7d}")
    assert "window + over (3w) is longer than the 2w" in problems(
        "{metric: api_requests, growth: 2, window: 7d, over: 14d}"
    )
    assert "'window' is for counters" in problems("{metric: seats, increase: 3, over: 7d, window: 7d}")
