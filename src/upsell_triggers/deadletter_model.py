"""A dead letter as the embedded runtime writes it (`run --dlq FILE`, or stderr): one JSON line per
rejected input. The Kafka worker writes the original bytes to the dead-letter topic with the same
reason and error as record headers instead (docs/events.md).

schemas/dead-letters.schema.json is generated from this model; tests validate real dead letters."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DeadLetter(BaseModel):
    """An input line the service rejected, with why; nothing is dropped silently."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"oneOf": [{"required": ["original"]}, {"required": ["original_b64"]}]},
    )

    reason: Annotated[str, Field(pattern=r"^[a-z_]+$")] = Field(
        description="a stable code (also the `reason` label of upsell_invalid_events_total): not_json, "
        "not_object, too_large, missing_field, invalid_field, unknown_type, unknown_metric, "
        "unknown_plan, unknown_trait, ts_in_future"
    )
    error: str = Field(description="a readable message naming the field")
    source: str = Field(description="where the input came from: the events file (or `-`), or `simulator`")
    line: Annotated[int, Field(ge=1)] = Field(description="the input's line number in the source (1-based)")
    original: str | None = Field(default=None, description="the rejected line, when it is UTF-8")
    original_b64: str | None = Field(
        default=None, description="the rejected bytes, base64-encoded, when they are not UTF-8"
    )

    @model_validator(mode="after")
    def _one_original(self) -> DeadLetter:
        if (self.original is None) == (self.original_b64 is None):
            raise ValueError("exactly one of original / original_b64")
        return self
