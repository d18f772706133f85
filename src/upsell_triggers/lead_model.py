"""The expansion lead as a pydantic model: the published schema of what the service sends to the leads
topic (docs/leads.md).

As with prompts (prompt_model.py), the engine builds leads as plain dicts (engine/leads.py); this model
describes them for consumers. schemas/leads.schema.json is generated from it, and the tests validate real
`replay --leads` output against it. Unknown fields are allowed: a minor release may add optional ones.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from upsell_triggers.engine.rulefile import ID_PATTERN

# The lead schema's major version; engine/leads.py writes it into every lead (a test checks they agree).
LEAD_SCHEMA_VERSION = 1

_Id = Annotated[str, Field(min_length=1, max_length=256)]
_RuleId = Annotated[str, Field(pattern=ID_PATTERN)]
_Number = Annotated[float, Field(allow_inf_nan=False)]


class LeadEvidence(BaseModel):
    """One metric condition of the rule, as the account met it when the lead was made."""

    model_config = ConfigDict(extra="ignore")

    metric: _RuleId = Field(description="the metric the condition reads")
    feature: _Id | None = Field(description="paywall conditions: the feature counted")
    value: _Number = Field(description="the account's reading: a gauge, a period's total or a window's count")
    limit: _Number | None = Field(description="the account's plan limit for the metric; null: unlimited")
    ratio: _Number | None = Field(description="value / limit, rounded to 4 decimals; null without a limit")
    threshold: _Number = Field(description="the condition's threshold: a share of the limit or a count")
    window: str | None = Field(description="the condition's window (`7d`) for rolling counters, else null")


class ScoreContribution(BaseModel):
    """One part of the readiness score: a signal or rule's decayed points, or a fit trait's points."""

    model_config = ConfigDict(extra="ignore")

    source: str = Field(description="`rule:<id>`, `signal:<name>` or `trait:<name>`")
    points: _Number = Field(description="the points it adds at the lead's time, after decay")


class LeadEvent(BaseModel):
    """An expansion lead for one account, keyed by account_id on the leads topic: a signal a human team
    (sales, customer success) should act on. Delivery is at-least-once: the same trigger always yields
    the same lead_id and content, so consumers dedupe by it."""

    model_config = ConfigDict(extra="ignore", title="LeadEvent")

    schema_version: Literal[1] = Field(
        description="major version of this schema; a change that could break a consumer increments it"
    )
    lead_id: Annotated[str, Field(pattern=r"^ld_[0-9a-f]{24}$")] = Field(
        description="stable id of this lead: the same trigger gives the same id across restarts and "
        "reprocessing (dedupe by it)"
    )
    account_id: _Id = Field(description="the account the lead is about")
    user_id: Annotated[str, Field(max_length=256)] | None = Field(
        description="the user whose event triggered the lead, when it carried one"
    )
    team: _RuleId = Field(
        description="the team the lead is for, from the rule (e.g. sales, customer_success)"
    )
    rule_id: _RuleId = Field(description="the rule that fired")
    rule_group: _RuleId = Field(description="the rule's group")
    signal: _RuleId = Field(
        description="what kind of moment this is: usage_limit, paywall, usage_threshold, or a signal the "
        "rule names"
    )
    priority: Annotated[int, Field(ge=0, le=1000)] = Field(description="the rule's priority: higher first")
    feature: _Id | None = Field(description="paywall rules: the premium feature that was hit")
    plan: _RuleId = Field(description="the account's current plan id")
    suggested_plan: _RuleId = Field(description="the plan to offer (the rule's target_plan)")
    evidence: list[LeadEvidence] = Field(
        min_length=1, description="the rule's metric conditions as the account met them, primary first"
    )
    traits: dict[str, Any] = Field(
        description="the account's values of the traits the rule's conditions read (null: unset)"
    )
    score: Annotated[float, Field(ge=0, le=100)] | None = Field(
        description="the account's readiness score (0-100, one decimal) at the lead's time; null when the "
        "rule set has no `scoring` section"
    )
    band: _RuleId | None = Field(
        description="the score's band (e.g. cold, warm, hot, on_fire); null without scoring"
    )
    score_contributions: list[ScoreContribution] = Field(
        description="what makes up the score, largest first: each source's decayed points (empty "
        "without scoring)"
    )
    trigger_event_id: _Id = Field(description="event_id of the event that fired the rule")
    created_at: AwareDatetime = Field(description="event time of the trigger (RFC 3339, UTC)")
