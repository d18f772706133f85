"""Rule checking a PM can trust: likely mistakes are errors or warnings that say what was probably
meant, every problem of a directory comes out of one run, each at file:line with the rule id."""

from __future__ import annotations

from pathlib import Path

import pytest

from upsell_triggers.cli import main
from upsell_triggers.engine.ruleset import RulesError, compile_sources

from .helpers import RULES

COPY = "        prompt: {title: t, cta: {label: l, url: u}}\n"


def shipped_sources() -> list[tuple[str, str]]:
    return [(p.name, p.read_text()) for p in sorted(RULES.glob("*.yaml"))]


def rule(rid: str, *lines: str) -> str:
    return f"      - id: {rid}\n" + "".join(f"        {ln}\n" for ln in lines) + COPY


def rules_file(*rules: str) -> str:
    return "version: 1\ngroups:\n  - id: pm\n    rules:\n" + "".join(rules)


def problems(text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) as `rules check` prints them, for the shipped rules plus `text` as pm.yaml."""
    try:
        rs = compile_sources([*shipped_sources(), ("pm.yaml", text)])
    except RulesError as err:
        return [str(p) for p in err.problems], [str(p) for p in err.warnings]
    return [], [str(p) for p in rs.warnings]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("{metric: seats, ratio: 90}", "error: rule r: when.ratio: 90 is 90 times the plan limit"),
        ("{metric: seats, ratio: 80}", "did you mean 0.8?"),
        ("{all: [{metric: seats, ratio: 0.5}, {metric: storage_bytes, ratio: 95}]}", "when.all[1].ratio: 95"),
    ],
)
def test_a_percentage_written_as_a_ratio_is_an_error_that_suggests_the_fraction(when: str, expected: str):
    errors, _ = problems(rules_file(rule("r", f"when: {when}")))
    assert len(errors) == 1 and errors[0].startswith("pm.yaml:6: error: rule r: when."), errors
    assert expected in errors[0]


def test_a_ratio_between_one_and_ten_is_a_warning_about_exceeding_the_limit():
    errors, warnings = problems(rules_file(rule("r", "when: {metric: seats, ratio: 1.5}")))
    assert not errors
    assert warnings == [
        "pm.yaml:6: warning: rule r: when.ratio: 1.5 fires only when usage reaches 150% of the plan limit, "
        "past the limit itself; a ratio is a share of the limit (0.9 = 90%): keep 1.5 only for usage that "
        "may exceed its limit"
    ]


def test_rearm_above_the_threshold_says_what_was_probably_meant():
    errors, _ = problems(
        rules_file(
            rule("pct", "when: {metric: seats, ratio: 0.8}", "rearm: 70"),
            rule("above", "when: {metric: seats, ratio: 0.8}", "rearm: 0.9"),
        )
    )
    assert errors == [
        "pm.yaml:7: error: rule pct: rearm: re-arm level 70 is above the threshold 0.8; a ratio rule's "
        "rearm is a share of the limit too: did you mean 0.7?",
        "pm.yaml:11: error: rule above: rearm: re-arm level 0.9 is above the threshold 0.8; it must be at "
        "most the threshold 0.8 (the rule fires at the threshold)",
    ]


def test_a_fractional_rearm_on_a_count_rule_is_a_warning():
    _, warnings = problems(rules_file(rule("r", "when: {metric: api_calls, at_least: 1000}", "rearm: 0.8")))
    assert len(warnings) == 1 and "did you mean 800 (0.8 of the threshold)?" in warnings[0]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ("audience: [enterprise]", "when: {metric: api_calls, at_least: 10}"),
            "warning: rule r: unreachable: its audience (enterprise) has no higher plan to upgrade to; did you "
            "mean an audience of free, team, business?",
        ),
        (
            ("audience: [enterprise]", "when: {metric: seats, ratio: 0.5}"),
            "no plan of its audience (enterprise) limits 'seats'; did you mean an audience with a limit on "
            "it (free, team, business), or at_least",
        ),
        (
            ("audience: [business]", "target_plan: team", "when: {metric: api_calls, at_least: 10}"),
            "target_plan 'team' is not above any plan of its audience (business)",
        ),
    ],
)
def test_an_audience_that_never_matches_is_a_warning_with_a_suggestion(lines: tuple[str, ...], expected: str):
    errors, warnings = problems(rules_file(rule("r", *lines)))
    assert not errors and len(warnings) == 1 and expected in warnings[0], warnings


def test_empty_or_misspelled_audience_is_an_error():
    errors, _ = problems(
        rules_file(
            rule("none", "audience: []", "when: {metric: seats, ratio: 0.5}"),
            rule("typo", "audience: [fre]", "when: {metric: seats, ratio: 0.5}"),
        )
    )
    assert errors[0].startswith("pm.yaml:6: error: rule none: audience: empty")
    assert errors[1].startswith(
        "pm.yaml:10: error: rule typo: audience: unknown plan 'fre'; did you mean 'free'?"
    )


def test_unknown_names_get_did_you_mean():
    errors, _ = problems(
        rules_file(
            rule("f", "when: {metric: seats, ratoi: 0.5}"),
            rule("m", "when: {metric: seat, ratio: 0.5}"),
            rule("t", "when: {metric: seats, ratio: 0.5}", "target_plan: buisness"),
        )
    )
    assert errors == [
        "pm.yaml:6: error: rule f: when.ratoi: unknown field 'ratoi'; did you mean 'ratio'?",
        "pm.yaml:9: error: rule m: when.metric: unknown metric 'seat'; did you mean 'seats'?",
        "pm.yaml:13: error: rule t: target_plan: unknown plan 'buisness'; did you mean 'business'? (use "
        "'next' or a plan id)",
    ]


def test_every_mistake_of_a_directory_comes_out_of_one_run(tmp_path: Path, capsys):
    for name, text in shipped_sources():
        (tmp_path / name).write_text(text)
    (tmp_path / "a.yaml").write_text(
        rules_file(
            rule("schema-1", "when: {metric: seats, ratio: 0.5}", "cooldwn: 7d"),
            rule("semantic-1", "when: {metric: sats, ratio: 0.5}"),
            rule("schema-2", "when: {metric: seats}"),
            rule("semantic-2", "when: {metric: seats, ratio: 90}"),
        )
    )
    (tmp_path / "b.yaml").write_text(
        rules_file(rule("semantic-3", "when: {metric: seats, ratio: 0.5}", "rearm: 60"))
    )
    assert main(["rules", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert [ln.split(": ")[0] + " " + ln.split(": ")[2] for ln in err[:-1]] == [
        f"{a}:7 rule schema-1",
        f"{a}:10 rule semantic-1",
        f"{a}:13 rule schema-2",
        f"{a}:16 rule semantic-2",
        f"{b}:7 rule semantic-3",
    ]
    assert err[-1] == "5 error(s): rules rejected"


def test_strict_check_fails_on_warnings(tmp_path: Path, capsys):
    for name, text in shipped_sources():
        (tmp_path / name).write_text(text)
    (tmp_path / "w.yaml").write_text(rules_file(rule("over", "when: {metric: seats, ratio: 1.2}")))
    assert main(["rules", "check", str(tmp_path)]) == 0
    assert main(["rules", "check", "--strict", str(tmp_path)]) == 1
    assert "w.yaml:6: warning: rule over: when.ratio: 1.2" in capsys.readouterr().err


def test_shipped_rules_have_no_warnings():
    assert main(["rules", "check", "--strict", str(RULES)]) == 0


def test_a_problem_with_a_block_value_is_at_its_key():
    text = rules_file(
        "      - id: r\n        when:\n          metric: seats\n          ratio: 0.5\n          at_least: 3\n"
        + COPY
    )
    errors, _ = problems(text)
    assert errors == [
        "pm.yaml:6: error: rule r: when: a condition needs exactly one of 'ratio' (of the plan limit), "
        "'at_least', 'growth' or 'increase'"
    ]


def test_target_plan_next_on_a_metric_its_audience_has_unlimited_is_a_warning():
    """`target_plan: next` finds the next plan raising the metric's limit; on a plan where the metric is
    unlimited there is none, and the engine would suppress every firing as no_upgrade_path."""
    sources = [
        (
            name,
            text.replace("api_calls: 10000000}", "api_calls: unlimited}") if name == "plans.yaml" else text,
        )
        for name, text in shipped_sources()
    ]
    text = rules_file(rule("r", "audience: [business]", "when: {metric: api_calls, at_least: 10}"))
    rs = compile_sources([*sources, ("pm.yaml", text)])
    warnings = [str(w) for w in rs.warnings]
    assert len(warnings) == 1, warnings
    assert "unreachable: target_plan: next" in warnings[0] and "(business)" in warnings[0], warnings
    # the same rule where the audience's limit is raised by a higher plan has nothing to warn about
    assert not compile_sources([*shipped_sources(), ("pm.yaml", text)]).warnings


def copy_shipped_rules(d: Path) -> None:
    """The shipped rule files in d, for a test to break one of them."""
    for f in (Path(__file__).resolve().parents[2] / "rules").glob("*.yaml"):
        (d / f.name).write_text(f.read_text())


@pytest.mark.parametrize(
    ("indent", "line", "problem"),
    [("      ", 15, "expected <block end>"), ("    ", 16, "mapping values are not allowed here")],
    ids=["dedented", "indented-under-the-list"],
)
def test_an_indentation_mistake_names_the_rule_and_where_to_look(
    tmp_path: Path, capsys, indent: str, line: int, problem: str
) -> None:
    """A rule's `rearm` indented wrong: the parser's words, the rule the line is in, and a hint (the
    parser notices some mistakes on the line after: the hint says to look above too)."""
    copy_shipped_rules(tmp_path)
    path = tmp_path / "usage-limits.yaml"
    text = path.read_text().splitlines()
    assert text[14] == "        rearm: 0.7" and text[12].strip() == "- id: seats-80"
    text[14] = indent + "rearm: 0.7"
    path.write_text("\n".join(text) + "\n")
    assert main(["rules", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().err
    assert out.startswith(f"{path}:{line}: error: rule seats-80: YAML syntax: {problem}"), out
    assert "check the indentation of this line and the line above it" in out.splitlines()[0]


def test_a_mistake_in_a_groups_defaults_is_reported_at_its_line(tmp_path: Path, capsys) -> None:
    """Each rule inheriting it is named, at the defaults' line, where the mistake can be fixed."""
    copy_shipped_rules(tmp_path)
    path = tmp_path / "usage-limits.yaml"
    text = path.read_text().splitlines()
    line = next(n for n, t in enumerate(text, 1) if t == "      audience: [free, team, business]")
    text[line - 1] = "      audience: [free, teams, business]"
    path.write_text("\n".join(text) + "\n")
    assert main(["rules", "check", str(tmp_path)]) == 1
    errors = [e for e in capsys.readouterr().err.splitlines() if ": error: " in e]
    assert errors and all(e.startswith(f"{path}:{line}: error: rule ") for e in errors), errors
    assert all("audience: unknown plan 'teams'" in e for e in errors), errors


def test_a_syntax_error_in_a_plan_names_the_plan_not_a_rule(tmp_path: Path, capsys) -> None:
    copy_shipped_rules(tmp_path)
    path = tmp_path / "plans.yaml"
    text = path.read_text().splitlines()
    line = next(n for n, t in enumerate(text, 1) if t.startswith("    limits:"))
    text[line - 1] = "  " + text[line - 1]
    path.write_text("\n".join(text) + "\n")
    assert main(["rules", "check", str(tmp_path)]) == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"{path}:{line}: error: plan free: YAML syntax: "), first
