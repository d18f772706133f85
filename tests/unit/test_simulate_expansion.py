"""The simulator's expansion mode: the shapes the example rules read are in its events (people and
teams, API requests, a ramp, the forecast traps), and a replay of them through rules/examples/expansion
and rules/examples/pace shows the traps doing what they are there for: a forecast stays quiet."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from upsell_triggers.engine.engine import Engine
from upsell_triggers.engine.events import InvalidEvent, validate_event
from upsell_triggers.engine.ruleset import RuleSet, compile_sources
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.timeutil import DAY, HOUR, billing_period
from upsell_triggers.simulate import PLANS, START_MS, Simulator

EXAMPLES = Path(__file__).resolve().parents[2] / "rules" / "examples"
DAYS = 36  # the whole first billing period (November) and the start of the next


@cache
def examples() -> RuleSet:
    files = [*sorted((EXAMPLES / "expansion").glob("*.yaml")), EXAMPLES / "pace" / "pace.yaml"]
    return compile_sources([(str(p), p.read_text()) for p in files])


@cache
def simulated() -> tuple[Simulator, list[dict[str, Any]]]:
    sim = Simulator(accounts=60, seed=11, expansion=True, metrics=examples().metrics)
    events = [ev for _ in range(DAYS * DAY // HOUR) for ev in sim.round()]
    return sim, events


@cache
def emitted() -> dict[str, list[tuple[str, int]]]:
    """account -> (rule id, event time) of every prompt of a replay of the simulated events."""
    engine = Engine(examples())
    states: dict[str, AccountState] = {}
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for raw in simulated()[1]:
        ev = validate_event(raw)
        assert not isinstance(ev, InvalidEvent), ev
        outcome = engine.process(ev, states.setdefault(ev.account_id, AccountState()))
        assert outcome.invalid is None, outcome.invalid
        for d in outcome.decisions:
            if d.outcome == "emitted":
                out[d.account_id].append((d.rule_id, d.ts))
    return out


def shape_of(sim: Simulator) -> dict[str, str]:
    return {a["id"]: a["shape"] for a in sim.accounts}


def test_every_shape_is_in_the_workload() -> None:
    sim, events = simulated()
    shapes = shape_of(sim)
    assert set(shapes.values()) == {"", "burst", "month_end", "cleanup", "topup", "ramp"}
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        by[ev["account_id"]].append(ev)
    teams = {a: {e["attributes"]["team_id"] for e in evs} for a, evs in by.items()}
    assert max(len(t) for t in teams.values()) >= 3, "some account has three teams or more"
    for acct, shape in shapes.items():
        usage = [e for e in by[acct] if e["type"] == "usage"]
        assert any(e["metric"] == "api_requests" for e in usage)
        if shape == "burst":  # the import: half the quota or more on the period's first day
            plan = next(e["plan"] for e in by[acct] if e["type"] == "plan_changed")
            quota = next(p[3] for p in PLANS if p[0] == plan)
            first = billing_period(START_MS, None).start
            assert any(e["ts"] < first + DAY and e.get("delta", 0) >= quota / 2 for e in usage)
        if shape == "cleanup":  # seats fall by a third or more at least once
            seats = [e["value"] for e in usage if e["metric"] == "seats"]
            assert any(b <= a * 2 / 3 for a, b in pairwise(seats))
    topups = [
        e["account_id"]
        for e in events
        if e["type"] == "plan_changed" and (e.get("limits") or {}).get("api_calls")
    ]
    assert topups and {shapes[a] for a in topups} == {"topup"}, "top-ups: a per-account api_calls limit"
    for acct in (a for a, s in shapes.items() if s == "ramp"):
        launch = next(a["launch"] for a in sim.accounts if a["id"] == acct)
        reqs = [(e["ts"], e["delta"]) for e in by[acct] if e.get("metric") == "api_requests"]
        before = [d for ts, d in reqs if launch - 7 * DAY <= ts < launch]
        after = [d for ts, d in reqs if launch + HOUR <= ts < launch + 7 * DAY]
        if before and after:  # the requests quadruple from the launch on
            assert min(after) > max(before)


def test_api_requests_are_sent_only_to_a_catalog_that_declares_them() -> None:
    sim = Simulator(accounts=20, expansion=True)
    assert not any(ev.get("metric") == "api_requests" for ev in sim.events(5000))
    default = Simulator(accounts=20)
    assert not any(ev.get("metric") == "api_requests" or "attributes" in ev for ev in default.events(5000))
    assert default.quiet == []


def test_no_forecast_fires_in_a_trap_accounts_quiet_span() -> None:
    """A burst at the start of the period and a month-end rush never get api-calls-pace; a cleanup's
    flat weeks after the fall never get seats-pace. The spans are many, and forecasts do fire elsewhere
    in the same replay, so the check can fail."""
    sim, _ = simulated()
    prompts = emitted()
    rule = {"period_forecast": "api-calls-pace", "gauge_forecast": "seats-pace"}
    assert {kind for _, kind, _, _ in sim.quiet} == set(rule)
    for acct, kind, start, end in sim.quiet:
        inside = [
            ts for r, ts in prompts[acct] if r == rule[kind] and ts >= start and (end is None or ts < end)
        ]
        assert inside == [], (acct, kind, start, end)
    fired = {r for ps in prompts.values() for r, _ in ps}
    assert {"api-calls-pace", "seats-pace"} <= fired


def test_every_example_rule_fires_on_the_simulated_workload() -> None:
    prompts = emitted()
    fired = {r for ps in prompts.values() for r, _ in ps}
    assert {r.id for r in examples().rules} <= fired
