"""Rule hot reload: a valid changed set is swapped in whole; an invalid edit is rejected, old rules stay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from upsell_triggers.engine.ruleset import RulesError, RuleSet, load_ruleset
from upsell_triggers.metrics import Metrics

log = logging.getLogger("upsell_triggers.reload")


def try_reload(
    rules_dir: str,
    current: RuleSet,
    swap: Callable[[RuleSet], None],
    metrics: Metrics,
    count_unchanged: bool = True,
) -> bool:
    try:
        new = load_ruleset(rules_dir)
    except RulesError as err:
        metrics.reloads.labels("rejected").inc()
        log.error(
            "rule reload rejected; the running rules stay: " + "; ".join(str(p) for p in err.problems[:5]),
            extra={
                "fields": {
                    "rules_dir": rules_dir,
                    "errors": [str(p) for p in err.problems],
                    "running_version": current.version,
                }
            },
        )
        return False
    if new.version == current.version:
        if count_unchanged:
            metrics.reloads.labels("unchanged").inc()
        return False
    swap(new)
    metrics.reloads.labels("success").inc()
    log.info("rules reloaded", extra={"fields": {"version": new.version, "rules": len(new.rules)}})
    return True


async def watch_rules(
    rules_dir: str,
    get_current: Callable[[], RuleSet],
    swap: Callable[[RuleSet], None],
    metrics: Metrics,
    debounce_ms: int = 500,
) -> None:
    """Reloads on file changes (watchfiles) until cancelled.

    The rules were loaded before the watcher starts, so an edit in between is not a change it sees
    (an integration test that edited a file right after /readyz lost its edit in a CI run). The first
    timeout yield (empty) says the watcher runs: the files are checked once then, quietly when they
    are what was loaded."""
    from watchfiles import awatch

    checked = False
    async for changes in awatch(
        rules_dir, debounce=debounce_ms, recursive=False, yield_on_timeout=True, rust_timeout=1000
    ):
        if not changes:
            if not checked:
                checked = True
                try_reload(rules_dir, get_current(), swap, metrics, count_unchanged=False)
            continue
        await asyncio.sleep(0)
        try_reload(rules_dir, get_current(), swap, metrics)
