"""The rules watcher: an edit made after the rules were loaded but before the watcher ran is not lost."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from upsell_triggers.engine.ruleset import RuleSet, load_ruleset
from upsell_triggers.metrics import Metrics
from upsell_triggers.runtime.reload import watch_rules

RULES = Path(__file__).resolve().parents[2] / "rules"


def reloads(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("upsell_rule_reloads_total", {"result": result}) or 0.0


async def watch_for(
    rules: Path, edit: tuple[str, str] | None, seconds: float
) -> tuple[Metrics, list[RuleSet]]:
    current = [load_ruleset(rules)]
    metrics = Metrics()
    if edit is not None:  # between the load and the watcher's start
        path = rules / "usage-limits.yaml"
        path.write_text(path.read_text().replace(*edit, 1))
    task = asyncio.create_task(watch_rules(str(rules), lambda: current[-1], current.append, metrics, 50))
    await asyncio.sleep(seconds)
    task.cancel()
    return metrics, current


async def test_an_edit_before_the_watcher_starts_is_still_applied(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    edit = ("ratio: 0.8}\n        rearm: 0.7", "ratio: 0.6}\n        rearm: 0.5")
    metrics, sets = await watch_for(rules, edit, 2.5)
    assert reloads(metrics, "success") == 1 and len(sets) == 2
    assert next(r for r in sets[-1].rules if r.id == "seats-80").threshold == 0.6


async def test_an_invalid_edit_before_the_watcher_starts_is_rejected(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    metrics, sets = await watch_for(rules, ("ratio: 0.8}", "ratio: 0.8, bogus: 1}"), 2.5)
    assert reloads(metrics, "rejected") == 1 and len(sets) == 1


async def test_unchanged_files_at_start_count_nothing(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("tests"))
    metrics, sets = await watch_for(rules, None, 2.5)
    assert [reloads(metrics, r) for r in ("success", "rejected", "unchanged")] == [0, 0, 0] and len(sets) == 1


def test_every_reload_result_is_exported_from_zero_at_start() -> None:
    """UpsellRuleReloadRejected is an increase(): a series that first appeared at 1 (the first rejection
    after a restart) would have none, and the alert would not fire."""
    metrics = Metrics()
    for result in ("success", "rejected", "unchanged"):
        assert metrics.registry.get_sample_value("upsell_rule_reloads_total", {"result": result}) == 0.0
