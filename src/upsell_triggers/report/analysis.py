"""From counts to what a growth PM can act on: rates with intervals, the lift of the prompts over the
holdout, and a verdict in plain words."""

from __future__ import annotations

from dataclasses import dataclass, field

from upsell_triggers.engine.engine import HOLDOUT, TREATMENT
from upsell_triggers.report.outcomes import ACTIONS, Cell
from upsell_triggers.report.stats import Difference, Rate, accounts_per_group, difference, wilson

FUNNEL = (*ACTIONS, "upgraded")
DEFAULT_MIN_LIFT = 0.01  # the lift to size for when the data shows none (1 percentage point)


@dataclass(frozen=True, slots=True)
class Row:
    cell: Cell
    rates: dict[str, Rate]  # shown, clicked, dismissed, upgraded: each of the cell's accounts


@dataclass(frozen=True, slots=True)
class Lift:
    """Upgrade rate of one variant's treatment minus the rule's holdout, and what to make of it."""

    rule: str
    variant: str
    diff: Difference | None
    verdict: str
    needed_per_group: int | None  # accounts each group needs for `sized_for`
    sized_for: float | None


@dataclass(frozen=True, slots=True)
class VariantDiff:
    """Upgrade rate of one copy variant minus another's (the first listed): which copy converts better."""

    variant: str
    base: str
    diff: Difference


@dataclass(frozen=True, slots=True)
class RuleReport:
    rule: str
    rows: list[Row]
    lifts: list[Lift]
    variant_diffs: list[VariantDiff] = field(default_factory=list)


def pp(x: float) -> str:
    """A difference of rates in percentage points."""
    return f"{x * 100:+.1f} pp"


def verdict(
    treat: Rate, hold: Rate | None, diff: Difference | None, min_lift: float = DEFAULT_MIN_LIFT
) -> tuple[str, int | None, float | None]:
    """(words, accounts needed per group, the lift they are sized for)."""
    if hold is None or hold.n == 0:
        return (
            "no holdout: nothing to compare with (set policy.holdout.fraction to measure lift)",
            None,
            None,
        )
    if treat.n == 0 or diff is None:
        return "no prompted accounts in this range", None, None
    base = hold.k / hold.n
    if diff.excludes_zero:
        direction = "raise" if diff.estimate > 0 else "lower"
        return (
            f"prompts {direction} upgrades: {pp(diff.estimate)} "
            f"(95% interval {pp(diff.low)} to {pp(diff.high)})",
            None,
            None,
        )
    # Size for the lift seen when there is one worth sizing for, else for the smallest lift of interest.
    target = diff.estimate if diff.estimate >= min_lift else min_lift
    need = accounts_per_group(base, target) if base + target <= 1 else None
    if need is None:
        return "no clear difference", None, None
    short_t, short_h = max(0, need - treat.n), max(0, need - hold.n)
    if short_t or short_h:
        if short_t and short_h:
            more = f"{max(short_t, short_h):,} more accounts per group"
        elif short_h:
            more = f"{short_h:,} more held-out accounts (each group needs about {need:,})"
        else:
            more = f"{short_t:,} more prompted accounts (each group needs about {need:,})"
        return f"not enough data yet: need about {more} for a lift of {pp(target)}", need, target
    return (
        f"no lift of {pp(target)} or more: enough accounts to see one, and the interval "
        f"{pp(diff.low)} to {pp(diff.high)} includes zero",
        need,
        target,
    )


def analyse(cells: list[Cell], min_lift: float = DEFAULT_MIN_LIFT) -> list[RuleReport]:
    by_rule: dict[str, list[Cell]] = {}
    for c in cells:
        by_rule.setdefault(c.rule, []).append(c)
    out = []
    for rule, rcells in by_rule.items():
        rows = [
            Row(
                c,
                {
                    name: wilson(getattr(c, name), c.accounts)
                    for name in FUNNEL
                    if name == "upgraded" or c.group == TREATMENT
                },
            )
            for c in rcells
        ]
        hold = next((r for r in rows if r.cell.group == HOLDOUT), None)
        hold_rate = hold.rates["upgraded"] if hold else None
        lifts = []
        for r in rows:
            if r.cell.group != TREATMENT:
                continue
            treat = r.rates["upgraded"]
            diff = difference(treat, hold_rate) if hold_rate else None
            words, need, target = verdict(treat, hold_rate, diff, min_lift)
            lifts.append(Lift(rule, r.cell.variant, diff, words, need, target))
        treated = [r for r in rows if r.cell.group == TREATMENT]
        vdiffs = []
        if len(treated) > 1:
            base = treated[0]
            for r in treated[1:]:
                d = difference(r.rates["upgraded"], base.rates["upgraded"])
                if d is not None:
                    vdiffs.append(VariantDiff(r.cell.variant, base.cell.variant, d))
        out.append(RuleReport(rule, rows, lifts, vdiffs))
    return out
