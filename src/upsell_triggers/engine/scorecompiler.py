"""The rule files' `scoring` section compiled (score.py reads the result): every rule, signal and trait
it names must exist, so a typo is a rejected rule set (file, line and the rule it names), never a score
that silently stays at 0."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from sys import intern
from typing import TYPE_CHECKING

from upsell_triggers.engine.rulefile import Condition, ScoringDef
from upsell_triggers.engine.rulemodel import Rule, TraitCond
from upsell_triggers.engine.score import MAX_SOURCES, Fit, Scoring
from upsell_triggers.engine.suggest import did_you_mean
from upsell_triggers.engine.yamlload import line_for

if TYPE_CHECKING:
    from upsell_triggers.engine.rulecompiler import Context, Lines

TraitCompiler = Callable[["Context", Callable[[str], None], Condition, str], TraitCond | None]


def compile_scoring(
    ctx: Context,
    where: tuple[str, ScoringDef, Lines],
    rules: list[Rule],
    declared: set[str],
    disabled: set[str],
    compile_trait: TraitCompiler,
) -> Scoring | None:
    """The section, given the compiled (enabled) rules, the ids of every rule declared and of those
    disabled; None when it has a problem (reported in ctx)."""
    name, sd, lines = where
    n_problems = len(ctx.problems)
    by_id = {r.id: r for r in rules}
    signals = {r.signal for r in rules}
    for rid in sd.rules:
        line = line_for(lines, ("scoring", "rules", rid))
        rule = by_id.get(rid)
        if rule is None and rid in disabled:
            ctx.warn(name, line, f"scoring.rules.{rid}: the rule is disabled, so it adds no points", rid)
        elif rule is None and rid not in declared:
            ctx.err(name, line, f"scoring.rules.{rid}: unknown rule{did_you_mean(rid, declared)}", rid)
        elif rule is None:
            continue  # declared, with a problem of its own (reported at the rule)
        elif rule.min_score is not None:
            ctx.err(
                name,
                line,
                f"scoring.rules.{rid}: the rule has a score condition, so its points would count towards "
                "themselves; score the rules it follows instead",
                rid,
            )
    for sig in sd.signals:
        if sig not in signals:
            known = ", ".join(sorted(signals)) or "none"
            ctx.err(
                name,
                line_for(lines, ("scoring", "signals", sig)),
                f"scoring.signals.{sig}: no rule has this signal"
                + (did_you_mean(sig, signals) or f" (signals of the rules: {known})"),
            )
    if len(sd.rules) + len(sd.signals) > MAX_SOURCES:
        ctx.err(
            name, line_for(lines, ("scoring",)), f"scoring: at most {MAX_SOURCES} rules and signals score"
        )
    fit: list[Fit] = []
    for i, f in enumerate(sd.fit):
        line = line_for(lines, ("scoring", "fit", i))
        cond = Condition.model_validate(f.model_dump(by_alias=True, exclude={"points"}, exclude_none=True))
        tc = compile_trait(ctx, partial(ctx.err, name, line), cond, f"scoring.fit[{i}]")
        if tc is not None:
            fit.append(Fit(f"trait:{f.trait}", tc, f.points))
    bands = tuple(sorted(sd.bands.items(), key=lambda kv: (-kv[1], kv[0])))
    if bands[-1][1] != 0:
        ctx.err(
            name,
            line_for(lines, ("scoring", "bands")),
            f"scoring.bands: the lowest band must start at 0 ('{bands[-1][0]}' starts at {bands[-1][1]:g})",
        )
    if len(ctx.problems) > n_problems:
        return None
    sources: dict[str, tuple[tuple[str, float], ...]] = {}
    for rule in rules:
        if rule.min_score is not None:
            continue
        src: list[tuple[str, float]] = []
        if rule.id in sd.rules:
            src.append((intern(f"rule:{rule.id}"), sd.rules[rule.id]))
        if rule.signal in sd.signals:
            src.append((intern(f"signal:{rule.signal}"), sd.signals[rule.signal]))
        if src:
            sources[rule.id] = tuple(src)
    return Scoring(sd.half_life, sd.cap, sources, tuple(fit), bands)
