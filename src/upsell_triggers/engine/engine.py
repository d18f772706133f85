"""Decisions (contract §4): applies one event to one account's state and says what happened.

Pure: no I/O, no wall clock. Event time comes from the event; `now` (for rejecting events from the
future) is passed in by the runtime. Every rule edge yields an explicit Decision, emitted or not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from upsell_triggers.engine.events import (
    Event,
    FeedbackEvent,
    InvalidEvent,
    PaywallHitEvent,
    PlanChangedEvent,
)
from upsell_triggers.engine.prompts import build_prompt, in_holdout
from upsell_triggers.engine.ruleset import GAUGE, PAYWALL_METRIC, PERIOD, Cond, Plan, Rule, RuleSet
from upsell_triggers.engine.state import (
    CAP_HISTORY,
    MAX_SERIES,
    RECENT_PROMPTS,
    AccountState,
    RuleState,
    rolling_add,
    rolling_sum,
)
from upsell_triggers.engine.timeutil import HOUR, billing_period

EMITTED = "emitted"
SUPPRESSIONS = ("superseded", "cooldown", "frequency_cap", "holdout", "no_upgrade_path", "audience")
FEEDBACK_ACTIONS = {"prompt_shown": "shown", "prompt_clicked": "clicked", "prompt_dismissed": "dismissed"}
TREATMENT, HOLDOUT = "treatment", "holdout"
SEP = "\x1f"


@dataclass(slots=True)
class Decision:
    """One outcome: a rule edge (emitted or suppressed), a conversion, or prompt feedback."""

    outcome: str  # emitted | superseded | cooldown | ... | conversion | feedback
    rule_id: str
    rule_group: str
    account_id: str
    ts: int
    reason: str
    feature: str | None = None
    group: str | None = None  # treatment | holdout (conversions)
    action: str | None = None  # shown | clicked | dismissed (feedback)
    prompt: dict[str, Any] | None = None

    def explain(self) -> dict[str, Any]:
        d = {
            "outcome": self.outcome,
            "rule_id": self.rule_id,
            "account_id": self.account_id,
            "feature": self.feature,
            "reason": self.reason,
        }
        if self.group:
            d["group"] = self.group
        if self.action:
            d["action"] = self.action
        if self.prompt:
            d["prompt_id"] = self.prompt["prompt_id"]
        return d


@dataclass(slots=True)
class Outcome:
    status: str  # applied | duplicate | stale | late | invalid
    decisions: list[Decision] = field(default_factory=list)
    invalid: InvalidEvent | None = None

    @property
    def prompts(self) -> list[dict[str, Any]]:
        return [d.prompt for d in self.decisions if d.prompt is not None]


def _rule_state(state: AccountState, key: str) -> RuleState:
    rst = state.rules.get(key)
    if rst is None:
        rst = state.rules[key] = RuleState()
    return rst


def event_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big", signed=True)


@dataclass(slots=True)
class _Trigger:
    rule: Rule
    feature: str | None
    key: str
    value: float
    limit: float | None
    period: int | None


class Engine:
    """Holds the current RuleSet (swappable at any event boundary) and applies events to states."""

    def __init__(self, rules: RuleSet, max_future_ms: int = HOUR) -> None:
        self.rules = rules
        self.max_future_ms = max_future_ms

    def swap_rules(self, rules: RuleSet) -> None:
        self.rules = rules

    # ---- entry point -------------------------------------------------------------------------------

    def process(self, ev: Event, state: AccountState, now_ms: int | None = None) -> Outcome:
        rs = self.rules
        bad = self._check(ev, rs, now_ms)
        if bad is not None:
            return Outcome("invalid", invalid=bad)
        if state.seen(event_hash(ev.event_id)):
            return Outcome("duplicate")
        if ev.ts > state.last_seen:
            state.last_seen = ev.ts
        if isinstance(ev, FeedbackEvent):
            return self._feedback(ev, state)
        if isinstance(ev, PlanChangedEvent):
            return self._plan_changed(ev, state, rs)
        if isinstance(ev, PaywallHitEvent):
            series = PAYWALL_METRIC + SEP + ev.feature
            spec = rs.metrics[PAYWALL_METRIC]
            if not self._rolling(state, series, ev.ts, 1, spec.bucket_ms, spec.window_ms):
                return Outcome("late")
            return Outcome(
                "applied", self._evaluate(ev, state, rs, rs.by_metric.get(PAYWALL_METRIC, ()), (ev.feature,))
            )
        spec = rs.metrics[ev.metric]
        if spec.kind == GAUGE:
            cur = state.gauges.get(ev.metric)
            if cur is not None and ev.ts < cur[0]:
                return Outcome("stale")
            state.gauges[ev.metric] = [ev.ts, ev.value]  # type: ignore[list-item]
        elif spec.kind == PERIOD:
            p = state.periods.get(ev.metric)
            if p is None or ev.ts >= p[1]:
                start, end = billing_period(ev.ts, state.period_anchor)
                p = state.periods[ev.metric] = [start, end, 0]
            elif ev.ts < p[0]:
                return Outcome("late")
            p[2] += ev.delta  # type: ignore[operator]
        else:
            if not self._rolling(state, ev.metric, ev.ts, ev.delta, spec.bucket_ms, spec.window_ms):  # type: ignore[arg-type]
                return Outcome("late")
        return Outcome("applied", self._evaluate(ev, state, rs, rs.by_metric.get(ev.metric, ()), ()))

    def _check(self, ev: Event, rs: RuleSet, now_ms: int | None) -> InvalidEvent | None:
        if now_ms is not None and ev.ts > now_ms + self.max_future_ms:
            return InvalidEvent(
                "ts_in_future",
                f"field 'ts': {ev.ts} is more than {self.max_future_ms // 1000}s "
                "ahead of the processing clock",
                ev.account_id,
            )
        if isinstance(ev, PlanChangedEvent):
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
        elif not isinstance(ev, PaywallHitEvent | FeedbackEvent):
            spec = rs.metrics.get(ev.metric)
            if spec is None or spec.name == PAYWALL_METRIC:
                return InvalidEvent(
                    "unknown_metric",
                    f"field 'metric': {ev.metric[:64]!r} is not in the metric catalog",
                    ev.account_id,
                )
            if spec.kind == GAUGE and ev.value is None:
                return InvalidEvent(
                    "invalid_field",
                    f"field 'value': metric '{ev.metric}' is a gauge: send its "
                    "absolute reading as 'value', not 'delta'",
                    ev.account_id,
                )
            if spec.kind != GAUGE and ev.delta is None:
                return InvalidEvent(
                    "invalid_field",
                    f"field 'delta': metric '{ev.metric}' is a counter: send "
                    "increments as 'delta', not 'value'",
                    ev.account_id,
                )
        return None

    # ---- state updates -----------------------------------------------------------------------------

    @staticmethod
    def _rolling(
        state: AccountState, series: str, ts: int, delta: float, bucket_ms: int, keep_ms: int
    ) -> bool:
        buckets = state.rolling.get(series)
        if buckets is None:
            if len(state.rolling) >= MAX_SERIES:
                # Evict the series idle longest, with the rule states that counted it.
                victim = min(state.rolling, key=lambda k: max(state.rolling[k], default=0))
                del state.rolling[victim]
                if SEP in victim:
                    feat = SEP + victim.split(SEP, 1)[1]
                    for k in [k for k in state.rules if k.endswith(feat)]:
                        del state.rules[k]
            buckets = state.rolling[series] = {}
        return rolling_add(buckets, ts, delta, bucket_ms, keep_ms)

    def _plan(self, state: AccountState, rs: RuleSet) -> Plan:
        return rs.plan_by_id.get(state.plan or rs.policy.default_plan) or rs.plans[0]

    def _plan_changed(self, ev: PlanChangedEvent, state: AccountState, rs: RuleSet) -> Outcome:
        if ev.ts < state.plan_ts:
            return Outcome("stale")
        old = self._plan(state, rs)
        new = rs.plan_by_id[ev.plan]
        decisions: list[Decision] = []
        attr = state.attribution
        if new.tier > old.tier and attr is not None:
            if attr[4] <= ev.ts <= attr[4] + rs.policy.attribution_ms:
                decisions.append(
                    Decision(
                        "conversion",
                        attr[1],
                        attr[2],
                        ev.account_id,
                        ev.ts,
                        f"upgrade {old.id}->{new.id} within the attribution window of "
                        f"{attr[3]} decision {attr[0]}",
                        group=attr[3],
                    )
                )
            state.attribution = None
        state.plan, state.plan_ts = new.id, ev.ts
        state.limits = dict(ev.limits) if ev.limits else None
        if ev.period_start is not None and ev.period_start != state.period_anchor:
            state.period_anchor = ev.period_start
            state.periods.clear()  # a new anchor starts a new billing period (and quota)
        for rst in state.rules.values():  # a plan change re-arms every rule
            rst.armed, rst.capped = True, False
        features = tuple(k.split(SEP, 1)[1] for k in state.rolling if k.startswith(PAYWALL_METRIC + SEP))
        decisions += self._evaluate(ev, state, rs, rs.rules, features)
        return Outcome("applied", decisions)

    def _feedback(self, ev: FeedbackEvent, state: AccountState) -> Outcome:
        rule_id, rule_group = "unknown", "unknown"
        for pid, rid, grp in state.recent_prompts:
            if pid == ev.prompt_id:
                rule_id, rule_group = rid, grp
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
                )
            ],
        )

    # ---- evaluation --------------------------------------------------------------------------------

    def _limit(self, state: AccountState, plan: Plan, metric: str) -> float | None:
        if state.limits is not None and metric in state.limits:
            return state.limits[metric]
        return plan.limit(metric)

    def _current(self, state: AccountState, rs: RuleSet, c: Cond, feature: str | None, ts: int) -> float:
        kind = rs.metrics[c.metric].kind
        if kind == GAUGE:
            g = state.gauges.get(c.metric)
            return g[1] if g else 0
        if kind == PERIOD:
            p = state.periods.get(c.metric)
            return p[2] if p and ts < p[1] else 0  # a period that ended counts as a new, empty one
        series = c.metric if feature is None else c.metric + SEP + feature
        b = state.rolling.get(series)
        return rolling_sum(b, c.window_ms) if b else 0

    def _level(self, value: float, limit: float | None, c: Cond) -> float | None:
        """The quantity compared with the threshold: a ratio of the limit, or the value itself."""
        if c.ratio is None:
            return value
        if limit is None or limit <= 0:
            return None if limit is None else (float("inf") if value > 0 else 0.0)
        return value / limit

    def _holds(
        self, state: AccountState, rs: RuleSet, plan: Plan, c: Cond, feature: str | None, ts: int
    ) -> bool:
        level = self._level(self._current(state, rs, c, feature, ts), self._limit(state, plan, c.metric), c)
        threshold = c.ratio if c.ratio is not None else c.at_least
        return level is not None and threshold is not None and level >= threshold

    def _evaluate(
        self, ev: Event, state: AccountState, rs: RuleSet, rules: tuple[Rule, ...], features: tuple[str, ...]
    ) -> list[Decision]:
        if not rules:
            return []
        plan = self._plan(state, rs)
        ts = ev.ts
        triggered: list[_Trigger] = []
        for rule in rules:
            primary = rule.primary
            feats: tuple[str | None, ...]
            if primary.feature is not None:
                feats = tuple(f for f in features if primary.feature in ("*", f))
            else:
                feats = (None,)
            for feat in feats:
                key = rule.id if feat is None else rule.id + SEP + feat
                rst = state.rules.get(key)
                value = self._current(state, rs, primary, feat, ts)
                limit = self._limit(state, plan, primary.metric)
                level = self._level(value, limit, primary)
                period = None
                if rs.metrics[primary.metric].kind == PERIOD:
                    p = state.periods.get(primary.metric)
                    period = int(p[0]) if p else None
                if rst is not None and not rst.armed:
                    new_period = (
                        period is not None and rst.fired_period is not None and period != rst.fired_period
                    )
                    if new_period or level is None or level < rule.rearm:
                        rst.armed, rst.capped = True, False
                    else:
                        continue
                holds = (
                    level is not None
                    and level >= rule.threshold
                    and all(self._holds(state, rs, plan, c, feat, ts) for c in rule.conds[1:])
                )
                if holds:
                    triggered.append(_Trigger(rule, feat, key, value, limit, period))
                elif rst is not None and rst.capped:
                    rst.capped = False
        if not triggered:
            return []
        return self._decide(ev, state, rs, plan, triggered)

    def _decide(
        self, ev: Event, state: AccountState, rs: RuleSet, plan: Plan, triggered: list[_Trigger]
    ) -> list[Decision]:
        ts, account = ev.ts, ev.account_id
        out: list[Decision] = []
        live: list[tuple[_Trigger, Plan]] = []

        def suppress(t: _Trigger, outcome: str, reason: str, disarm: bool = True) -> None:
            rst = _rule_state(state, t.key)
            if disarm:
                rst.armed = False
                rst.fired_period = t.period
            out.append(Decision(outcome, t.rule.id, t.rule.group, account, ts, reason, t.feature))

        for t in triggered:
            rule = t.rule
            if rule.audience is not None and plan.id not in rule.audience:
                suppress(t, "audience", f"plan '{plan.id}' is not in the rule's audience")
                continue
            if rule.target_plan == "next":
                target = rs.next_plan(plan, rule, t.feature)
            else:
                target = rs.plan_by_id[rule.target_plan]
                if target.tier <= plan.tier:
                    target = None
            if target is None:
                suppress(t, "no_upgrade_path", f"no plan above '{plan.id}' raises this limit")
                continue
            rst = state.rules.get(t.key)
            if rst is not None and rst.last_fired is not None and ts - rst.last_fired < rule.cooldown_ms:
                suppress(t, "cooldown", f"fired at {rst.last_fired}, cooldown {rule.cooldown_ms // 1000}s")
                continue
            live.append((t, target))
        # Highest threshold wins among rules on the same metric (and feature) firing on this event.
        best: dict[tuple[str, str | None], float] = {}
        for t, _ in live:
            k = (t.rule.primary.metric, t.feature)
            best[k] = max(best.get(k, float("-inf")), t.rule.threshold)
        kept: list[tuple[_Trigger, Plan]] = []
        for t, target in live:
            if t.rule.threshold < best[(t.rule.primary.metric, t.feature)]:
                suppress(t, "superseded", "a higher threshold on the same metric fired on this event")
            else:
                kept.append((t, target))
        if not kept:
            return out
        pol = rs.policy
        if in_holdout(account, pol.holdout_salt, pol.holdout_fraction):
            for t, _ in kept:
                suppress(t, "holdout", "account is in the holdout group")
                state.rules[t.key].last_fired = ts
                state.attribution = ["holdout:" + t.rule.id, t.rule.id, t.rule.group, HOLDOUT, ts]
            return out
        kept.sort(key=lambda x: (-x[0].rule.priority, -x[0].rule.threshold, x[0].rule.id))
        for t, target in kept:
            recent = sum(1 for s in state.sent if ts - s < pol.cap_window_ms)
            rule = t.rule
            if not rule.bypass_cap and recent >= pol.cap_max:
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
                            f"{recent} prompt(s) in the last {pol.cap_window_ms // 1000}s "
                            f"(cap {pol.cap_max})",
                            t.feature,
                        )
                    )
                continue
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
            )
            rst = _rule_state(state, t.key)
            rst.armed, rst.capped, rst.last_fired, rst.fired_period = False, False, ts, t.period
            state.sent.append(ts)
            if len(state.sent) > CAP_HISTORY:
                del state.sent[0]
            pid = prompt["prompt_id"]
            state.attribution = [pid, rule.id, rule.group, TREATMENT, ts]
            state.recent_prompts.append([pid, rule.id, rule.group])
            if len(state.recent_prompts) > RECENT_PROMPTS:
                del state.recent_prompts[0]
            out.append(
                Decision(
                    EMITTED,
                    rule.id,
                    rule.group,
                    account,
                    ts,
                    f"{rule.primary.metric} reached {prompt['ratio'] or prompt['value']} "
                    f"(threshold {rule.threshold:g})",
                    t.feature,
                    prompt=prompt,
                )
            )
        return out
