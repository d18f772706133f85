"""Copy variants: stable weighted assignment that moves as few accounts as a weight change must, the
variant on the prompt with its copy, metrics per rule x variant, the holdout apart, pinning in rule tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from upsell_triggers.engine.engine import Engine
from upsell_triggers.engine.prompts import choose_variant
from upsell_triggers.engine.rulemodel import Rule, Variant
from upsell_triggers.engine.ruleset import RulesError, compile_sources
from upsell_triggers.processor import Processor
from upsell_triggers.rulestest import run_test_files

from .helpers import DAY, HOUR, RULES, T0, Account

ACCOUNTS = [f"acct-{i}" for i in range(20_000)]

VARIANT_RULES = """\
version: 1
groups:
  - id: seats
    defaults: {audience: [free, team, business], target_plan: next}
    rules:
      - id: seats-80
        when: {metric: seats, ratio: 0.8}
        rearm: 0.7
        prompt:
          title: "You're using {value} of {limit} seats"
          cta: {label: "Upgrade to {target_plan_name}", url: "/billing/upgrade?plan={target_plan}"}
        variants:
          - {id: control, weight: 1}
          - id: urgent
            weight: 3
            prompt:
              title: "Only {remaining} seats left"
              body: "Teams that grow past {limit} seats move to {target_plan_name}."
              cta: {label: "See {target_plan_name}", url: "/billing/upgrade?plan={target_plan}&v=urgent"}
"""


def ruleset(extra: str = VARIANT_RULES, policy: str | None = None):
    sources = [
        (str(p), p.read_text())
        for p in sorted(RULES.glob("*.yaml"))
        if p.name in ("plans.yaml", "policy.yaml")
    ]
    if policy is not None:
        sources = [s for s in sources if not s[0].endswith("policy.yaml")] + [("policy.yaml", policy)]
    return compile_sources([*sources, ("variants.yaml", extra)])


def rule_with(*variants: tuple[str, float], salt: str = "") -> Rule:
    base = ruleset().variant_rules["seats-80"]
    return replace(
        base, variants=tuple(Variant(v, w, "t", "b", "l", "u") for v, w in variants), variant_salt=salt
    )


def assign(rule: Rule) -> dict[str, str]:
    return {a: choose_variant(a, rule).id for a in ACCOUNTS}


def test_assignment_follows_the_weights_and_is_stable() -> None:
    rule = rule_with(("a", 1), ("b", 3))
    first = assign(rule)
    share = Counter(first.values())["b"] / len(ACCOUNTS)
    # Binomial(20000, 0.75): sd 0.31 pp; 4 sd either way.
    assert abs(share - 0.75) < 0.0123
    assert assign(rule) == first  # the same account, the same variant, every time
    assert assign(rule_with(("a", 1), ("b", 3), salt="v2")) != first  # a new salt reshuffles
    # The hash includes the rule: another rule with the same variants splits accounts differently.
    other = replace(rule, id="seats-100")
    assert sum(first[a] != choose_variant(a, other).id for a in ACCOUNTS) > len(ACCOUNTS) // 10


def test_weight_changes_move_only_the_accounts_they_must() -> None:
    before = assign(rule_with(("a", 1), ("b", 1), ("c", 1)))
    raised = assign(rule_with(("a", 1), ("b", 2), ("c", 1)))
    moved = [(before[x], raised[x]) for x in ACCOUNTS if before[x] != raised[x]]
    assert moved and all(new == "b" for _, new in moved)  # only into the raised variant
    # ... about as many as the new shares require: b goes from 1/3 to 1/2 of the accounts.
    assert abs(len(moved) / len(ACCOUNTS) - (1 / 2 - 1 / 3)) < 0.015
    lowered = assign(rule_with(("a", 1), ("b", 0.5), ("c", 1)))
    assert all(before[x] == "b" for x in ACCOUNTS if before[x] != lowered[x])  # only b's accounts leave
    added = assign(rule_with(("a", 1), ("b", 1), ("c", 1), ("d", 1)))
    assert all(added[x] == "d" for x in ACCOUNTS if before[x] != added[x])  # only into the new one
    removed = assign(rule_with(("a", 1), ("c", 1)))
    assert all(before[x] == "b" for x in ACCOUNTS if before[x] != removed[x])  # only b's accounts move


def test_prompt_carries_its_variant_and_copy_and_metrics_count_per_variant() -> None:
    rs = ruleset()
    proc = Processor(rs)
    seen: dict[str, dict[str, object]] = {}
    for i in range(200):
        acct = f"acct-{i}"
        base = f'"account_id":"{acct}","type":"usage","metric":"seats"'
        proc.handle(f'{{"event_id":"{acct}-1",{base},"value":1,"ts":{T0}}}'.encode())
        res = proc.handle(f'{{"event_id":"{acct}-2",{base},"value":4,"ts":{T0 + HOUR}}}'.encode())
        (d,) = res.decisions
        assert (
            d.prompt is not None
            and d.prompt["variant"] == d.variant == choose_variant(acct, rs.variant_rules["seats-80"]).id
        )
        seen[d.variant] = d.prompt
        pid = d.prompt["prompt_id"]
        fb = proc.handle(
            f'{{"event_id":"{acct}-3","account_id":"{acct}","type":"prompt_clicked","prompt_id":"{pid}","ts":{T0 + 2 * HOUR}}}'.encode()
        )
        assert fb.decisions[0].variant == d.variant
        up = proc.handle(
            f'{{"event_id":"{acct}-4","account_id":"{acct}","type":"plan_changed","plan":"team","ts":{T0 + DAY}}}'.encode()
        )
        (conv,) = [x for x in up.decisions if x.outcome == "conversion"]
        assert (conv.group, conv.variant) == ("treatment", d.variant)
    assert seen["control"]["title"] == "You're using 4 of 5 seats"
    assert seen["urgent"]["title"] == "Only 1 seats left" and seen["urgent"]["cta"]["url"].endswith(
        "&v=urgent"
    )
    prompts = proc.metrics.prompts.values
    n_urgent = prompts[("seats-80", "urgent", "banner")]
    assert n_urgent + prompts[("seats-80", "control", "banner")] == 200 and 120 < n_urgent < 180
    assert proc.metrics.conversions.values[("seats-80", "urgent", "treatment")] == n_urgent
    assert proc.metrics.feedback.values[("seats-80", "urgent", "clicked")] == n_urgent


def test_rules_without_variants_emit_prompts_without_the_field() -> None:
    (d,) = Account().send(0, type="usage", metric="seats", value=4)  # the shipped rules: no variants
    assert d.prompt is not None and "variant" not in d.prompt and d.variant is None


def test_the_holdout_stays_separate() -> None:
    policy = "version: 1\npolicy: {holdout: {fraction: 0.5}}\n"
    rs = ruleset(policy=policy)
    engine = Engine(rs)
    outcomes = Counter()
    for i in range(400):
        acct = Account(rs, f"acct-{i}")
        acct.engine = engine
        acct.send(0, type="usage", metric="seats", value=1)
        (d,) = acct.send(HOUR, type="usage", metric="seats", value=4)
        outcomes[(d.outcome, d.variant)] += 1
        if d.outcome == "holdout":
            assert d.prompt is None and d.variant is None  # held out of the rule, not of a variant
    assert {o for o, _ in outcomes} == {"emitted", "holdout"}
    assert outcomes[("emitted", "control")] and outcomes[("emitted", "urgent")]


def test_variant_mistakes_are_rule_file_errors() -> None:
    dup = VARIANT_RULES.replace("{id: control, weight: 1}", "{id: urgent, weight: 1}")
    with pytest.raises(
        RulesError,
        match=r"variants.yaml:\d+: error: rule seats-80: variants\[1\]: duplicate variant id 'urgent'",
    ):
        ruleset(dup)
    bad = VARIANT_RULES.replace("Only {remaining} seats left", "Only {seats_left} left")
    with pytest.raises(RulesError, match=r"variants\[1\]\.prompt\.title: unknown placeholder \{seats_left\}"):
        ruleset(bad)
    one = VARIANT_RULES.split("          - id: urgent")[0]
    with pytest.raises(RulesError, match="variants"):
        ruleset(one)
    zero = VARIANT_RULES.replace("weight: 3", "weight: 0")
    with pytest.raises(RulesError, match="weight"):
        ruleset(zero)


def test_rule_tests_pin_a_variant(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("plans.yaml", "policy.yaml"):
        (rules / name).write_text((RULES / name).read_text())
    (rules / "variants.yaml").write_text(VARIANT_RULES)
    tests = rules / "tests"
    tests.mkdir()
    case = """\
rules: ..
tests:
  - name: the urgent copy
    variants: {seats-80: urgent}
    events:
      - {at: 0s, type: usage, metric: seats, value: 4}
    expect_prompts:
      - {rule_id: seats-80, variant: urgent, title: "Only 1 seats left"}
  - name: the control copy
    variants: {seats-80: control}
    events:
      - {at: 0s, type: usage, metric: seats, value: 4}
    expect_prompts:
      - {rule_id: seats-80, variant: control, title: "You're using 4 of 5 seats"}
"""
    (tests / "v.test.yaml").write_text(case)
    out = tmp_path / "out.txt"
    with out.open("w") as f:
        assert run_test_files([str(tests / "v.test.yaml")], None, f) == 0
    (tests / "bad.test.yaml").write_text(case.replace("{seats-80: control}", "{seats-80: calm}"))
    with out.open("w") as f:
        assert run_test_files([str(tests / "bad.test.yaml")], None, f) == 1
    assert "rule 'seats-80' has no variant 'calm' (its variants: control, urgent)" in out.read_text()
