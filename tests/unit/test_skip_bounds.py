"""The engine's shortcut for readings below every threshold (RuleSet.skip_below) decides exactly what
evaluating every rule group decides: same outcomes, same prompts, same state bytes, event by event."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine.engine import Engine
from upsell_triggers.engine.events import InvalidEvent, validate_event
from upsell_triggers.engine.ruleset import RuleSet, compile_sources
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import encode_state

from .helpers import DAY, HOUR, RULES, T0, Account, fixture_rules

# Plans and rules the fixture files do not have: a count threshold on a gauge, a limit of 0, an
# unlimited custom metric, a period counter, and a rule whose second condition reads seats (so seats'
# groups include one whose level is another metric's).
_PLANS = """
version: 1
plans:
  - {id: free, name: Free, limits: {seats: 5, storage_bytes: 2GiB, api_calls: 10000, widgets: 0, credits: 100}}
  - {id: team, name: Team, limits: {seats: 25, storage_bytes: 100GiB, api_calls: 1000000, widgets: 10, credits: unlimited}}
  - {id: business, name: Business, limits: {seats: 200, storage_bytes: 1TiB, api_calls: 10000000, widgets: 40, credits: 1000}, features: [sso]}
"""
_EXTRA = """
version: 1
metrics:
  widgets: {kind: gauge}
  credits: {kind: period_counter}
groups:
  - id: extra
    rules:
      - id: widgets-3
        when: {metric: widgets, at_least: 3}
        prompt: {title: 'w {value}', cta: {label: l, url: u}}
      - id: widgets-half
        when: {metric: widgets, ratio: 0.5}
        prompt: {title: 'w {percent}', cta: {label: l, url: u}}
      - id: credits-90-with-seats
        when:
          all:
            - {metric: credits, ratio: 0.9}
            - {metric: seats, at_least: 2}
        prompt: {title: 'c {value} of {limit}', cta: {label: l, url: u}}
"""


def _extended() -> RuleSet:
    sources = [(p.name, p.read_text()) for p in sorted(RULES.glob("*.yaml")) if p.name != "plans.yaml"]
    return compile_sources([*sources, ("plans.yaml", _PLANS), ("extra.yaml", _EXTRA)])


def _without_shortcut(rs: RuleSet) -> RuleSet:
    off = dataclasses.replace(rs)
    object.__setattr__(off, "skip_below", {})
    return off


_ops = st.one_of(
    st.tuples(st.just("seats"), st.sampled_from([0, 1, 2, 3, 3.9999999999, 4, 4.0000001, 5, 6, 20, 21])),
    st.tuples(st.just("storage_bytes"), st.integers(0, 3 * 2**30)),
    st.tuples(st.just("api_calls"), st.sampled_from([0, 1, 999, 3000, 7999, 8000, 9000.5])),
    st.tuples(st.just("widgets"), st.sampled_from([0, 1, 2, 2.999, 3, 5, 20, 21])),
    st.tuples(st.just("credits"), st.sampled_from([0, 1, 30, 89, 89.99999999, 90])),
    st.tuples(st.just("paywall"), st.sampled_from(["sso", "scim"])),
    st.tuples(st.just("plan"), st.sampled_from(["free", "team", "business", "unknown-to-the-rules"])),
    st.tuples(st.just("limits"), st.sampled_from([{"seats": 2}, {"widgets": 4}, {"credits": 50}])),
)


def _event(i: int, t: int, kind: str, v: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"event_id": f"e{i}", "account_id": "acme", "ts": t}
    if kind == "paywall":
        return {**base, "type": "paywall_hit", "feature": v}
    if kind == "plan":
        return {**base, "type": "plan_changed", "plan": v}
    if kind == "limits":
        return {**base, "type": "plan_changed", "plan": "team", "limits": v}
    if kind in ("api_calls", "credits"):
        return {**base, "type": "usage", "metric": kind, "delta": v}
    return {**base, "type": "usage", "metric": kind, "value": v}


def _same_decisions_event_by_event(rs: RuleSet, ops: list[tuple[str, Any]], gaps: list[int]) -> None:
    fast, full = Engine(rs), Engine(_without_shortcut(rs))
    a, b = AccountState(), AccountState()
    t = T0
    for i, ((kind, v), gap) in enumerate(zip(ops, gaps, strict=False)):
        t += gap
        ev = validate_event(_event(i, t, kind, v))
        assert not isinstance(ev, InvalidEvent), ev
        x, y = fast.process(ev, a), full.process(ev, b)
        assert (x.status, x.invalid) == (y.status, y.invalid), (i, kind, v)
        assert [(d.explain(), d.prompt) for d in x.decisions] == [
            (d.explain(), d.prompt) for d in y.decisions
        ]
        assert encode_state(a) == encode_state(b), (i, kind, v)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_ops, min_size=1, max_size=100), st.lists(st.integers(0, 3 * DAY), min_size=100, max_size=100)
)
def test_shortcut_decides_as_full_evaluation_extended_rules(ops, gaps):
    _same_decisions_event_by_event(_extended(), ops, gaps)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_ops.filter(lambda op: op[0] not in ("widgets", "credits", "limits")), min_size=1, max_size=100),
    st.lists(st.integers(0, 3 * DAY), min_size=100, max_size=100),
)
def test_shortcut_decides_as_full_evaluation_fixture_rules(ops, gaps):
    _same_decisions_event_by_event(fixture_rules(), ops, gaps)


def test_bounds_per_plan_and_metric():
    """What the shortcut may skip: ratio rules below min threshold x limit (by a margin), count rules
    below their threshold, nothing for a limit of 0 or for a metric another rule's level depends on."""
    plain = fixture_rules().skip_below
    assert 4 * (1 - 1e-8) < plain["free"]["seats"] < 4  # seats-80 on 5 seats, less the rounding margin
    assert plain["free"]["api_calls"] < 8000 and plain["enterprise"]["api_calls"] == float("inf")
    rs = _extended()
    free, team = rs.skip_below["free"], rs.skip_below["team"]
    assert rs.skip_below[None] is free  # the default plan, as an account that never changed plan says it
    assert free["widgets"] == float("-inf")  # a limit of 0: a ratio rule fires on any positive reading
    assert team["widgets"] == 3  # widgets-3 (count) is lower than half of 10
    assert team["credits"] == float("inf")  # unlimited: no ratio rule can fire
    # credits-90-with-seats reads seats as its second condition: seats' events evaluate it in full.
    assert free["seats"] == team["seats"] == float("-inf")
    assert "unknown-to-the-rules" not in rs.skip_below  # such an account is evaluated in full


@pytest.mark.interpreted  # replaces an Engine method: compiled code calls it directly (conftest.py)
def test_a_reading_below_every_threshold_is_not_evaluated_and_the_threshold_still_fires():
    """The margin keeps the boundary exact: 4 of 5 seats is 0.8 and fires seats-80."""
    a = Account()
    evaluate = a.engine._evaluate

    def must_not_run(*args: Any) -> Any:
        raise AssertionError("evaluated a reading below every threshold")

    a.engine._evaluate = must_not_run  # type: ignore[method-assign]
    assert a.seats(0, 3.99) == []
    assert a.send(0, type="usage", metric="api_calls", delta=7999) == []
    assert a.state.rules is None
    a.engine._evaluate = evaluate  # type: ignore[method-assign]
    assert a.seats(HOUR, 3.9999999999) == []  # within the margin: evaluated, and below 0.8
    assert [(d.rule_id, d.outcome) for d in a.seats(DAY, 4)] == [("seats-80", "emitted")]


def test_a_reading_a_second_condition_needs_is_evaluated_though_below_its_own_rules():
    """3 seats are below seats-80 on Free, but they complete credits-90-with-seats (credits ≥ 90% and
    seats ≥ 2): the seats event must fire it."""
    a = Account(_extended())
    assert a.send(0, type="usage", metric="credits", delta=95) == []  # 95% of 100, but seats unknown
    ds = a.seats(HOUR, 3)
    assert [(d.rule_id, d.outcome) for d in ds] == [("credits-90-with-seats", "emitted")]
