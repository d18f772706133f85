"""Forecast (pace) conditions: the projection against brute-force recomputations, the traps (flat and
falling series, a burst early in the period, the period reset, a fall in a gauge), the one-prompt-a-day
rule with the 100% rule, the copy placeholders, rule-file checks and the state's bytes."""

from __future__ import annotations

from fractions import Fraction

import msgspec
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from upsell_triggers.engine.engine import Decision, Engine
from upsell_triggers.engine.events import InvalidEvent, validate_event
from upsell_triggers.engine.forecast import history, rising_run, trailing_rate, trend_slope
from upsell_triggers.engine.ruleset import RulesError, RuleSet, compile_sources
from upsell_triggers.engine.state import STATE_VERSION, AccountState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.engine.timeutil import DAY, HOUR, billing_period

P0 = 1_796_083_200_000  # 2026-12-01T00:00:00Z: a calendar-month billing period starts
PLANS = """
version: 1
plans:
  - {id: free, limits: {seats: 200, api_calls: 10000}}
  - {id: pro, limits: {seats: 1000, api_calls: 1000000}}
"""
RULES = """
version: 1
groups:
  - id: g
    rules:
      - id: api-pace
        when: {metric: api_calls, ratio: 1.0, within: %(api_within)s}
        rearm: 0.9
        prompt: {title: "API calls run out in {days_left} days, {projected} by then", cta: {label: x, url: /u}}
      - id: api-100
        when: {metric: api_calls, ratio: 1.0}
        bypass_cap: true
        prompt: {title: "{value} of {limit}", cta: {label: x, url: /u}}
      - id: seats-pace
        when: {metric: seats, ratio: 1.0, within: %(seats_within)s}
        rearm: 0.9
        prompt: {title: "seats full in {days_left} days", cta: {label: x, url: /u}}
      - id: seats-100
        when: {metric: seats, ratio: 1.0}
        bypass_cap: true
        prompt: {title: "{value} of {limit}", cta: {label: x, url: /u}}
"""


def histories(state: AccountState) -> dict[str, list[float]]:
    """The account's forecast histories, unpacked."""
    names = state.pace[::2] if state.pace else []
    return {m: h.tolist() for m in names if (h := history(state, m)) is not None}


def rules(api_within: str = "7d", seats_within: str = "30d") -> RuleSet:
    text = RULES % {"api_within": api_within, "seats_within": seats_within}
    return compile_sources([("plans.yaml", PLANS), ("rules.yaml", text)])


class Acct:
    def __init__(self, api_within: str = "7d", seats_within: str = "30d") -> None:
        self.engine = Engine(rules(api_within, seats_within))
        self.state = AccountState()
        self.n = 0
        self.decisions: list[tuple[int, Decision]] = []

    def send(self, ts: int, **fields: object) -> list[Decision]:
        self.n += 1
        ev = validate_event({"event_id": f"e{self.n}", "account_id": "acme", "ts": ts, **fields})
        assert not isinstance(ev, InvalidEvent), ev
        out = self.engine.process(ev, self.state, now_ms=ts)
        assert out.invalid is None, out.invalid
        self.decisions += [(ts, d) for d in out.decisions]
        return list(out.decisions)

    def api(self, ts: int, delta: float) -> list[Decision]:
        return self.send(ts, type="usage", metric="api_calls", delta=delta)

    def seats(self, ts: int, value: float) -> list[Decision]:
        return self.send(ts, type="usage", metric="seats", value=value)

    def emitted(self, rule_id: str) -> list[Decision]:
        return [d for _, d in self.decisions if d.rule_id == rule_id and d.outcome == "emitted"]


# ---- never on a flat or falling series --------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 3 * DAY), st.integers(0, 20)), min_size=2, max_size=60),
    start=st.integers(1, 200),
)
def test_a_gauge_that_never_rises_never_fires(steps: list[tuple[int, int]], start: int) -> None:
    a = Acct(seats_within="30d")
    ts, value = P0, start
    a.seats(ts, value)
    for gap, fall in steps:
        ts += gap
        value = max(0, value - fall)  # flat (fall 0) or falling
        a.seats(ts, value)
    assert a.emitted("seats-pace") == []


@settings(max_examples=60, deadline=None)
@given(
    deltas=st.lists(st.tuples(st.integers(0, 2 * DAY), st.integers(-500, 0)), min_size=2, max_size=80),
    within=st.integers(1, 30),
)
def test_a_period_counter_without_increments_never_fires(deltas: list[tuple[int, int]], within: int) -> None:
    a = Acct(api_within=f"{within}d")
    ts = P0
    a.api(ts, 9000)  # close to the limit already: only a rate could make it project over
    for gap, delta in deltas:
        ts += gap
        a.api(ts, delta)
    assert a.emitted("api-pace") == []


# ---- a steady ramp fires on the day a brute-force recomputation predicts -----------------------------


def predicted_counter_day(
    first: int, rate: int, within_days: int, hour: int, limit: int = 10_000
) -> int | None:
    """The first day of the period (events at `hour` daily from day `first`, `rate` each) on which the
    reading is under the limit, 3 full days were seen, and reading + rate x min(horizon, rest of the
    period) reaches the limit: in exact arithmetic."""
    start, end = billing_period(P0, None)
    for d in range(first, (end - start) // DAY + 1):
        ts = start + d * DAY + hour * HOUR
        if ts >= end:
            return None
        value = rate * (d - first + 1)
        if value >= limit:
            return None
        if d - first < 3:
            continue
        horizon = min(Fraction(within_days), Fraction(end - ts, DAY))
        if value + rate * horizon >= limit:
            return d
    return None


@settings(max_examples=80, deadline=None)
@given(
    first=st.integers(0, 5),
    rate=st.integers(50, 4000),
    within=st.integers(1, 20),
    hour=st.integers(0, 23),
)
def test_a_steady_period_counter_fires_on_the_predicted_day(
    first: int, rate: int, within: int, hour: int
) -> None:
    start, end = billing_period(P0, None)
    # Skip exact ties: the engine's float arithmetic and the fractions agree everywhere else.
    for d in range(first, 31):
        ts = start + d * DAY + hour * HOUR
        horizon = min(Fraction(within), Fraction(end - ts, DAY))
        assume(rate * (d - first + 1) + rate * horizon != 10_000)
    a = Acct(api_within=f"{within}d")
    fired: list[int] = []
    for d in range(first, 31):
        ts = start + d * DAY + hour * HOUR
        if ts >= end:
            break
        if any(x.rule_id == "api-pace" and x.outcome == "emitted" for x in a.api(ts, rate)):
            fired.append(d)
    want = predicted_counter_day(first, rate, within, hour)
    assert fired[:1] == ([want] if want is not None else [])


@settings(max_examples=80, deadline=None)
@given(
    v0=st.integers(1, 150),
    slope=st.integers(1, 12),
    within=st.integers(1, 60),
    first=st.integers(0, 10),
)
def test_a_steady_gauge_fires_on_the_predicted_day(v0: int, slope: int, within: int, first: int) -> None:
    limit = 200
    for d in range(60):
        assume(v0 + slope * d + slope * within != limit)
    a = Acct(seats_within=f"{within}d")
    fired = []
    for d in range(60):
        if any(
            x.rule_id == "seats-pace" and x.outcome == "emitted"
            for x in a.seats(P0 + (first + d) * DAY + 9 * HOUR, v0 + slope * d)
        ):
            fired.append(d)
    # Brute force: the first day with 7 full days of history, under the limit, whose reading plus
    # the slope over the horizon reaches it.
    want = next(
        (
            d
            for d in range(60)
            if d >= 7 and v0 + slope * d < limit and v0 + slope * d + slope * within >= limit
        ),
        None,
    )
    if want is not None and any(v0 + slope * d >= limit for d in range(want)):
        want = None
    assert fired[:1] == ([want] if want is not None else [])


# ---- the traps -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(burst=st.integers(2000, 9000), rate=st.integers(1, 250))
def test_a_burst_on_the_first_day_does_not_set_the_pace(burst: int, rate: int) -> None:
    """The busiest day is left out of the rate: after a burst, the pace is the steady days'."""
    a = Acct(api_within="7d")
    a.api(P0 + HOUR, burst)
    fired = []
    for d in range(30):
        if any(
            x.rule_id == "api-pace" and x.outcome == "emitted" for x in a.api(P0 + d * DAY + 12 * HOUR, rate)
        ):
            fired.append(d)
    # The steady rate only: the first day d >= 3 with burst + rate*(d+1) + 7 * rate >= 10,000.
    start, end = billing_period(P0, None)
    want = None
    for d in range(30):
        ts = start + d * DAY + 12 * HOUR
        value = burst + rate * (d + 1)
        if value >= 10_000:
            break
        horizon = min(Fraction(7), Fraction(end - ts, DAY))
        if d >= 3 and value + rate * horizon >= 10_000:
            want = d
            break
    assume(
        want is None
        or burst
        + rate * (want + 1)
        + rate * min(Fraction(7), Fraction(end - start - want * DAY - 12 * HOUR, DAY))
        != 10_000
    )
    assert fired[:1] == ([want] if want is not None else [])


def test_the_new_period_starts_a_new_history() -> None:
    a = Acct()
    start, end = billing_period(P0, None)
    for d in range(31):
        a.api(start + d * DAY + 12 * HOUR, 2000)  # fires on day 3 (8,000 + 14,000)
    assert [d.ts for d in a.emitted("api-pace")] == [start + 3 * DAY + 12 * HOUR]
    nxt = end
    for d in range(3):  # a fast start of the next period: not enough of it yet
        a.api(nxt + d * DAY + 12 * HOUR, 2500)
    assert len(a.emitted("api-pace")) == 1
    a.api(nxt + 3 * DAY + 12 * HOUR, 10)
    assert [d.ts for d in a.emitted("api-pace")][1:] == [nxt + 3 * DAY + 12 * HOUR]
    h = history(a.state, "api_calls")
    assert h is not None and h[0] == nxt


def test_a_forecast_says_nothing_once_the_limit_is_reached() -> None:
    a = Acct()
    for d in range(5):
        a.api(P0 + d * DAY, 2600)  # day 3 has 10,400: the 100% rule's, not a forecast's
    assert a.emitted("api-pace") == []
    assert len(a.emitted("api-100")) == 1


def test_a_fall_in_a_gauge_restarts_its_trend() -> None:
    a = Acct(seats_within="30d")
    for d in range(6):
        a.seats(P0 + d * DAY, 150 + 3 * d)
    a.seats(P0 + 6 * DAY, 100)  # seats removed: the growth before does not project through it
    for d in range(7, 13):
        a.seats(P0 + d * DAY, 100 + 3 * (d - 6))
    assert a.emitted("seats-pace") == []
    a.seats(P0 + 13 * DAY, 121)  # 7 full days since the fall: 121 + 3 x 30 reaches 200
    assert [d.ts for d in a.emitted("seats-pace")] == [P0 + 13 * DAY]


def test_the_trend_and_the_rate_as_defined() -> None:
    assert trend_slope([1, 2, 3, 4]) == 1
    assert trend_slope([5, 5, 5]) == 0
    assert rising_run([3, 4, 2, 2, 5]) == [2, 2, 5]
    assert trailing_rate([9000, 100, 100, 100]) == 100


# ---- one prompt a day with the other rules of the metric -------------------------------------------


def test_the_limit_rule_waits_a_day_after_the_forecast_and_stays_armed() -> None:
    a = Acct()
    for d in range(4):
        a.api(P0 + d * DAY + 12 * HOUR, 2000)
    assert [d.ts for d in a.emitted("api-pace")] == [P0 + 3 * DAY + 12 * HOUR]
    out = a.api(P0 + 3 * DAY + 20 * HOUR, 3000)  # the wall, 8 hours after the forecast's prompt
    assert [(d.rule_id, d.outcome) for d in out] == [("api-100", "superseded")]
    assert a.api(P0 + 3 * DAY + 22 * HOUR, 1) == []  # recorded once per episode
    out = a.api(P0 + 4 * DAY + 13 * HOUR, 1)  # 25 hours after: the day is free, the rule still armed
    assert [(d.rule_id, d.outcome) for d in out] == [("api-100", "emitted")]


def test_a_forecast_waits_a_day_after_the_limit_rule() -> None:
    a = Acct()
    for d in range(4):
        a.api(P0 + d * DAY + 12 * HOUR, 3000)  # the 100% rule fires on day 3 (12,000)
    assert len(a.emitted("api-100")) == 1
    # A top-up: 12,000 of 12,500 at 3,000 a day is a forecast's moment, on the plan change itself.
    out = a.send(P0 + 3 * DAY + 14 * HOUR, type="plan_changed", plan="free", limits={"api_calls": 12_500})
    assert [(d.rule_id, d.outcome) for d in out] == [("api-pace", "superseded")]
    assert "rule api-100 prompted on api_calls" in out[0].reason
    assert a.api(P0 + 3 * DAY + 15 * HOUR, 100) == []  # recorded once
    out = a.api(P0 + 4 * DAY + 13 * HOUR, 10)
    assert ("api-pace", "emitted") in [(d.rule_id, d.outcome) for d in out]


# ---- copy, rule files, state -----------------------------------------------------------------------


def test_days_left_and_projected_in_the_copy() -> None:
    a = Acct()
    for d in range(8):
        a.api(P0 + d * DAY + 12 * HOUR, 700)
    (p,) = a.emitted("api-pace")
    assert p.prompt is not None
    # 5,600 used on the 8th at 700 a day: 4,400 left is 6.3 days; 5,600 + 7 x 700 = 10,500.
    assert p.prompt["title"] == "API calls run out in 7 days, 10,500 by then"
    assert p.prompt["signal"] == "usage_forecast" and p.prompt["value"] == 5600


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("{metric: api_calls, at_least: 5, within: 7d}", "use 'ratio'"),
        ("{metric: api_calls, ratio: 1, within: 12h}", "whole days"),
        ("{metric: seats, ratio: 1, within: 7d, min_history: 20d}", "from 2d to 13d"),
        ("{metric: api_calls, ratio: 1, min_history: 3d}", "'min_history' applies to a forecast"),
    ],
)
def test_rule_files_with_a_wrong_forecast_are_refused(when: str, message: str) -> None:
    text = f"""
version: 1
groups:
  - id: g
    rules:
      - id: r
        when: {when}
        prompt: {{title: t, cta: {{label: x, url: /u}}}}
"""
    with pytest.raises(RulesError) as err:
        compile_sources([("plans.yaml", PLANS), ("rules.yaml", text)])
    assert message in str(err.value)


def test_days_left_in_a_rule_without_a_forecast_is_refused() -> None:
    text = """
version: 1
groups:
  - id: g
    rules:
      - id: r
        when: {metric: seats, ratio: 0.8}
        prompt: {title: "full in {days_left} days", cta: {label: x, url: /u}}
"""
    with pytest.raises(RulesError) as err:
        compile_sources([("plans.yaml", PLANS), ("rules.yaml", text)])
    assert "{days_left} is a forecast's" in str(err.value)


def _released_bytes(st: AccountState) -> bytes:
    """What the layout without the forecast history encodes a state to: every field but `pace` (and the
    distinct counts, growth history, lead bookkeeping and readiness score after it, which these accounts do not use
    either), with erased_at left out while 0 and the two trait fields while the account has no traits."""
    names = [
        f
        for f in AccountState.__struct_fields__
        if f not in ("pace", "distinct", "history", "leads", "score")
    ]
    released = msgspec.defstruct(
        "Released",
        [(n, object, getattr(AccountState(), n)) for n in names],
        array_like=True,
        tag=STATE_VERSION,
    )
    data = msgspec.msgpack.encode(released(**{n: getattr(st, n) for n in names}))
    drop = 0 if st.erased_at else 3 if st.traits is None else 1
    return b"\xdc" + (len(names) + 1 - drop).to_bytes(2, "big") + data[3 : len(data) - drop]


def test_accounts_without_a_forecast_keep_their_bytes() -> None:
    """A simulated month on the shipped rules (no forecast): every account's bytes are the released
    layout's; with traits too; and a state with history round-trips."""
    from upsell_triggers.engine.ruleset import load_ruleset
    from upsell_triggers.simulate import Simulator

    from .helpers import SHIPPED_RULES

    engine = Engine(load_ruleset(SHIPPED_RULES))
    states: dict[str, AccountState] = {}
    for raw in Simulator(accounts=40, seed=3).events(limit=6000):
        ev = validate_event(raw)
        assert not isinstance(ev, InvalidEvent)
        engine.process(ev, states.setdefault(ev.account_id, AccountState()))
    for state in states.values():
        assert state.pace is None
        assert encode_state(state) == _released_bytes(state)
        state.traits, state.traits_ts = {"segment": "x"}, 5
        assert encode_state(state) == _released_bytes(state)
        state.erased_at = state.last_seen
        assert encode_state(state) == _released_bytes(state)
    a = Acct()
    for d in range(4):
        a.api(P0 + d * DAY, 100)
        a.seats(P0 + d * DAY, 10 + d)
    assert histories(a.state) == {
        "api_calls": [P0, 0, 100, 100, 100, 100],
        "seats": [P0 // DAY, 10, 11, 12, 13],
    }
    assert decode_state(encode_state(a.state)) == a.state
    assert len(a.state.pace[1]) == 6 * 8, "packed: six doubles"


RELOADED = """
version: 1
groups:
  - id: g
    rules:
      - id: api-90
        when: {metric: api_calls, ratio: 0.9}
        prompt: {title: t, cta: {label: x, url: /u}}
      - id: seats-pace
        when: {metric: seats, ratio: 1.0, within: 30d}
        prompt: {title: t, cta: {label: x, url: /u}}
"""


def test_a_reload_that_drops_a_forecast_drops_its_history_at_the_next_forecast_event() -> None:
    a = Acct()
    for d in range(3):
        a.api(P0 + d * DAY, 100)
        a.seats(P0 + d * DAY, 10)
    assert set(histories(a.state)) == {"api_calls", "seats"}
    a.engine.swap_rules(compile_sources([("plans.yaml", PLANS), ("rules.yaml", RELOADED)]))
    a.api(P0 + 3 * DAY, 100)  # api_calls has no forecast now: nothing recorded for it
    assert histories(a.state)["api_calls"] == [P0, 0, 100, 100, 100]
    a.seats(P0 + 3 * DAY, 11)  # the next event of a metric a forecast reads drops the rest
    assert histories(a.state) == {"seats": [P0 // DAY, 10, 10, 10, 11]}
    no_forecast = RELOADED.replace("ratio: 1.0, within: 30d", "ratio: 0.95")
    a.engine.swap_rules(compile_sources([("plans.yaml", PLANS), ("rules.yaml", no_forecast)]))
    a.seats(P0 + 4 * DAY, 12)  # no forecast left: the history stays as it is, bounded
    assert histories(a.state) == {"seats": [P0 // DAY, 10, 10, 10, 11]}


def test_a_history_stays_within_its_bound_of_packed_doubles() -> None:
    """40 days of both metrics: a gauge keeps 14 samples and its first day, a period counter its
    period start, first day and 8 days; each one bytes object of doubles (120 and 80 bytes)."""
    a = Acct()
    for d in range(40):
        a.api(P0 + d * DAY + HOUR, 10)
        a.seats(P0 + d * DAY + HOUR, 10 + d % 3)
    h = histories(a.state)
    assert len(h["seats"]) == 15 and len(h["api_calls"]) == 10
    assert a.state.pace is not None
    assert [len(b) for b in a.state.pace[1::2]] == [8 * len(h[m]) for m in a.state.pace[::2]]
    assert max(len(b) for b in a.state.pace[1::2]) <= 120


def jobs_rules(kind: str) -> RuleSet:
    """A custom metric `jobs` of the given kind, with a forecast on it (limit 40 on free)."""
    catalog = "version: 1\nplans:\n  - {id: free, limits: {jobs: 40}}\n  - {id: pro, limits: {jobs: 4000}}\n"
    catalog += f"metrics:\n  jobs: {{kind: {kind}}}\n"
    rules_ = """
version: 1
groups:
  - id: g
    rules:
      - id: jobs-pace
        when: {metric: jobs, ratio: 1.0, within: 30d}
        rearm: 0.9
        prompt: {title: "jobs full in {days_left} days", cta: {label: x, url: /u}}
"""
    return compile_sources([("catalog.yaml", catalog), ("rules.yaml", rules_)])


def test_a_reload_that_changes_a_metrics_kind_starts_its_forecast_history_afresh() -> None:
    """A history the metric's other kind wrote (kept from before the reload) is read as none and
    replaced at the next reading, so the new kind's forecast fires on its own history only; the other
    way round, a period counter's history of another period (the gauge's) is replaced too."""
    a = Acct()
    a.engine.swap_rules(jobs_rules("period_counter"))
    for d in range(5):
        a.send(P0 + d * DAY, type="usage", metric="jobs", delta=6)
    assert histories(a.state) == {"jobs": [P0, 0, 6, 6, 6, 6, 6]}
    assert [ts for ts, d in a.decisions] == [P0 + 3 * DAY]  # 6 a day, at 3 days of rate: 180 by day 30
    a.decisions.clear()
    a.engine.swap_rules(jobs_rules("gauge"))
    for d in range(5, 12):  # 15, 16, ..., 21: one a day, 6 full days of trend (7 needed)
        a.send(P0 + d * DAY, type="usage", metric="jobs", value=10 + d)
    assert histories(a.state) == {"jobs": [P0 // DAY + 5, 15, 16, 17, 18, 19, 20, 21]}
    assert a.emitted("jobs-pace") == []
    a.send(P0 + 12 * DAY, type="usage", metric="jobs", value=22)  # 22 + 30 x 1 a day >= 40
    assert [d.prompt["title"] for d in a.emitted("jobs-pace") if d.prompt] == ["jobs full in 18 days"]
    a.engine.swap_rules(jobs_rules("period_counter"))
    a.send(P0 + 13 * DAY, type="usage", metric="jobs", delta=1)
    assert histories(a.state) == {"jobs": [P0, 13, 1]}
