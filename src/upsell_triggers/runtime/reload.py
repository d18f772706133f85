"""Rule hot reload: a valid changed set is swapped in whole; an invalid edit is rejected, old rules stay."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from upsell_triggers.engine.ruleset import RulesError, RuleSet, load_ruleset
from upsell_triggers.metrics import Metrics

log = logging.getLogger("upsell_triggers.reload")


def try_reload(rules_dir: str, current: RuleSet, swap: Callable[[RuleSet], None], metrics: Metrics) -> bool:
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
    """Reloads on file changes (watchfiles) until cancelled."""
    from watchfiles import awatch

    async for _changes in awatch(rules_dir, debounce=debounce_ms, recursive=False):
        await asyncio.sleep(0)
        try_reload(rules_dir, get_current(), swap, metrics)
