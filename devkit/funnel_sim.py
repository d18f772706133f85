"""An events log with outcomes: the built-in simulator's usage, plus what accounts did after a prompt
(shown, clicked, dismissed, upgraded) and what held-out accounts did anyway, at chosen rates.

The engine runs while the log is written, and the outcome events go into the log in the order the
engine saw them, so `replay` of the log makes exactly the prompts the outcomes refer to. Tests, the
report benchmark and docs/growth.md use it; the rates are known, so the report's figures can be
checked against them.

    python -m devkit.funnel_sim --accounts 5000 --events 500000 --rules DIR -o FILE
"""

from __future__ import annotations

import argparse
import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from upsell_triggers.engine.engine import EMITTED
from upsell_triggers.engine.ruleset import RuleSet, load_ruleset
from upsell_triggers.engine.timeutil import DAY, HOUR
from upsell_triggers.processor import MemoryStore, Processor
from upsell_triggers.simulate import Simulator


@dataclass(frozen=True, slots=True)
class Rates:
    shown: float = 0.85  # of prompted accounts
    clicked: float = 0.25  # of shown
    dismissed: float = 0.5  # of shown and not clicked
    upgrade_treatment: float = 0.12  # of prompted accounts, within a week
    upgrade_holdout: float = 0.08  # of held-out accounts, within a week
    upgrade_by_variant: tuple[tuple[str, float], ...] = ()  # a copy variant's own upgrade_treatment


def funnel_events(
    rules: RuleSet, accounts: int, events: int, rates: Rates = Rates(), seed: int = 5
) -> Iterator[dict[str, Any]]:
    sim = Simulator(accounts=accounts, seed=seed)
    rng = random.Random(seed + 1)
    proc = Processor(rules, store=MemoryStore(max_accounts=10_000_000))
    tiers = [p.id for p in rules.plans]
    pending: list[tuple[int, int, dict[str, Any]]] = []  # (ts, seq, event): outcomes not yet due
    seq = 0

    def later(ev: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(pending, (ev["ts"], seq, ev))

    def apply(ev: dict[str, Any]) -> None:
        res = proc.handle(orjson.dumps(ev))
        for d in res.decisions:
            if d.outcome == EMITTED and d.prompt is not None:
                pid, ts = d.prompt["prompt_id"], d.ts
                base = {"account_id": d.account_id}
                if rng.random() < rates.shown:
                    shown = ts + rng.randrange(1, 6 * HOUR)
                    later(
                        {
                            **base,
                            "event_id": f"fb-{pid}-s",
                            "type": "prompt_shown",
                            "ts": shown,
                            "prompt_id": pid,
                        }
                    )
                    if rng.random() < rates.clicked:
                        later(
                            {
                                **base,
                                "event_id": f"fb-{pid}-c",
                                "type": "prompt_clicked",
                                "ts": shown + 60_000,
                                "prompt_id": pid,
                            }
                        )
                    elif rng.random() < rates.dismissed:
                        later(
                            {
                                **base,
                                "event_id": f"fb-{pid}-d",
                                "type": "prompt_dismissed",
                                "ts": shown + 30_000,
                                "prompt_id": pid,
                            }
                        )
                upgrade = dict(rates.upgrade_by_variant).get(d.variant or "", rates.upgrade_treatment)
                if rng.random() < upgrade:
                    later(
                        {
                            **base,
                            "event_id": f"up-{pid}",
                            "type": "upgrade",
                            "ts": ts + rng.randrange(HOUR, 7 * DAY),
                        }
                    )
            elif d.outcome == "holdout" and rng.random() < rates.upgrade_holdout:
                eid = f"up-h-{d.account_id}-{d.rule_id}-{d.ts}"
                later(
                    {
                        "account_id": d.account_id,
                        "event_id": eid,
                        "type": "upgrade",
                        "ts": d.ts + rng.randrange(HOUR, 7 * DAY),
                    }
                )

    def due(ts: int) -> Iterator[dict[str, Any]]:
        while pending and pending[0][0] <= ts:
            ev = heapq.heappop(pending)[2]
            if ev["type"] == "upgrade":  # to the next tier of the plan the account is on by then
                plan = proc.store.get(ev["account_id"]).plan or rules.policy.default_plan
                i = tiers.index(plan)
                if i + 1 >= len(tiers):
                    continue
                ev = {**ev, "type": "plan_changed", "plan": tiers[i + 1]}
            apply(ev)
            yield ev

    for ev in sim.events(events):
        yield from due(ev["ts"])
        apply(ev)
        yield ev
    yield from due(2**62)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=5000)
    ap.add_argument(
        "--events", type=int, default=500_000, help="simulated usage events (outcomes come on top)"
    )
    ap.add_argument("--rules", default="rules")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--upgrade-treatment", type=float, default=Rates().upgrade_treatment)
    ap.add_argument("--upgrade-holdout", type=float, default=Rates().upgrade_holdout)
    ap.add_argument(
        "--variant-upgrade",
        action="append",
        default=[],
        metavar="VARIANT=RATE",
        help="a copy variant's upgrade rate (repeatable; others use --upgrade-treatment)",
    )
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args(argv)
    by_variant = tuple((v, float(r)) for v, _, r in (x.partition("=") for x in a.variant_upgrade))
    rates = Rates(
        upgrade_treatment=a.upgrade_treatment,
        upgrade_holdout=a.upgrade_holdout,
        upgrade_by_variant=by_variant,
    )
    with Path(a.output).open("wb") as f:
        for ev in funnel_events(load_ruleset(a.rules), a.accounts, a.events, rates, a.seed):
            f.write(orjson.dumps(ev) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
