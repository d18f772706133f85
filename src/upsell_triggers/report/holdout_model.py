"""The record `replay --holdout FILE` writes and `report --holdout FILE` reads, as a model: the JSON
Schema (schemas/holdout.schema.json) is generated from it."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class HoldoutDecision(BaseModel):
    """An account a rule would have prompted, held out instead (policy.holdout)."""

    model_config = ConfigDict(extra="forbid", title="HoldoutDecision")

    account_id: Annotated[str, Field(min_length=1, max_length=256)]
    rule_id: Annotated[str, Field(min_length=1)]
    rule_group: Annotated[str, Field(min_length=1)]
    feature: Annotated[str | None, Field(description="the feature of a paywall rule; null otherwise")]
    ts: Annotated[AwareDatetime, Field(description="event time of the triggering event (RFC 3339, UTC)")]
