"""A failing rule test says why: the decisions and reasons of the rules it expected, or what a rule
that decided nothing was waiting for."""

from __future__ import annotations

from pathlib import Path

from upsell_triggers.cli import main

from .helpers import RULES, SHIPPED_RULES


def _run(tmp_path: Path, body: str, capsys) -> str:  # type: ignore[no-untyped-def]
    t = tmp_path / "t.yaml"
    t.write_text(f"rules: {RULES}\ntests:\n" + body)
    assert main(["rules", "test", str(t)]) == 1
    return str(capsys.readouterr().out)


def test_a_rule_that_never_fired_says_what_it_waited_for(tmp_path: Path, capsys):
    out = _run(
        tmp_path,
        "  - name: three of five seats\n    events:\n      - {type: usage, metric: seats, value: 3}\n"
        "    expect_prompts:\n      - {rule_id: seats-80}\n",
        capsys,
    )
    assert "expected 1 prompt(s), got 0" in out
    assert "rule seats-80 made no decision: no event brought seats to 0.8 of the plan limit" in out


def test_decisions_of_the_expected_rule_are_listed_with_event_time_and_reason(tmp_path: Path, capsys):
    out = _run(
        tmp_path,
        "  - name: back within the cooldown\n    events:\n"
        "      - {at: 0s, type: usage, metric: seats, value: 4}\n"
        "      - {at: 1h, type: usage, metric: seats, value: 3}\n"
        "      - {at: 2h, type: usage, metric: seats, value: 4}\n"
        "    expect_prompts:\n      - {rule_id: seats-80}\n      - {rule_id: seats-80}\n",
        capsys,
    )
    lines = out.splitlines()
    i = lines.index("     decisions of rule seats-80:")
    assert lines[i + 1].startswith("       events[0] at 2026-01-05T09:00:00Z: emitted: ")
    assert lines[i + 2].startswith("       events[2] at 2026-01-05T11:00:00Z: cooldown: ")


def test_a_misspelled_expected_rule_gets_a_suggestion(tmp_path: Path, capsys):
    out = _run(
        tmp_path,
        "  - name: typo\n    events:\n      - {type: usage, metric: seats, value: 4}\n"
        "    expect_decisions:\n      - {rule_id: seats-8, outcome: emitted}\n",
        capsys,
    )
    assert "rule seats-8 is not in the rule set; did you mean seats-80?" in out


def test_passing_tests_print_no_explanation(capsys):
    assert main(["rules", "test", str(SHIPPED_RULES / "tests")]) == 0
    assert "decisions of rule" not in capsys.readouterr().out


def test_misspelled_test_file_fields_get_a_suggestion(tmp_path: Path, capsys):
    t = tmp_path / "t.yaml"
    t.write_text(
        f"rules: {RULES}\ntests:\n  - name: x\n    events:\n      - {{type: usage, metric: seats, value: 3}}\n"
        "    expect_prompt: []\n"
    )
    assert main(["rules", "test", str(t)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{t}:6: error: tests.0.expect_prompt: unknown field 'expect_prompt'; did you mean 'expect_prompts'?"
        in out
    )


def test_times_that_do_not_parse_are_errors_at_their_lines(tmp_path: Path, capsys):
    """A typo in `start` or an `at` offset is reported with its file, line and field, before anything
    runs, not raised from the middle of a test."""
    out = _run(
        tmp_path,
        "  - name: typos\n"
        "    start: yesterday\n"
        "    events:\n"
        "      - {type: usage, metric: seats, value: 4, at: 1 hour}\n"
        "      - {type: usage, metric: seats, value: 4, at: -1h}\n"
        "      - {type: usage, metric: seats, value: 4, at: }\n"
        "    expect_prompts:\n"
        "      - {rule_id: seats-80, at: soon}\n",
        capsys,
    )
    t = tmp_path / "t.yaml"
    assert f"{t}:4: error: tests.0.start: 'yesterday' is not a time" in out
    assert f"{t}:6: error: tests.0.events.0.at: '1 hour' is not an offset from start" in out
    assert f"{t}:7: error: tests.0.events.1.at: '-1h' is not an offset from start" in out
    assert f"{t}:8: error: tests.0.events.2.at: an empty value is not an offset from start" in out
    assert f"{t}:10: error: tests.0.expect_prompts.0.at: 'soon' is not an offset from start" in out
    assert out.endswith("0 passed, 1 failed\n"), out


def test_a_rule_file_given_as_a_test_file_says_so(capsys):
    assert main(["rules", "test", str(SHIPPED_RULES / "usage-limits.yaml")]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        f"{SHIPPED_RULES / 'usage-limits.yaml'}:1: error: a rule file, not a rule test file"
    ), out
    assert "unknown field" not in out


def test_a_misspelled_expected_prompt_field_gets_a_suggestion(tmp_path: Path, capsys):
    out = _run(
        tmp_path,
        "  - name: x\n"
        "    events:\n"
        "      - {type: plan_changed, plan: free}\n"
        "      - {at: 1h, type: usage, metric: seats, value: 4}\n"
        "    expect_prompts:\n"
        "      - {rule_id: seats-80, valu: 4}\n",
        capsys,
    )
    assert "prompt 0 (seats-80): valu: no such field; did you mean 'value'?" in out, out


def test_null_expects_a_field_to_be_absent(tmp_path: Path, capsys):
    """A prompt of a rule without copy variants has no `variant`: `variant: null` says so and passes."""
    t = tmp_path / "t.yaml"
    t.write_text(
        f"rules: {RULES}\ntests:\n  - name: x\n    events:\n      - {{type: plan_changed, plan: free}}\n"
        "      - {at: 1h, type: usage, metric: seats, value: 4}\n"
        "    expect_prompts:\n      - {rule_id: seats-80, variant: null}\n"
    )
    assert main(["rules", "test", str(t)]) == 0, capsys.readouterr().out


def test_a_start_without_its_offset_or_an_infinite_offset_is_an_error(tmp_path: Path, capsys):
    out = _run(
        tmp_path,
        "  - name: x\n"
        '    start: "2026-11-22T10:00:00"\n'
        "    events:\n"
        "      - {at: .inf, type: usage, metric: seats, value: 4}\n",
        capsys,
    )
    t = tmp_path / "t.yaml"
    assert f"{t}:4: error: tests.0.start: '2026-11-22T10:00:00' is not a time with its UTC offset" in out
    assert f"{t}:6: error: tests.0.events.0.at: inf is not an offset from start" in out
