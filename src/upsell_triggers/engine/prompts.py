"""Prompt events (contract §3): stable ids, copy rendered from a fixed placeholder set."""

from __future__ import annotations

import hashlib
import math
from typing import Any

from upsell_triggers.engine.ruleset import PAYWALL_METRIC, Plan, Rule, RuleSet
from upsell_triggers.engine.timeutil import format_duration, to_iso

SCHEMA_VERSION = 1


def prompt_id(account_id: str, rule_id: str, feature: str | None, episode: str) -> str:
    """Same trigger -> same id, across restarts and reprocessing. The episode is the triggering event."""
    h = hashlib.blake2b(f"{account_id}\x1f{rule_id}\x1f{feature or ''}\x1f{episode}".encode(), digest_size=12)
    return "pr_" + h.hexdigest()


def in_holdout(account_id: str, salt: str, fraction: float) -> bool:
    if fraction <= 0:
        return False
    h = hashlib.blake2b(f"{salt}\x1f{account_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < fraction


def _num(x: float) -> int | float:
    """Integers as integers (JSON consumers see 4, not 4.0) while exactly representable; else rounded."""
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
        for suffix, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(x) >= size:
                v = x / size
                return f"{v:.0f} {suffix}" if v.is_integer() or v >= 100 else f"{v:.1f} {suffix}"
        return f"{x:.0f} B"
    return f"{_num(x):,}"


class _Copy(dict[str, str]):
    def __missing__(self, key: str) -> str:  # only validated names reach here; keep rendering total
        return ""


def render(template: str, values: dict[str, str]) -> str:
    return template.format_map(values if type(values) is _Copy else _Copy(values))


def build_prompt(
    *,
    rs: RuleSet,
    rule: Rule,
    account_id: str,
    user_id: str | None,
    feature: str | None,
    value: float,
    limit: float | None,
    plan: Plan,
    target: Plan,
    trigger_event_id: str,
    ts: int,
) -> dict[str, Any]:
    metric = rule.primary.metric
    unit = rs.metrics[metric].unit
    ratio = value / limit if limit else None
    values = _Copy(
        account_id=account_id,
        metric=metric,
        feature=feature or "",
        value=human(value, unit),
        limit=human(limit, unit),
        percent=_percent(ratio),
        remaining=human(max(limit - value, 0), unit) if limit is not None else "",
        count=human(value, "count"),
        window=format_duration(rule.primary.window_ms) if rule.primary.window_ms else "",
        plan=plan.id,
        plan_name=plan.name,
        target_plan=target.id,
        target_plan_name=target.name,
        threshold=f"{rule.threshold:g}",
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "prompt_id": prompt_id(account_id, rule.id, feature, trigger_event_id),
        "account_id": account_id,
        "user_id": user_id,
        "rule_id": rule.id,
        "signal": rule.signal,
        "metric": metric,
        "feature": feature,
        "value": _num(value),
        "limit": _num(limit) if limit is not None else None,
        "ratio": round(ratio, 4) if ratio is not None else None,
        "plan": plan.id,
        "target_plan": target.id,
        "placement": rule.placement,
        "priority": rule.priority,
        "title": render(rule.title, values),
        "body": render(rule.body, values),
        "cta": {"label": render(rule.cta_label, values), "url": render(rule.cta_url, values)},
        "trigger_event_id": trigger_event_id,
        "created_at": to_iso(ts),
        "expires_at": to_iso(ts + rs.policy.expiry_ms),
    }


__all__ = ["PAYWALL_METRIC", "build_prompt", "in_holdout", "prompt_id"]
