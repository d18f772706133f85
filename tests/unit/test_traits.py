"""Account traits (account_updated, the trait catalog, trait conditions, audience) and the policy's
eligibility gate: validation, decisions, state bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from upsell_triggers.engine.engine import Engine
from upsell_triggers.engine.events import InvalidEvent, decode_event, validate_event
from upsell_triggers.engine.rulemodel import RulesError
from upsell_triggers.engine.ruleset import compile_sources, load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.replay import Summary

from .helpers import DAY, HOUR, T0, Account, fixture_rules, outcomes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "rules" / "examples"


def example() -> Account:
    return Account(load_ruleset(EXAMPLE))


def update(acct: Account, at: int, **traits: object) -> str:
    """Sends account_updated; the outcome's status (or the dead-letter reason)."""
    acct.n += 1
    ev = validate_event(
        {
            "type": "account_updated",
            "event_id": f"e{acct.n}",
            "account_id": acct.account,
            "ts": T0 + at,
            "traits": traits,
        }
    )
    assert not isinstance(ev, InvalidEvent), ev
    out = acct.engine.process(ev, acct.state)
    return out.invalid.reason + ": " + out.invalid.message if out.invalid else out.status


def test_traits_are_validated_against_the_catalog() -> None:
    a = example()
    assert update(a, 0, plan_tier="x").startswith("unknown_trait: field 'traits.plan_tier': not in the trait")
    assert update(a, 0, segment="enterprise").startswith(
        "invalid_field: field 'traits.segment': 'enterprise'"
    )
    assert "is a number, not a string" in update(a, 0, employees="40")
    assert "is a string, not a boolean" in update(a, 0, segment=True)
    assert "time trait" in update(a, 0, signed_up_at="yesterday")
    assert "time trait" in update(a, 0, signed_up_at=1.5)
    assert a.state.traits is None and encode_state(a.state) == encode_state(AccountState())  # nothing applied


def test_traits_set_unset_and_reject_stale_updates() -> None:
    a = example()
    assert (
        update(a, HOUR, segment="self_serve", employees=40, signed_up_at="2026-01-01T00:00:00Z") == "applied"
    )
    assert a.state.traits == {"segment": "self_serve", "employees": 40.0, "signed_up_at": 1_767_225_600_000}
    assert update(a, 2 * HOUR, employees=None, signed_up_at=1_767_225_600_001) == "applied"
    assert a.state.traits == {"segment": "self_serve", "signed_up_at": 1_767_225_600_001}
    assert update(a, 0, segment="sales_led") == "stale"  # older than the traits already applied
    assert a.state.traits["segment"] == "self_serve"


def test_a_state_with_traits_round_trips_and_one_without_keeps_its_bytes() -> None:
    a = example()
    a.seats(0, 2)
    plain = encode_state(a.state)
    assert plain[:3] == b"\xdc\x00\x10"  # the tag and the 15 fields a state without traits has
    assert decode_state(plain) == a.state
    update(a, HOUR, segment="self_serve", employees=7)
    data = encode_state(a.state)
    assert data[:3] == b"\xdc\x00\x12" and decode_state(data) == a.state
    assert decode_state(data).traits == {"segment": "self_serve", "employees": 7.0}


def test_the_gate_records_ineligible_once_and_fires_once_eligible() -> None:
    a = example()
    update(a, 0, segment="self_serve", signed_up_at=T0)
    ds = a.seats(DAY, 4)
    assert outcomes(ds) == [("seats-80-self-serve", "ineligible")]
    assert ds[0].reason == "eligibility[0]: trait 'signed_up_at' is 1d old, under 14d"
    assert a.seats(2 * DAY, 4) == []  # still ineligible: recorded once per episode
    assert outcomes(a.seats(15 * DAY, 4)) == [("seats-80-self-serve", "emitted")]


def test_a_metric_condition_of_the_gate_names_itself() -> None:
    a = example()
    update(a, 0, segment="self_serve", signed_up_at=T0 - 30 * DAY)
    a.send(HOUR, type="usage", metric="api_calls", delta=9000)
    update(a, 2 * HOUR, employees=30)
    ds = a.send(3 * HOUR, type="usage", metric="api_calls", delta=1)
    assert [(d.outcome, d.reason) for d in ds] == [("ineligible", "eligibility[1]: seats is under 3")]


def test_audience_traits_and_when_traits() -> None:
    a = example()
    update(a, 0, segment="sales_led", signed_up_at=T0 - 30 * DAY)
    ds = a.seats(HOUR, 4)
    assert [(d.outcome, d.reason) for d in ds] == [
        ("audience", "trait 'segment' is 'sales_led', not one of 'self_serve'")
    ]
    b = example()
    update(b, 0, segment="self_serve", signed_up_at=T0 - 30 * DAY, employees=12)
    b.seats(HOUR, 3)
    assert b.send(2 * HOUR, type="usage", metric="api_calls", delta=9000) == []  # 12 < 20 employees
    update(b, 3 * HOUR, employees=20)
    assert outcomes(b.send(4 * HOUR, type="usage", metric="api_calls", delta=1)) == [
        ("api-calls-80-larger-teams", "emitted")
    ]


def test_eligibility_skip_and_the_shipped_rules_have_no_gate() -> None:
    a = example()
    assert outcomes(a.seats(0, 5)) == [("seats-80-self-serve", "audience"), ("seats-100", "emitted")]
    assert fixture_rules().policy.eligibility == ()
    assert not any(r.checks for r in fixture_rules().rules)


CATALOG = """
version: 1
traits:
  segment: {type: string, values: [a, b]}
  employees: {type: number}
  since: {type: time}
plans: [{id: free, limits: {seats: 5}}, {id: pro, limits: {seats: 50}}]
"""


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("{trait: segment, in: [a]}", "a rule fires on a metric: put the trait condition after it"),
        ("{all: [{metric: seats, ratio: 0.8}, {trait: segmnt, in: [a]}]}", "unknown trait 'segmnt'"),
        ("{all: [{metric: seats, ratio: 0.8}, {trait: segment, in: [c]}]}", "'c' is not an allowed value"),
        ("{all: [{metric: seats, ratio: 0.8}, {trait: segment, at_least: 3}]}", "apply to number traits"),
        (
            "{all: [{metric: seats, ratio: 0.8}, {trait: employees, age_at_least: 3d}]}",
            "apply to time traits",
        ),
        ("{all: [{metric: seats, ratio: 0.8}, {trait: since, in: [1]}]}", "compared by age"),
        ("{all: [{metric: seats, ratio: 0.8}, {trait: employees, in: [x]}]}", "'x' is not a number"),
        ("{metric: seats, ratio: 0.8, in: [a]}", "only apply to a 'trait' condition"),
    ],
)
def test_bad_trait_conditions_are_rejected_with_their_rule(when: str, message: str) -> None:
    rules = f"""
version: 1
groups:
  - id: g
    rules:
      - id: r1
        when: {when}
        prompt: {{title: t, cta: {{label: l, url: /u}}}}
"""
    with pytest.raises(RulesError) as err:
        compile_sources([("catalog.yaml", CATALOG), ("rules.yaml", rules)])
    assert message in str(err.value), str(err.value)


def test_a_bad_eligibility_condition_is_reported_at_the_policy() -> None:
    policy = "version: 1\npolicy:\n  eligibility:\n    - {trait: since, age_at_least: 14d}\n    - {trait: region, in: [eu]}\n"
    with pytest.raises(RulesError) as err:
        compile_sources([("catalog.yaml", CATALOG), ("policy.yaml", policy)])
    assert "policy.yaml:5: error: policy.eligibility[1].trait: unknown trait 'region'" in str(err.value)


def test_replay_summary_shows_ineligible_only_when_the_gate_held_a_rule_back() -> None:
    a = example()
    s = Summary([r.id for r in a.engine.rules.rules])
    assert "ineligible" not in s.rows()[0]
    s.add(a.seats(0, 4))
    assert s.rows()[0][2:9] == [
        "superseded",
        "cooldown",
        "frequency_cap",
        "holdout",
        "no_upgrade_path",
        "audience",
        "accounts",
    ]
    update(a, HOUR, segment="self_serve", signed_up_at=T0)
    s.add(a.seats(2 * HOUR, 3))
    s.add(a.seats(3 * HOUR, 4))
    head, row = s.rows()[0], s.rows()[1]
    assert row[head.index("ineligible")] == "1"


def test_account_updated_decodes_on_both_paths() -> None:
    raw = b'{"type":"account_updated","event_id":"e","account_id":"a","ts":1700000000000,"traits":{"n":7,"s":"x"}}'
    ev = decode_event(raw)
    assert not isinstance(ev, InvalidEvent) and ev.traits == {"n": 7.0, "s": "x"}
    bad = decode_event(raw.replace(b'"n":7', b'"n":[7]'))
    assert isinstance(bad, InvalidEvent) and bad.reason == "invalid_field" and "traits.n" in bad.message
    too_long = decode_event(raw.replace(b'"x"', b'"' + b"x" * 129 + b'"'))
    assert isinstance(too_long, InvalidEvent) and "traits.s" in too_long.message


def test_engine_without_traits_in_the_catalog_rejects_account_updated() -> None:
    eng = Engine(fixture_rules())
    ev = validate_event(
        {"type": "account_updated", "event_id": "e", "account_id": "a", "ts": T0, "traits": {"segment": "x"}}
    )
    assert not isinstance(ev, InvalidEvent)
    out = eng.process(ev, AccountState())
    assert out.invalid is not None and out.invalid.reason == "unknown_trait"
    assert "(declared: none)" in out.invalid.message


def example_sources(**edits: tuple[str, str]) -> list[tuple[str, str]]:
    """rules/examples' files, each with its (old, new) text replaced where `edits` names it (by stem)."""
    out = []
    for p in sorted(EXAMPLE.glob("*.yaml")):
        text = p.read_text()
        if p.stem in edits:
            old, new = edits[p.stem]
            assert old in text
            text = text.replace(old, new)
        out.append((p.name, text))
    return out


def test_a_reload_that_removes_or_retypes_a_trait_the_state_holds() -> None:
    """Removed from the catalog: updates setting it are dead-lettered, the account's value stays unread
    until its next update drops it. Declared again as a string: the number the state holds fails every
    condition on it (even a `not_in` it is not in) until an update sets a string."""
    a = example()
    update(a, 0, segment="self_serve", signed_up_at=T0 - 30 * DAY, employees=12)
    a.seats(HOUR, 3)
    no_employees = compile_sources(
        example_sources(
            catalog=("  employees: {type: number}\n", ""),
            segments=("            - {trait: employees, at_least: 20}\n", ""),
        )
    )
    a.engine.swap_rules(no_employees)
    assert update(a, 2 * HOUR, employees=30).startswith("unknown_trait: field 'traits.employees'")
    assert a.state.traits == {"segment": "self_serve", "signed_up_at": T0 - 30 * DAY, "employees": 12}
    assert update(a, 3 * HOUR, segment="self_serve") == "applied"
    assert a.state.traits == {"segment": "self_serve", "signed_up_at": T0 - 30 * DAY}
    b = example()
    update(b, 0, segment="self_serve", signed_up_at=T0 - 30 * DAY, employees=12)
    b.seats(HOUR, 3)
    retyped = compile_sources(
        example_sources(
            catalog=("employees: {type: number}", "employees: {type: string}"),
            segments=("{trait: employees, at_least: 20}", "{trait: employees, not_in: [few]}"),
        )
    )
    b.engine.swap_rules(retyped)
    assert b.send(2 * HOUR, type="usage", metric="api_calls", delta=9000) == []  # 12 is not a string
    update(b, 3 * HOUR, employees="many")
    assert outcomes(b.send(4 * HOUR, type="usage", metric="api_calls", delta=1)) == [
        ("api-calls-80-larger-teams", "emitted")
    ]
