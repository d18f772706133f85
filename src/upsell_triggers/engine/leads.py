"""Expansion leads (docs/leads.md): a rule whose `action` includes `lead` sends a record for a human team
(sales, customer success) instead of, or beside, an in-app prompt.

The engine decides a lead rule exactly as a prompt rule up to the frequency cap (edge trigger, re-arm,
audience, eligibility, cooldown, superseded, holdout); from there `send` takes over: each channel has its
own cap (policy.frequency_cap for prompts, policy.lead_cap for leads), so a lead never uses up an
account's prompt budget, nor a prompt its lead budget. Only rules with `leads` set reach this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final

from upsell_triggers.engine import score
from upsell_triggers.engine.leadstate import LEAD_CAP_HISTORY, LeadState
from upsell_triggers.engine.levels import measure
from upsell_triggers.engine.outcomes import EMITTED, Decision
from upsell_triggers.engine.prompts import json_number
from upsell_triggers.engine.rulemodel import Plan, Rule, TraitCond
from upsell_triggers.engine.ruleset import RuleSet
from upsell_triggers.engine.score import Score
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.timeutil import format_duration, to_iso

LEAD_SCHEMA_VERSION: Final = 1


def lead_id(account_id: str, rule_id: str, feature: str | None, episode: str) -> str:
    """Same trigger -> same id, across restarts and reprocessing (as prompt ids; a distinct prefix)."""
    h = hashlib.blake2b(
        f"lead\x1f{account_id}\x1f{rule_id}\x1f{feature or ''}\x1f{episode}".encode(), digest_size=12
    )
    return "ld_" + h.hexdigest()


def evidence(
    rule: Rule, state: AccountState, plan: Plan, feature: str | None, ts: int
) -> list[dict[str, Any]]:
    """Each metric condition of the rule as the account met it: metric, value, limit, ratio, threshold,
    window."""
    out = []
    for c in rule.conds:
        value, limit, _level = measure(state, plan, c, feature if c.feature is not None else None, ts)
        out.append(
            {
                "metric": c.metric,
                "feature": feature if c.feature is not None else None,
                "value": json_number(value),
                "limit": json_number(limit) if limit is not None else None,
                "ratio": round(value / limit, 4) if limit else None,
                "threshold": c.threshold,
                "window": format_duration(c.window_ms) if c.window_ms else None,
            }
        )
    return out


def trait_values(rule: Rule, state: AccountState) -> dict[str, Any]:
    """The account's values of the traits the rule's conditions read (when, audience, eligibility)."""
    traits = state.traits or {}
    names = [
        c.trait for c in (*rule.when_traits, *rule.audience_traits, *rule.gate) if isinstance(c, TraitCond)
    ]
    return {n: traits.get(n) for n in dict.fromkeys(names)}


def build_lead(
    *,
    rule: Rule,
    account_id: str,
    user_id: str | None,
    feature: str | None,
    state: AccountState,
    plan: Plan,
    target: Plan,
    trigger_event_id: str,
    ts: int,
    account_score: Score | None = None,
) -> dict[str, Any]:
    """The lead record (schemas/leads.schema.json); `account_score`: the account's readiness score at ts,
    when the rule set scores."""
    return {
        "schema_version": LEAD_SCHEMA_VERSION,
        "lead_id": lead_id(account_id, rule.id, feature, trigger_event_id),
        "account_id": account_id,
        "user_id": user_id,
        "team": rule.team,
        "rule_id": rule.id,
        "rule_group": rule.group,
        "signal": rule.signal,
        "priority": rule.priority,
        "feature": feature,
        "plan": plan.id,
        "suggested_plan": target.id,
        "evidence": evidence(rule, state, plan, feature, ts),
        "traits": trait_values(rule, state),
        "score": account_score.score if account_score is not None else None,
        "band": account_score.band if account_score is not None else None,
        "score_contributions": account_score.contributions if account_score is not None else [],
        "trigger_event_id": trigger_event_id,
        "created_at": to_iso(ts),
    }


def recent_leads(state: AccountState, ts: int, window_ms: int) -> int:
    ls = state.leads
    return sum(1 for s in ls.sent if ts - s < window_ms) if ls is not None else 0


def record_lead(state: AccountState, lead: dict[str, Any], ts: int) -> None:
    """Counts the lead for the lead cap and makes it the one an upgrade is attributed to."""
    ls = state.leads
    sent = ls.sent if ls is not None else ()
    state.leads = LeadState(
        (*sent[1 - LEAD_CAP_HISTORY :], ts) if sent else (ts,),
        lead["lead_id"],
        lead["rule_id"],
        lead["team"],
        lead["band"] or "",
        ts,
    )


def send(
    *,
    rs: RuleSet,
    rule: Rule,
    state: AccountState,
    plan: Plan,
    target: Plan,
    account_id: str,
    user_id: str | None,
    feature: str | None,
    event_id: str,
    ts: int,
    prompts_recent: int,
    emit_prompt: Callable[[], Decision],
    disarm: Callable[[], None],
    capped_once: Callable[[], bool],
) -> list[Decision]:
    """The decisions of a lead rule that passed every check up to the frequency cap. Each channel is
    checked against its own cap (`bypass_cap` skips both). When every channel of the rule is over its
    cap, one `frequency_cap` decision is recorded per episode and the rule stays armed, as a prompt rule
    does. Otherwise the rule fires: one `emitted` decision carrying the lead (and the prompt, from
    `emit_prompt`, which also does the prompt's bookkeeping); a channel over its cap records
    `frequency_cap` with its `channel`."""
    pol = rs.policy
    bypass = rule.bypass_cap
    prompt_room = rule.prompts and (bypass or prompts_recent < pol.cap_max)
    leads_recent = recent_leads(state, ts, pol.lead_cap_window_ms)
    lead_room = bypass or leads_recent < pol.lead_cap_max
    team = rule.team
    if not prompt_room and not lead_room:
        if not capped_once():
            return []
        caps = (
            f"{leads_recent} lead(s) in the last {pol.lead_cap_window_ms // 1000}s "
            f"(lead cap {pol.lead_cap_max})"
        )
        if rule.prompts:
            caps = (
                f"{prompts_recent} prompt(s) in the last {pol.cap_window_ms // 1000}s (cap {pol.cap_max}); "
                + caps
            )
        return [Decision("frequency_cap", rule.id, rule.group, account_id, ts, caps, feature, team=team)]
    out: list[Decision] = []
    if prompt_room:
        decision = emit_prompt()  # disarms the rule and records the prompt
        decision.team = team
    else:
        disarm()
        decision = Decision(
            EMITTED,
            rule.id,
            rule.group,
            account_id,
            ts,
            f"{rule.primary.metric} reached its threshold {rule.threshold:g}: lead for {team}",
            feature,
            team=team,
        )
        if rule.prompts:
            out.append(
                Decision(
                    "frequency_cap",
                    rule.id,
                    rule.group,
                    account_id,
                    ts,
                    f"{prompts_recent} prompt(s) in the last {pol.cap_window_ms // 1000}s "
                    f"(cap {pol.cap_max}); the lead was sent",
                    feature,
                    team=team,
                    channel="prompt",
                )
            )
    if lead_room:
        lead = build_lead(
            rule=rule,
            account_id=account_id,
            user_id=user_id,
            feature=feature,
            state=state,
            plan=plan,
            target=target,
            trigger_event_id=event_id,
            ts=ts,
            account_score=score.read(state, rs.scoring, ts) if rs.scoring is not None else None,
        )
        record_lead(state, lead, ts)
        decision.lead = lead
        decision.band = lead["band"]
    else:
        out.append(
            Decision(
                "frequency_cap",
                rule.id,
                rule.group,
                account_id,
                ts,
                f"{leads_recent} lead(s) in the last {pol.lead_cap_window_ms // 1000}s "
                f"(lead cap {pol.lead_cap_max}); the prompt was sent",
                feature,
                team=team,
                channel="lead",
            )
        )
    out.insert(0, decision)
    return out


def conversion(
    state: AccountState, account_id: str, ts: int, attribution_ms: int, reason: str
) -> Decision | None:
    """An upgrade (to a higher tier, at ts) attributed to the account's latest lead when it came within the
    attribution window; the lead is then spent. Called only for accounts with lead state."""
    ls = state.leads
    assert ls is not None
    if not ls.ts:
        return None
    d = None
    if ls.ts <= ts <= ls.ts + attribution_ms:
        d = Decision(
            "conversion",
            ls.rule_id,
            "",
            account_id,
            ts,
            f"{reason} within the attribution window of lead {ls.lead_id}",
            team=ls.team,
            channel="lead",
            band=ls.band or None,
        )
    state.leads = LeadState(ls.sent)
    return d
