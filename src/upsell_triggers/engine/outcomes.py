"""What the engine says about an event: its Outcome (a status and the decisions it made), each Decision
(a rule edge emitted or suppressed, a conversion, prompt feedback), and the closed sets of words they
use. Metrics labels, the replay summary and `--explain` all take their words from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, get_args

from msgspec import Struct

from upsell_triggers.engine.events import InvalidEvent

# What an event did: applied, or why not (`redelivered` is the runtime's: a Kafka record already applied;
# `erased`: an event of a deleted account, up to its deletion's time, erasure.py).
Status = Literal["applied", "duplicate", "stale", "late", "invalid", "redelivered", "erased"]
# Why a rule that reached its threshold did not emit, in the order reports list them.
Suppression = Literal[
    "superseded", "cooldown", "frequency_cap", "holdout", "no_upgrade_path", "audience", "ineligible"
]
DecisionKind = Literal["emitted", "conversion", "feedback"] | Suppression
Group = Literal["treatment", "holdout"]  # of an account, for conversions
Action = Literal["shown", "clicked", "dismissed"]  # prompt feedback
Channel = Literal["prompt", "lead"]  # what a rule sends (docs/leads.md)

SUPPRESSIONS: Final[tuple[Suppression, ...]] = get_args(Suppression)
EMITTED: Final = "emitted"
INELIGIBLE: Final = "ineligible"  # the policy's eligibility gate (traits.py)
TREATMENT: Final = "treatment"
HOLDOUT: Final = "holdout"
FEEDBACK_ACTIONS: Final[dict[str, Action]] = {
    "prompt_shown": "shown",
    "prompt_clicked": "clicked",
    "prompt_dismissed": "dismissed",
}


class Decision(Struct, gc=False):
    """One outcome: a rule edge (emitted or suppressed), a conversion, or prompt feedback. A msgspec
    struct: built in C (a dataclass's generated __init__ ran as Python, a frame per decision, and on
    the near-limits mix a third of the events make one). gc=False: it holds strings, numbers and the
    prompt's and lead's dicts, none of which refers back to it."""

    outcome: DecisionKind
    rule_id: str
    rule_group: str
    account_id: str
    ts: int
    reason: str
    feature: str | None = None
    group: Group | None = None  # conversions
    action: Action | None = None  # feedback
    prompt: dict[str, Any] | None = None
    variant: str | None = None  # the copy variant (prompts, their feedback, treatment conversions)
    # Leads (docs/leads.md): the lead record of an emitted decision; the team of a lead rule's decisions;
    # the channel a decision is about when it is one channel's only (a capped channel of a rule that
    # sends both, a conversion attributed to a lead); the readiness band of a lead and its conversion.
    lead: dict[str, Any] | None = None
    team: str | None = None
    channel: Channel | None = None
    band: str | None = None

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
        if self.variant:
            d["variant"] = self.variant
        if self.prompt:
            d["prompt_id"] = self.prompt["prompt_id"]
        if self.team:
            d["team"] = self.team
        if self.channel:
            d["channel"] = self.channel
        if self.lead:
            d["lead_id"] = self.lead["lead_id"]
            if self.lead.get("score") is not None:
                d["score"] = self.lead["score"]
                d["band"] = self.lead["band"]
                d["score_contributions"] = self.lead["score_contributions"]
        return d


class Outcome(Struct, gc=False):
    """What one event did. Treated as immutable (the decision-less ones are shared constants). A msgspec
    struct, built in C: a frozen dataclass's __init__, and then a slots class's, cost a measurable share
    of the hot path."""

    status: Status
    decisions: Sequence[Decision] = ()
    invalid: InvalidEvent | None = None

    def __repr__(self) -> str:
        return f"Outcome({self.status}, {len(self.decisions)} decision(s))"

    @property
    def prompts(self) -> list[dict[str, Any]]:
        return [d.prompt for d in self.decisions if d.prompt is not None]

    @property
    def leads(self) -> list[dict[str, Any]]:
        return [d.lead for d in self.decisions if d.lead is not None]


# The outcomes without decisions are shared: Outcome is immutable.
DUPLICATE, STALE, LATE, APPLIED = Outcome("duplicate"), Outcome("stale"), Outcome("late"), Outcome("applied")
ERASED = Outcome("erased")
