"""Compiles rule files into a RuleSet, or raises RulesError with every problem at its file and line.
Nothing partial: one problem rejects the whole set.

Parsing and the file schema are rulefile.py's; this module checks what spans files and definitions
(metrics a condition names, plans an audience names, placeholders in copy, one plan catalog) and builds
the model (rulemodel.py). Each step takes a Context, which carries the catalog compiled so far and
collects problems, and an At, which says where in which file the definition is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from upsell_triggers.engine import forecast
from upsell_triggers.engine.growth import history_bucket
from upsell_triggers.engine.rulefile import (
    AudienceDef,
    Condition,
    Cta,
    GroupDef,
    PlanDef,
    PolicyDef,
    PromptCopy,
    RuleDef,
    RulesFile,
    ScoringDef,
)
from upsell_triggers.engine.ruleindex import RuleSet, next_raising_limit
from upsell_triggers.engine.rulemodel import (
    BUILTIN_METRICS,
    DEFAULT_BUCKET,
    DEFAULT_ROLLING_WINDOW,
    DISTINCT,
    FORECAST,
    GAUGE,
    GAUGE_GROWTH,
    MAX_BUCKETS,
    PAYWALL_METRIC,
    PERIOD,
    ROLLING,
    ROLLING_GROWTH,
    STRING,
    TIME,
    Cond,
    MetricSpec,
    Plan,
    Policy,
    Problem,
    Rule,
    RulesError,
    TraitCond,
    TraitSpec,
    Variant,
    trait_fits,
)
from upsell_triggers.engine.scorecompiler import compile_scoring
from upsell_triggers.engine.suggest import did_you_mean, unknown_field
from upsell_triggers.engine.timeutil import DAY, HOUR, MINUTE, format_duration
from upsell_triggers.engine.yamlload import YamlError, line_for, load_yaml

# Placeholders prompt copy may use. Values are pre-rendered strings: no attribute access, no code.
PLACEHOLDERS = frozenset(
    {
        "account_id",
        "metric",
        "feature",
        "value",
        "limit",
        "percent",
        "remaining",
        "count",
        "window",
        "plan",
        "plan_name",
        "target_plan",
        "target_plan_name",
        "threshold",
        "days_left",
        "projected",
    }
)
FORECAST_PLACEHOLDERS = frozenset({"days_left", "projected"})  # only forecast rules have these

_DEFAULT_RULE = {
    "cooldown": 7 * DAY,
    "priority": 50,
    "placement": "banner",
    "bypass_cap": False,
    "target_plan": "next",
    "enabled": True,
}
# What a rule inherits from its group's defaults when it does not set it.
_INHERITED = (
    "rearm",
    "cooldown",
    "audience",
    "priority",
    "placement",
    "bypass_cap",
    "target_plan",
    "signal",
    "prompt",
    "enabled",
    "eligibility",
    "action",
    "team",
)

Lines = dict[Any, int]  # a parsed file's YAML path -> line (yamlload.load_yaml)


@dataclass(slots=True)
class Context:
    """What every compile step needs besides the definition it compiles: the catalog compiled so far,
    and the problems found (errors reject the set; warnings ride along on the RuleSet)."""

    metrics: dict[str, MetricSpec]
    traits: dict[str, TraitSpec] = field(default_factory=dict)
    plans: list[Plan] = field(default_factory=list)
    plan_by_id: dict[str, Plan] = field(default_factory=dict)
    gate: tuple[Cond | TraitCond, ...] = ()  # the policy's eligibility, once compiled
    scoring: bool = False  # a file declares `scoring` (a score condition needs it)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def err(self, file: str, line: int | None, msg: str, rule: str | None = None) -> None:
        self.problems.append(Problem(file, line, msg, "error", rule))

    def warn(self, file: str, line: int | None, msg: str, rule: str | None = None) -> None:
        self.warnings.append(Problem(file, line, msg, "warning", rule))


@dataclass(frozen=True, slots=True)
class At:
    """Where a rule is: its file, the file's line map, its YAML path, and its id (problems name it);
    `defaults`, the path of its group's defaults, where what it inherits is written."""

    file: str
    lines: Lines
    path: tuple[Any, ...]
    rule: str
    defaults: tuple[Any, ...] | None = None

    def line(self, *sub: Any) -> int | None:
        """The line of the definition, or of a part of it (`at.line("prompt")`): for a part the rule
        inherits without setting it, the line in the group's defaults, where a mistake in it is."""
        if (
            sub
            and self.defaults is not None
            and sub[0] in _INHERITED
            and (*self.path, sub[0]) not in self.lines
            and (*self.defaults, sub[0]) in self.lines
        ):
            return line_for(self.lines, (*self.defaults, *sub))
        return line_for(self.lines, (*self.path, *sub))

    def err(self, ctx: Context, line: int | None, msg: str) -> None:
        ctx.err(self.file, line, msg, self.rule)

    def warn(self, ctx: Context, line: int | None, msg: str) -> None:
        ctx.warn(self.file, line, msg, self.rule)


def path_label(loc: tuple[Any, ...]) -> str:
    """A YAML path as messages write it: `plans[1].limits.seats`, `when.all[0].ratio`."""
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _fmt_placeholders(text: str, forecast_rule: bool = False) -> list[str]:
    """Problems with a copy template: unknown names, attribute/index access, format specs, a forecast's
    placeholders in a rule that projects nothing."""
    out = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        return [f"bad placeholder syntax ({err}); write a literal brace as '{{{{' or '}}}}'"]
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            out.append(f"unknown placeholder {{{name}}}; allowed: " + ", ".join(sorted(PLACEHOLDERS)))
        elif spec or conv:
            out.append(f"placeholder {{{name}}} may not have a format spec or conversion")
        elif name in FORECAST_PLACEHOLDERS and not forecast_rule:
            out.append(f"placeholder {{{name}}} is a forecast's: only rules with 'within' have it")
    return out


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_ruleset(directory: str | Path) -> RuleSet:
    """Reads every *.yaml/*.yml directly in `directory` (tests live in a subfolder). Raises RulesError."""
    d = Path(directory)
    if not d.is_dir():
        raise RulesError([Problem(str(d), None, "not a directory")])
    sources: list[tuple[str, str]] = []
    for p in _files(d):
        try:
            sources.append((str(p), p.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as err:
            raise RulesError([Problem(str(p), None, f"cannot read: {err}")]) from None
    return compile_sources(sources)


def compile_sources(sources: list[tuple[str, str]]) -> RuleSet:
    """(file name, text) pairs -> RuleSet; raises RulesError. The version is a digest of the sources."""
    ctx = Context(_builtin_metrics())
    parsed: list[tuple[str, RulesFile, Lines]] = []
    digest = hashlib.sha256()
    whole = True  # every file parsed in full (some rules left out of a file stop nothing else)
    for name, text in sources:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        before = len(ctx.problems)
        rf = _parse(ctx, name, text)
        if rf is None:
            whole = whole and len(ctx.problems) == before
        else:
            parsed.append((name, rf[0], rf[1]))
    if not sources:
        ctx.err("<rules>", None, "no rule files (*.yaml) found")
    if not whole:  # a file's catalog (metrics, plans) is unknown: later checks would only mislead
        raise RulesError(ctx.problems, ctx.warnings)
    rs = _compile(ctx, parsed, digest.hexdigest()[:12])
    if ctx.problems or rs is None:
        raise RulesError(ctx.problems, ctx.warnings)
    return rs


def _parse(ctx: Context, name: str, text: str) -> tuple[RulesFile, Lines] | None:
    """One file's YAML against the file schema; None if it is empty, or if it does not fit (problems
    recorded). When every schema error is inside rules, the file is returned without those rules, so
    the other rules are still checked and one run reports all the directory's errors."""
    try:
        data, lines = load_yaml(text)
    except YamlError as err:
        ctx.err(name, err.line, err.message)
        return None
    if data is None:
        return None
    try:
        return RulesFile.model_validate(data), lines
    except ValidationError as verr:
        broken: set[tuple[int, int]] = set()
        for e in verr.errors(include_url=False):
            loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            rule = _rule_at(data, loc)
            if rule is not None:
                broken.add((int(loc[1]), int(loc[3])))
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = unknown_field(_FILE_SCHEMA, loc)
            where = path_label(loc[4:] if rule is not None else loc) or "file"
            ctx.err(name, line_for(lines, loc), f"{where}: {msg}", rule)
        if _all_in_rules(verr):
            return _without_rules(data, lines, broken)
        return None


_FILE_SCHEMA = RulesFile.model_json_schema()


def _rule_at(data: Any, loc: tuple[Any, ...]) -> str | None:
    """The id of the rule `loc` points into (groups[g].rules[r]...), or None if it is not in a rule.
    A rule without a usable id is named by its position."""
    if len(loc) < 4 or loc[0] != "groups" or loc[2] != "rules":
        return None
    if not isinstance(loc[1], int) or not isinstance(loc[3], int):
        return None
    try:
        rid = data["groups"][loc[1]]["rules"][loc[3]].get("id")
    except (KeyError, IndexError, TypeError, AttributeError):
        rid = None
    return rid if isinstance(rid, str) and rid else f"groups[{loc[1]}].rules[{loc[3]}]"


def _all_in_rules(verr: ValidationError) -> bool:
    return all(
        len(e["loc"]) >= 4
        and e["loc"][0] == "groups"
        and e["loc"][2] == "rules"
        and isinstance(e["loc"][3], int)
        for e in verr.errors(include_url=False)
    )


def _without_rules(data: Any, lines: Lines, broken: set[tuple[int, int]]) -> tuple[RulesFile, Lines] | None:
    """The file with the broken rules (group, index) left out, if the rest fits the schema, and its
    line map renumbered to match (a kept rule's problems keep their lines)."""
    try:
        groups: list[dict[str, Any]] = []
        moved: dict[tuple[int, int], tuple[int, int]] = {}  # (group, rule) as kept -> as written
        for gi, g in enumerate(data["groups"]):
            kept = [ri for ri in range(len(g["rules"])) if (gi, ri) not in broken]
            if kept:
                moved.update(((len(groups), new), (gi, old)) for new, old in enumerate(kept))
                groups.append({**g, "rules": [g["rules"][ri] for ri in kept]})
        rf = RulesFile.model_validate({**data, "groups": groups or None})
    except (ValidationError, KeyError, TypeError, AttributeError):
        return None
    rule_at = {old: new for new, old in moved.items()}
    group_at = {old[0]: new[0] for new, old in moved.items()}
    remapped: Lines = {}
    for path, line in lines.items():
        if len(path) < 2 or path[0] != "groups" or not isinstance(path[1], int):
            remapped[path] = line
        elif len(path) >= 4 and path[2] == "rules" and isinstance(path[3], int):
            if (path[1], path[3]) in rule_at:
                ng, nr = rule_at[path[1], path[3]]
                remapped[("groups", ng, "rules", nr, *path[4:])] = line
        elif path[1] in group_at:
            remapped[("groups", group_at[path[1]], *path[2:])] = line
    return rf, remapped


def _builtin_metrics() -> dict[str, MetricSpec]:
    return {
        n: MetricSpec(
            n, k, u, DEFAULT_ROLLING_WINDOW if k == ROLLING else 0, DEFAULT_BUCKET if k == ROLLING else 0
        )
        for n, (k, u) in BUILTIN_METRICS.items()
    }


def _compile(ctx: Context, parsed: list[tuple[str, RulesFile, Lines]], version: str) -> RuleSet | None:
    plans_def: tuple[str, list[PlanDef], Lines] | None = None
    policy_def: tuple[str, PolicyDef, Lines] | None = None
    groups: list[tuple[str, int, GroupDef, Lines]] = []
    scoring_def: tuple[str, ScoringDef, Lines] | None = None
    for name, rf, lines in parsed:
        _declare_metrics(ctx, name, rf, lines)
        if rf.scoring is not None:
            if scoring_def:
                ctx.err(name, line_for(lines, ("scoring",)), f"scoring: already declared in {scoring_def[0]}")
            else:
                scoring_def = (name, rf.scoring, lines)
                ctx.scoring = True
        _declare_traits(ctx, name, rf, lines)
        if rf.plans is not None:
            if plans_def:
                ctx.err(name, line_for(lines, ("plans",)), f"plans: already declared in {plans_def[0]}")
            else:
                plans_def = (name, rf.plans, lines)
        if rf.policy is not None:
            if policy_def:
                ctx.err(name, line_for(lines, ("policy",)), f"policy: already declared in {policy_def[0]}")
            else:
                policy_def = (name, rf.policy, lines)
        for i, g in enumerate(rf.groups or []):
            groups.append((name, i, g, lines))

    if plans_def is None:
        read = ", ".join(Path(name).name for name, _, _ in parsed) or "none"
        ctx.err("<rules>", None, f"no plan catalog: one file must declare 'plans' (files read: {read})")
        return None
    _compile_plans(ctx, *plans_def)
    policy = _compile_policy(ctx, policy_def, plans_def[0])
    gate = _compile_gate(ctx, policy_def)
    if gate:
        policy = dataclasses.replace(policy, eligibility=gate)
        ctx.gate = gate

    rules: list[Rule] = []
    seen: dict[str, str] = {}
    disabled: set[str] = set()
    for gfile, gi, g, lines in groups:
        for ri, r in enumerate(g.rules):
            at = At(gfile, lines, ("groups", gi, "rules", ri), r.id, ("groups", gi, "defaults"))
            line = at.line()
            if r.id in seen:
                at.err(ctx, line, f"duplicate rule id (first in {seen[r.id]})")
                continue
            seen[r.id] = f"{gfile}:{line}"
            rule = _compile_rule(ctx, at, g, r)
            if rule is not None:
                rules.append(rule)
            elif r.enabled is False or (r.enabled is None and g.defaults.enabled is False):
                disabled.add(r.id)
    rules = _with_gauge_history(ctx, rules)
    scoring = (
        compile_scoring(ctx, scoring_def, rules, set(seen), disabled, _compile_trait_cond)
        if scoring_def
        else None
    )
    by_metric: dict[str, list[Rule]] = {}
    for rule in rules:
        for metric in rule.metrics:
            by_metric.setdefault(metric, []).append(rule)
    return RuleSet(
        ctx.metrics,
        tuple(ctx.plans),
        ctx.plan_by_id,
        policy,
        tuple(rules),
        {m: tuple(rs) for m, rs in by_metric.items()},
        version,
        tuple(ctx.warnings),
        ctx.traits,
        scoring,
    )


def _with_gauge_history(ctx: Context, rules: list[Rule]) -> list[Rule]:
    """Gauges that growth conditions read keep a history (growth.py) as long as the longest `over` asked
    of them, at 1/30 of it: their catalog entries say so, and the conditions get that resolution."""
    longest: dict[str, int] = {}
    for rule in rules:
        for c in rule.conds:
            if c.kind == GAUGE_GROWTH:
                longest[c.metric] = max(longest.get(c.metric, 0), c.over_ms)
    if not longest:
        return rules
    for metric, over in longest.items():
        ctx.metrics[metric] = dataclasses.replace(
            ctx.metrics[metric], history_bucket_ms=history_bucket(over, HOUR), history_keep_ms=over
        )

    def resolved(c: Cond) -> Cond:
        if c.kind != GAUGE_GROWTH:
            return c
        return dataclasses.replace(c, bucket_ms=ctx.metrics[c.metric].history_bucket_ms)

    return [
        dataclasses.replace(r, conds=tuple(map(resolved, r.conds)))
        if any(c.kind == GAUGE_GROWTH for c in r.conds)
        else r
        for r in rules
    ]


def _declare_traits(ctx: Context, name: str, rf: RulesFile, lines: Lines) -> None:
    """A file's `traits:` added to the trait catalog."""
    for tname, t in (rf.traits or {}).items():
        if tname in ctx.traits:
            ctx.err(name, line_for(lines, ("traits", tname)), f"traits.{tname}: declared twice")
            continue
        values = frozenset(t.values) if t.values is not None else None
        ctx.traits[tname] = TraitSpec(tname, t.type, values)


def _compile_trait_cond(
    ctx: Context, err: Callable[[str], None], c: Condition, where: str
) -> TraitCond | None:
    """A condition on a trait (`err` reports a problem at the condition)."""
    assert c.trait is not None
    spec = ctx.traits.get(c.trait)
    if spec is None:
        known = ", ".join(sorted(ctx.traits)) or "none"
        err(
            f"{where}.trait: unknown trait '{c.trait}'"
            + (did_you_mean(c.trait, ctx.traits) or f"; declare it under 'traits:' (known: {known})")
        )
        return None
    kind = spec.type
    if (c.at_least is not None or c.at_most is not None) and kind != "number":
        err(f"{where}: at_least/at_most apply to number traits ('{c.trait}' is a {kind})")
        return None
    if (c.age_at_least is not None or c.age_at_most is not None) and kind != TIME:
        err(f"{where}: age_at_least/age_at_most apply to time traits ('{c.trait}' is a {kind})")
        return None
    values: frozenset[str | bool | float | int] | None = None
    if c.in_ is not None:
        if kind == TIME:
            err(f"{where}.in: a time trait is compared by age (age_at_least / age_at_most)")
            return None
        for v in c.in_:
            if not trait_fits(kind, v):
                err(f"{where}.in: {v!r} is not a {kind}")
                return None
            if kind == STRING and spec.values is not None and v not in spec.values:
                err(f"{where}.in: '{v}' is not an allowed value of trait '{c.trait}'")
                return None
        values = frozenset(c.in_)
    excluded: frozenset[str | bool | float | int] | None = None
    if c.not_in is not None:
        if kind == TIME:
            err(f"{where}.not_in: a time trait is compared by age (age_at_least / age_at_most)")
            return None
        for v in c.not_in:
            if not trait_fits(kind, v):
                err(f"{where}.not_in: {v!r} is not a {kind}")
                return None
            if kind == STRING and spec.values is not None and v not in spec.values:
                err(f"{where}.not_in: '{v}' is not an allowed value of trait '{c.trait}'")
                return None
        excluded = frozenset(c.not_in)
    return TraitCond(c.trait, kind, values, c.at_least, c.at_most, c.age_at_least, c.age_at_most, excluded)


def _compile_gate(
    ctx: Context, policy_def: tuple[str, PolicyDef, Lines] | None
) -> tuple[Cond | TraitCond, ...]:
    """The policy's eligibility conditions (metric or trait)."""
    if policy_def is None:
        return ()
    pfile, pol, plines = policy_def
    out: list[Cond | TraitCond] = []
    for i, c in enumerate(pol.eligibility):
        line = line_for(plines, ("policy", "eligibility", i))
        where = f"policy.eligibility[{i}]"
        if c.all is not None:
            ctx.err(pfile, line, f"{where}: list the conditions directly (every one must hold), not 'all'")
            continue
        if c.score is not None:
            ctx.err(pfile, line, f"{where}: a score condition goes in a rule's `when.all`, not in the gate")
            continue
        if c.trait is not None:
            tc = _compile_trait_cond(ctx, partial(ctx.err, pfile, line), c, where)
            if tc is not None:
                out.append(tc)
            continue
        if c.metric == PAYWALL_METRIC:
            ctx.err(pfile, line, f"{where}: paywall_hits counts per feature; the gate needs another metric")
            continue
        if c.within is not None:
            ctx.err(pfile, line, f"{where}: a forecast is a rule's trigger, not an eligibility condition")
        if c.growth is not None or c.increase is not None:
            ctx.err(pfile, line, f"{where}: growth/increase go in a rule's `when`, not in the gate")
            continue
        mc = _compile_cond(ctx, At(pfile, plines, ("policy", "eligibility", i), ""), line, c, where)
        if mc is not None:
            out.append(mc)
    return tuple(out)


def _declare_metrics(ctx: Context, name: str, rf: RulesFile, lines: Lines) -> None:
    """A file's `metrics:` added to the catalog."""
    metrics = ctx.metrics
    for mname, m in (rf.metrics or {}).items():
        line = line_for(lines, ("metrics", mname))
        if mname in BUILTIN_METRICS:
            ctx.err(name, line, f"metrics.{mname}: '{mname}' is built in and cannot be redeclared")
            continue
        if mname in metrics:
            ctx.err(name, line, f"metrics.{mname}: declared twice")
            continue
        windowed = m.kind in (ROLLING, DISTINCT)
        if not windowed and (m.window is not None or m.bucket is not None):
            ctx.err(name, line, f"metrics.{mname}: window/bucket only apply to rolling_counter and distinct")
        if m.kind != DISTINCT and m.field is not None:
            ctx.err(name, line, f"metrics.{mname}: field only applies to distinct")
        window = (m.window or DEFAULT_ROLLING_WINDOW) if windowed else 0
        bucket = (m.bucket or DEFAULT_BUCKET) if windowed else 0
        if windowed and (bucket <= 0 or window // bucket > MAX_BUCKETS or window < bucket):
            ctx.err(name, line, f"metrics.{mname}: window/bucket must be between 1 and {MAX_BUCKETS} buckets")
        if m.kind == DISTINCT and bucket % MINUTE:
            ctx.err(name, line, f"metrics.{mname}: a distinct metric's bucket is whole minutes")
        counted = (m.field or "user_id") if m.kind == DISTINCT else None
        metrics[mname] = MetricSpec(mname, m.kind, m.unit, window, bucket, counted)


def _compile_plans(ctx: Context, pfile: str, pdefs: list[PlanDef], plines: Lines) -> None:
    """The plan catalog, in tier order (the order of the file)."""
    plans = ctx.plans
    for i, p in enumerate(pdefs):
        line = line_for(plines, ("plans", i))
        if any(q.id == p.id for q in plans):
            ctx.err(pfile, line, f"plans[{i}]: duplicate plan id '{p.id}'")
        for mname in p.limits:
            if mname not in ctx.metrics:
                ctx.err(
                    pfile,
                    line_for(plines, ("plans", i, "limits", mname)),
                    f"plans[{i}].limits.{mname}: unknown metric '{mname}'",
                )
        plans.append(
            Plan(p.id, p.name or p.id.replace("-", " ").title(), i, dict(p.limits), frozenset(p.features))
        )
    ctx.plan_by_id.update((p.id, p) for p in plans)


def _compile_policy(ctx: Context, policy_def: tuple[str, PolicyDef, Lines] | None, pfile: str) -> Policy:
    """The policy file's settings, or the defaults; `pfile` (the plan catalog's file) is where a wrong
    default plan is reported when no file declares a policy."""
    pol = policy_def[1] if policy_def else PolicyDef()
    default_plan = pol.default_plan or ctx.plans[0].id
    if default_plan not in ctx.plan_by_id:
        ctx.err(
            policy_def[0] if policy_def else pfile,
            line_for(policy_def[2], ("policy", "default_plan")) if policy_def else None,
            f"policy.default_plan: unknown plan '{default_plan}'",
        )
    return Policy(
        default_plan,
        pol.frequency_cap.max_prompts,
        pol.frequency_cap.per,
        pol.holdout.fraction,
        pol.holdout.salt,
        pol.attribution_window,
        pol.prompt_expiry,
        lead_cap_max=pol.lead_cap.max_leads,
        lead_cap_window_ms=pol.lead_cap.per,
    )


def _compile_cond(ctx: Context, at: At, line: int | None, c: Condition, where: str) -> Cond | None:
    """One condition of a rule's `when` (reported at `line`, the condition's own; `where` is its path
    in the rule, `when` or `when.all[i]`)."""
    assert c.metric is not None
    metrics = ctx.metrics
    spec = metrics.get(c.metric)
    if spec is None:
        at.err(
            ctx,
            line,
            f"{where}.metric: unknown metric '{c.metric}'"
            + (
                did_you_mean(c.metric, metrics)
                or f"; declare it under 'metrics:' (known: {', '.join(sorted(metrics))})"
            ),
        )
        return None
    if c.growth is not None or c.increase is not None:
        return _compile_growth(ctx, at, line, c, where, spec)
    window = 0
    if spec.kind in (ROLLING, DISTINCT):
        window = c.window or spec.window_ms
        if window > spec.window_ms:
            at.err(
                ctx,
                line,
                f"{where}.window: {format_duration(window)} is longer than the "
                f"{format_duration(spec.window_ms)} that metric '{c.metric}' keeps",
            )
            return None
        if window < spec.bucket_ms:
            at.err(ctx, line, f"{where}.window: shorter than the metric's bucket")
            return None
    elif c.window is not None:
        at.err(ctx, line, f"{where}.window: only applies to rolling counters ('{c.metric}' is a {spec.kind})")
        return None
    if c.feature is not None and c.metric != PAYWALL_METRIC:
        at.err(ctx, line, f"{where}.feature: only applies to metric '{PAYWALL_METRIC}'")
        return None
    feature = c.feature if c.metric == PAYWALL_METRIC else None
    if c.metric == PAYWALL_METRIC:
        feature = feature or "*"
        if c.ratio is not None:
            at.err(ctx, line, f"{where}: paywall conditions count hits: use 'at_least', not 'ratio'")
            return None
    if c.ratio is not None and c.ratio > 1:
        _check_ratio_above_one(ctx, at, line, where, c.ratio)
    if c.within is not None:
        return _compile_forecast(ctx, at, line, c, where, spec)
    bucket = spec.bucket_ms if spec.kind == DISTINCT else 0
    return Cond(c.metric, c.ratio, c.at_least, window, feature, spec.kind, bucket_ms=bucket)


def _compile_growth(
    ctx: Context, at: At, line: int | None, c: Condition, where: str, spec: MetricSpec
) -> Cond | None:
    """A growth condition: a gauge against its reading `over` ago, or a rolling counter's sum over
    `window` against the sum over the window ending `over` earlier (growth.py)."""
    assert c.over is not None
    over = c.over
    if over < HOUR:
        at.err(ctx, line, f"{where}.over: at least 1h")
        return None
    if spec.kind == GAUGE:
        if c.window is not None:
            at.err(
                ctx, line, f"{where}.window: a gauge's growth compares two readings; 'window' is for counters"
            )
            return None
        return Cond(
            spec.name, None, None, 0, None, GAUGE_GROWTH, growth=c.growth, increase=c.increase, over_ms=over
        )
    if spec.kind == ROLLING and spec.name != PAYWALL_METRIC:
        window = c.window or over
        if window < spec.bucket_ms:
            at.err(ctx, line, f"{where}.window: shorter than the metric's bucket")
            return None
        if window + over > spec.window_ms:
            at.err(
                ctx,
                line,
                f"{where}: window + over ({format_duration(window + over)}) is longer than the "
                f"{format_duration(spec.window_ms)} that metric '{c.metric}' keeps; raise its window",
            )
            return None
        return Cond(
            spec.name,
            None,
            None,
            window,
            None,
            ROLLING_GROWTH,
            growth=c.growth,
            increase=c.increase,
            over_ms=over,
            bucket_ms=spec.bucket_ms,
        )
    hint = (
        ": a period total starts at 0 every period; declare a rolling_counter to compare windows"
        if spec.kind == PERIOD
        else ""
    )
    at.err(
        ctx,
        line,
        f"{where}: growth/increase apply to gauges and rolling counters "
        f"('{spec.name}' is a {spec.kind}){hint}",
    )
    return None


def _compile_forecast(
    ctx: Context, at: At, line: int | None, c: Condition, where: str, spec: MetricSpec
) -> Cond | None:
    """A forecast condition (`ratio` with `within`, forecast.py): a gauge or a period counter, a horizon
    of whole days, and a minimum history within what the projection keeps."""
    assert c.metric is not None and c.within is not None and c.ratio is not None
    if spec.kind not in (GAUGE, PERIOD):
        at.err(
            ctx,
            line,
            f"{where}.within: forecasts project gauges and period counters ('{c.metric}' is a {spec.kind})",
        )
        return None
    if c.within < DAY or c.within % DAY:
        at.err(
            ctx,
            line,
            f"{where}.within: a forecast's horizon is whole days (1d or more), not "
            f"{format_duration(c.within)}",
        )
        return None
    lo, hi = forecast.MIN_HISTORY_BOUNDS[spec.kind]
    days = forecast.DEFAULT_MIN_HISTORY_DAYS[spec.kind]
    if c.min_history is not None:
        days = c.min_history // DAY
        if c.min_history % DAY or not lo <= days <= hi:
            at.err(
                ctx,
                line,
                f"{where}.min_history: whole days from {lo}d to {hi}d for a {spec.kind} (the history it "
                f"keeps), not {format_duration(c.min_history)}",
            )
            return None
    return Cond(c.metric, c.ratio, None, 0, None, FORECAST, c.within, days, spec.kind)


# A ratio at or above this is read as a percentage written as a number (`ratio: 90` for 90%).
PERCENT_LIKE = 10


def _check_ratio_above_one(ctx: Context, at: At, line: int | None, where: str, ratio: float) -> None:
    """A ratio is a share of the plan limit (1 = the limit). `ratio: 90` is almost surely 90%: an error
    that says so. Between 1 and PERCENT_LIKE it fires only above the limit (overage on a soft limit may
    be meant): a warning."""
    if ratio >= PERCENT_LIKE:
        at.err(
            ctx,
            line,
            f"{where}.ratio: {ratio:g} is {ratio:g} times the plan limit, which usage never reaches; a "
            f"ratio is a share of the limit (1 = 100%): did you mean {ratio / 100:g}?",
        )
    else:
        at.warn(
            ctx,
            line,
            f"{where}.ratio: {ratio:g} fires only when usage reaches {ratio * 100:g}% of the plan limit, "
            f"past the limit itself; a ratio is a share of the limit (0.9 = 90%): keep {ratio:g} only "
            "for usage that may exceed its limit",
        )


def _compile_rule(ctx: Context, at: At, g: GroupDef, r: RuleDef) -> Rule | None:
    """One rule, with its group's defaults applied; None if it is disabled or has a problem."""
    merged: dict[str, Any] = dict(_DEFAULT_RULE)
    for src in (g.defaults, r):
        for k in _INHERITED:
            v = getattr(src, k)
            if v is not None:
                merged[k] = v
    line = at.line()
    if not merged["enabled"]:
        return None
    conds_def = r.when.all if r.when.all is not None else [r.when]
    conds: list[Cond] = []
    when_traits: list[TraitCond] = []
    min_score: float | None = None
    for ci, c in enumerate(conds_def):
        in_all = r.when.all is not None
        cline = at.line("when", "all", ci) if in_all else at.line("when")
        where = f"when.all[{ci}]" if in_all else "when"
        if c.score is not None:
            if ci == 0:
                at.err(ctx, cline, f"{where}: a rule fires on a metric: put the score condition after it")
                return None
            if not ctx.scoring:
                at.err(ctx, cline, f"{where}: a score condition needs a 'scoring' section (docs/leads.md)")
                return None
            min_score = max(min_score or 0.0, c.score.at_least)
            continue
        if c.trait is not None:
            if ci == 0:
                at.err(ctx, cline, f"{where}: a rule fires on a metric: put the trait condition after it")
                return None
            tc = _compile_trait_cond(ctx, partial(at.err, ctx, cline), c, where)
            if tc is None:
                return None
            when_traits.append(tc)
            continue
        cc = _compile_cond(ctx, at, cline, c, where)
        if cc is None:
            return None
        if cc.kind == FORECAST and ci > 0:
            at.err(ctx, cline, f"{where}: a forecast condition must come first in 'all' (it is the trigger)")
            return None
        conds.append(cc)
    if sum(1 for c in conds if c.metric == PAYWALL_METRIC) > 1:
        at.err(ctx, at.line("when"), "when: at most one paywall_hits condition per rule")
        return None
    primary = conds[0]
    if any(c.metric == PAYWALL_METRIC for c in conds[1:]):
        at.err(ctx, at.line("when"), "when: a paywall_hits condition must come first in 'all'")
        return None
    channels = _channels(ctx, at, merged)
    if channels is None:
        return None
    wants_prompt, wants_lead, team = channels
    prompt = merged.get("prompt")
    if prompt is None and wants_prompt:
        at.err(ctx, line, "no prompt copy (set 'prompt' on the rule or in the group's defaults)")
        return None
    if prompt is None:  # a lead-only rule: no copy to render
        prompt = _NO_COPY
    for fname, text in (
        ("title", prompt.title),
        ("body", prompt.body),
        ("cta.label", prompt.cta.label),
        ("cta.url", prompt.cta.url),
    ):
        for msg in _fmt_placeholders(text, primary.kind == FORECAST):
            at.err(ctx, at.line("prompt") or line, f"prompt.{fname}: {msg}")
    variants: list[Variant] = []
    for vi, v in enumerate(r.variants or ()):
        vline = at.line("variants", vi) or line
        if any(x.id == v.id for x in variants):
            at.err(ctx, vline, f"variants[{vi}]: duplicate variant id '{v.id}'")
            continue
        copy = v.prompt or prompt
        if v.prompt is not None:
            for fname, text in (
                ("title", copy.title),
                ("body", copy.body),
                ("cta.label", copy.cta.label),
                ("cta.url", copy.cta.url),
            ):
                for msg in _fmt_placeholders(text, primary.kind == FORECAST):
                    at.err(ctx, vline, f"variants[{vi}].prompt.{fname}: {msg}")
        variants.append(Variant(v.id, v.weight, copy.title, copy.body, copy.cta.label, copy.cta.url))
    plan_by_id = ctx.plan_by_id
    audience_def = merged.get("audience")
    audience: list[str] | None
    audience_traits: list[TraitCond] = []
    if isinstance(audience_def, AudienceDef):
        audience = audience_def.plans
        aline = at.line("audience") or line
        for ai, c in enumerate(audience_def.traits):
            if c.trait is None:
                at.err(ctx, aline, f"audience.traits[{ai}]: needs 'trait' (plans go under audience.plans)")
                return None
            tc = _compile_trait_cond(ctx, partial(at.err, ctx, aline), c, f"audience.traits[{ai}]")
            if tc is None:
                return None
            audience_traits.append(tc)
    else:
        audience = audience_def
    if audience is not None:
        for pid in audience:
            if pid not in plan_by_id:
                at.err(
                    ctx,
                    at.line("audience") or line,
                    f"audience: unknown plan '{pid}'{did_you_mean(pid, plan_by_id)} "
                    f"(plans: {', '.join(plan_by_id)})",
                )
        if not audience:
            at.err(
                ctx,
                at.line("audience") or line,
                "audience: empty, so the rule applies to no plan; remove 'audience' to apply it to every "
                "plan, or list the plans it is for",
            )
    target = merged["target_plan"]
    if target != "next" and target not in plan_by_id:
        at.err(
            ctx,
            at.line("target_plan") or line,
            f"target_plan: unknown plan '{target}'{did_you_mean(target, plan_by_id)} "
            "(use 'next' or a plan id)",
        )
    threshold = primary.threshold
    rearm = merged.get("rearm")
    if rearm is None:
        rearm = threshold
    else:
        _check_rearm(ctx, at, primary, rearm)
    signal = merged.get("signal") or (
        "paywall"
        if primary.metric == PAYWALL_METRIC
        else "usage_forecast"
        if primary.kind == FORECAST
        else "usage_growth"
        if primary.over_ms
        else "usage_limit"
        if primary.ratio is not None
        else "usage_threshold"
    )
    _warn_unreachable(ctx, at, primary, audience, target)
    return Rule(
        id=r.id,
        group=g.id,
        conds=tuple(conds),
        rearm=float(rearm),
        cooldown_ms=merged["cooldown"],
        audience=frozenset(audience) if audience is not None else None,
        priority=merged["priority"],
        placement=merged["placement"],
        bypass_cap=merged["bypass_cap"],
        target_plan=target,
        signal=signal,
        title=prompt.title,
        body=prompt.body,
        cta_label=prompt.cta.label,
        cta_url=prompt.cta.url,
        source=f"{at.file}:{line}",
        variants=tuple(variants),
        variant_salt=r.variant_salt or "",
        when_traits=tuple(when_traits),
        audience_traits=tuple(audience_traits),
        gate=ctx.gate if merged.get("eligibility") != "skip" else (),
        prompts=wants_prompt,
        leads=wants_lead,
        team=team,
        min_score=min_score,
    )


_NO_COPY = PromptCopy(title="", cta=Cta(label="", url=""))


def _channels(ctx: Context, at: At, merged: dict[str, Any]) -> tuple[bool, bool, str] | None:
    """(prompts, leads, team) of a rule: its `action` (one or a list; default `prompt`) and, when it
    sends leads, the `team` they are for (required then)."""
    action = merged.get("action") or "prompt"
    actions = [action] if isinstance(action, str) else list(action)
    line = at.line("action") or at.line()
    if not actions:
        at.err(ctx, line, "action: empty; use prompt, lead or [prompt, lead]")
        return None
    if len(set(actions)) != len(actions):
        at.err(ctx, line, "action: lists a channel twice")
        return None
    leads = "lead" in actions
    team = merged.get("team") or ""
    if leads and not team:
        at.err(ctx, line, "action: lead needs 'team' (who the lead is for, e.g. sales)")
        return None
    if team and not leads:
        at.warn(ctx, at.line("team") or line, "team: set, but the rule sends no lead (add action: lead)")
    return "prompt" in actions, leads, team


def _check_rearm(ctx: Context, at: At, primary: Cond, rearm: float) -> None:
    """The re-arm level is where usage must fall back below before the rule can fire again: above the
    threshold, the rule would re-arm while still over it. Says what was probably meant."""
    threshold = primary.threshold
    line = at.line("rearm") or at.line()
    if rearm > threshold:
        if primary.ratio is not None and rearm > 1 and rearm / 100 < threshold:
            hint = f"a ratio rule's rearm is a share of the limit too: did you mean {rearm / 100:g}?"
        else:
            hint = f"it must be at most the threshold {threshold:g} (the rule fires at the threshold)"
        at.err(ctx, line, f"rearm: re-arm level {rearm:g} is above the threshold {threshold:g}; {hint}")
    elif primary.ratio is None and 0 < rearm < 1 <= threshold / 2:
        at.warn(
            ctx,
            line,
            f"rearm: {rearm:g} is a count for an at_least rule (threshold {threshold:g}), so the rule "
            f"re-arms only when the level falls below {rearm:g}; did you mean {rearm * threshold:g} "
            f"({rearm:g} of the threshold)?",
        )


def _warn_unreachable(ctx: Context, at: At, primary: Cond, audience: list[str] | None, target: str) -> None:
    """A warning for a rule that can fire for no plan of its audience, saying what was probably meant:
    no audience plan limits its metric (a ratio rule), none has a higher plan to upgrade to, or its
    target plan is not above any of them."""
    plans, plan_by_id = ctx.plans, ctx.plan_by_id
    aud_plans = [plan_by_id[p] for p in audience if p in plan_by_id] if audience is not None else plans
    if not aud_plans:
        return  # an empty or unknown audience is an error already
    names = ", ".join(p.id for p in aud_plans)
    line = at.line("audience") or at.line()
    if primary.ratio is not None and not any(p.limit(primary.metric) is not None for p in aud_plans):
        limited = [p.id for p in plans if p.limit(primary.metric) is not None]
        hint = (
            f"did you mean an audience with a limit on it ({', '.join(limited)}), or at_least (an "
            "absolute level)?"
            if limited
            else f"no plan limits it: set limits.{primary.metric} in the plans, or use at_least"
        )
        at.warn(
            ctx,
            line,
            f"unreachable: a ratio of the plan limit, but no plan of its audience ({names}) limits "
            f"'{primary.metric}'; {hint}",
        )
    elif not any(p.tier < len(plans) - 1 for p in aud_plans):
        lower = [p.id for p in plans[:-1]]
        at.warn(
            ctx,
            line,
            f"unreachable: its audience ({names}) has no higher plan to upgrade to; did you mean an "
            f"audience of {', '.join(lower) or 'lower plans'}?",
        )
    elif (
        target == "next"
        and primary.metric != PAYWALL_METRIC
        and not any(next_raising_limit(plans, p, primary.metric) is not None for p in aud_plans)
    ):
        at.warn(
            ctx,
            at.line("target_plan") or line,
            f"unreachable: target_plan: next is the next plan that raises the limit on "
            f"'{primary.metric}', but no plan of its audience ({names}) has a limit on it that a higher plan "
            "raises; did you mean an audience of plans that limit it, or a named target_plan?",
        )
    elif target != "next" and target in plan_by_id:
        tier = plan_by_id[target].tier
        if not any(p.tier < tier for p in aud_plans):
            below = [p.id for p in plans if p.tier < tier]
            at.warn(
                ctx,
                at.line("target_plan") or at.line(),
                f"unreachable: target_plan '{target}' is not above any plan of its audience ({names}), "
                f"so there is never an upgrade to offer; did you mean an audience of {', '.join(below)}, "
                "or target_plan: next?",
            )
