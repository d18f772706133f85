"""Prompts as the worker emits them, and a fake clock."""

from __future__ import annotations

from typing import Any

from upsell_triggers.engine.timeutil import to_iso

NOW = 1_800_000_000.0  # seconds
SECRET = b"s" * 32


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def prompt(
    pid: str, account: str = "acct-1", user: str | None = None, ttl_s: int = 3600, **kw: Any
) -> dict[str, Any]:
    created = int(NOW * 1000)
    return {
        "schema_version": 1,
        "prompt_id": pid,
        "account_id": account,
        "user_id": user,
        "rule_id": "storage-80",
        "signal": "approaching_limit",
        "metric": "storage_bytes",
        "feature": None,
        "value": 8,
        "limit": 10,
        "ratio": 0.8,
        "plan": "free",
        "target_plan": "pro",
        "placement": "banner",
        "priority": 50,
        "title": "You have used 80% of your storage",
        "body": "Upgrade to Pro for more.",
        "cta": {"label": "Upgrade", "url": "/billing/upgrade?plan=pro"},
        "trigger_event_id": "e-" + pid,
        "created_at": to_iso(created),
        "expires_at": to_iso(created + ttl_s * 1000),
        **kw,
    }
