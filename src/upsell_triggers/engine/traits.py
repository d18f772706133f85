"""Account traits: an `account_updated` event checked against the trait catalog, and the trait
conditions and eligibility gate a triggered rule must pass (engine._decide asks only for rules whose
`checks` flag is set, so a rule set without traits or eligibility runs none of this)."""

from __future__ import annotations

from typing import Final

from upsell_triggers.engine.events import AccountUpdated, InvalidEvent
from upsell_triggers.engine.eventtime import MAX_TS_MS, MIN_TS_MS, ts_ms
from upsell_triggers.engine.levels import holds
from upsell_triggers.engine.outcomes import INELIGIBLE, Suppression
from upsell_triggers.engine.rulemodel import (
    TIME,
    Cond,
    Plan,
    Rule,
    TraitCond,
    TraitSpec,
    TraitValue,
    trait_fits,
)
from upsell_triggers.engine.state import AccountState

AUDIENCE: Final = "audience"


def check_traits(
    ev: AccountUpdated, catalog: dict[str, TraitSpec]
) -> dict[str, TraitValue | None] | InvalidEvent:
    """The event's traits as the state keeps them (a time as epoch ms), or why it goes to the dead
    letter topic: a trait the catalog does not declare, a value of the wrong type or not allowed."""
    out: dict[str, TraitValue | None] = {}
    for name, v in ev.traits.items():
        spec = catalog.get(name)
        where = f"field 'traits.{name[:64]}'"
        if spec is None:
            known = ", ".join(sorted(catalog)) or "none"
            return InvalidEvent(
                "unknown_trait", f"{where}: not in the trait catalog (declared: {known})", ev.account_id
            )
        if v is None:
            out[name] = None
            continue
        if spec.type == TIME:
            ms = _time_ms(v)
            if ms is None:
                return InvalidEvent(
                    "invalid_field",
                    f"{where}: a time trait: send RFC 3339 with an offset or integer epoch milliseconds",
                    ev.account_id,
                )
            out[name] = ms
            continue
        if not trait_fits(spec.type, v):
            return InvalidEvent(
                "invalid_field",
                f"{where}: trait '{name}' is a {spec.type}, not {_json_type(v)}",
                ev.account_id,
            )
        if spec.values is not None and v not in spec.values:
            return InvalidEvent(
                "invalid_field",
                f"{where}: {str(v)[:64]!r} is not an allowed value "
                f"(allowed: {', '.join(sorted(spec.values))})",
                ev.account_id,
            )
        out[name] = v
    return out


def _time_ms(v: object) -> int | None:
    if type(v) is str:
        try:
            return ts_ms(v)
        except ValueError:
            return None
    if type(v) is float and v.is_integer() and MIN_TS_MS <= v < MAX_TS_MS:
        return int(v)
    return None


def _json_type(v: object) -> str:
    return "a boolean" if type(v) is bool else "a string" if type(v) is str else "a number"


def gate_failure(
    rule: Rule, state: AccountState, plan: Plan, feature: str | None, ts: int
) -> tuple[Suppression | None, str] | None:
    """Why a triggered rule may not prompt, checked in this order: a trait condition of its `when`
    fails (outcome None: the rule does not fire), an audience trait condition fails (`audience`), a
    condition of the eligibility gate fails (`ineligible`). None: it passes all of them."""
    traits = state.traits
    for tc in rule.when_traits:
        why = tc.failure(traits, ts)
        if why is not None:
            return None, why
    for tc in rule.audience_traits:
        why = tc.failure(traits, ts)
        if why is not None:
            return AUDIENCE, why
    for i, c in enumerate(rule.gate):
        why = _failure(c, state, plan, ts)
        if why is not None:
            return INELIGIBLE, f"eligibility[{i}]: {why}"
    return None


def _failure(c: Cond | TraitCond, state: AccountState, plan: Plan, ts: int) -> str | None:
    if isinstance(c, TraitCond):
        return c.failure(state.traits, ts)
    if holds(state, plan, c, None, ts):
        return None
    kind = f"{c.ratio:g} of the limit" if c.ratio is not None else f"{c.threshold:g}"
    return f"{c.metric} is under {kind}"
