"""Input events (contract §2): pydantic models at the edge, decoded from bytes with orjson.

Every rejection is an `InvalidEvent` with a stable reason code (a metric label) and a human-readable
message naming the field (it goes to the dead letter topic).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from upsell_triggers.engine.timeutil import datetime_to_ms

# Event time outside these bounds is a producer bug (seconds instead of ms, year 0, ...).
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS = 7_258_118_400_000  # 2200-01-01T00:00:00Z
MAX_EVENT_BYTES = 64 * 1024
MAX_ID_LEN = 256

USAGE_TYPES = ("usage", "paywall_hit", "plan_changed")
FEEDBACK_TYPES = ("prompt_shown", "prompt_clicked", "prompt_dismissed")
EVENT_TYPES = USAGE_TYPES + FEEDBACK_TYPES


def _parse_ts(v: Any) -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds."""
    if isinstance(v, bool):
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds, not a boolean")
    if isinstance(v, int):
        ms = v
    elif isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError(f"ts {v[:64]!r} is not RFC 3339 (e.g. 2026-11-22T10:00:00Z)") from None
        ms = datetime_to_ms(dt)
    else:
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds")
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise ValueError(f"ts {ms} is outside 2000-01-01..2200-01-01 (epoch milliseconds expected)")
    return ms


EpochMs = Annotated[int, BeforeValidator(_parse_ts)]
Id = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_ID_LEN)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Id
    account_id: Id
    ts: EpochMs
    user_id: Annotated[str, Field(strict=True, max_length=MAX_ID_LEN)] | None = None


class UsageEvent(_Event):
    type: Literal["usage"]
    metric: Id
    value: Annotated[Number, Field(ge=0)] | None = None
    delta: Number | None = None

    @model_validator(mode="after")
    def _one_of_value_delta(self) -> UsageEvent:
        if (self.value is None) == (self.delta is None):
            raise ValueError(
                "usage needs exactly one of 'value' (gauge reading) or 'delta' (counter increment)"
            )
        return self


class PaywallHitEvent(_Event):
    type: Literal["paywall_hit"]
    feature: Id


class PlanChangedEvent(_Event):
    type: Literal["plan_changed"]
    plan: Id
    period_start: EpochMs | None = None
    limits: dict[Id, Annotated[Number, Field(ge=0)] | None] | None = Field(default=None, max_length=64)


class FeedbackEvent(_Event):
    type: Literal["prompt_shown", "prompt_clicked", "prompt_dismissed"]
    prompt_id: Id


Event = UsageEvent | PaywallHitEvent | PlanChangedEvent | FeedbackEvent

_MODELS: dict[str, type[_Event]] = {
    "usage": UsageEvent,
    "paywall_hit": PaywallHitEvent,
    "plan_changed": PlanChangedEvent,
    "prompt_shown": FeedbackEvent,
    "prompt_clicked": FeedbackEvent,
    "prompt_dismissed": FeedbackEvent,
}


class InvalidEvent:
    """Why an input was rejected. `reason` is a short code (metric label); `message` names the field."""

    __slots__ = ("account_id", "message", "reason")

    def __init__(self, reason: str, message: str, account_id: str | None = None) -> None:
        self.reason = reason
        self.message = message
        self.account_id = account_id

    def __repr__(self) -> str:
        return f"InvalidEvent({self.reason}: {self.message})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InvalidEvent) and (self.reason, self.message) == (
            other.reason,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.reason, self.message))


def _describe(err: ValidationError) -> tuple[str, str]:
    parts = []
    reason = "invalid_field"
    for e in err.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "event"
        if e["type"] == "missing":
            reason = "missing_field"
            parts.append(f"missing required field '{loc}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"field '{loc}': {msg}")
    return reason, "; ".join(parts)


def validate_event(obj: Any) -> Event | InvalidEvent:
    """Validates an already-parsed JSON value."""
    if not isinstance(obj, dict):
        return InvalidEvent("not_object", f"event must be a JSON object, got {type(obj).__name__}")
    account = obj.get("account_id")
    account_id = account if isinstance(account, str) and account else None
    etype = obj.get("type")
    if etype is None:
        return InvalidEvent("missing_field", "missing required field 'type'", account_id)
    model = _MODELS.get(etype) if isinstance(etype, str) else None
    if model is None:
        return InvalidEvent(
            "unknown_type",
            f"field 'type': unknown event type {str(etype)[:64]!r}; expected one of "
            + ", ".join(EVENT_TYPES),
            account_id,
        )
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as err:
        reason, message = _describe(err)
        return InvalidEvent(reason, message, account_id)


def decode_event(raw: bytes | bytearray | memoryview | str, key: bytes | None = None) -> Event | InvalidEvent:
    """bytes -> Event, or the reason it is not one. Never raises.

    When `key` is given (a Kafka record key) it must equal account_id: otherwise the account's state
    could live on the wrong partition.
    """
    if len(raw) > MAX_EVENT_BYTES:
        return InvalidEvent("too_large", f"event is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        return InvalidEvent("not_json", f"not valid JSON: {str(err)[:200]}")
    ev = validate_event(obj)
    if key is not None and not isinstance(ev, InvalidEvent):
        try:
            k = key.decode()
        except UnicodeDecodeError:
            k = None
        if k != ev.account_id:
            shown = repr(k[:64]) if k is not None else "non-UTF-8 bytes"
            return InvalidEvent(
                "key_mismatch",
                f"record key {shown} differs from account_id {ev.account_id[:64]!r}",
                ev.account_id,
            )
    return ev
