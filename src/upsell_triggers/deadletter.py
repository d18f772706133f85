"""A record the service could not apply, with the reason: one type for every output.

The Kafka runtime sends it to the dead-letter topic with the original bytes as the value and the reason
and source as headers (`kafka_headers`); outputs that are not Kafka (files, stderr) write it as a JSON
envelope (`envelope`), whose schema is deadletter_model.DeadLetter (schemas/dead-letters.schema.json).
Both read the same fields, so a reason or a source field added here reaches both.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
