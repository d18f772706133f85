"""A record the service could not apply, with the reason: one type, `DeadLetter`, for every output.

The Kafka runtime sends it to the dead-letter topic with the original bytes as the value and the reason
and source as headers (`DeadLetter.kafka_headers`); outputs that are not Kafka (files, stderr) write it
as a JSON envelope (`DeadLetter.envelope`), whose JSON Schema (`DeadLetter.envelope_schema`,
schemas/dead-letters.schema.json) is generated from `_Envelope` below. Both forms read the same fields,
so a reason or a source field added here reaches both.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from upsell_triggers.engine.events import InvalidEvent


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str  # a machine-readable reason: an InvalidEvent reason, or internal_error
    error: str  # for a human: what was wrong
    raw: bytes  # the record as received
    key: bytes | None = None
    # Where the record came from: source_topic/source_partition/source_offset for a Kafka record,
    # source/line for a line of a file or stdin.
    source: Mapping[str, str | int] = field(default_factory=dict)

    @classmethod
    def of(
        cls, raw: bytes, invalid: InvalidEvent, source: Mapping[str, str | int], key: bytes | None = None
    ) -> DeadLetter:
        return cls(invalid.reason, invalid.message, raw, key, source)

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """Reason, error and source as Kafka record headers (the value is the original bytes)."""
        headers = [("reason", self.reason.encode()), ("error", self.error.encode())]
        headers += [(k, str(v).encode()) for k, v in self.source.items()]
        return headers

    def envelope(self) -> dict[str, Any]:
        """Reason, error, source and the original (as text, or base64 when it is not UTF-8) as JSON."""
        out: dict[str, Any] = {"reason": self.reason, "error": self.error, **self.source}
        try:
            out["original"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            out["original_b64"] = base64.b64encode(self.raw).decode()
        return out

    @staticmethod
    def envelope_schema() -> dict[str, Any]:
        """The JSON Schema of envelope() as the embedded runtime writes it (one JSON line per rejected
        input): the source of schemas/dead-letters.schema.json."""
        return _Envelope.model_json_schema()


class _Envelope(BaseModel):
    """DeadLetter.envelope() of an input line the embedded runtime rejected, described field by field;
    nothing is dropped silently. Only its JSON Schema is used: the envelope itself is built as a dict."""

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
