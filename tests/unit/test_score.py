"""The readiness score (docs/leads.md, "Readiness score"): points on a rule's edge with a half-life in
event time, fit points, the cap and bands, the score condition, the lead's explanation, rule-file errors,
state bytes and exactness across a state round trip."""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers import rulestest
from upsell_triggers.engine import score
from upsell_triggers.engine.rulemodel import Rule, RulesError
from upsell_triggers.engine.ruleset import RuleSet, compile_sources, load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import Processor
from upsell_triggers.replay import replay

from ..schemacheck import assert_valid_leads
from .helpers import DAY, HOUR, T0, Account, outcomes

EXAMPLE = Path(__file__).resolve().parents[2] / "rules" / "examples" / "scoring"
SCORING = (EXAMPLE / "scoring.yaml").read_text()
HALF_LIFE = 14 * DAY


def example() -> RuleSet:
    return load_ruleset(EXAMPLE)


def with_scoring(section: str, extra_rules: str = "") -> RuleSet:
    """The example with another scoring section (and rules added to its sales group)."""
    head, rest = SCORING.split("scoring:\n", 1)
    groups = rest[rest.index("groups:") :]
    return compile_sources([("scoring.yaml", head + section + groups + extra_rules)])


def problems(section: str, extra_rules: str = "") -> list[str]:
    with pytest.raises(RulesError) as err:
        with_scoring(section, extra_rules)
    return [str(p) for p in err.value.problems]


# ---- the engine ------------------------------------------------------------------------------------


def test_a_rule_edge_adds_its_points_and_fit_points_come_from_traits() -> None:
    a = Account(example())
    a.send(0, type="account_updated", traits={"employees": 80})
    ds = a.seats(HOUR, 4)
    assert sorted(outcomes(ds)) == [("hot-account", "emitted"), ("seats-80", "emitted")]
    hot = next(d for d in ds if d.rule_id == "hot-account")
    lead = hot.lead
    assert lead is not None and lead["score"] == 60.0 and lead["band"] == "hot"
    assert lead["score_contributions"] == [
        {"source": "rule:seats-80", "points": 40},
        {"source": "trait:employees", "points": 20},
    ]
    assert_valid_leads([lead])
    assert hot.band == "hot" and hot.explain()["score_contributions"] == lead["score_contributions"]


def test_points_halve_every_half_life_and_a_score_condition_waits_for_them() -> None:
    a = Account(example())
    assert outcomes(a.seats(0, 4)) == [("seats-80", "emitted")]  # 40: warm, not hot
    rs = example()
    assert rs.scoring is not None
    assert score.read(a.state, rs.scoring, T0).score == 40.0
    assert score.read(a.state, rs.scoring, T0 + HALF_LIFE).score == 20.0
    assert score.read(a.state, rs.scoring, T0 + 2 * HALF_LIFE) == score.Score(
        10.0, "cold", [{"source": "rule:seats-80", "points": 10}]
    )
    # A paywall hit 14 days on: 20 + 25 = 45, still under 60, so no lead on the next seats event.
    assert outcomes(a.send(HALF_LIFE, type="paywall_hit", feature="sso")) == [("paywall-any", "emitted")]
    assert outcomes(a.seats(HALF_LIFE, 4)) == []
    assert score.read(a.state, rs.scoring, T0 + HALF_LIFE).score == 45.0


def test_points_come_once_per_episode_whatever_the_decision() -> None:
    """A capped rule stays armed and triggers on every event, but scores once until it re-arms."""
    a = Account(example())
    a.seats(0, 4)  # seats-80's prompt spends the cap
    for _ in range(3):  # paywall-any: capped, recorded (and scored) once
        a.send(0, type="paywall_hit", feature="sso")
    parts = a.state.score
    assert parts is not None and parts[parts.index("signal:paywall") + 1] == 25.0
    a.seats(0, 3)  # below seats-80's rearm (0.7): a new episode may score again
    a.seats(0, 4)
    assert a.state.score is not None and a.state.score[:3] == ["rule:seats-80", 80.0, T0]  # 40 + 40


def test_the_cap_bounds_the_score_and_negative_fit_never_takes_it_below_0() -> None:
    rs = with_scoring(
        "scoring:\n  cap: 50\n  rules: {seats-80: 40}\n  signals: {paywall: 25}\n"
        "  fit: [{trait: employees, at_most: 5, points: -100}]\n"
    )
    assert rs.scoring is not None
    a = Account(rs)
    a.seats(0, 4)
    a.send(0, type="paywall_hit", feature="sso")
    assert score.read(a.state, rs.scoring, T0).score == 100.0
    assert score.read(a.state, rs.scoring, T0).band == "on_fire"
    a.send(0, type="account_updated", traits={"employees": 3})
    s = score.read(a.state, rs.scoring, T0)
    assert (
        s.score == 0.0
        and s.band == "cold"
        and {"source": "trait:employees", "points": -100} in s.contributions
    )


def test_a_failing_trait_condition_of_when_scores_nothing() -> None:
    extra = (
        "      - id: big-seats\n        when:\n          all:\n            - {metric: seats, ratio: 0.8}\n"
        "            - {trait: employees, at_least: 1000}\n        prompt: {title: t, cta: {label: l, url: /u}}\n"
    )
    rs = with_scoring("scoring:\n  rules: {big-seats: 50}\n", extra)
    assert rs.scoring is not None
    a = Account(rs)
    a.send(0, type="account_updated", traits={"employees": 10})
    a.seats(HOUR, 4)
    assert a.state.score is None
    a.send(2 * HOUR, type="account_updated", traits={"employees": 5000})
    a.seats(3 * HOUR, 4)  # the condition becomes true now: its points
    assert score.read(a.state, rs.scoring, T0 + 3 * HOUR).score == 50.0


def test_a_late_event_adds_its_points_as_of_the_parts_time() -> None:
    rs = example()
    assert rs.scoring is not None
    a = Account(rs)
    a.send(HALF_LIFE, type="paywall_hit", feature="sso")  # 25 at 14d
    a.send(0, type="paywall_hit", feature="audit_log")  # 14 days late: its 25 count 12.5 at 14d
    a.seats(0, 4)  # late too, and a part of its own: 40 as of 0, 20 at 14d
    s = score.read(a.state, rs.scoring, T0 + HALF_LIFE)
    assert s.contributions == [
        {"source": "signal:paywall", "points": 37.5},
        {"source": "rule:seats-80", "points": 20},
    ]


# ---- properties: a brute-force recomputation from the event list --------------------------------


_SHIPPED_RULE = load_ruleset(Path(__file__).resolve().parents[2] / "rules").rules[0]


def _rule(rid: str) -> Rule:
    """A rule named rid with no score threshold and no trait condition: all add_edges reads of it."""
    return dataclasses.replace(_SHIPPED_RULE, id=rid, min_score=None, when_traits=())


SOURCES = {
    "a": (("rule:a", 40.0),),
    "b": (("rule:b", 15.0), ("signal:s", 7.5)),
    "c": (("signal:s", 10.0),),
}


def _brute(adds: list[tuple[int, str]], at: int, sc: score.Scoring) -> float:
    """Every add decayed from its own time to `at`, per source; a source's run of adds ends where it
    went EXPIRY_HALF_LIVES without one (its value was dropped), and a source not added to for as long
    is worth nothing."""
    total = 0.0
    for key in sc.keys:
        times = [(t, p) for t, rid in adds for k, p in SOURCES[rid] if k == key]
        if not times or at - times[-1][0] >= sc.expiry_ms:
            continue
        run: list[tuple[int, float]] = []
        for t, p in times:
            if run and t - run[-1][0] >= sc.expiry_ms:
                run = []
            run.append((t, p))
        total += sum(p * 0.5 ** ((at - t) / sc.half_life_ms) for t, p in run)
    return total


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([0, 0, HOUR, DAY, 7 * DAY, 14 * DAY, 100 * DAY, 300 * DAY]),
            st.lists(st.sampled_from(sorted(SOURCES)), min_size=1, max_size=3),
        ),
        min_size=1,
        max_size=25,
    ),
    then=st.sampled_from([0, HOUR, 3 * DAY, 30 * DAY]),
    cap=st.sampled_from([50.0, 100.0, 1000.0]),
)
def test_the_score_is_a_brute_force_recomputation_from_the_edges(
    steps: list[tuple[int, list[str]]], then: int, cap: float
) -> None:
    sc = score.Scoring(HALF_LIFE, cap, SOURCES)
    state = AccountState()
    adds: list[tuple[int, str]] = []
    ts = T0
    for dt, rids in steps:
        ts += dt
        score.add_edges(state, sc, [_rule(r) for r in rids], ts)
        adds += [(ts, r) for r in rids]
        assert state.score is None or len(state.score) <= 3 * len(sc.keys)  # one part per source
    at = ts + then
    expected = _brute(adds, at, sc)
    got = score.read(state, sc, at)
    want = round(min(expected, cap) / cap * 100, 1)
    assert math.isclose(got.score, want, abs_tol=0.1 + 1e-9)
    parts_total = sum(c["points"] for c in got.contributions)
    assert math.isclose(parts_total, expected, rel_tol=1e-9, abs_tol=0.01 * len(sc.keys))
    # Decay is monotone: without new points the score never rises.
    later = [score.read(state, sc, at + d).score for d in (0, HOUR, DAY, 10 * DAY, 400 * DAY)]
    assert later == sorted(later, reverse=True) and later[-1] == 0.0
    # Exact across the state's bytes (the changelog): the same parts to the bit.
    again = decode_state(encode_state(state))
    assert again.score == state.score and score.read(again, sc, at) == got


@settings(max_examples=200, deadline=None)
@given(rids=st.permutations(["a", "b", "c", "a", "c"]))
def test_same_time_edges_score_the_same_in_any_order(rids: list[str]) -> None:
    sc = score.Scoring(HALF_LIFE, 100.0, SOURCES)
    base, shuffled = AccountState(), AccountState()
    for state, order in ((base, ["a", "b", "c", "a", "c"]), (shuffled, rids)):
        score.add_edges(state, sc, [_rule("a")], T0 - DAY)
        for r in order:
            score.add_edges(state, sc, [_rule(r)], T0)
    assert score.read(base, sc, T0 + DAY) == score.read(shuffled, sc, T0 + DAY)


def test_parts_expire_and_sources_the_section_dropped_are_dropped() -> None:
    sc = score.Scoring(HALF_LIFE, 100.0, SOURCES)
    state = AccountState()
    score.add_edges(state, sc, [_rule("a")], T0)
    score.add_edges(state, sc, [_rule("c")], T0 + sc.expiry_ms)
    assert state.score == ["signal:s", 10.0, T0 + sc.expiry_ms]
    reloaded = score.Scoring(HALF_LIFE, 100.0, {"a": (("rule:a", 1.0),)})
    score.add_edges(state, reloaded, [_rule("a")], T0 + sc.expiry_ms)
    assert state.score == ["rule:a", 1.0, T0 + sc.expiry_ms]


# ---- state bytes and exactness ---------------------------------------------------------------------


def test_an_account_that_never_scored_keeps_its_bytes_and_one_that_did_adds_a_bounded_few() -> None:
    plain = Account(with_scoring("scoring:\n  rules: {seats-80: 40}\n"))
    plain.seats(0, 2)  # under every threshold: no edge, no points
    assert plain.state.score is None
    data = encode_state(plain.state)
    unscored = (
        SCORING.split("scoring:\n")[0] + SCORING[SCORING.index("groups:") : SCORING.index("  - id: sales")]
    )
    without = Account(compile_sources([("s.yaml", unscored)]))
    without.seats(0, 2)
    assert data == encode_state(without.state)
    assert data[:3] == b"\xdc" + (len(AccountState.__struct_fields__) - 7).to_bytes(2, "big")
    scored = Account(example())
    scored.seats(0, 4)
    scored.send(0, type="paywall_hit", feature="sso")
    assert scored.state.score is not None and len(scored.state.score) == 6
    full = encode_state(scored.state)
    scored.state.score = None
    # The seven default fields before it (one byte each), the parts' one-byte array header, and per
    # part its source name (a one-byte header), the value (float64) and the time (uint64).
    parts_bytes = sum(1 + len(n) + 9 + 9 for n in ("rule:seats-80", "signal:paywall"))
    assert len(full) - len(encode_state(scored.state)) == 7 + 1 + parts_bytes


def test_a_state_restored_from_its_bytes_decides_exactly_as_the_live_one() -> None:
    """The worker's crash recovery: the state read back from the changelog carries on identically."""
    events = [
        (0, {"type": "account_updated", "traits": {"employees": 40}}),
        (HOUR, {"type": "usage", "metric": "seats", "value": 4}),
        (3 * DAY, {"type": "paywall_hit", "feature": "sso"}),
        (5 * DAY, {"type": "usage", "metric": "seats", "value": 3}),
        (9 * DAY, {"type": "usage", "metric": "seats", "value": 4}),
        (9 * DAY, {"type": "account_updated", "traits": {"employees": 60}}),
        (9 * DAY + HOUR, {"type": "usage", "metric": "seats", "value": 5}),
    ]
    for cut in range(len(events) + 1):
        live, restored = Account(example()), Account(example())
        got_live = [d.explain() for at, e in events for d in live.send(at, **e)]
        got: list[dict[str, Any]] = []
        for i, (at, e) in enumerate(events):
            if i == cut:
                restored.state = decode_state(encode_state(restored.state))
            got += [d.explain() for d in restored.send(at, **e)]
        assert got == got_live and encode_state(restored.state) == encode_state(live.state)
    assert any(d.get("band") for d in got_live)


# ---- rule files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "extra", "message"),
    [
        (
            "scoring:\n  rules: {seats-90: 5}\n",
            "",
            "scoring.yaml:14: error: rule seats-90: scoring.rules.seats-90: unknown rule; did you mean 'seats-80'?",
        ),
        (
            "scoring:\n  signals: {paywal: 5}\n",
            "",
            "scoring.yaml:14: error: scoring.signals.paywal: no rule has this signal; did you mean 'paywall'?",
        ),
        (
            "scoring:\n  fit: [{trait: headcount, at_least: 5, points: 5}]\n",
            "",
            "scoring.yaml:14: error: scoring.fit[0].trait: unknown trait 'headcount'",
        ),
        (
            "scoring:\n  rules: {hot-account: 5}\n",
            "",
            "rule hot-account: scoring.rules.hot-account: the rule has a score condition",
        ),
        (
            "scoring:\n  bands: {warm: 30, hot: 60}\n",
            "",
            "scoring.bands: the lowest band must start at 0 ('warm' starts at 30)",
        ),
        ("scoring:\n  rules: {seats-80: 0}\n", "", "scoring.rules.seats-80: Input should be greater than 0"),
        (
            "scoring:\n  rules: {seats-80: 5}\n",
            "      - id: first\n        action: lead\n        team: sales\n        when:\n          all:\n"
            "            - {score: {at_least: 10}}\n            - {metric: seats, at_least: 1}\n",
            "rule first: when.all[0]: a rule fires on a metric: put the score condition after it",
        ),
    ],
)
def test_scoring_mistakes_are_rejected_with_file_line_and_rule(
    section: str, extra: str, message: str
) -> None:
    found = problems(section, extra)
    assert any(message in p for p in found), found


def test_a_score_condition_needs_a_scoring_section_and_stays_out_of_the_gate() -> None:
    no_section = SCORING.split("scoring:\n")[0] + SCORING[SCORING.index("groups:") :]
    with pytest.raises(RulesError) as err:
        compile_sources([("scoring.yaml", no_section)])
    assert "rule hot-account: when.all[1]: a score condition needs a 'scoring' section" in str(err.value)
    gate = SCORING.replace("groups:\n", "policy:\n  eligibility: [{score: {at_least: 5}}]\ngroups:\n", 1)
    with pytest.raises(RulesError) as err:
        compile_sources([("scoring.yaml", gate)])
    assert "policy.eligibility[0]: a score condition goes in a rule's `when.all`" in str(err.value)
    mixed = SCORING.replace("{score: {at_least: 60}}", "{score: {at_least: 60}, metric: seats}")
    with pytest.raises(RulesError) as err:
        compile_sources([("scoring.yaml", mixed)])
    assert "a score condition has only 'score'" in str(err.value)


# ---- everywhere the same: replay, rule tests, metrics ------------------------------------------------


def _lines(events: list[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO(
        b"".join(orjson.dumps({"event_id": f"e{i}", **e}) + b"\n" for i, e in enumerate(events))
    )


def test_replay_summarises_leads_per_band_and_explains_the_score() -> None:
    events = [
        {"type": "account_updated", "account_id": "big", "traits": {"employees": 80}, "ts": T0},
        {"type": "usage", "account_id": "big", "metric": "seats", "value": 4, "ts": T0 + HOUR},
        {"type": "usage", "account_id": "small", "metric": "seats", "value": 4, "ts": T0 + HOUR},
    ]
    leads, err = io.BytesIO(), io.StringIO()
    summary = replay(example(), _lines(events), io.BytesIO(), err, explain=True, leads=leads)
    written = [orjson.loads(x) for x in leads.getvalue().splitlines()]
    assert [(x["account_id"], x["score"], x["band"]) for x in written] == [("big", 60.0, "hot")]
    assert "hot-account (sales): hot 1" in summary.table()
    explained = [orjson.loads(x) for x in err.getvalue().splitlines() if x.startswith("{")]
    lead_line = next(x for x in explained if x.get("lead_id"))
    assert lead_line["score"] == 60.0 and lead_line["score_contributions"][0] == {
        "source": "rule:seats-80",
        "points": 40,
    }


def test_rule_tests_expect_scores() -> None:
    rs = example()
    events = [{"at": "0s", "type": "usage", "metric": "seats", "value": 4}]
    ok = rulestest.TestCase(name="t", events=events, expect_score={"score": 40.0, "band": "warm"})
    assert rulestest.run_case(rs, ok) == []
    wrong = rulestest.TestCase(name="t", events=events, expect_score={"band": "hot"})
    assert "score: band: expected 'hot', got 'warm'" in rulestest.run_case(rs, wrong)
    unscored = rulestest.TestCase(name="t", events=events, expect_score={"score": 0})
    shipped = load_ruleset(Path(__file__).resolve().parents[2] / "rules")
    assert rulestest.run_case(shipped, unscored)[0] == "expect_score: the rules have no 'scoring' section"
    out = io.StringIO()
    assert rulestest.run_test_files([str(EXAMPLE / "tests" / "scoring.test.yaml")], None, out) == 0, (
        out.getvalue()
    )


def test_metrics_label_leads_and_their_conversions_by_band_never_by_account() -> None:
    p = Processor(example())
    lines = [
        {"type": "account_updated", "traits": {"employees": 80}, "ts": T0},
        {"type": "usage", "metric": "seats", "value": 4, "ts": T0 + HOUR},
        {"type": "plan_changed", "plan": "team", "ts": T0 + DAY},
    ]
    for i, ev in enumerate(lines):
        p.handle(orjson.dumps({"event_id": f"e{i}", "account_id": "acme", **ev}))
    m: Metrics = p.metrics
    assert m.leads.values == {("hot-account", "sales", "hot"): 1}
    assert m.lead_conversions.values == {("hot-account", "sales", "hot"): 1}
    assert all("acme" not in k for t in (m.leads, m.lead_conversions) for k in t.values)
