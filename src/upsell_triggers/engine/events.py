"""Input events (docs/events.md): pydantic models at the edge, decoded from bytes with orjson.

The common, well-formed shapes take a shortcut: msgspec decodes them straight into the engine's structs
(below). Anything it rejects is decoded with orjson and judged by the pydantic models, so the models
remain the schema and word every rejection.

Every rejection is an `InvalidEvent` with a stable reason code (a metric label) and a human-readable
message naming the field (it goes to the dead letter topic).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec
import orjson
from msgspec import Meta, Struct
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from upsell_triggers.engine.eventtime import (
    MAX_TS_MS as MAX_TS_MS,
)
from upsell_triggers.engine.eventtime import (
    MIN_TS_MS as MIN_TS_MS,
)
from upsell_triggers.engine.eventtime import (
    read_ts,
    read_usage,
    rfc3339_ms,
    ts_ms,
)
from upsell_triggers.engine.timeutil import datetime_to_ms

MAX_EVENT_BYTES = 64 * 1024
MAX_ID_LEN = 256
MAX_TRAITS = 32  # traits per account_updated event, and per account (the catalog's bound)
MAX_TRAIT_TEXT = 128  # characters of a string trait value
MAX_ATTRIBUTES = 8  # attributes per usage or paywall event (what distinct metrics may count)

USAGE_TYPES = ("usage", "paywall_hit", "plan_changed", "account_updated", "account_deleted")
FEEDBACK_TYPES = ("prompt_shown", "prompt_clicked", "prompt_dismissed")
EVENT_TYPES = USAGE_TYPES + FEEDBACK_TYPES


def _parse_ts(v: Any) -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds."""
    if isinstance(v, bool):
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds, not a boolean")
    if isinstance(v, int):
        ms = v
    elif isinstance(v, str):
        read = rfc3339_ms(v)
        if read is None:
            try:
                dt = datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(f"ts {v[:64]!r} is not RFC 3339 (e.g. 2026-11-22T10:00:00Z)") from None
            read = datetime_to_ms(dt)
        ms = read
    else:
        raise ValueError("ts must be an RFC 3339 string or integer epoch milliseconds")
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise ValueError(f"ts {ms} is outside 2000-01-01..2200-01-01 (epoch milliseconds expected)")
    return ms


EpochMs = Annotated[
    int,
    BeforeValidator(_parse_ts),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "minimum": MIN_TS_MS, "exclusiveMaximum": MAX_TS_MS},
            ],
            "description": "RFC 3339 with an offset (2026-11-22T10:00:00Z) or integer epoch milliseconds",
        }
    ),
]
Id = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_ID_LEN)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Id = Field(description="unique per event: a repeated event_id is dropped as a duplicate")
    account_id: Id = Field(description="the account; also the Kafka record key")
    ts: EpochMs = Field(description="event time: when it happened, not when it was sent")
    user_id: Annotated[str, Field(strict=True, max_length=MAX_ID_LEN)] | None = Field(
        default=None, description="the user who acted, if any; copied into the prompt it triggers"
    )


Attributes = Annotated[
    dict[Id, Annotated[str, Field(strict=True, max_length=MAX_TRAIT_TEXT)]] | None,
    Field(
        max_length=MAX_ATTRIBUTES,
        description="name -> string: who or what acted (team_id, workspace_id); distinct metrics count them",
    ),
]


class UsageEvent(_Event):
    """A usage reading: `value` for a gauge (the current level), `delta` for a counter (an increment)."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["value"], "properties": {"value": {"type": "number"}}},
                {"required": ["delta"], "properties": {"delta": {"type": "number"}}},
            ]
        }
    )
    type: Literal["usage"]
    metric: Id = Field(description="a metric the rules declare (seats, storage_bytes, api_calls, ...)")
    value: Annotated[Number, Field(ge=0)] | None = Field(default=None, description="gauge reading")
    delta: Number | None = Field(default=None, description="counter increment")
    attributes: Attributes = None

    @model_validator(mode="after")
    def _one_of_value_delta(self) -> UsageEvent:
        if (self.value is None) == (self.delta is None):
            raise ValueError(
                "usage needs exactly one of 'value' (gauge reading) or 'delta' (counter increment)"
            )
        return self


class PaywallHitEvent(_Event):
    """A user reached for a premium feature their plan does not include."""

    type: Literal["paywall_hit"]
    feature: Id = Field(description="the premium feature (a plan's `features` entry)")
    attributes: Attributes = None


class PlanChangedEvent(_Event):
    """The account's plan (and billing period, or per-account limits) changed."""

    type: Literal["plan_changed"]
    plan: Id = Field(description="the new plan id")
    period_start: EpochMs | None = Field(
        default=None, description="start of the billing period: period counters restart from it"
    )
    limits: dict[Id, Annotated[Number, Field(ge=0)] | None] | None = Field(
        default=None,
        max_length=64,
        description="per-account limit overrides: metric -> limit (null: unlimited)",
    )


class FeedbackEvent(_Event):
    """What the user did with a prompt; sent by the frontend to the feedback topic."""

    type: Literal["prompt_shown", "prompt_clicked", "prompt_dismissed"]
    prompt_id: Id = Field(description="the prompt's prompt_id")


TraitValue = (
    Annotated[str, Field(strict=True, max_length=MAX_TRAIT_TEXT)]
    | Annotated[bool, Field(strict=True)]
    | Number
    | None
)


class AccountUpdatedEvent(_Event):
    """Account attributes (traits) changed: each value replaces the trait's, null removes it. Traits must
    be declared in the rules' trait catalog; `time` traits are RFC 3339 strings or epoch milliseconds."""

    type: Literal["account_updated"]
    traits: dict[Id, TraitValue] = Field(
        max_length=MAX_TRAITS, description="trait name -> value (string, number, boolean, time; null: unset)"
    )


class AccountDeletedEvent(_Event):
    """The account was deleted, or its owner asked for erasure (docs/erasure.md): its state is removed,
    and events of it up to `ts` that arrive later are dropped without a prompt. An event after `ts`
    starts a new, empty account."""

    type: Literal["account_deleted"]


EventModel = (
    UsageEvent
    | PaywallHitEvent
    | PlanChangedEvent
    | AccountUpdatedEvent
    | AccountDeletedEvent
    | FeedbackEvent
)


# ---- what the engine reads: msgspec structs, also the decoder of the common shapes -----------------
#
# msgspec decodes bytes straight into these (JSON parse and the constraints below in one C call: 0.3 us
# per event against 1.3 us for orjson + a hand-written check), and whatever it rejects goes the long
# way (orjson, then the pydantic models above, which word the error). The constraints mirror the models;
# tests/unit/test_fast_decode.py checks with hypothesis that both ways agree on what msgspec accepts.
# gc=False: events hold strings and numbers only, so the collector need not track them.
#
# A string `ts` (RFC 3339, the contract's own example) is decoded by msgspec as a string and read by
# `__post_init__` with `eventtime.ts_ms`, the long way's own reading (whenever's parser). msgspec's
# datetime type is not used: it rounds digits past the microsecond where the long way truncates them (so
# .0009995 would read a millisecond later), which no check after decoding can tell apart, and turning
# its datetime into epoch ms costs more than whenever's whole reading. After construction `ts` is always
# epoch ms, which is the type the engine (and mypy) sees.

_Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN)]
_UserId = Annotated[str, Meta(max_length=MAX_ID_LEN)]
if TYPE_CHECKING:
    _Ts = int
else:
    _Ts = Annotated[int, Meta(ge=MIN_TS_MS, lt=MAX_TS_MS)] | str
_Reading = Annotated[float, Meta(ge=0)]
_Attributes = Annotated[
    dict[_Id, Annotated[str, Meta(max_length=MAX_TRAIT_TEXT)]], Meta(max_length=MAX_ATTRIBUTES)
]


class _Common(Struct, tag_field="type", gc=False):
    """The fields every event has first (user_id follows each type's own required field)."""

    event_id: _Id
    account_id: _Id
    ts: _Ts

    # Compiled (eventtime.py): msgspec calls __post_init__ as a plain function of the struct, so mypy's
    # rule that it be an instance method does not apply.
    __post_init__ = read_ts  # type: ignore[misc]


class Usage(_Common, tag="usage", gc=False):
    metric: _Id
    user_id: _UserId | None = None
    value: _Reading | None = None
    delta: float | None = None
    attributes: _Attributes | None = None
    type: ClassVar[str] = "usage"

    __post_init__ = read_usage  # type: ignore[misc]  # compiled, as _Common's


class PaywallHit(_Common, tag="paywall_hit", gc=False):
    feature: _Id
    user_id: _UserId | None = None
    attributes: _Attributes | None = None
    type: ClassVar[str] = "paywall_hit"


class PlanChanged(_Common, tag="plan_changed", gc=False):
    plan: _Id
    user_id: _UserId | None = None
    period_start: _Ts | None = None
    limits: Annotated[dict[_Id, _Reading | None], Meta(max_length=64)] | None = None
    type: ClassVar[str] = "plan_changed"

    def __post_init__(self) -> None:
        ts: int | str = self.ts
        if type(ts) is str:
            self.ts = ts_ms(ts)
        start: int | str | None = self.period_start
        if type(start) is str:
            self.period_start = ts_ms(start)


_TraitValue = Annotated[str, Meta(max_length=MAX_TRAIT_TEXT)] | bool | float | None


class AccountUpdated(_Common, tag="account_updated", gc=False):
    traits: Annotated[dict[_Id, _TraitValue], Meta(max_length=MAX_TRAITS)]
    user_id: _UserId | None = None
    type: ClassVar[str] = "account_updated"


class AccountDeleted(_Common, tag="account_deleted", gc=False):
    user_id: _UserId | None = None
    type: ClassVar[str] = "account_deleted"


class Feedback(_Common, gc=False):
    prompt_id: _Id
    user_id: _UserId | None = None
    type: ClassVar[str]


class PromptShown(Feedback, tag="prompt_shown", gc=False):
    type: ClassVar[str] = "prompt_shown"


class PromptClicked(Feedback, tag="prompt_clicked", gc=False):
    type: ClassVar[str] = "prompt_clicked"


class PromptDismissed(Feedback, tag="prompt_dismissed", gc=False):
    type: ClassVar[str] = "prompt_dismissed"


FEEDBACK_CLASSES: dict[str, type[Feedback]] = {
    "prompt_shown": PromptShown,
    "prompt_clicked": PromptClicked,
    "prompt_dismissed": PromptDismissed,
}
Event = Usage | PaywallHit | PlanChanged | AccountUpdated | AccountDeleted | Feedback
_decode_common = msgspec.json.Decoder(
    Usage
    | PaywallHit
    | PlanChanged
    | AccountUpdated
    | AccountDeleted
    | PromptShown
    | PromptClicked
    | PromptDismissed
).decode


def _from_model(m: _Event) -> Event:
    if isinstance(m, UsageEvent):
        attrs = dict(m.attributes) if m.attributes is not None else None
        return Usage(m.event_id, m.account_id, m.ts, m.metric, m.user_id, m.value, m.delta, attrs)
    if isinstance(m, PaywallHitEvent):
        attrs = dict(m.attributes) if m.attributes is not None else None
        return PaywallHit(m.event_id, m.account_id, m.ts, m.feature, m.user_id, attrs)
    if isinstance(m, PlanChangedEvent):
        limits = dict(m.limits) if m.limits is not None else None
        return PlanChanged(m.event_id, m.account_id, m.ts, m.plan, m.user_id, m.period_start, limits)
    if isinstance(m, AccountUpdatedEvent):
        return AccountUpdated(m.event_id, m.account_id, m.ts, dict(m.traits), m.user_id)
    if isinstance(m, AccountDeletedEvent):
        return AccountDeleted(m.event_id, m.account_id, m.ts, m.user_id)
    assert isinstance(m, FeedbackEvent)
    return FEEDBACK_CLASSES[m.type](m.event_id, m.account_id, m.ts, m.prompt_id, m.user_id)


def _number(v: Any) -> float | None:
    """A finite JSON number as float, or None for anything the pydantic path must judge."""
    t = type(v)
    if t is float:
        return v if math.isfinite(v) else None
    if t is int:
        return float(v)  # orjson ints fit in 64 bits, so this cannot overflow
    return None


def _fast(obj: dict[str, Any]) -> Event | None:
    """The common, well-formed shapes of every event type without pydantic (5x cheaper on the hot path).

    Returns None whenever anything is unusual; the pydantic models then decide and word the error.
    tests/unit/test_fast_decode.py checks with hypothesis that it agrees with the models.
    """
    get = obj.get
    eid, acct, ts, uid = get("event_id"), get("account_id"), get("ts"), get("user_id")
    if type(ts) is str:
        try:
            ts = ts_ms(ts)
        except ValueError:
            return None
    if not (
        type(eid) is str
        and 0 < len(eid) <= MAX_ID_LEN
        and type(acct) is str
        and 0 < len(acct) <= MAX_ID_LEN
        and type(ts) is int
        and MIN_TS_MS <= ts < MAX_TS_MS
        and (uid is None or (type(uid) is str and len(uid) <= MAX_ID_LEN))
    ):
        return None
    etype = get("type")
    if get("attributes") is not None:
        return None  # rare: the models check them
    if etype == "usage":
        metric, value, delta = get("metric"), get("value"), get("delta")
        if type(metric) is not str or not 0 < len(metric) <= MAX_ID_LEN:
            return None
        if value is not None and delta is None:
            v = _number(value)
            return None if v is None or v < 0 else Usage(eid, acct, ts, metric, uid, v, None)
        if delta is not None and value is None:
            d = _number(delta)
            return None if d is None else Usage(eid, acct, ts, metric, uid, None, d)
        return None
    if etype == "paywall_hit":
        f = get("feature")
        return PaywallHit(eid, acct, ts, f, uid) if type(f) is str and 0 < len(f) <= MAX_ID_LEN else None
    if etype == "plan_changed":  # per-account limits (a dict) are rare: the models check those
        plan, start = get("plan"), get("period_start")
        if type(start) is str:
            try:
                start = ts_ms(start)
            except ValueError:
                return None
        if (
            type(plan) is str
            and 0 < len(plan) <= MAX_ID_LEN
            and get("limits") is None
            and (start is None or (type(start) is int and MIN_TS_MS <= start < MAX_TS_MS))
        ):
            return PlanChanged(eid, acct, ts, plan, uid, start, None)
        return None
    if etype == "account_deleted":
        return AccountDeleted(eid, acct, ts, uid)
    if etype in FEEDBACK_TYPES:
        pid = get("prompt_id")
        if type(pid) is str and 0 < len(pid) <= MAX_ID_LEN:
            return FEEDBACK_CLASSES[etype](eid, acct, ts, pid, uid)
        return None
    return None


_MODELS: dict[str, type[_Event]] = {
    "usage": UsageEvent,
    "paywall_hit": PaywallHitEvent,
    "plan_changed": PlanChangedEvent,
    "account_updated": AccountUpdatedEvent,
    "account_deleted": AccountDeletedEvent,
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
    fast = _fast(obj)
    if fast is not None:
        return fast
    return _slow(obj, model, account_id)


def _slow(obj: dict[str, Any], model: type[_Event], account_id: str | None) -> Event | InvalidEvent:
    try:
        return _from_model(model.model_validate(obj))
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
    ev: Event | InvalidEvent
    try:
        ev = _decode_common(raw)
    except Exception:  # anything unusual (msgspec.DecodeError, UnicodeDecodeError, ...): the long way
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            return InvalidEvent("not_json", f"not valid JSON: {str(err)[:200]}")
        ev = validate_event(obj)  # tries the hand-written check, then the models
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
