"""The prompt event as a pydantic model: the published schema of what the service emits.

The hot path builds prompts as plain dicts (engine/prompts.py: a model per prompt would cost more than
the rest of building it); this model describes those dicts for consumers. schemas/prompts.schema.json is
generated from it, and the tests validate real `replay` and worker output against both, so the two cannot
drift apart unnoticed. Unknown fields are allowed: a minor release may add optional fields (docs/schemas.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from upsell_triggers.engine.rulefile import ID_PATTERN

# The prompt schema's major version; engine/prompts.py writes it into every prompt (a test checks they agree).
PROMPT_SCHEMA_VERSION = 1

_Id = Annotated[str, Field(min_length=1, max_length=256)]
_RuleId = Annotated[str, Field(pattern=ID_PATTERN)]
_Number = Annotated[float, Field(allow_inf_nan=False)]


class PromptCta(BaseModel):
    """The call to action: a button label and where it leads (rendered from the rule's copy)."""

    model_config = ConfigDict(extra="ignore")

    label: str = Field(description="button text")
    url: str = Field(
        description="link target, usually a path in the product (e.g. /billing/upgrade?plan=team)"
    )


class PromptEvent(BaseModel):
    """An upgrade prompt for one account, keyed by account_id on the prompts topic. Delivery is
    at-least-once: the same trigger always yields the same prompt_id, so consumers dedupe by it."""

    model_config = ConfigDict(extra="ignore", title="PromptEvent")

    schema_version: Literal[1] = Field(
        description="major version of this schema; a change that could break a consumer increments it"
    )
    prompt_id: Annotated[str, Field(pattern=r"^pr_[0-9a-f]{24}$")] = Field(
        description="stable id of this prompt: the same trigger gives the same id across restarts and "
        "reprocessing (dedupe by it); feedback events refer to it"
    )
    account_id: _Id = Field(description="the account the prompt is for")
    user_id: Annotated[str, Field(max_length=256)] | None = Field(
        description="the user whose event triggered the prompt, when it carried one"
    )
    rule_id: _RuleId = Field(description="the rule that fired")
    signal: _RuleId = Field(
        description="what kind of moment this is: usage_limit, paywall, usage_threshold, or a signal the "
        "rule names"
    )
    metric: _RuleId = Field(description="the metric the rule's primary condition reads")
    feature: _Id | None = Field(description="paywall prompts: the premium feature that was hit")
    value: _Number = Field(description="the metric's level that fired the rule (a count, bytes, or hits)")
    limit: _Number | None = Field(description="the account's plan limit for the metric; null: unlimited")
    ratio: _Number | None = Field(description="value / limit, rounded to 4 decimals; null without a limit")
    plan: _RuleId = Field(description="the account's current plan id")
    target_plan: _RuleId = Field(description="the plan the prompt suggests upgrading to")
    placement: Literal["banner", "modal", "toast", "inline"] = Field(
        description="where to show it: banner (persistent bar), modal (blocking dialog), toast "
        "(transient notice), inline (next to the feature or limit it is about)"
    )
    priority: Annotated[int, Field(ge=0, le=1000)] = Field(
        description="higher first when several prompts compete for one placement"
    )
    title: str = Field(description="headline, rendered from the rule's copy")
    body: str = Field(description="body text, rendered from the rule's copy; may be empty")
    cta: PromptCta
    trigger_event_id: _Id = Field(description="event_id of the usage event that fired the rule")
    created_at: AwareDatetime = Field(description="event time of the trigger (RFC 3339, UTC)")
    expires_at: AwareDatetime = Field(
        description="do not show the prompt after this time (RFC 3339, UTC; policy.prompt_expiry)"
    )
    variant: _RuleId | None = Field(
        default=None,
        description="the copy variant this prompt shows, when its rule has variants (absent otherwise); "
        "feedback and conversions are counted per variant",
    )
