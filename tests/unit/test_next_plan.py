"""RuleSet.next_plan remembers its answers per plan, metric and feature: what it remembers must be what
it works out, for the rule set's own plans, and a plan from elsewhere is worked out afresh."""

from __future__ import annotations

import dataclasses

from upsell_triggers.engine import ruleindex
from upsell_triggers.engine.ruleset import load_ruleset

from .helpers import SHIPPED_RULES


def test_remembered_answers_are_the_worked_out_ones() -> None:
    rs = load_ruleset(SHIPPED_RULES)
    for _ in range(2):  # asked, then answered from memory
        for plan in rs.plans:
            for rule in rs.rules:
                for feature in (None, "sso", "scim", "audit_log", "nope"):
                    assert rs.next_plan(plan, rule, feature) is rs._next_plan(
                        plan, rule.primary.metric, feature
                    )
    assert rs.next_plans


def test_a_plan_of_another_rule_set_is_worked_out_afresh() -> None:
    rs = load_ruleset(SHIPPED_RULES)
    seats = next(r for r in rs.rules if r.primary.metric == "seats")
    free = rs.plans[0]
    assert rs.next_plan(free, seats, None) is rs.plans[1]
    # Same tier and id, a limit above every limited plan's: only the unlimited plan raises it.
    bigger = dataclasses.replace(free, limits={**free.limits, "seats": 10_000})
    assert rs.next_plan(bigger, seats, None) is rs.plans[-1]
    assert rs.next_plan(free, seats, None) is rs.plans[1]


def test_memory_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(ruleindex, "NEXT_PLANS", 8)
    rs = load_ruleset(SHIPPED_RULES)
    paywall = next(r for r in rs.rules if r.primary.metric == "paywall_hits")
    for i in range(100):
        assert rs.next_plan(rs.plans[0], paywall, f"feature-{i}") is None
        assert len(rs.next_plans) <= 8
