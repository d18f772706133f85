"""The RuleSet: the compiled rules with the indexes the engine reads on the hot path.

Rules by the metric they read, runs of rules measuring the same level (LevelGroup), and per plan and
metric the reading below which no rule can fire (skip bounds, from levels.py). Built once per load;
immutable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from upsell_triggers.engine.distinct import field_tag
from upsell_triggers.engine.levels import skip_bound
from upsell_triggers.engine.rulemodel import (
    DISTINCT,
    FORECAST,
    PAYWALL_METRIC,
    Cond,
    MetricSpec,
    Plan,
    Policy,
    Problem,
    Rule,
    TraitSpec,
)
from upsell_triggers.engine.score import Scoring


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


def level_groups(rules: tuple[Rule, ...]) -> tuple[LevelGroup, ...]:
    """Runs of consecutive rules only, so that decisions keep the rule order of the files."""
    runs: list[list[Rule]] = []
    for rule in rules:
        p = rule.primary
        if runs:
            q = runs[-1][0].primary
            key = (
                p.metric,
                p.kind,
                p.window_ms,
                p.feature,
                p.ratio is None,
                p.within_ms,
                p.min_history_days,
                p.over_ms,
                p.growth is None,
            )
            if key == (
                q.metric,
                q.kind,
                q.window_ms,
                q.feature,
                q.ratio is None,
                q.within_ms,
                q.min_history_days,
                q.over_ms,
                q.growth is None,
            ):
                runs[-1].append(rule)
                continue
        runs.append([rule])
    return tuple(
        LevelGroup(run[0].primary, tuple(run), min(r.threshold for r in run), tuple(r.id for r in run))
        for run in runs
    )


def skip_bounds(
    groups_by_metric: dict[str, tuple[LevelGroup, ...]], plans: tuple[Plan, ...], default_plan: str
) -> dict[str | None, dict[str, float]]:
    """Per plan id (None: the default plan, as AccountState.plan says it), per metric, the reading
    below which no rule group on the metric can fire for an account without rule states or limit
    overrides. The engine answers such readings without evaluating the rules: three quarters of the
    benchmark's events (bench/ANALYSIS.md)."""
    out: dict[str | None, dict[str, float]] = {
        plan.id: {
            metric: min(skip_bound(g.primary, g.min_threshold, metric, plan) for g in groups)
            for metric, groups in groups_by_metric.items()
        }
        for plan in plans
    }
    if default_plan in out:
        out[None] = out[default_plan]
    return out


NEXT_PLANS = 4096  # next_plan answers a rule set keeps: a bound, not an expected size


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
    traits: dict[str, TraitSpec] = field(default_factory=dict)  # the trait catalog
    scoring: Scoring | None = None  # the readiness score's section (score.py); None: no scoring
    # Derived: what the engine iterates (rules read by a metric; all rules, on a plan change).
    groups_by_metric: dict[str, tuple[LevelGroup, ...]] = field(init=False)
    all_groups: tuple[LevelGroup, ...] = field(init=False)
    skip_below: dict[str | None, dict[str, float]] = field(init=False)  # skip_bounds()
    # Per metric, the rule-state keys of its groups' feature-less rules: an account with state for none
    # of them takes the skip bound too (the near-limits mix: most accounts have state for some metric).
    state_keys: dict[str, frozenset[str]] = field(init=False)
    variant_rules: dict[str, Rule] = field(init=False)  # rules with copy variants, by id
    # Metrics a forecast rule reads (their daily history is kept) and, per such metric, the ids of the
    # rules that share its one prompt a day (forecast.day_taken): empty for rule sets without forecasts.
    forecast_metrics: frozenset[str] = field(init=False)
    day_sharers: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(init=False)
    # Distinct metrics a rule or the eligibility gate reads: the ones usage and paywall events feed
    # (empty for most rule sets, and then the engine does nothing more per event).
    distinct: tuple[tuple[MetricSpec, tuple[int, ...], int], ...] = field(init=False)  # distinct.DistinctRead
    distinct_names: frozenset[str] = field(init=False)
    # Whether an account's state keeps a history for some rule: a forecast's daily samples, a distinct
    # count's values or a gauge's past readings for a growth condition. Such a state takes twice the
    # memory decoded (bench/expansion_bench.py, small shape: 1.8 KiB against 0.9 with the shipped
    # rules), so the Kafka worker keeps fewer of them decoded by default (table_state.decoded_bound).
    keeps_histories: bool = field(init=False)
    # next_plan's answers by (tier, metric, feature): a prompt asks it, and the answer is the rule set's.
    next_plans: dict[tuple[int, str, str | None], Plan | None] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        groups = {m: level_groups(r) for m, r in self.by_metric.items()}
        object.__setattr__(self, "groups_by_metric", groups)
        object.__setattr__(self, "all_groups", level_groups(self.rules))
        object.__setattr__(self, "skip_below", skip_bounds(groups, self.plans, self.policy.default_plan))
        keys = {m: frozenset(k for g in gs for k in g.ids) for m, gs in groups.items()}
        object.__setattr__(self, "state_keys", keys)
        object.__setattr__(self, "variant_rules", {r.id: r for r in self.rules if r.variants})
        fm = frozenset(r.primary.metric for r in self.rules if r.primary.kind == FORECAST)
        object.__setattr__(self, "forecast_metrics", fm)
        sharers = {
            m: (
                tuple(r.id for r in self.rules if r.primary.metric == m and r.primary.kind == FORECAST),
                tuple(r.id for r in self.rules if r.primary.metric == m and r.primary.kind != FORECAST),
            )
            for m in fm
        }
        object.__setattr__(self, "day_sharers", sharers)
        conds = [c for r in self.rules for c in r.conds]
        conds += [c for c in self.policy.eligibility if isinstance(c, Cond)]
        windows: dict[str, set[int]] = {}
        for c in conds:
            if c.kind == DISTINCT:
                windows.setdefault(c.metric, set()).add(c.window_ms // c.bucket_ms)
        object.__setattr__(
            self,
            "distinct",
            tuple(
                (self.metrics[m], tuple(sorted(ws)), field_tag(self.metrics[m].event_field or ""))
                for m, ws in windows.items()
            ),
        )
        object.__setattr__(self, "distinct_names", frozenset(windows))
        histories = bool(fm or windows or any(m.history_keep_ms for m in self.metrics.values()))
        object.__setattr__(self, "keeps_histories", histories)
        object.__setattr__(self, "next_plans", {})

    def next_plan(self, plan: Plan, rule: Rule, feature: str | None) -> Plan | None:
        """The target of `target_plan: next`: the next tier raising the primary metric's limit, or for a
        paywall rule the cheapest higher tier including the feature. Remembered per plan of this rule set,
        metric and feature (features come from events: at most NEXT_PLANS answers are kept)."""
        metric, tier, plans = rule.primary.metric, plan.tier, self.plans
        if not (0 <= tier < len(plans) and plans[tier] is plan):  # a plan of another rule set
            return self._next_plan(plan, metric, feature)
        key = (tier, metric, feature)
        memo = self.next_plans
        hit = memo.get(key, self)  # self: not asked yet (None is an answer)
        if hit is not self:
            return hit  # type: ignore[return-value]
        target = memo[key] = self._next_plan(plan, metric, feature)
        if len(memo) > NEXT_PLANS:
            memo.clear()
        return target

    def _next_plan(self, plan: Plan, metric: str, feature: str | None) -> Plan | None:
        if metric != PAYWALL_METRIC:
            return next_raising_limit(self.plans, plan, metric)
        for cand in self.plans[plan.tier + 1 :]:
            if feature and feature in cand.features:
                return cand
        return None


def next_raising_limit(plans: Sequence[Plan], plan: Plan, metric: str) -> Plan | None:
    """The first plan above `plan` that raises or removes its limit on `metric`; None when `plan` has no
    limit on it or no higher plan raises it (`target_plan: next`, and `rules check`'s warning when a
    rule's audience can never have one)."""
    cur = plan.limit(metric)
    if cur is None:
        return None
    for cand in plans[plan.tier + 1 :]:
        new = cand.limit(metric)
        if new is None or new > cur:
            return cand
    return None
