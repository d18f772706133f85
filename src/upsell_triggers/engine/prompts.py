"""Prompt events (docs/prompts.md): stable ids, copy rendered from a fixed placeholder set."""

from __future__ import annotations

import hashlib
import math
import string
from dataclasses import dataclass
from typing import Any, Final

from upsell_triggers.engine.forecast import Projection
from upsell_triggers.engine.keys import composite_key
from upsell_triggers.engine.rulemodel import Variant
from upsell_triggers.engine.ruleset import PAYWALL_METRIC, Plan, Rule, RuleSet
from upsell_triggers.engine.state import Num
from upsell_triggers.engine.timeutil import DAY, format_duration, iso_date, to_iso

SCHEMA_VERSION: Final = 1


def prompt_id(account_id: str, rule_id: str, feature: str | None, episode: str) -> str:
    """Same trigger -> same id, across restarts and reprocessing. The episode is the triggering event."""
    h = hashlib.blake2b(composite_key(account_id, rule_id, feature or "", episode).encode(), digest_size=12)
    return "pr_" + h.hexdigest()


def in_holdout(account_id: str, salt: str, fraction: float) -> bool:
    if fraction <= 0:
        return False
    h = hashlib.blake2b(composite_key(salt, account_id).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < fraction


def choose_variant(account_id: str, rule: Rule) -> Variant:
    """The account's copy variant for the rule: weighted rendezvous (highest random weight) hashing.

    Each (account, variant) pair gets a uniform u from a hash of the rule's salt, the rule, the account
    and the variant; the variant with the lowest -ln(u) / weight wins, which happens with probability
    weight / sum of weights. An account keeps its variant for as long as the variants and weights stay.
    When they change, accounts move only where they must: raising one variant's weight moves accounts
    into it and nowhere else, lowering it moves only its own accounts out, adding a variant takes
    accounts only into the new one, removing one moves only its accounts. No two unchanged variants ever
    swap accounts (a split into ranges of one hash would shift every range after the changed one)."""
    best = rule.variants[0]
    best_score = math.inf
    for v in rule.variants:
        h = hashlib.blake2b(
            composite_key(rule.variant_salt, rule.id, account_id, v.id).encode(), digest_size=8
        ).digest()
        u = (int.from_bytes(h, "big") + 0.5) / 2**64  # in (0, 1): the log is finite
        score = -math.log(u) / v.weight
        if score < best_score:
            best, best_score = v, score
    return best


# Num, not float: compiled, a float argument would turn ints into floats.
def json_number(x: Num) -> int | float:
    """Integers as integers (JSON consumers see 4, not 4.0) while exactly representable; else rounded.
    Prompts and leads both write their readings so."""
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else round(x, 6)


def _percent(ratio: float | None) -> str:
    if ratio is None:
        return ""
    pct = ratio * 100
    return f"{math.floor(pct)}%" if math.isfinite(pct) else "over 100%"  # absurd readings must not crash


def human(x: float | None, unit: str) -> str:
    if x is None:
        return "unlimited"
    if unit == "bytes":
        ax = abs(x)
        for suffix, size in _BINARY:
            if ax >= size:
                v = x / size
                return f"{v:.0f} {suffix}" if v.is_integer() or v >= 100 else f"{v:.1f} {suffix}"
        return f"{x:.0f} B"
    if -1000 < x < 1000 and x == int(x):
        return str(int(x))  # json_number(x) without digits to group: the format's spec costs three times this
    return f"{json_number(x):,}"


_BINARY: Final = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def _parts(template: str) -> tuple[str, ...]:
    """A copy template (only `{name}` placeholders and `{{`/`}}`, as rulecompiler admits) split for
    _render: its literal text and placeholder names in turn, literal first and last (names at the odd
    indexes); a template without placeholders is one literal, already rendered."""
    parts = [""]
    for literal, name, _, _ in string.Formatter().parse(template):
        parts[-1] += literal
        if name is not None:
            parts += (name, "")
    return tuple(parts)


def _render(parts: tuple[str, ...], values: dict[str, str]) -> str:
    """What `template.format_map(values)` renders, from _parts(template). Joining the parts took a
    third of what `%`-formatting a %-style template did (it parses the template on every prompt)."""
    n = len(parts)
    if n == 1:
        return parts[0]
    out = [parts[0]]
    for i in range(1, n, 2):
        out.append(values[parts[i]])
        out.append(parts[i + 1])
    return "".join(out)


def _created_expires(ts: int, expiry_ms: int) -> tuple[str, str]:
    """(to_iso(ts), to_iso(ts + expiry_ms)): an expiry of whole days keeps the time of day, so the
    second is the first's time on a later date (formatting a timestamp is a tenth of a prompt's cost)."""
    created = to_iso(ts)
    if expiry_ms % DAY:
        return created, to_iso(ts + expiry_ms)
    return created, iso_date(ts // DAY + expiry_ms // DAY) + created[10:]


# The placeholders most copy uses; a copy that uses any other is checked for each of the others.
_COMMON: Final = frozenset({"value", "limit", "percent", "target_plan", "target_plan_name"})
# The placeholders build_prompt fills for every prompt whose copy uses them; the others (a forecast's,
# when it projects nothing) render empty.
_ALWAYS: Final = _COMMON | {
    "account_id",
    "metric",
    "feature",
    "remaining",
    "count",
    "window",
    "plan",
    "plan_name",
    "threshold",
}


@dataclass(frozen=True, slots=True)
class _RuleCopy:
    """A rule's four copy templates, with the placeholders they use: a prompt renders only those (most
    copy uses three or four of the fourteen, and each costs a number formatted for people). A template
    without placeholders is kept rendered (its '{{' already a brace); each is kept split into its
    literal text and placeholder names (_parts)."""

    rule: Rule
    needs: frozenset[str]
    title: tuple[str, ...]
    body: tuple[str, ...]
    cta_label: tuple[str, ...]
    cta_url: tuple[str, ...]
    rare: bool  # needs a placeholder outside _COMMON
    blanks: tuple[str, ...]  # needs a placeholder outside _ALWAYS: each set to "" first


_COPIES: Final[dict[str, _RuleCopy]] = {}
_MAX_COPIES: Final = 4096  # rule ids seen across reloads; a bound, not an expected size


def _rule_copy(rule: Rule, variant: Variant | None = None) -> _RuleCopy:
    """The rule's (or one of its variants') compiled copy, built on its first prompt and kept while the
    rule object is current."""
    key = rule.id if variant is None else composite_key(rule.id, variant.id)
    c = _COPIES.get(key)
    if c is not None and c.rule is rule:
        return c
    src: Rule | Variant = rule if variant is None else variant
    templates = (src.title, src.body, src.cta_label, src.cta_url)
    names = [{n for _, n, _, _ in string.Formatter().parse(t) if n is not None} for t in templates]
    title, body, label, url = map(_parts, templates)
    needs = frozenset().union(*names)
    blanks = tuple(sorted(needs - _ALWAYS))
    c = _RuleCopy(rule, needs, title, body, label, url, not needs <= _COMMON, blanks)
    if len(_COPIES) >= _MAX_COPIES:
        _COPIES.clear()
    _COPIES[key] = c
    return c


def build_prompt(
    *,
    rs: RuleSet,
    rule: Rule,
    account_id: str,
    user_id: str | None,
    feature: str | None,
    value: Num,
    limit: float | None,
    plan: Plan,
    target: Plan,
    trigger_event_id: str,
    ts: int,
    variant: Variant | None = None,
    projection: Projection | None = None,
) -> dict[str, Any]:
    """The prompt event; with a `variant`, its copy and a `variant` field (absent otherwise). A forecast
    rule's `projection` fills `{days_left}` and `{projected}`."""
    metric = rule.primary.metric
    ratio = value / limit if limit else None
    copy = _rule_copy(rule, variant)
    needs = copy.needs
    # A plain dict: every placeholder the copy uses is set (blanks included), so no lookup needs a
    # default.
    values: dict[str, str] = {}
    if needs:
        unit = rs.metrics[metric].unit
        if "value" in needs:
            values["value"] = human(value, unit)
        if "limit" in needs:
            values["limit"] = human(limit, unit)
        if "percent" in needs:
            values["percent"] = _percent(ratio)
        if "target_plan" in needs:
            values["target_plan"] = target.id
        if "target_plan_name" in needs:
            values["target_plan_name"] = target.name
        if copy.rare:
            for name in copy.blanks:
                values[name] = ""
            if "account_id" in needs:
                values["account_id"] = account_id
            if "metric" in needs:
                values["metric"] = metric
            if "feature" in needs:
                values["feature"] = feature or ""
            if "remaining" in needs:
                values["remaining"] = human(max(limit - value, 0), unit) if limit is not None else ""
            if "count" in needs:
                values["count"] = human(value, "count")
            if "window" in needs:
                values["window"] = format_duration(rule.primary.window_ms) if rule.primary.window_ms else ""
            if "plan" in needs:
                values["plan"] = plan.id
            if "plan_name" in needs:
                values["plan_name"] = plan.name
            if "threshold" in needs:
                values["threshold"] = rule.threshold_text
            if projection is not None:
                if "days_left" in needs:
                    values["days_left"] = str(projection.whole_days_left)
                if "projected" in needs:
                    values["projected"] = human(round(projection.projected), unit)
    created_at, expires_at = _created_expires(ts, rs.policy.expiry_ms)
    prompt: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "prompt_id": prompt_id(account_id, rule.id, feature, trigger_event_id),
        "account_id": account_id,
        "user_id": user_id,
        "rule_id": rule.id,
        "signal": rule.signal,
        "metric": metric,
        "feature": feature,
        "value": json_number(value),
        "limit": json_number(limit) if limit is not None else None,
        "ratio": round(ratio, 4) if ratio is not None else None,
        "plan": plan.id,
        "target_plan": target.id,
        "placement": rule.placement,
        "priority": rule.priority,
        "title": _render(copy.title, values),
        "body": _render(copy.body, values),
        "cta": {"label": _render(copy.cta_label, values), "url": _render(copy.cta_url, values)},
        "trigger_event_id": trigger_event_id,
        "created_at": created_at,
        "expires_at": expires_at,
    }
    if variant is not None:
        prompt["variant"] = variant.id
    return prompt


__all__ = ["PAYWALL_METRIC", "build_prompt", "choose_variant", "in_holdout", "prompt_id"]
