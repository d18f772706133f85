"""The examples in docs/ run: the example rule directory loads, its rule tests pass, the events file
replays, and every YAML block of docs/rules.md is a verbatim part of a file that is checked."""

from __future__ import annotations

import io
import re
from pathlib import Path

from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.replay import run_replay
from upsell_triggers.rulestest import run_test_files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"


def test_the_example_rules_load_without_warnings():
    rs = load_ruleset(EXAMPLES / "rules")
    assert len(rs.rules) == 7  # one per condition kind, and one with copy variants
    assert rs.warnings == ()


def test_the_example_rule_tests_pass():
    out = io.StringIO()
    files = sorted(str(p) for p in (EXAMPLES / "rules" / "tests").glob("*.yaml"))
    assert run_test_files(files, None, out) == 0, out.getvalue()
    assert " 0 failed" in out.getvalue()


def test_the_example_events_replay_into_prompts(capsys):
    assert run_replay(load_ruleset(ROOT / "rules"), str(EXAMPLES / "events.jsonl"), False) == 0
    rules = {line.split('"rule_id":"')[1].split('"')[0] for line in capsys.readouterr().out.splitlines()}
    assert {"seats-80", "paywall-repeat", "api-calls-80", "api-calls-100"} <= rules


def test_every_yaml_block_in_rules_md_is_part_of_a_checked_file():
    sources = [
        p.read_text() for p in [*(EXAMPLES / "rules").rglob("*.yaml"), *(ROOT / "rules").rglob("*.yaml")]
    ]
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "rules.md").read_text(), re.S)
    assert len(blocks) >= 8
    for block in blocks:
        body = "".join(line for line in block.splitlines(keepends=True) if not line.startswith("# docs/"))
        assert any(body in s for s in sources), f"docs/rules.md block not found in any rule file:\n{block}"
