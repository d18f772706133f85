"""Decisions (docs/rules.md): applies one event to one account's state and says what happened
(outcomes.py).

Pure: no I/O, no wall clock. Event time comes from the event; `now` (for rejecting events from the
future) is passed in by the runtime. Every rule edge yields an explicit Decision, emitted or not.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

from upsell_triggers.engine import distinct, growth, leads, outcomes, recentops, score, windows
from upsell_triggers.engine.erasure import erase, reopen
from upsell_triggers.engine.events import (
    AccountDeleted,
    AccountUpdated,
    Event,
    Feedback,
    InvalidEvent,
    PaywallHit,
    PlanChanged,
    Usage,
)
from upsell_triggers.engine.forecast import (
    day_taken,
    forget_unread,
    project,
    record_counter_sample,
    record_gauge_sample,
)
from upsell_triggers.engine.keys import feature_key, has_feature, split_feature_key
from upsell_triggers.engine.levels import holds, measure
from upsell_triggers.engine.outcomes import (
    EMITTED,
    FEEDBACK_ACTIONS,
    HOLDOUT,
    INELIGIBLE,
    SUPPRESSIONS,
    TREATMENT,
    Decision,
    Outcome,
    Suppression,
)
from upsell_triggers.engine.prompts import build_prompt, choose_variant, in_holdout
from upsell_triggers.engine.ruleindex import LevelGroup, RuleSet
from upsell_triggers.engine.rulemodel import (
    FORECAST,
    GAUGE,
    PAYWALL_METRIC,
    PERIOD,
    Cond,
    MetricSpec,
    Plan,
    Rule,
    Variant,
)
from upsell_triggers.engine.state import (
    CAP_HISTORY,
    MAX_SERIES,
    UNUSED,
    AccountState,
    Attribution,
    BillingPeriod,
    Num,
    RuleState,
)
from upsell_triggers.engine.stateops import event_hash, period_of, record_gauge, seen, seen_id, set_period
from upsell_triggers.engine.timeutil import HOUR, PeriodBounds, billing_period
from upsell_triggers.engine.traits import check_traits, gate_failure
from upsell_triggers.engine.trigger import Trigger

# Callers outside the engine take the outcome words and types from here.
__all__ = [
    "APPLIED",
    "EMITTED",
    "FEEDBACK_ACTIONS",
    "HOLDOUT",
    "INELIGIBLE",
    "SUPPRESSIONS",
    "TREATMENT",
    "Decision",
    "Engine",
    "Outcome",
]

# Compiled, this module reads a global name from its dict on every use (a hash lookup), and a Final one
# from a C variable or inlined: what the per-event paths read from interpreted modules is bound here,
# Final (the outcomes, and the event types that `type(ev) is` dispatches on).
APPLIED: Final = outcomes.APPLIED
DUPLICATE: Final = outcomes.DUPLICATE
ERASED: Final = outcomes.ERASED
LATE: Final = outcomes.LATE
STALE: Final = outcomes.STALE
_USAGE: Final = Usage
_PAYWALL_HIT: Final = PaywallHit
_PLAN_CHANGED: Final = PlanChanged
_ACCOUNT_DELETED: Final = AccountDeleted
_ACCOUNT_UPDATED: Final = AccountUpdated

INF: Final = float("inf")
PERIOD_CACHE: Final = 4096
_NONE: Final[list[Decision]] = []  # never mutated: returned when nothing triggered


def _rule_state(state: AccountState, key: str) -> RuleState:
    rules = state.rules
    if rules is None:
        rules = state.rules = {}
    rst = rules.get(key)
    if rst is None:
        rst = rules[sys.intern(key)] = RuleState()  # a key built per event: kept once, not per account
    return rst


def _period_start(state: AccountState, c: Cond) -> int | None:
    """Start of the billing period a period-counter condition is in (re-arms rules on rollover)."""
    p = period_of(state.periods, c.metric)
    return int(p.start) if p else None


def _suppressed(
    state: AccountState, t: Trigger, outcome: Suppression, reason: str, account: str, ts: int
) -> Decision:
    """A rule that reached its threshold and may not prompt: disarmed (until its level falls back to
    re-arm, or its billing period ends) and its decision."""
    rst = _rule_state(state, t.key)
    rst.armed = False
    rst.fired_period = t.period
    team = t.rule.team or None  # lead rules: their suppressions are counted per team
    return Decision(outcome, t.rule.id, t.rule.group, account, ts, reason, t.feature, team=team)


class Engine:
    """Holds the current RuleSet (swappable at any event boundary) and applies events to states."""

    def __init__(
        self, rules: RuleSet, max_future_ms: int = HOUR, pinned_variants: Mapping[str, str] | None = None
    ) -> None:
        """`pinned_variants`: rule id -> variant id, for rule tests that check one variant's copy."""
        self.rules = rules
        self.max_future_ms = max_future_ms
        self.pinned_variants = dict(pinned_variants or {})
        self._periods: dict[int | None, PeriodBounds] = {}

    def variant(self, account_id: str, rule: Rule) -> Variant:
        """The account's variant of a rule with variants (prompts.choose_variant, unless pinned)."""
        pinned = self.pinned_variants.get(rule.id)
        if pinned is not None:
            for v in rule.variants:
                if v.id == pinned:
                    return v
        return choose_variant(account_id, rule)

    def _variant_id(self, account_id: str, rule_id: str, rs: RuleSet) -> str | None:
        """The variant of a prompt or conversion of `rule_id`, recomputed (assignment is a pure function
        of account and rule): None for rules without variants, at the cost of one lookup."""
        rule = rs.variant_rules.get(rule_id)
        return self.variant(account_id, rule).id if rule is not None else None

    def swap_rules(self, rules: RuleSet) -> None:
        self.rules = rules

    # ---- entry point -------------------------------------------------------------------------------

    def process(
        self, ev: Event, state: AccountState, now_ms: int | None = None, *, fed: bool = False
    ) -> Outcome:
        """Checks the event against the rule set (an invalid event changes nothing, not even the dedup
        ring), drops a duplicate, then applies it by its type. A deleted account's events up to its
        deletion's time are dropped before any check (erasure.py). `fed`: the event's distinct values
        are counted already (_with_distinct)."""
        rs = self.rules
        if rs.distinct and not fed and (type(ev) is _USAGE or type(ev) is _PAYWALL_HIT):
            return self._with_distinct(ev, state, now_ms)
        ts = ev.ts
        if now_ms is not None and ts > now_ms + self.max_future_ms:
            return Outcome("invalid", invalid=self._future(ev))
        if state.erased_at:  # the account was deleted (erasure.py): one attribute read for the others
            if ts <= state.erased_at:
                return ERASED
            reopen(state)
        if type(ev) is _ACCOUNT_DELETED:
            erase(state, ts)
            return APPLIED
        if type(ev) is _USAGE:
            spec = rs.metrics.get(ev.metric)
            # _check_usage's questions, inlined for the common answer (it words the error otherwise).
            amount = None if spec is None or spec.derived else ev.value if spec.kind == GAUGE else ev.delta
            if amount is None:
                return Outcome("invalid", invalid=self._check_usage(ev, spec))
        elif type(ev) is _PLAN_CHANGED:
            bad = self._check_plan(ev, rs)
            if bad is not None:
                return Outcome("invalid", invalid=bad)
        elif type(ev) is _ACCOUNT_UPDATED:
            return self._account_updated(ev, state, rs)
        if seen_id(state, ev.event_id):
            return DUPLICATE
        if ts > state.last_seen:
            state.last_seen = ts
        if type(ev) is _PAYWALL_HIT:
            return self._paywall_hit(ev, state, rs)
        if type(ev) is _PLAN_CHANGED:
            return self._plan_changed(ev, state, rs)
        if type(ev) is not _USAGE:
            assert isinstance(ev, Feedback)
            return self._feedback(ev, state, rs)
        # A usage event: nine in ten events, so applied here rather than in a method of its own (that
        # call cost 2-3% of the engine's instructions per event). `amount` is a gauge's reading or a
        # counter's increment.
        assert spec is not None and amount is not None  # checked above
        metric, kind = spec.name, spec.kind  # the catalog's string: one copy, not one per account
        reading: float
        if kind == GAUGE:
            if spec.history_bucket_ms:  # a growth condition reads this gauge's past
                if not growth.apply_reading(
                    state, metric, ts, amount, spec.history_bucket_ms, spec.history_keep_ms
                ):
                    return STALE
            elif not record_gauge(state, metric, ts, amount):
                return STALE
            reading = amount
        elif kind == PERIOD:
            ps = state.periods
            try:  # period_of(), inline
                p: BillingPeriod | None = ps[ps.index(metric) + 1] if ps is not None else None  # type: ignore[assignment]
            except ValueError:
                p = None
            if p is None or ts >= p.end:
                start, end = self._billing_period(ts, state.period_anchor)
                p = BillingPeriod(start, end, 0)
                state.periods = set_period(state.periods, metric, p)
            elif ts < p.start:
                return LATE
            p.total += amount
            reading = p.total
        elif not self._rolling(state, metric, ts, amount, spec.bucket_ms, spec.window_ms):
            return LATE
        else:
            reading = INF  # below no bound: a rolling counter's level is a window's sum, not the reading
        if state.limits is None:
            # The common event: a reading below every threshold (ruleindex.skip_bounds) of an account
            # with no state of this metric's rules; _evaluate would find that no group can fire, and
            # none has a rule to re-arm or uncap. Near the limits most accounts have rule state, mostly
            # of another metric's rules.
            bounds = rs.skip_below.get(state.plan)
            if (
                bounds is not None
                and reading < bounds.get(metric, -INF)
                and (not state.rules or state.rules.keys().isdisjoint(rs.state_keys[metric]))
            ):
                return APPLIED
        groups = rs.groups_by_metric.get(metric)
        if groups is None:
            return APPLIED
        # A metric a forecast reads keeps a daily history. Here, not above: no such metric has a skip
        # bound (levels.skip_bound) nor lacks rule groups, so events the lines above answer pay nothing.
        fm = rs.forecast_metrics
        if fm and metric in fm:
            self._pace(state, rs, spec, ts, amount)
        decisions = self._evaluate(ev, state, rs, groups, ())
        return Outcome("applied", decisions) if decisions else APPLIED

    def _with_distinct(self, ev: Usage | PaywallHit, state: AccountState, now_ms: int | None) -> Outcome:
        """A usage or paywall event under a rule set with distinct metrics: its values are counted first
        (so the event's own rules see the new counts), then it is applied as any event, then the rules
        reading a distinct metric that changed are evaluated. An event that is invalid or a duplicate
        counts nothing: the distinct structures are put back. An event of a deleted account is applied
        first (it may be dropped, or start the account afresh), then counted."""
        rs = self.rules
        if state.erased_at:  # a deleted account (erasure.py): the event decides first whether it counts
            out = self.process(ev, state, now_ms, fed=True)
            if out.invalid is not None or out is DUPLICATE or out is ERASED:
                return out
            changed = distinct.feed(state, rs.distinct, rs.distinct_names, ev)
        else:
            before = state.distinct
            kept = list(before) if before is not None else None
            changed = distinct.feed(state, rs.distinct, rs.distinct_names, ev)
            out = self.process(ev, state, now_ms, fed=True)
            if out.invalid is not None or out is DUPLICATE:
                state.distinct = kept
                return out
        if not changed:
            return out
        decisions = list(out.decisions)
        for name in changed:
            groups = rs.groups_by_metric.get(name)
            if groups is not None:
                decisions += self._evaluate(ev, state, rs, groups, ())
        if len(decisions) == len(out.decisions):
            return out
        return Outcome(out.status, decisions)

    # ---- per event type (usage events are applied in process) -----------------------------------

    def _paywall_hit(self, ev: PaywallHit, state: AccountState, rs: RuleSet) -> Outcome:
        spec = rs.metrics[PAYWALL_METRIC]
        series = feature_key(PAYWALL_METRIC, ev.feature)
        if not self._rolling(state, series, ev.ts, 1, spec.bucket_ms, spec.window_ms):
            return LATE
        groups = rs.groups_by_metric.get(PAYWALL_METRIC)
        if groups is None:
            return APPLIED
        decisions = self._evaluate(ev, state, rs, groups, (ev.feature,))
        return Outcome("applied", decisions) if decisions else APPLIED

    # ---- checks ------------------------------------------------------------------------------------

    def _future(self, ev: Event) -> InvalidEvent:
        return InvalidEvent(
            "ts_in_future",
            f"field 'ts': {ev.ts} is more than {self.max_future_ms // 1000}s ahead of the processing clock",
            ev.account_id,
        )

    @staticmethod
    def _check_plan(ev: PlanChanged, rs: RuleSet) -> InvalidEvent | None:
        if ev.plan not in rs.plan_by_id:
            return InvalidEvent(
                "unknown_plan",
                f"field 'plan': unknown plan {ev.plan[:64]!r}; known: " + ", ".join(rs.plan_by_id),
                ev.account_id,
            )
        for m in ev.limits or ():
            if m not in rs.metrics:
                return InvalidEvent(
                    "unknown_metric", f"field 'limits.{m[:64]}': unknown metric", ev.account_id
                )
        return None

    @staticmethod
    def _check_usage(ev: Usage, spec: MetricSpec | None) -> InvalidEvent:
        """Why a usage event does not fit its metric (called once process() found that it does not)."""
        if spec is None or spec.name == PAYWALL_METRIC:
            return InvalidEvent(
                "unknown_metric",
                f"field 'metric': {ev.metric[:64]!r} is not in the metric catalog",
                ev.account_id,
            )
        if spec.derived:
            return InvalidEvent(
                "invalid_field",
                f"field 'metric': '{ev.metric}' counts distinct {spec.event_field} values of other events "
                "and is not sent itself",
                ev.account_id,
            )
        if spec.kind == GAUGE:
            return InvalidEvent(
                "invalid_field",
                f"field 'value': metric '{ev.metric}' is a gauge: send its "
                "absolute reading as 'value', not 'delta'",
                ev.account_id,
            )
        return InvalidEvent(
            "invalid_field",
            f"field 'delta': metric '{ev.metric}' is a counter: send increments as 'delta', not 'value'",
            ev.account_id,
        )

    def _billing_period(self, ts: int, anchor: int | None) -> PeriodBounds:
        """billing_period() memoised per anchor: most accounts share the calendar-month default."""
        hit = self._periods.get(anchor)
        if hit is not None and hit.start <= ts < hit.end:
            return hit
        p = billing_period(ts, anchor)
        if len(self._periods) >= PERIOD_CACHE:
            self._periods.clear()
        self._periods[anchor] = p
        return p

    # ---- state updates -----------------------------------------------------------------------------

    @staticmethod
    def _rolling(state: AccountState, series: str, ts: int, delta: Num, bucket_ms: int, keep_ms: int) -> bool:
        rolling = state.rolling
        if rolling is None:
            rolling = state.rolling = {}
        buckets = rolling.get(series)
        if buckets is None:
            if len(rolling) >= MAX_SERIES:
                # Evict the series idle longest, with the rule states that counted it.
                victim = min(rolling, key=lambda k: windows.newest(rolling[k]))
                del rolling[victim]
                _, feat = split_feature_key(victim)
                if feat is not None and state.rules:
                    for k in [k for k in state.rules if has_feature(k, feat)]:
                        del state.rules[k]
            series = sys.intern(series)  # a name built per event: kept once
        added = windows.add(buckets, ts, delta, bucket_ms, keep_ms)
        if added is None:
            return False
        rolling[series] = added
        return True

    @staticmethod
    def _pace(state: AccountState, rs: RuleSet, spec: MetricSpec, ts: int, amount: float) -> None:
        """The daily history a forecast rule on this metric projects from (forecast.py)."""
        forget_unread(state, rs.forecast_metrics)
        if spec.kind == GAUGE:
            record_gauge_sample(state, spec.name, ts, amount)
        else:
            p = period_of(state.periods, spec.name)
            assert p is not None  # the event's own, opened above
            record_counter_sample(state, spec.name, int(p.start), ts, amount)

    def _plan(self, state: AccountState, rs: RuleSet) -> Plan:
        return rs.plan_by_id.get(state.plan or rs.policy.default_plan) or rs.plans[0]

    def _plan_changed(self, ev: PlanChanged, state: AccountState, rs: RuleSet) -> Outcome:
        if ev.ts < state.plan_ts:
            return STALE
        old = self._plan(state, rs)
        new = rs.plan_by_id[ev.plan]
        decisions: list[Decision] = []
        attr = state.attribution
        if new.tier > old.tier and attr is not None:
            if attr.ts <= ev.ts <= attr.ts + rs.policy.attribution_ms:
                decisions.append(
                    Decision(
                        "conversion",
                        attr.rule_id,
                        attr.rule_group,
                        ev.account_id,
                        ev.ts,
                        f"upgrade {old.id}->{new.id} within the attribution window of "
                        f"{attr.group} decision {attr.prompt_id}",
                        group=attr.group,
                        variant=self._variant_id(ev.account_id, attr.rule_id, rs)
                        if rs.variant_rules and attr.group == TREATMENT
                        else None,
                    )
                )
            state.attribution = None
        if new.tier > old.tier and state.leads is not None:
            lead_conv = leads.conversion(
                state, ev.account_id, ev.ts, rs.policy.attribution_ms, f"upgrade {old.id}->{new.id}"
            )
            if lead_conv is not None:
                decisions.append(lead_conv)
        state.plan, state.plan_ts = new.id, ev.ts
        state.limits = dict(ev.limits) if ev.limits else None
        if ev.period_start is not None and ev.period_start != state.period_anchor:
            state.period_anchor = ev.period_start
            state.periods = None  # a new anchor starts a new billing period (and quota)
        for rst in (state.rules or UNUSED).values():  # a plan change re-arms every rule
            rst.armed, rst.capped = True, False
        features = tuple(
            feat
            for metric, feat in map(split_feature_key, state.rolling or UNUSED)
            if metric == PAYWALL_METRIC and feat is not None
        )
        decisions += self._evaluate(ev, state, rs, rs.all_groups, features)
        # Most plan changes decide nothing: the shared outcome, as for usage events, which the worker
        # counts per batch rather than recording each (Processor.handle_records).
        return Outcome("applied", decisions) if decisions else APPLIED

    @staticmethod
    def _account_updated(ev: AccountUpdated, state: AccountState, rs: RuleSet) -> Outcome:
        """Sets the account's traits (validated against the catalog; null unsets one). Rules are not
        evaluated: traits are read when the next usage or paywall event evaluates them."""
        values = check_traits(ev, rs.traits)
        if isinstance(values, InvalidEvent):
            return Outcome("invalid", invalid=values)
        if seen(state, event_hash(ev.event_id)):
            return DUPLICATE
        ts = ev.ts
        if ts > state.last_seen:
            state.last_seen = ts
        if ts < state.traits_ts:
            return STALE
        catalog = rs.traits
        # Traits a reloaded catalog no longer declares are dropped here (conditions cannot name them).
        traits = {k: v for k, v in (state.traits or UNUSED).items() if k in catalog}
        for name, v in values.items():
            if v is None:
                traits.pop(name, None)
            else:
                # The catalog's string, and one copy of each string value (a segment, a region) for all
                # accounts, not one per account.
                traits[catalog[name].name] = sys.intern(v) if type(v) is str else v
        state.traits, state.traits_ts = traits, ts
        return APPLIED

    def _feedback(self, ev: Feedback, state: AccountState, rs: RuleSet) -> Outcome:
        rule_id, rule_group = "unknown", "unknown"
        rp = state.recent_prompts
        hit = recentops.find(rp, ev.prompt_id) if rp is not None else None
        if hit is not None:
            rule_id, rule_group = hit.rule_id, hit.rule_group
        action = FEEDBACK_ACTIONS[ev.type]
        return Outcome(
            "applied",
            [
                Decision(
                    "feedback",
                    rule_id,
                    rule_group,
                    ev.account_id,
                    ev.ts,
                    f"prompt {ev.prompt_id} {action}",
                    action=action,
                    variant=self._variant_id(ev.account_id, rule_id, rs) if rs.variant_rules else None,
                )
            ],
        )

    # ---- evaluation --------------------------------------------------------------------------------

    def _evaluate(
        self,
        ev: Event,
        state: AccountState,
        rs: RuleSet,
        groups: tuple[LevelGroup, ...],
        features: tuple[str, ...],
    ) -> list[Decision]:
        plan = rs.plan_by_id.get(state.plan or rs.policy.default_plan) or rs.plans[0]  # _plan(), inlined
        ts = ev.ts
        rstates = state.rules or UNUSED
        triggered: list[Trigger] | None = None
        levels: Sequence[tuple[str | None, Num, float | None, float | None]]  # a count stays an int
        for grp in groups:
            primary = grp.primary
            pf = primary.feature
            if pf is None:
                value, limit, level = measure(state, plan, primary, None, ts)
                if (level is None or level < grp.min_threshold) and (
                    not rstates or rstates.keys().isdisjoint(grp.ids)
                ):
                    continue  # no rule of the group can fire, and none has state to re-arm or uncap
                levels = ((None, value, limit, level),)
            else:
                feats = features if pf == "*" else (pf,) if pf in features else ()
                # Loops, not comprehensions: in this Python each comprehension is a call of its own.
                levels = []
                can_fire = False
                for f in feats:
                    m = (f, *measure(state, plan, primary, f, ts))
                    levels.append(m)
                    if not (m[3] is None or m[3] < grp.min_threshold):
                        can_fire = True
                if not rstates and not can_fire:
                    continue
            # The billing period a period counter's level is in: nothing below changes it.
            period = _period_start(state, primary) if primary.kind == PERIOD else None
            for rule in grp.rules:  # rule-major, as the files order them
                for feat, value, limit, level in levels:
                    key = rule.id if feat is None else feature_key(rule.id, feat)
                    rst = rstates.get(key)
                    if rst is not None and not rst.armed:
                        fired_in = rst.fired_period
                        if (
                            (period is not None and fired_in is not None and period != fired_in)
                            or level is None
                            or level < rule.rearm
                        ):  # a new billing period, or the level fell back
                            rst.armed, rst.capped = True, False
                        else:
                            continue
                    if (
                        level is not None
                        and level >= rule.threshold
                        and (
                            not rule.secondary or all(holds(state, plan, c, feat, ts) for c in rule.secondary)
                        )
                    ):
                        if triggered is None:
                            triggered = []
                        triggered.append(Trigger(rule, feat, key, value, limit, period))
                    elif rst is not None and rst.capped:
                        rst.capped = False
        if triggered is None:
            return _NONE
        return self._decide(ev, state, rs, plan, triggered)

    def _decide(
        self, ev: Event, state: AccountState, rs: RuleSet, plan: Plan, triggered: list[Trigger]
    ) -> list[Decision]:
        ts, account = ev.ts, ev.account_id
        out: list[Decision] = []
        live: list[tuple[Trigger, Plan]] = []
        scoring = rs.scoring
        if scoring is not None:  # the readiness score: rules starting an episode add their points first
            rstates = state.rules or UNUSED
            score.add_edges(
                state,
                scoring,
                [t.rule for t in triggered if (prev := rstates.get(t.key)) is None or not prev.capped],
                ts,
            )
        for t in triggered:
            rule = t.rule
            if rule.checks:  # trait, score conditions or the eligibility gate (False when unused)
                if rule.min_score is not None and (
                    scoring is None or score.read(state, scoring, ts).score < rule.min_score
                ):
                    continue  # the score condition of `when` does not hold: the rule does not fire
                verdict = gate_failure(rule, state, plan, t.feature, ts)
                if verdict is not None:
                    outcome, reason = verdict
                    if outcome is None:
                        continue  # a trait condition of `when` does not hold: the rule does not fire
                    if outcome == INELIGIBLE:  # stays armed (it fires once eligible); recorded once
                        gst = _rule_state(state, t.key)
                        if not gst.capped:
                            gst.capped = True
                            out.append(
                                Decision(
                                    outcome,
                                    rule.id,
                                    rule.group,
                                    account,
                                    ts,
                                    reason,
                                    t.feature,
                                    team=rule.team or None,
                                )
                            )
                        continue
                    out.append(_suppressed(state, t, outcome, reason, account, ts))
                    continue
            if rule.audience is not None and plan.id not in rule.audience:
                why = f"plan '{plan.id}' is not in the rule's audience"
                out.append(_suppressed(state, t, "audience", why, account, ts))
                continue
            if rule.target_plan == "next":
                target = rs.next_plan(plan, rule, t.feature)
            else:
                target = rs.plan_by_id[rule.target_plan]
                if target.tier <= plan.tier:
                    target = None
            if target is None:
                why = f"no plan above '{plan.id}' raises this limit"
                out.append(_suppressed(state, t, "no_upgrade_path", why, account, ts))
                continue
            rst = (state.rules or UNUSED).get(t.key)
            if rst is not None and rst.last_fired is not None and ts - rst.last_fired < rule.cooldown_ms:
                why = f"fired at {rst.last_fired}, cooldown {rule.cooldown_ms // 1000}s"
                out.append(_suppressed(state, t, "cooldown", why, account, ts))
                continue
            live.append((t, target))
        if not live:
            return out
        if len(live) == 1:  # the common crossing: one rule, nothing to supersede or order
            kept = live
        else:
            # Highest threshold wins among rules on the same metric (and feature) firing on this event.
            # A forecast's threshold is a projected share: it is compared with forecasts only. A lead rule
            # does not supersede a prompt rule, nor the reverse.
            best: dict[tuple[str, str | None, str, bool], float] = {}
            for t, _ in live:
                k = (t.rule.primary.metric, t.feature, t.rule.primary.kind, t.rule.leads)
                best[k] = max(best.get(k, float("-inf")), t.rule.threshold)
            kept = []
            for t, target in live:
                if (
                    t.rule.threshold
                    < best[(t.rule.primary.metric, t.feature, t.rule.primary.kind, t.rule.leads)]
                ):
                    why = "a higher threshold on the same metric fired on this event"
                    out.append(_suppressed(state, t, "superseded", why, account, ts))
                else:
                    kept.append((t, target))
        pol = rs.policy
        if pol.holdout_fraction > 0 and in_holdout(account, pol.holdout_salt, pol.holdout_fraction):
            when: Any = ts  # one object for every field that keeps the time (see _emit_prompt)
            for t, _ in kept:
                out.append(_suppressed(state, t, "holdout", "account is in the holdout group", account, ts))
                _rule_state(state, t.key).last_fired = when
                state.attribution = Attribution(
                    "holdout:" + t.rule.id, t.rule.id, t.rule.group, HOLDOUT, when
                )
            return out
        if len(kept) > 1:
            kept.sort(key=lambda x: (-x[0].rule.priority, -x[0].rule.threshold, x[0].rule.id))
        sharers = rs.day_sharers
        for t, target in kept:
            rule = t.rule
            if sharers and rule.primary.metric in sharers:  # a forecast's metric: one prompt a day
                taken = day_taken(state, sharers[rule.primary.metric], rule, ts)
                if taken is not None:
                    rst = _rule_state(state, t.key)
                    if not rst.capped:  # stays armed, as under the cap; recorded once per episode
                        rst.capped = True
                        out.append(Decision("superseded", rule.id, rule.group, account, ts, taken, t.feature))
                    continue
            if rule.bypass_cap and not rule.leads:  # the cap does not apply: no need to count
                out.append(self._emit_prompt(ev, state, rs, plan, t, target))
                continue
            # Prompts within the cap's window (each emitted above counts for the next).
            recent = 0
            window = pol.cap_window_ms
            for s in state.sent or ():
                if ts - s < window:
                    recent += 1
            if rule.leads:  # a lead, or a lead and a prompt: each channel with its own cap (leads.py)
                out += self._leads(ev, state, rs, plan, t, target, recent)
                continue
            if recent >= pol.cap_max:
                rst = _rule_state(state, t.key)
                if (
                    not rst.capped
                ):  # stays armed: it may fire once the cap frees up; recorded once per episode
                    rst.capped = True
                    out.append(
                        Decision(
                            "frequency_cap",
                            rule.id,
                            rule.group,
                            account,
                            ts,
                            f"{recent} prompt(s) in the last {window // 1000}s (cap {pol.cap_max})",
                            t.feature,
                        )
                    )
                continue
            out.append(self._emit_prompt(ev, state, rs, plan, t, target))
        return out

    def _emit_prompt(
        self, ev: Event, state: AccountState, rs: RuleSet, plan: Plan, t: Trigger, target: Plan
    ) -> Decision:
        """Builds the prompt of a rule that fires and records it: the rule disarmed, the prompt counted
        by the frequency cap, attributed, and kept for feedback."""
        rule, account, ts = t.rule, ev.account_id, ev.ts
        variant = self.variant(account, rule) if rule.variants else None
        pj = (
            project(state, rule.primary, t.value, t.limit or 0, ts) if rule.primary.kind == FORECAST else None
        )
        prompt = build_prompt(
            rs=rs,
            rule=rule,
            account_id=account,
            user_id=ev.user_id,
            feature=t.feature,
            value=t.value,
            limit=t.limit,
            plan=plan,
            target=target,
            trigger_event_id=ev.event_id,
            ts=ts,
            variant=variant,
            projection=pj,
        )
        # The rule state, the frequency cap and the attribution keep the prompt's time: one object for
        # the three (32 bytes each), as interpreted code shares it. Compiled, `ts` is a C integer, boxed
        # anew wherever it is stored; `when` is boxed once.
        when: Any = ts
        rst = _rule_state(state, t.key)
        rst.armed, rst.capped, rst.last_fired, rst.fired_period = False, False, when, t.period
        sent = state.sent
        state.sent = (*sent[1 - CAP_HISTORY :], when) if sent else (when,)
        pid = prompt["prompt_id"]
        state.attribution = Attribution(pid, rule.id, rule.group, TREATMENT, when)
        # The id's 12 bytes as recentops packs them: build_prompt's ids are "pr_" and 24 hex digits.
        state.recent_prompts = recentops.add_packed(
            state.recent_prompts, bytes.fromhex(pid[3:]), rule.id, rule.group
        )
        return Decision(
            EMITTED,
            rule.id,
            rule.group,
            account,
            ts,
            f"{rule.primary.metric} reached {prompt['ratio'] or prompt['value']} "
            f"(threshold {rule.threshold_text})"
            if pj is None
            else f"{rule.primary.metric} at {prompt['ratio']}, projected to reach "
            f"{rule.threshold_text} of the limit in {pj.days_left:.1f} days at {pj.rate:g} a day",
            t.feature,
            prompt=prompt,
            variant=variant.id if variant is not None else None,
        )

    def _leads(
        self,
        ev: Event,
        state: AccountState,
        rs: RuleSet,
        plan: Plan,
        t: Trigger,
        target: Plan,
        prompts_recent: int,
    ) -> list[Decision]:
        """A lead rule past every check up to the cap: leads.send decides its channels."""

        def disarm() -> None:
            rst = _rule_state(state, t.key)
            rst.armed, rst.capped, rst.last_fired, rst.fired_period = False, False, ev.ts, t.period

        def capped_once() -> bool:  # a frequency_cap decision is recorded once per episode
            rst = _rule_state(state, t.key)
            first, rst.capped = not rst.capped, True
            return first

        return leads.send(
            rs=rs,
            rule=t.rule,
            state=state,
            plan=plan,
            target=target,
            account_id=ev.account_id,
            user_id=ev.user_id,
            feature=t.feature,
            event_id=ev.event_id,
            ts=ev.ts,
            prompts_recent=prompts_recent,
            emit_prompt=lambda: self._emit_prompt(ev, state, rs, plan, t, target),
            disarm=disarm,
            capped_once=capped_once,
        )
