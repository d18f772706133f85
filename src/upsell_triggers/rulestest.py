"""`rules test`: rule unit tests in YAML, like `promtool test rules`.

rules: ..                      # rule directory, relative to this file (default: its parent's parent)
tests:
  - name: seats-80 fires at 4 of 5 seats
    start: "2026-11-22T10:00:00Z" # optional (quoted: YAML would read a bare time as a timestamp)
    account: acme                 # optional
    variants: {seats-80: short}   # optional: pin a rule's copy variant (default: the account's own)
    events:                       # `at` is an offset from start; event_id defaults to e<index>
      - {at: 0s, type: usage, metric: seats, value: 4}
    expect_prompts:               # exactly these prompts, in order; listed fields must match
      - {rule_id: seats-80, title: "You're using 4 of 5 seats"}
    expect_absent: [seats-100]    # rules that must not emit
    expect_leads:                 # exactly these leads, in order (rules with action: lead)
      - {rule_id: seats-80-lead, team: sales}
    expect_decisions:             # decisions that must be among those made (subset)
      - {rule_id: seats-100, outcome: cooldown}
    expect_score: {score: 60.0, band: hot}   # the readiness score after the last event (listed fields)
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from upsell_triggers.engine import score
from upsell_triggers.engine.engine import Decision, Engine
from upsell_triggers.engine.events import InvalidEvent, validate_event
from upsell_triggers.engine.rulefile import RulesFile
from upsell_triggers.engine.ruleset import RulesError, RuleSet, load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.suggest import close_match, unknown_field
from upsell_triggers.engine.timeutil import datetime_to_ms, parse_duration, to_iso
from upsell_triggers.engine.yamlload import YamlError, line_for, load_yaml


class TestCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    start: str = "2026-01-05T09:00:00Z"
    account: str = "acme"
    variants: dict[str, str] = Field(
        default_factory=dict, description="rule id -> copy variant id: pin the variant this test checks"
    )
    events: list[dict[str, Any]] = Field(min_length=1)
    expect_prompts: list[dict[str, Any]] | None = None
    expect_leads: list[dict[str, Any]] | None = None
    expect_absent: list[str] = Field(default_factory=list)
    expect_decisions: list[dict[str, Any]] = Field(default_factory=list)
    expect_score: dict[str, Any] | None = Field(
        default=None,
        description="the account's readiness score at the last event's time: score, band, "
        "score_contributions (listed fields must match)",
    )


class TestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: str | None = None
    tests: list[TestCase] = Field(min_length=1)


_TEST_SCHEMA = TestFile.model_json_schema()
# The sections of a rule file: a file with them and no `tests` was given by mistake.
RULE_FILE_SECTIONS = frozenset(RulesFile.model_fields)


def _matches(actual: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    out = []
    for k, v in expected.items():
        a = actual.get(k)
        if isinstance(v, dict) and isinstance(a, dict):
            out += [f"{k}.{m}" for m in _matches(a, v)]
        elif k not in actual and v is not None:  # `variant: null` checks that there is none
            close = close_match(k, actual)
            hint = f"did you mean {close!r}?" if close else f"fields: {', '.join(sorted(actual))}"
            out.append(f"{k}: no such field; {hint}")
        elif a != v:
            out.append(f"{k}: expected {v!r}, got {a!r}")
    return out


def _expected_rules(case: TestCase) -> list[str]:
    """The rules a case is about: those it expects prompts or decisions from, or expects absent."""
    ids = [e.get("rule_id") for e in (*(case.expect_prompts or []), *(case.expect_leads or []))]
    ids += [e.get("rule_id") for e in case.expect_decisions] + list(case.expect_absent)
    return list(dict.fromkeys(i for i in ids if isinstance(i, str)))


def _explain(rules: RuleSet, rule_ids: list[str], decisions: list[tuple[int, Decision]]) -> list[str]:
    """Why the expected rules did what they did: each of their decisions with its event and reason, or
    what a rule without any decision was waiting for."""
    known = {r.id: r for r in rules.rules}
    out: list[str] = []
    for rid in rule_ids:
        rule = known.get(rid)
        if rule is None:
            close = close_match(rid, known)
            out.append(f"rule {rid} is not in the rule set" + (f"; did you mean {close}?" if close else ""))
            continue
        mine = [(i, d) for i, d in decisions if d.rule_id == rid]
        if not mine:
            c = rule.primary
            level = f"{c.ratio:g} of the plan limit" if c.ratio is not None else f"{c.at_least:g}"
            out.append(
                f"rule {rid} made no decision: no event brought {c.metric}"
                + (f" (feature {c.feature})" if c.feature else "")
                + f" to {level}"
                + (" (or its other conditions were not met)" if rule.secondary else "")
                + (f"; audience: {', '.join(sorted(rule.audience))}" if rule.audience else "")
            )
            continue
        out.append(f"decisions of rule {rid}:")
        out += [f"  events[{i}] at {to_iso(d.ts)}: {d.outcome}: {d.reason}" for i, d in mine]
    return out


def _pin_problems(rules: RuleSet, pins: dict[str, str]) -> list[str]:
    out = []
    by_id = {r.id: r for r in rules.rules}
    for rule_id, variant in pins.items():
        rule = by_id.get(rule_id)
        if rule is None:
            out.append(f"variants: no rule {rule_id!r}")
        elif variant not in (ids := [v.id for v in rule.variants]):
            have = ", ".join(ids) if ids else "none"
            out.append(f"variants: rule {rule_id!r} has no variant {variant!r} (its variants: {have})")
    return out


def run_case(rules: RuleSet, case: TestCase) -> list[str]:
    pin_problems = _pin_problems(rules, case.variants)
    if pin_problems:
        return pin_problems
    engine = Engine(rules, pinned_variants=case.variants)
    state = AccountState()
    start = datetime_to_ms(datetime.fromisoformat(case.start))
    prompts: list[dict[str, Any]] = []
    leads: list[dict[str, Any]] = []
    decisions: list[tuple[int, Decision]] = []
    failures: list[str] = []
    last_ts = start
    for i, raw in enumerate(case.events):
        ev_dict = dict(raw)
        at = ev_dict.pop("at", 0)
        ev_dict.setdefault("event_id", f"e{i}")
        ev_dict.setdefault("account_id", case.account)
        ev_dict.setdefault("ts", start + parse_duration(at))
        ev = validate_event(ev_dict)
        if isinstance(ev, InvalidEvent):
            failures.append(f"events[{i}] is invalid: {ev.message}")
            continue
        out = engine.process(ev, state)
        last_ts = ev.ts
        if out.invalid is not None:
            failures.append(f"events[{i}] is invalid: {out.invalid.message}")
        decisions += [(i, d) for d in out.decisions]
        prompts += out.prompts
        leads += out.leads
    for what, got_records, expected in (
        ("prompt", prompts, case.expect_prompts),
        ("lead", leads, case.expect_leads),
    ):
        if expected is None:
            continue
        if len(got_records) != len(expected):
            got = [p["rule_id"] for p in got_records]
            failures.append(f"expected {len(expected)} {what}(s), got {len(got_records)}: {got}")
        for j, (p, e) in enumerate(zip(got_records, expected, strict=False)):
            exp = dict(e)
            if "at" in exp:
                exp["created_at"] = to_iso(start + parse_duration(exp.pop("at")))
            for m in _matches(p, exp):
                failures.append(f"{what} {j} ({p['rule_id']}): {m}")
    for rid in case.expect_absent:
        if any(p["rule_id"] == rid for p in prompts):
            failures.append(f"rule {rid} emitted a prompt but is expected absent")
    for e in case.expect_decisions:
        if not any(not _matches(d.explain() | {"group": d.group}, e) for _, d in decisions):
            failures.append(
                f"no decision matching {orjson.dumps(e).decode()}; got "
                + (", ".join(f"{d.rule_id}:{d.outcome}" for _, d in decisions) or "none")
            )
    if case.expect_score is not None:
        failures += _score_failures(rules, state, last_ts, case.expect_score)
    if failures:
        failures += _explain(rules, _expected_rules(case), decisions)
    return failures


def _score_failures(rules: RuleSet, state: AccountState, ts: int, expected: dict[str, Any]) -> list[str]:
    if rules.scoring is None:
        return ["expect_score: the rules have no 'scoring' section"]
    s = score.read(state, rules.scoring, ts)
    actual = {"score": s.score, "band": s.band, "score_contributions": s.contributions}
    return [f"score: {m}" for m in _matches(actual, expected)]


def _time_problems(tf: TestFile) -> list[tuple[tuple[str | int, ...], str]]:
    """The start times and `at` offsets the schema cannot check (a datetime, a duration of 0 or more),
    as (location, message): a typo there is an error at its line, not an exception while running."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, case in enumerate(tf.tests):
        try:
            datetime_to_ms(datetime.fromisoformat(case.start))  # as run_case reads it: with its offset
        except (ValueError, TypeError, OverflowError):
            problems.append(
                (
                    ("tests", i, "start"),
                    f'{case.start!r} is not a time with its UTC offset: use e.g. "2026-11-22T10:00:00Z" '
                    "(quoted)",
                )
            )
        offsets = [(("events", j), e) for j, e in enumerate(case.events)]
        offsets += [(("expect_prompts", j), e) for j, e in enumerate(case.expect_prompts or ())]
        offsets += [(("expect_leads", j), e) for j, e in enumerate(case.expect_leads or ())]
        for (field, j), item in offsets:
            if "at" not in item:
                continue
            try:
                parse_duration(item["at"])
            except (ValueError, TypeError, OverflowError):
                what = "an empty value" if item["at"] is None else f"{item['at']!r}"
                problems.append(
                    (
                        ("tests", i, field, j, "at"),
                        f"{what} is not an offset from start: a number and a unit (ms, s, m, h, d, w), "
                        "e.g. 2h or 3d",
                    )
                )
    return problems


def run_test_files(files: list[str], rules_dir: str | None, out: Any) -> int:
    failed = passed = 0
    cache: dict[str, RuleSet] = {}
    for f in files:
        path = Path(f)
        try:
            data, lines = load_yaml(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and "tests" not in data and RULE_FILE_SECTIONS & data.keys():
                out.write(
                    f"{f}:1: error: a rule file, not a rule test file (it has no tests:); rule tests are "
                    f"files of their own, e.g. {path.parent / 'tests'}\n"
                )
                failed += 1
                continue
            tf = TestFile.model_validate(data)
        except YamlError as err:
            out.write(f"{f}:{err.line}: error: {err.message}\n")
            failed += 1
            continue
        except ValidationError as verr:
            for e in verr.errors(include_url=False):
                loc = tuple(e["loc"])
                msg = unknown_field(_TEST_SCHEMA, loc) if e["type"] == "extra_forbidden" else e["msg"]
                out.write(f"{f}:{line_for(lines, loc)}: error: {'.'.join(map(str, loc))}: {msg}\n")
            failed += 1
            continue
        except OSError as err:
            out.write(f"{f}: error: {err}\n")
            failed += 1
            continue
        if problems := _time_problems(tf):
            for loc, msg in problems:
                out.write(f"{f}:{line_for(lines, loc)}: error: {'.'.join(map(str, loc))}: {msg}\n")
            failed += 1
            continue
        rdir = rules_dir or str((path.parent / (tf.rules or "..")).resolve())
        if rdir not in cache:
            try:
                cache[rdir] = load_ruleset(rdir)
            except RulesError as rerr:
                out.write(f"{f}: error: rules in {rdir} do not load:\n{rerr}\n")
                failed += len(tf.tests)
                continue
        for i, case in enumerate(tf.tests):
            fails = run_case(cache[rdir], case)
            where = f"{f}:{line_for(lines, ('tests', i))}"
            if fails:
                failed += 1
                out.write(f"FAIL {where} {case.name}\n" + "".join(f"     {m}\n" for m in fails))
            else:
                passed += 1
                out.write(f"ok   {where} {case.name}\n")
    out.write(f"{passed} passed, {failed} failed\n")
    return 1 if failed else 0
