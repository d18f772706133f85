"""Expansion leads (docs/leads.md): channels, their own cap, routing by trait, attribution, the lead
record and its schema, replay and rule tests, metrics, state bytes."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from upsell_triggers import rulestest
from upsell_triggers.engine.engine import Engine
from upsell_triggers.engine.rulemodel import RulesError
from upsell_triggers.engine.ruleset import RuleSet, compile_sources, load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.lead_model import LEAD_SCHEMA_VERSION, LeadEvent
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import Processor
from upsell_triggers.replay import replay

from ..schemacheck import assert_valid_leads
from .helpers import DAY, HOUR, SHIPPED_RULES, T0, Account, outcomes

CATALOG = """
version: 1
traits:
  segment: {type: string, values: [self_serve, high_touch]}
plans:
  - {id: free, limits: {seats: 5}}
  - {id: team, limits: {seats: 25}}
  - {id: business, limits: {seats: 200}}
"""
POLICY = """
version: 1
policy:
  frequency_cap: {max_prompts: 1, per: 24h}
  lead_cap: {max_leads: 1, per: 7d}
  attribution_window: 14d
  holdout: {fraction: HOLDOUT, salt: s}
"""
RULES = """
version: 1
groups:
  - id: seats
    rules:
      - id: seats-80
        when: {metric: seats, ratio: 0.8}
        rearm: 0.7
        cooldown: 1d
        audience: {traits: [{trait: segment, not_in: [high_touch]}]}
        prompt: {title: "{value} of {limit} seats", cta: {label: Upgrade, url: /u}}
      - id: seats-80-lead
        when: {metric: seats, ratio: 0.8}
        rearm: 0.7
        cooldown: 1d
        action: lead
        team: sales
        audience: {traits: [{trait: segment, in: [high_touch]}]}
  - id: storage
    rules:
      - id: storage-both
        when: {metric: storage_bytes, at_least: 100}
        rearm: 50
        cooldown: 1d
        action: [prompt, lead]
        team: customer_success
        target_plan: business
        prompt: {title: "{value} stored", cta: {label: Upgrade, url: /u}}
"""


def ruleset(holdout: float = 0.0, rules: str = RULES) -> RuleSet:
    return compile_sources(
        [
            ("catalog.yaml", CATALOG),
            ("policy.yaml", POLICY.replace("HOLDOUT", str(holdout))),
            ("rules.yaml", rules),
        ]
    )


def account(segment: str | None, holdout: float = 0.0) -> Account:
    a = Account(ruleset(holdout))
    if segment is not None:
        a.send(0, type="account_updated", traits={"segment": segment})
    return a


def test_a_high_touch_account_gets_a_lead_and_a_self_serve_one_a_prompt() -> None:
    ht = account("high_touch")
    ds = ht.seats(HOUR, 4)
    assert outcomes(ds) == [("seats-80", "audience"), ("seats-80-lead", "emitted")]
    lead = ds[1].lead
    assert lead is not None and ds[1].prompt is None and ds[1].team == "sales"
    assert lead["team"] == "sales" and lead["plan"] == "free" and lead["suggested_plan"] == "team"
    assert lead["evidence"] == [
        {
            "metric": "seats",
            "feature": None,
            "value": 4,
            "limit": 5,
            "ratio": 0.8,
            "threshold": 0.8,
            "window": None,
        }
    ]
    assert lead["traits"] == {"segment": "high_touch"}
    assert_valid_leads([lead])
    ss = account("self_serve")
    ds = ss.seats(HOUR, 4)
    assert outcomes(ds) == [("seats-80-lead", "audience"), ("seats-80", "emitted")]
    assert ds[1].prompt is not None and ds[1].lead is None
    unset = account(None)  # no segment: not high-touch, so the prompt
    assert outcomes(unset.seats(HOUR, 4)) == [("seats-80-lead", "audience"), ("seats-80", "emitted")]


def test_lead_ids_and_content_are_deterministic() -> None:
    a, b = account("high_touch"), account("high_touch")
    la, lb = a.seats(HOUR, 4)[1].lead, b.seats(HOUR, 4)[1].lead
    assert la == lb and la is not None and la["lead_id"].startswith("ld_")
    c = account("high_touch")
    c.n += 1  # another triggering event id: another lead id
    assert c.seats(HOUR, 4)[1].lead["lead_id"] != la["lead_id"]  # type: ignore[index]


def test_leads_and_prompts_have_separate_caps() -> None:
    a = account("high_touch")
    # Both channels of storage-both fire; the lead cap (1 per 7d) and the prompt cap (1 per 24h) are apart.
    ds = a.send(HOUR, type="usage", metric="storage_bytes", value=100)
    assert outcomes(ds) == [("storage-both", "emitted")]
    assert ds[0].prompt is not None and ds[0].lead is not None and ds[0].team == "customer_success"
    # The lead cap is used up; the seats lead waits (stays armed), recorded once per episode.
    assert outcomes(a.seats(2 * HOUR, 4)) == [("seats-80", "audience"), ("seats-80-lead", "frequency_cap")]
    assert outcomes(a.seats(3 * HOUR, 4)) == []
    # A self-serve account's prompt cap is not touched by its leads: storage-both's lead and prompt, then a
    # seats prompt a day later (prompt cap 1 per 24h), while the lead cap is still spent.
    s = account("self_serve")
    assert outcomes(s.send(HOUR, type="usage", metric="storage_bytes", value=100)) == [
        ("storage-both", "emitted")
    ]
    assert ("seats-80", "emitted") in outcomes(s.seats(HOUR + DAY, 4))
    # Once the lead cap frees up, the waiting lead is sent on the next event while its condition holds.
    assert outcomes(a.seats(HOUR + 7 * DAY, 4)) == [("seats-80-lead", "emitted")]


def test_a_rule_with_both_channels_sends_the_lead_when_only_the_prompt_is_capped() -> None:
    a = account("self_serve")
    assert outcomes(a.seats(HOUR, 4)) == [("seats-80-lead", "audience"), ("seats-80", "emitted")]
    ds = a.send(2 * HOUR, type="usage", metric="storage_bytes", value=100)  # the prompt cap is spent
    assert outcomes(ds) == [("storage-both", "emitted"), ("storage-both", "frequency_cap")]
    assert ds[0].lead is not None and ds[0].prompt is None and ds[1].channel == "prompt"
    m = Metrics()
    m.record("usage", type("O", (), {"status": "applied", "decisions": ds})())  # type: ignore[arg-type]
    assert m.leads.values == {("storage-both", "customer_success", ""): 1}
    assert m.leads_suppressed.values == {}  # the capped channel is the prompt's


def test_holdout_accounts_get_no_lead() -> None:
    a = account("high_touch", holdout=1.0)
    ds = a.seats(HOUR, 4)
    assert outcomes(ds) == [("seats-80", "audience"), ("seats-80-lead", "holdout")]
    assert ds[1].lead is None and ds[1].team == "sales"


def test_an_upgrade_after_a_lead_is_a_lead_conversion_once() -> None:
    a = account("high_touch")
    a.seats(HOUR, 4)
    ds = a.send(2 * DAY, type="plan_changed", plan="team")
    conv = [d for d in ds if d.outcome == "conversion"]
    assert len(conv) == 1 and conv[0].channel == "lead" and conv[0].rule_id == "seats-80-lead"
    assert conv[0].team == "sales"
    assert not [d for d in a.send(3 * DAY, type="plan_changed", plan="business") if d.outcome == "conversion"]
    late = account("high_touch")
    late.seats(HOUR, 4)
    assert not [d for d in late.send(20 * DAY, type="plan_changed", plan="team") if d.outcome == "conversion"]


def test_metrics_count_leads_suppressions_and_conversions_per_rule_team_band() -> None:
    p = Processor(ruleset())
    lines = [
        {"type": "account_updated", "traits": {"segment": "high_touch"}, "ts": T0},
        {"type": "usage", "metric": "seats", "value": 4, "ts": T0 + HOUR},
        {"type": "usage", "metric": "seats", "value": 3, "ts": T0 + 2 * HOUR},
        {"type": "usage", "metric": "seats", "value": 4, "ts": T0 + 3 * HOUR},  # cooldown
        {"type": "plan_changed", "plan": "team", "ts": T0 + DAY},
    ]
    for i, ev in enumerate(lines):
        p.handle(orjson.dumps({"event_id": f"e{i}", "account_id": "acme", **ev}))
    m = p.metrics
    assert m.leads.values == {("seats-80-lead", "sales", ""): 1}
    assert m.leads_suppressed.values == {("seats-80-lead", "sales", "cooldown"): 1}
    assert m.lead_conversions.values == {("seats-80-lead", "sales", ""): 1}
    assert ("seats-80-lead", "emitted") in m.decisions.values
    assert all("acme" not in k for t in (m.leads, m.leads_suppressed, m.lead_conversions) for k in t.values)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("action: lead", "action: lead needs 'team'"),
        ("action: [lead, lead]\n        team: sales", "lists a channel twice"),
        ("action: letter", "action"),
    ],
)
def test_bad_channels_are_rejected_with_their_rule(fields: str, message: str) -> None:
    rules = f"""
version: 1
groups:
  - id: g
    rules:
      - id: r1
        when: {{metric: seats, ratio: 0.8}}
        {fields}
"""
    with pytest.raises(RulesError) as err:
        ruleset(rules=rules)
    assert message in str(err.value) and "r1" in str(err.value), str(err.value)


def test_a_lead_rule_needs_no_copy_and_a_prompt_rule_does() -> None:
    base = "version: 1\ngroups:\n  - id: g\n    rules:\n      - id: r1\n        when: {metric: seats, ratio: 0.8}\n"
    rs = ruleset(rules=base + "        action: lead\n        team: sales\n")
    assert rs.rules[0].leads and not rs.rules[0].prompts and rs.rules[0].team == "sales"
    with pytest.raises(RulesError, match="no prompt copy"):
        ruleset(rules=base + "        action: [prompt, lead]\n        team: sales\n")
    warned = ruleset(
        rules=base + "        team: sales\n        prompt: {title: t, cta: {label: l, url: /u}}\n"
    )
    assert any("sends no lead" in str(w) for w in warned.warnings)


def test_state_bytes_of_an_account_without_leads_are_unchanged() -> None:
    a = account(None)
    a.seats(HOUR, 4)
    plain = encode_state(a.state)
    assert plain[:3] == b"\xdc\x00\x10"  # the tag and the 15 fields of a state without traits or leads
    assert decode_state(plain) == a.state
    t = account("self_serve")
    t.seats(HOUR, 4)
    with_traits = encode_state(t.state)
    assert with_traits[:3] == b"\xdc\x00\x12" and decode_state(with_traits) == t.state
    h = account("high_touch")
    h.seats(HOUR, 4)
    data = encode_state(h.state)
    # every field but the readiness score (the rule set has no scoring), and the tag
    all_but_score = b"\xdc" + len(AccountState.__struct_fields__).to_bytes(2, "big")
    assert data[:3] == all_but_score and decode_state(data) == h.state
    assert h.state.leads is not None and h.state.leads.sent == (T0 + HOUR,)


def test_replay_writes_leads_to_their_own_file_and_summarises_them(tmp_path: Path) -> None:
    events = [
        {"type": "account_updated", "account_id": "a1", "traits": {"segment": "high_touch"}, "ts": T0},
        {"type": "usage", "account_id": "a1", "metric": "seats", "value": 4, "ts": T0 + HOUR},
        {"type": "usage", "account_id": "a2", "metric": "seats", "value": 4, "ts": T0 + HOUR},
    ]
    src = io.BytesIO(b"".join(orjson.dumps({"event_id": f"e{i}", **e}) + b"\n" for i, e in enumerate(events)))
    out, leads, err = io.BytesIO(), io.BytesIO(), io.StringIO()
    summary = replay(load_ruleset(SHIPPED_RULES), src, out, err, leads=leads)
    prompts = [orjson.loads(x) for x in out.getvalue().splitlines()]
    written = [orjson.loads(x) for x in leads.getvalue().splitlines()]
    assert [p["account_id"] for p in prompts] == ["a2"] and [x["account_id"] for x in written] == ["a1"]
    assert_valid_leads(written)
    head, rows = summary.rows()[0], {r[0]: r for r in summary.rows()[1:]}
    assert rows["seats-80-lead"][head.index("leads")] == "1" and rows["seats-80"][head.index("leads")] == "0"
    assert "seats-80-lead (sales): - 1" in summary.table()
    src.seek(0)
    counted = replay(load_ruleset(SHIPPED_RULES), src, io.BytesIO(), io.StringIO())
    assert "replay --leads FILE writes them" in counted.table()


def test_rule_tests_check_expected_leads() -> None:
    rs = load_ruleset(SHIPPED_RULES)
    events = [
        {"at": "0s", "type": "account_updated", "traits": {"segment": "high_touch"}},
        {"at": "1h", "type": "usage", "metric": "seats", "value": 4},
    ]
    ok = rulestest.TestCase(
        name="t", events=events, expect_leads=[{"rule_id": "seats-80-lead", "team": "sales"}]
    )
    assert rulestest.run_case(rs, ok) == []
    wrong = rulestest.TestCase(
        name="t", events=events, expect_leads=[{"rule_id": "seats-80-lead", "team": "support"}]
    )
    assert "lead 0 (seats-80-lead): team: expected 'support', got 'sales'" in rulestest.run_case(rs, wrong)
    none = rulestest.TestCase(name="t", events=events, expect_leads=[])
    assert rulestest.run_case(rs, none)[0] == "expected 0 lead(s), got 1: ['seats-80-lead']"


def test_lead_model_agrees_with_the_engine() -> None:
    from upsell_triggers.engine import leads

    assert LEAD_SCHEMA_VERSION == leads.LEAD_SCHEMA_VERSION
    a = account("high_touch")
    lead = a.seats(HOUR, 4)[1].lead
    assert set(lead or {}) == set(LeadEvent.model_fields)


@pytest.mark.interpreted  # replaces an Engine method: compiled code calls it directly (conftest.py)
def test_a_rule_set_without_lead_rules_never_calls_the_lead_path() -> None:
    rs = compile_sources(
        [("catalog.yaml", CATALOG), ("rules.yaml", RULES.split("      - id: seats-80-lead")[0])]
    )
    assert not any(r.leads for r in rs.rules)
    e = Engine(rs)
    e._leads = None  # type: ignore[assignment,method-assign]  # would raise if called
    a = Account(rs)
    a.engine = e
    assert outcomes(a.seats(HOUR, 4)) == [("seats-80", "emitted")]
