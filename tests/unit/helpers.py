from __future__ import annotations

from pathlib import Path
from typing import Any

from upsell_triggers.engine.engine import Decision, Engine
from upsell_triggers.engine.events import InvalidEvent, validate_event
from upsell_triggers.engine.ruleset import RuleSet, compile_sources, load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.timeutil import DAY, HOUR

# The engine's tests decide with their own rules (fixtures/rules/README.md); the shipped ones are the
# product's, tested as files where a test says so.
RULES = Path(__file__).resolve().parent / "fixtures" / "rules"
SHIPPED_RULES = Path(__file__).resolve().parents[2] / "rules"
T0 = 1_795_341_600_000  # 2026-11-22T10:00:00Z


def fixture_rules() -> RuleSet:
    return load_ruleset(RULES)


def with_policy(policy_yaml: str) -> RuleSet:
    """The fixture rules with another policy file."""
    sources = [(str(p), p.read_text()) for p in sorted(RULES.glob("*.yaml")) if p.name != "policy.yaml"]
    return compile_sources([*sources, ("policy.yaml", policy_yaml)])


class Account:
    def __init__(self, rules: RuleSet | None = None, account: str = "acme") -> None:
        self.engine = Engine(rules or fixture_rules())
        self.state = AccountState()
        self.account = account
        self.n = 0

    def send(self, at_ms: int, **fields: Any) -> list[Decision]:
        self.n += 1
        ev = validate_event(
            {"event_id": f"e{self.n}", "account_id": self.account, "ts": T0 + at_ms, **fields}
        )
        assert not isinstance(ev, InvalidEvent), ev
        out = self.engine.process(ev, self.state)
        assert out.invalid is None, out.invalid
        return list(out.decisions)

    def seats(self, at_ms: int, value: float) -> list[Decision]:
        return self.send(at_ms, type="usage", metric="seats", value=value)


def outcomes(ds: list[Decision]) -> list[tuple[str, str]]:
    return [(d.rule_id, d.outcome) for d in ds]


__all__ = [
    "DAY",
    "HOUR",
    "RULES",
    "SHIPPED_RULES",
    "T0",
    "Account",
    "fixture_rules",
    "outcomes",
    "with_policy",
]
