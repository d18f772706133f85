"""Loads rules/ into an immutable, indexed RuleSet, or a list of file:line errors. Nothing partial.

The RuleSet is what the engine reads on the hot path: plain slots dataclasses, rules indexed by the
metric they read, plans by id and tier.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from upsell_triggers.engine.rulefile import Condition, GroupDef, PlanDef, PolicyDef, RuleDef, RulesFile
from upsell_triggers.engine.timeutil import DAY, HOUR, format_duration
from upsell_triggers.engine.yamlload import YamlError, line_for, load_yaml

GAUGE, PERIOD, ROLLING = "gauge", "period_counter", "rolling_counter"
PAYWALL_METRIC = "paywall_hits"
BUILTIN_METRICS: dict[str, tuple[str, str]] = {
    "seats": (GAUGE, "count"),
    "storage_bytes": (GAUGE, "bytes"),
    "api_calls": (PERIOD, "count"),
    PAYWALL_METRIC: (ROLLING, "count"),
}
DEFAULT_ROLLING_WINDOW = 30 * DAY
DEFAULT_BUCKET = HOUR
MAX_BUCKETS = 24 * 31  # per series: window / bucket must stay under this

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
    }
)


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"


class RulesError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str
    unit: str
    window_ms: int
    bucket_ms: int


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str
    tier: int
    limits: dict[str, float | None]
    features: frozenset[str]

    def limit(self, metric: str) -> float | None:
        return self.limits.get(metric)


@dataclass(frozen=True, slots=True)
class Cond:
    metric: str
    ratio: float | None
    at_least: float | None
    window_ms: int
    feature: str | None  # paywall_hits: a feature, '*' for any, None otherwise
    kind: str  # the metric's kind, copied here for the hot path

    @property
    def threshold(self) -> float:
        return self.ratio if self.ratio is not None else self.at_least  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    group: str
    conds: tuple[Cond, ...]
    rearm: float  # ratio level for ratio rules, count level otherwise
    cooldown_ms: int
    audience: frozenset[str] | None
    priority: int
    placement: str
    bypass_cap: bool
    target_plan: str
    signal: str
    title: str
    body: str
    cta_label: str
    cta_url: str
    source: str
    # Derived from conds, stored because the engine reads them for every event.
    primary: Cond = field(init=False)
    secondary: tuple[Cond, ...] = field(init=False)  # the rest of an `all:`
    threshold: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "primary", self.conds[0])
        object.__setattr__(self, "secondary", self.conds[1:])
        object.__setattr__(self, "threshold", self.conds[0].threshold)

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(c.metric for c in self.conds)


@dataclass(frozen=True, slots=True)
class Policy:
    default_plan: str
    cap_max: int
    cap_window_ms: int
    holdout_fraction: float
    holdout_salt: str
    attribution_ms: int
    expiry_ms: int


@dataclass(frozen=True, slots=True)
class LevelGroup:
    """Consecutive rules whose primary conditions measure the same level (metric, kind, window, feature,
    ratio or count). The engine computes that level once per group, and skips the group when the level
    is below every threshold and none of its rules has state: then no rule of it can fire, re-arm or
    change, and that is the common event."""

    primary: Cond
    rules: tuple[Rule, ...]
    min_threshold: float
    ids: tuple[str, ...]  # rule-state keys of feature-less rules


# A reading below a ratio threshold times the limit, by this margin, is below the threshold however the
# division rounds (~1e-16 each way); readings within it take the engine's exact path.
_SKIP_MARGIN = 1 - 1e-9
_NEVER = float("-inf")


def _skip_bound(g: LevelGroup, metric: str, plan: Plan) -> float:
    """The reading of `metric` below which group g cannot fire for an account on `plan` that has no
    rule state and no limit overrides (what Engine._evaluate computes, as one number); -inf: never."""
    p = g.primary
    if p.metric != metric or p.feature is not None or p.kind not in (GAUGE, PERIOD):
        return _NEVER  # a level that is not this event's reading (another metric, a window, a feature)
    if p.ratio is None:
        return g.min_threshold  # the level is the reading itself: the same comparison
    limit = plan.limits.get(metric)
    if limit is None:
        return float("inf")  # unlimited: a ratio rule cannot fire
    if limit <= 0 or g.min_threshold <= 0:
        return _NEVER
    return g.min_threshold * limit * _SKIP_MARGIN


def skip_bounds(
    groups_by_metric: dict[str, tuple[LevelGroup, ...]], plans: tuple[Plan, ...], default_plan: str
) -> dict[str | None, dict[str, float]]:
    """Per plan id (None: the default plan, as AccountState.plan says it), per metric, the reading
    below which no rule group on the metric can fire for an account without rule states or limit
    overrides. The engine answers such readings without evaluating the rules: three quarters of the
    benchmark's events (bench/ANALYSIS.md, session 12)."""
    out: dict[str | None, dict[str, float]] = {
        plan.id: {
            metric: min(_skip_bound(g, metric, plan) for g in groups)
            for metric, groups in groups_by_metric.items()
        }
        for plan in plans
    }
    if default_plan in out:
        out[None] = out[default_plan]
    return out


def level_groups(rules: tuple[Rule, ...]) -> tuple[LevelGroup, ...]:
    """Runs of consecutive rules only, so that decisions keep the rule order of the files."""
    runs: list[list[Rule]] = []
    for rule in rules:
        p = rule.primary
        if runs:
            q = runs[-1][0].primary
            if (p.metric, p.kind, p.window_ms, p.feature, p.ratio is None) == (
                q.metric,
                q.kind,
                q.window_ms,
                q.feature,
                q.ratio is None,
            ):
                runs[-1].append(rule)
                continue
        runs.append([rule])
    return tuple(
        LevelGroup(run[0].primary, tuple(run), min(r.threshold for r in run), tuple(r.id for r in run))
        for run in runs
    )


@dataclass(frozen=True, slots=True)
class RuleSet:
    metrics: dict[str, MetricSpec]
    plans: tuple[Plan, ...]
    plan_by_id: dict[str, Plan]
    policy: Policy
    rules: tuple[Rule, ...]
    by_metric: dict[str, tuple[Rule, ...]]
    version: str
    warnings: tuple[Problem, ...] = field(default=())
    # Derived: what the engine iterates (rules read by a metric; all rules, on a plan change).
    groups_by_metric: dict[str, tuple[LevelGroup, ...]] = field(init=False)
    all_groups: tuple[LevelGroup, ...] = field(init=False)
    skip_below: dict[str | None, dict[str, float]] = field(init=False)  # skip_bounds()

    def __post_init__(self) -> None:
        groups = {m: level_groups(r) for m, r in self.by_metric.items()}
        object.__setattr__(self, "groups_by_metric", groups)
        object.__setattr__(self, "all_groups", level_groups(self.rules))
        object.__setattr__(self, "skip_below", skip_bounds(groups, self.plans, self.policy.default_plan))

    def next_plan(self, plan: Plan, rule: Rule, feature: str | None) -> Plan | None:
        """The target of `target_plan: next`: the next tier raising the primary metric's limit, or for a
        paywall rule the cheapest higher tier including the feature."""
        metric = rule.primary.metric
        for cand in self.plans[plan.tier + 1 :]:
            if metric == PAYWALL_METRIC:
                if feature and feature in cand.features:
                    return cand
            else:
                cur, new = plan.limit(metric), cand.limit(metric)
                if cur is not None and (new is None or new > cur):
                    return cand
        return None


_DEFAULT_RULE = {
    "cooldown": 7 * DAY,
    "priority": 50,
    "placement": "banner",
    "bypass_cap": False,
    "target_plan": "next",
    "enabled": True,
}


def _fmt_placeholders(text: str) -> list[str]:
    """Problems with a copy template: unknown names, attribute/index access, format specs."""
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
    return out


class _Loader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def err(self, file: str, line: int | None, msg: str) -> None:
        self.problems.append(Problem(file, line, msg))

    def warn(self, file: str, line: int | None, msg: str) -> None:
        self.warnings.append(Problem(file, line, msg, "warning"))


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
    ld = _Loader()
    parsed: list[tuple[str, RulesFile, dict[Any, int]]] = []
    digest = hashlib.sha256()
    for name, text in sources:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        try:
            data, lines = load_yaml(text)
        except YamlError as err:
            ld.err(name, err.line, err.message)
            continue
        if data is None:
            continue
        try:
            parsed.append((name, RulesFile.model_validate(data), lines))
        except ValidationError as verr:
            for e in verr.errors(include_url=False):
                loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
                field_path = ".".join(str(p) for p in loc) or "file"
                msg = e["msg"].removeprefix("Value error, ")
                if e["type"] == "extra_forbidden":
                    msg = "unknown field (check the spelling; see the JSON Schema)"
                ld.err(name, line_for(lines, loc), f"{field_path}: {msg}")
    if not sources:
        ld.err("<rules>", None, "no rule files (*.yaml) found")
    if ld.problems:
        raise RulesError(ld.problems)
    rs = _compile(ld, parsed, digest.hexdigest()[:12])
    if ld.problems:
        raise RulesError(ld.problems)
    assert rs is not None
    return rs


def _compile(
    ld: _Loader, parsed: list[tuple[str, RulesFile, dict[Any, int]]], version: str
) -> RuleSet | None:
    metrics: dict[str, MetricSpec] = {
        n: MetricSpec(
            n, k, u, DEFAULT_ROLLING_WINDOW if k == ROLLING else 0, DEFAULT_BUCKET if k == ROLLING else 0
        )
        for n, (k, u) in BUILTIN_METRICS.items()
    }
    plans_def: tuple[str, list[PlanDef], dict[Any, int]] | None = None
    policy_def: tuple[str, PolicyDef, dict[Any, int]] | None = None
    groups: list[tuple[str, int, GroupDef, dict[Any, int]]] = []
    for name, rf, lines in parsed:
        for mname, m in (rf.metrics or {}).items():
            line = line_for(lines, ("metrics", mname))
            if mname in BUILTIN_METRICS:
                ld.err(name, line, f"metrics.{mname}: '{mname}' is built in and cannot be redeclared")
                continue
            if mname in metrics:
                ld.err(name, line, f"metrics.{mname}: declared twice")
                continue
            if m.kind != ROLLING and (m.window is not None or m.bucket is not None):
                ld.err(name, line, f"metrics.{mname}: window/bucket only apply to rolling_counter")
            window = (m.window or DEFAULT_ROLLING_WINDOW) if m.kind == ROLLING else 0
            bucket = (m.bucket or DEFAULT_BUCKET) if m.kind == ROLLING else 0
            if m.kind == ROLLING and (bucket <= 0 or window // bucket > MAX_BUCKETS or window < bucket):
                ld.err(
                    name, line, f"metrics.{mname}: window/bucket must be between 1 and {MAX_BUCKETS} buckets"
                )
            metrics[mname] = MetricSpec(mname, m.kind, m.unit, window, bucket)
        if rf.plans is not None:
            if plans_def:
                ld.err(name, line_for(lines, ("plans",)), f"plans: already declared in {plans_def[0]}")
            else:
                plans_def = (name, rf.plans, lines)
        if rf.policy is not None:
            if policy_def:
                ld.err(name, line_for(lines, ("policy",)), f"policy: already declared in {policy_def[0]}")
            else:
                policy_def = (name, rf.policy, lines)
        for i, g in enumerate(rf.groups or []):
            groups.append((name, i, g, lines))

    if plans_def is None:
        read = ", ".join(Path(name).name for name, _, _ in parsed) or "none"
        ld.err("<rules>", None, f"no plan catalog: one file must declare 'plans' (files read: {read})")
        return None
    pfile, pdefs, plines = plans_def
    plans: list[Plan] = []
    for i, p in enumerate(pdefs):
        line = line_for(plines, ("plans", i))
        if any(q.id == p.id for q in plans):
            ld.err(pfile, line, f"plans[{i}]: duplicate plan id '{p.id}'")
        for mname in p.limits:
            if mname not in metrics:
                ld.err(
                    pfile,
                    line_for(plines, ("plans", i, "limits", mname)),
                    f"plans[{i}].limits.{mname}: unknown metric '{mname}'",
                )
        plans.append(
            Plan(p.id, p.name or p.id.replace("-", " ").title(), i, dict(p.limits), frozenset(p.features))
        )
    plan_by_id = {p.id: p for p in plans}
    pol = policy_def[1] if policy_def else PolicyDef()
    default_plan = pol.default_plan or plans[0].id
    if default_plan not in plan_by_id:
        ld.err(
            policy_def[0] if policy_def else pfile,
            line_for(policy_def[2], ("policy", "default_plan")) if policy_def else None,
            f"policy.default_plan: unknown plan '{default_plan}'",
        )
    policy = Policy(
        default_plan,
        pol.frequency_cap.max_prompts,
        pol.frequency_cap.per,
        pol.holdout.fraction,
        pol.holdout.salt,
        pol.attribution_window,
        pol.prompt_expiry,
    )

    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for gfile, gi, g, lines in groups:
        for ri, r in enumerate(g.rules):
            base = ("groups", gi, "rules", ri)
            where = f"groups[{gi}].rules[{ri}]"
            line = line_for(lines, base)
            if r.id in seen:
                ld.err(gfile, line, f"{where}: duplicate rule id '{r.id}' (first in {seen[r.id]})")
                continue
            seen[r.id] = f"{gfile}:{line}"
            rule = _compile_rule(ld, gfile, lines, base, where, g, r, metrics, plan_by_id, plans)
            if rule is not None:
                rules.append(rule)
    by_metric: dict[str, list[Rule]] = {}
    for rule in rules:
        for metric in rule.metrics:
            by_metric.setdefault(metric, []).append(rule)
    return RuleSet(
        metrics,
        tuple(plans),
        plan_by_id,
        policy,
        tuple(rules),
        {m: tuple(rs) for m, rs in by_metric.items()},
        version,
        tuple(ld.warnings),
    )


def _compile_cond(
    ld: _Loader, file: str, line: int | None, where: str, c: Condition, metrics: dict[str, MetricSpec]
) -> Cond | None:
    assert c.metric is not None
    spec = metrics.get(c.metric)
    if spec is None:
        ld.err(
            file,
            line,
            f"{where}: unknown metric '{c.metric}'; declare it under 'metrics:' "
            f"(known: {', '.join(sorted(metrics))})",
        )
        return None
    window = 0
    if spec.kind == ROLLING:
        window = c.window or spec.window_ms
        if window > spec.window_ms:
            ld.err(
                file,
                line,
                f"{where}: window {format_duration(window)} is longer than the "
                f"{format_duration(spec.window_ms)} that metric '{c.metric}' keeps",
            )
            return None
        if window < spec.bucket_ms:
            ld.err(file, line, f"{where}: window is shorter than the metric's bucket")
            return None
    elif c.window is not None:
        ld.err(
            file, line, f"{where}: 'window' only applies to rolling counters ('{c.metric}' is a {spec.kind})"
        )
        return None
    if c.feature is not None and c.metric != PAYWALL_METRIC:
        ld.err(file, line, f"{where}: 'feature' only applies to metric '{PAYWALL_METRIC}'")
        return None
    feature = c.feature if c.metric == PAYWALL_METRIC else None
    if c.metric == PAYWALL_METRIC:
        feature = feature or "*"
        if c.ratio is not None:
            ld.err(file, line, f"{where}: paywall conditions count hits: use 'at_least', not 'ratio'")
            return None
    return Cond(c.metric, c.ratio, c.at_least, window, feature, spec.kind)


def _compile_rule(
    ld: _Loader,
    file: str,
    lines: dict[Any, int],
    base: tuple[Any, ...],
    where: str,
    g: GroupDef,
    r: RuleDef,
    metrics: dict[str, MetricSpec],
    plan_by_id: dict[str, Plan],
    plans: list[Plan],
) -> Rule | None:
    merged: dict[str, Any] = dict(_DEFAULT_RULE)
    for src in (g.defaults, r):
        for k in (
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
        ):
            v = getattr(src, k)
            if v is not None:
                merged[k] = v
    line = line_for(lines, base)
    if not merged["enabled"]:
        return None
    conds_def = r.when.all if r.when.all is not None else [r.when]
    conds: list[Cond] = []
    for ci, c in enumerate(conds_def):
        cline = line_for(lines, (*base, "when", "all", ci) if r.when.all is not None else (*base, "when"))
        cc = _compile_cond(ld, file, cline, f"{where}.when", c, metrics)
        if cc is None:
            return None
        conds.append(cc)
    if sum(1 for c in conds if c.metric == PAYWALL_METRIC) > 1:
        ld.err(file, line, f"{where}.when: at most one paywall_hits condition per rule")
        return None
    primary = conds[0]
    if any(c.metric == PAYWALL_METRIC for c in conds[1:]):
        ld.err(file, line, f"{where}.when: a paywall_hits condition must come first in 'all'")
        return None
    prompt = merged.get("prompt")
    if prompt is None:
        ld.err(file, line, f"{where}: no prompt copy (set 'prompt' on the rule or in the group's defaults)")
        return None
    for fname, text in (
        ("title", prompt.title),
        ("body", prompt.body),
        ("cta.label", prompt.cta.label),
        ("cta.url", prompt.cta.url),
    ):
        for msg in _fmt_placeholders(text):
            ld.err(file, line_for(lines, (*base, "prompt")) or line, f"{where}.prompt.{fname}: {msg}")
    audience = merged.get("audience")
    if audience is not None:
        for pid in audience:
            if pid not in plan_by_id:
                ld.err(
                    file,
                    line_for(lines, (*base, "audience")) or line,
                    f"{where}.audience: unknown plan '{pid}' (plans: {', '.join(plan_by_id)})",
                )
    target = merged["target_plan"]
    if target != "next" and target not in plan_by_id:
        ld.err(file, line, f"{where}.target_plan: unknown plan '{target}' (use 'next' or a plan id)")
    threshold = primary.ratio if primary.ratio is not None else primary.at_least
    assert threshold is not None
    rearm = merged.get("rearm")
    if rearm is None:
        rearm = threshold
    elif rearm > threshold:
        ld.err(file, line, f"{where}.rearm: re-arm level {rearm:g} is above the threshold {threshold:g}")
    signal = merged.get("signal") or (
        "paywall"
        if primary.metric == PAYWALL_METRIC
        else "usage_limit"
        if primary.ratio is not None
        else "usage_threshold"
    )
    # Reachability: the rule can fire for some audience plan that has a limit and somewhere to go.
    aud_plans = [plan_by_id[p] for p in audience if p in plan_by_id] if audience is not None else plans
    if primary.ratio is not None and not any(p.limit(primary.metric) is not None for p in aud_plans):
        ld.warn(
            file, line, f"{where} '{r.id}': unreachable: no plan in its audience limits '{primary.metric}'"
        )
    elif not any(p.tier < len(plans) - 1 for p in aud_plans):
        ld.warn(file, line, f"{where} '{r.id}': unreachable: its audience has no higher plan to upgrade to")
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
        source=f"{file}:{line}",
    )
