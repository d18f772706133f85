"""Who was held out: the holdout decisions of a run, as the records `replay --holdout FILE` writes
(schemas/holdout.schema.json), or recovered by running the engine over the events again.

The holdout gets no prompt, so the prompts alone cannot say who was in it; the engine decides it
deterministically (a hash of salt and account, on the rule's trigger), so running the same rules over
the same events finds the same accounts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import orjson

from upsell_triggers.engine.engine import Decision
from upsell_triggers.engine.ruleset import RuleSet
from upsell_triggers.engine.timeutil import to_iso
from upsell_triggers.processor import MemoryStore, Processor

HOLDOUT_OUTCOME = "holdout"


def holdout_line(d: Decision) -> bytes:
    """One holdout decision as a JSON line (the report's input)."""
    rec: dict[str, object] = {
        "account_id": d.account_id,
        "rule_id": d.rule_id,
        "rule_group": d.rule_group,
        "feature": d.feature,
        "ts": to_iso(d.ts),
    }
    return orjson.dumps(rec) + b"\n"


def holdout_by_replay(rules: RuleSet, lines: Iterable[bytes]) -> Iterator[tuple[str, str, int]]:
    """(account, rule, ts) of every holdout decision the rules make on these events."""
    if rules.policy.holdout_fraction <= 0:
        return
    proc = Processor(rules, store=MemoryStore(max_accounts=10_000_000))
    handle = proc.handle
    for line in lines:
        if line.isspace():
            continue
        res = handle(line)
        for d in res.decisions:
            if d.outcome == HOLDOUT_OUTCOME:
                yield d.account_id, d.rule_id, d.ts
