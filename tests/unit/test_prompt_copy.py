"""build_prompt renders only the placeholders a rule's copy uses and formats the expiry from the creation
time: its prompts must be exactly those of the straightforward way (every placeholder rendered, both
timestamps formatted), on the shipped rules and on any copy the rule language allows."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine.prompts import (
    SCHEMA_VERSION,
    _percent,
    build_prompt,
    human,
    json_number,
    prompt_id,
)
from upsell_triggers.engine.rulecompiler import PLACEHOLDERS
from upsell_triggers.engine.rulemodel import Policy
from upsell_triggers.engine.ruleset import Plan, Rule, RuleSet, load_ruleset
from upsell_triggers.engine.timeutil import DAY, HOUR, format_duration, to_iso

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from prompt_bench import cases  # noqa: E402

RULES = load_ruleset(ROOT / "rules")


class _Copy(dict[str, str]):
    """The reference's copy values: a placeholder left unfilled renders empty."""

    def __missing__(self, key: str) -> str:
        return ""


def render(template: str, values: dict[str, str]) -> str:
    return template.format_map(values if type(values) is _Copy else _Copy(values))


def reference_prompt(
    *,
    rs: RuleSet,
    rule: Rule,
    account_id: str,
    user_id: str | None,
    feature: str | None,
    value: float,
    limit: float | None,
    plan: Plan,
    target: Plan,
    trigger_event_id: str,
    ts: int,
) -> dict[str, Any]:
    """The straightforward way: every placeholder rendered, both timestamps formatted."""
    metric = rule.primary.metric
    unit = rs.metrics[metric].unit
    ratio = value / limit if limit else None
    values = _Copy(
        account_id=account_id,
        metric=metric,
        feature=feature or "",
        value=human(value, unit),
        limit=human(limit, unit),
        percent=_percent(ratio),
        remaining=human(max(limit - value, 0), unit) if limit is not None else "",
        count=human(value, "count"),
        window=format_duration(rule.primary.window_ms) if rule.primary.window_ms else "",
        plan=plan.id,
        plan_name=plan.name,
        target_plan=target.id,
        target_plan_name=target.name,
        threshold=f"{rule.threshold:g}",
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "prompt_id": prompt_id(account_id, rule.id, feature, trigger_event_id),
        "account_id": account_id,
        "user_id": user_id,
        "rule_id": rule.id,
        "signal": rule.signal,
        "metric": metric,
        "feature": feature,
        "value": json_number(value),
        "limit": json_number(limit) if limit is not None else None,
        "ratio": round(ratio, 4) if ratio is not None else None,
        "plan": plan.id,
        "target_plan": target.id,
        "placement": rule.placement,
        "priority": rule.priority,
        "title": render(rule.title, values),
        "body": render(rule.body, values),
        "cta": {"label": render(rule.cta_label, values), "url": render(rule.cta_url, values)},
        "trigger_event_id": trigger_event_id,
        "created_at": to_iso(ts),
        "expires_at": to_iso(ts + rs.policy.expiry_ms),
    }


def test_shipped_rules_prompts_are_byte_identical() -> None:
    for c in cases(RULES, 5000):
        assert orjson.dumps(build_prompt(**c)) == orjson.dumps(reference_prompt(**c))


# Copy as the rule language allows it: literal text (with escaped braces) and any known placeholder.
pieces = st.one_of(
    st.sampled_from(sorted(PLACEHOLDERS)).map(lambda n: "{" + n + "}"),
    st.text(alphabet="ab {}%/?=&", max_size=6).map(lambda t: t.replace("{", "{{").replace("}", "}}")),
)
templates = st.lists(pieces, max_size=5).map("".join)


@settings(max_examples=400, deadline=None)
@given(
    st.tuples(templates, templates, templates, templates),
    st.integers(min_value=0, max_value=len(RULES.rules) - 1),
    st.sampled_from([7 * DAY, 0, HOUR, DAY + 1, 30 * DAY]),
    st.integers(min_value=946_684_800_000, max_value=7_258_118_400_000 - 31 * DAY),
    st.integers(min_value=0, max_value=200),
)
def test_any_copy_renders_as_the_straightforward_way(
    copy: tuple[str, str, str, str], rule_index: int, expiry_ms: int, ts: int, case: int
) -> None:
    title, body, label, url = copy
    rule = dataclasses.replace(RULES.rules[rule_index], title=title, body=body, cta_label=label, cta_url=url)
    policy: Policy = dataclasses.replace(RULES.policy, expiry_ms=expiry_ms)
    rs = dataclasses.replace(RULES, policy=policy)
    c = {**cases(RULES, 201)[case], "rs": rs, "rule": rule, "ts": ts}
    assert build_prompt(**c) == reference_prompt(**c)


def test_a_rule_reloaded_with_new_copy_renders_the_new_copy() -> None:
    c = cases(RULES, 1)[0]
    first = build_prompt(**c)
    changed = dataclasses.replace(c["rule"], title="Now {plan_name}", body="static {{x}}")
    second = build_prompt(**{**c, "rule": changed})
    assert first["title"] != second["title"] and second == reference_prompt(**{**c, "rule": changed})
    assert second["body"] == "static {x}"
