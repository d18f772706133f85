"""Account states of older versions: read into this version's layout (state.py), and written for
rolling upgrades from a release that reads nothing newer. Each version's code is here and only here, so
dropping one deletes code in this file (and its entry in WRITERS, if it is written).

5: this version's layout with billing periods a map, each rolling series a dict {bucket start: sum},
recent prompts a list of [id, rule, group], and a forecast history either packed doubles or, as written
before histories were packed, a map metric -> list of numbers;
4: MessagePack, containers an account has not used are nil; 3: JSON by msgspec, rule states as
booleans, dedup ring packed (base64); 2: crc32|adler32 dedup hashes as ints and source offsets;
1: blake2b hashes (dropped on load). 1-3 are JSON arrays (their first byte is '['), 4 a MessagePack
array whose first item is the version.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
from msgspec import Struct, field

from upsell_triggers.engine import recentops, windows
from upsell_triggers.engine.leadstate import LeadState
from upsell_triggers.engine.recentprompts import RecentPrompt
from upsell_triggers.engine.state import (
    AccountState,
    Attribution,
    BillingPeriod,
    Blobs,
    Gauges,
    Num,
    Periods,
    RuleState,
    pack_hash,
)
from upsell_triggers.engine.stateops import gauge_readings, period_items, shared_strings

V4 = 4
V5 = 5


class StateV5(Struct, array_like=True, gc=False, tag=V5):
    """Version 5's layout (AccountState's fields, in its order): read from workers of the release before
    version 6, and written (UPSELL_STATE_WRITE_VERSION=5, statecodec.STATE_WRITERS) while such workers
    may still run."""

    plan: str | None = None
    plan_ts: int = 0
    period_anchor: int | None = None
    limits: dict[str, Num | None] | None = None
    gauges: Gauges | None = None
    periods: dict[str, BillingPeriod] | None = None
    rolling: dict[str, dict[int, Num]] | None = None  # series -> {bucket start: sum}
    rules: dict[str, RuleState] | None = None
    sent: tuple[int, ...] | None = None
    attribution: Attribution | None = None
    recent_prompts: tuple[RecentPrompt, ...] | None = None
    dedup: bytes = b""
    last_seen: int = 0
    events_offset: int = -1
    feedback_offset: int = -1
    traits: dict[str, str | bool | Num] | None = None
    traits_ts: int = 0
    erased_at: int = 0
    # metric, packed doubles, ... or, as written before histories were packed, metric -> its numbers
    pace: Blobs | dict[str, list[Num]] | None = None
    distinct: Blobs | None = None
    history: Blobs | None = None
    leads: LeadState | None = None
    score: list[Any] | None = None


assert StateV5.__struct_fields__ == AccountState.__struct_fields__  # the fields this version renames none of


def _from_v5(o: StateV5) -> AccountState:
    st = AccountState(*(getattr(o, f) for f in StateV5.__struct_fields__))
    st.periods = [x for m, p in o.periods.items() for x in (m, p)] if o.periods else None
    if o.rolling:
        st.rolling = {k: windows.pack(b) for k, b in o.rolling.items()}
    st.recent_prompts = recentops.pack(o.recent_prompts or ())
    pace = o.pace
    if isinstance(pace, dict):
        st.pace = [x for m, h in pace.items() for x in (m, _doubles(h))]
    return shared_strings(st)


def _doubles(numbers: list[Num]) -> bytes:
    """A forecast history's numbers as forecast.py packs them: little-endian doubles."""
    a = array("d", numbers)
    if sys.byteorder != "little":
        a.byteswap()
    return a.tobytes()


def to_v5(st: AccountState) -> StateV5:
    """The state in version 5's layout (statecodec encodes it, leaving out the same trailing fields as
    this version's)."""
    old = StateV5(*(getattr(st, f) for f in StateV5.__struct_fields__))
    if st.periods:
        old.periods = period_items(st.periods)
    if st.rolling:
        old.rolling = {k: windows.buckets(s) for k, s in st.rolling.items()}
    if st.recent_prompts:
        old.recent_prompts = st.recent_prompts.prompts()
    return old


class StateV4(Struct, array_like=True, gc=False):
    """Version 4's layout: read from workers of the release before version 5, and written
    (UPSELL_STATE_WRITE_VERSION=4) while such workers may still run. Also the shape of versions 1-3."""

    version: int = V4
    plan: str | None = None
    plan_ts: int = 0
    period_anchor: int | None = None
    limits: dict[str, Num | None] | None = None
    gauges: dict[str, tuple[Num, Num]] | None = None  # metric -> (ts, value)
    periods: dict[str, list[Num]] | None = None
    rolling: dict[str, dict[int, Num]] | None = None
    rules: dict[str, RuleState] | None = None
    sent: list[int] | None = None
    attribution: list[Any] | None = None
    recent_prompts: list[list[str]] | None = None
    dedup: bytearray = bytearray()
    last_seen: int = 0
    offsets: list[int] = field(default_factory=lambda: [-1, -1])


def read(data: bytes) -> AccountState:
    """Bytes of an older version as this version's state (statecodec.decode_state falls back to it);
    ValueError naming the version for bytes of none this release reads."""
    if data[:1] == b"[":
        return _from_v4(_from_json(data))  # versions 1-3
    try:
        return _from_v5(_decode_v5(data))
    except msgspec.ValidationError:
        pass
    try:
        old = _decode_v4(data)
    except msgspec.ValidationError:
        old = None
    if old is None or old.version != V4:
        raise ValueError(f"unsupported account state version: {_version(data)!r}")
    return _from_v4(old)


def _from_v4(o: StateV4) -> AccountState:
    """Version 4 (and 1-3, once read as version 4) as this version's state."""
    gauges: Gauges | None = None
    if o.gauges:
        gauges = []
        for m, (ts, value) in o.gauges.items():
            gauges += (m, ts, value)
    return shared_strings(
        AccountState(
            o.plan,
            o.plan_ts,
            o.period_anchor,
            o.limits,
            gauges,
            _periods(o.periods) if o.periods else None,
            {k: windows.pack(b) for k, b in o.rolling.items()} if o.rolling else None,
            o.rules,
            tuple(o.sent) if o.sent else None,
            Attribution(*o.attribution) if o.attribution else None,
            recentops.pack([RecentPrompt(*r) for r in o.recent_prompts]) if o.recent_prompts else None,
            bytes(o.dedup),
            o.last_seen,
            o.offsets[0],
            o.offsets[1],
        )
    )


def _periods(periods: dict[str, list[Num]]) -> Periods:
    """Billing periods as versions 1-4 hold them, [start, end, total] lists, as this version's."""
    return [
        x
        for m, (start, end, total) in periods.items()
        for x in (m, BillingPeriod(int(start), int(end), total))
    ]


def _to_v4(st: AccountState, version: int = V4) -> StateV4:
    g = st.gauges
    return StateV4(
        version,
        st.plan,
        st.plan_ts,
        st.period_anchor,
        st.limits,
        gauge_readings(g) if g else None,
        {m: [p.start, p.end, p.total] for m, p in period_items(st.periods).items()} if st.periods else None,
        {k: windows.buckets(s) for k, s in st.rolling.items()} if st.rolling else None,
        st.rules,
        list(st.sent) if st.sent else None,
        list(msgspec.structs.astuple(st.attribution)) if st.attribution else None,
        [list(msgspec.structs.astuple(r)) for r in st.recent_prompts.prompts()]
        if st.recent_prompts
        else None,
        bytearray(st.dedup),
        st.last_seen,
        [st.events_offset, st.feedback_offset],
    )


def to_bytes_v4(st: AccountState) -> bytes:
    """The state as version 4, which the release before version 5 reads: written during a rolling
    upgrade from it (UPSELL_STATE_WRITE_VERSION=4), when an account can move back to an old worker."""
    return _encode_v4(_to_v4(st))


_decode_v5 = msgspec.msgpack.Decoder(StateV5).decode
_encode_v4 = msgspec.msgpack.Encoder().encode
_decode_v4 = msgspec.msgpack.Decoder(StateV4).decode
_decode_v3 = msgspec.json.Decoder(StateV4).decode
_encode_v3 = msgspec.json.Encoder().encode


# The fields that are None in version 4 until used, and empty containers in version 3 and before.
_CONTAINERS: dict[str, type[dict[Any, Any]] | type[list[Any]]] = {
    "gauges": dict,
    "periods": dict,
    "rolling": dict,
    "rules": dict,
    "sent": list,
    "recent_prompts": list,
}


def to_bytes_v3(st: AccountState) -> bytes:
    """The state as version 3 (JSON, empty containers), which workers released before version 4 read:
    written during a rolling upgrade from such a release (UPSELL_STATE_WRITE_VERSION=3), when an account
    can move from a new worker to an old one. Slower and larger than version 5; not for steady use."""
    old = _to_v4(st, version=3)
    empties = {name: getattr(old, name) or empty() for name, empty in _CONTAINERS.items()}
    return _encode_v3(msgspec.structs.replace(old, **empties))


def _version(data: bytes) -> Any:
    """The version a MessagePack state says it is, for the error that refuses it."""
    try:
        v = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return "not MessagePack"
    return v[0] if isinstance(v, list) and v else v


def _from_json(data: bytes) -> StateV4:
    """Version 3 (version 4's fields as a JSON array, with empty containers), or older."""
    try:
        st = _decode_v3(data)
    except msgspec.ValidationError:
        return _from_legacy(data)  # versions 1 and 2: decoded the old way below
    if st.version != 3:
        raise ValueError(f"unsupported account state version: {st.version!r}")
    return _unused_to_none(st)


def _unused_to_none(st: StateV4) -> StateV4:
    """An older state as version 4 has it: its empty containers as None."""
    st.version = V4
    for name in _CONTAINERS:
        if not getattr(st, name):
            setattr(st, name, None)
    return st


def _from_legacy(data: bytes) -> StateV4:
    """Versions 1 and 2 (orjson arrays; v3 is the same shape with rule states as booleans and the
    dedup ring packed): read so that a worker upgraded in place keeps its accounts."""
    v = orjson.loads(data)
    if not isinstance(v, list) or not v or v[0] not in (1, 2):
        raise ValueError(f"unsupported account state version: {v[0] if isinstance(v, list) and v else v!r}")
    s = StateV4()
    (
        _,
        s.plan,
        s.plan_ts,
        s.period_anchor,
        s.limits,
        s.gauges,
        s.periods,
        rolling,
        rules,
        s.sent,
        s.attribution,
        s.recent_prompts,
        dedup,
        s.last_seen,
    ) = v[:14]
    if len(v) > 14:
        s.offsets = v[14]
    if v[0] == 1:  # v1 stored buckets as [start, sum] pairs, and hashed ids with blake2b (dropped)
        s.rolling = {k: {int(b): c for b, c in pairs} for k, pairs in rolling.items()}
    else:
        s.rolling = {k: {int(b): c for b, c in buckets.items()} for k, buckets in rolling.items()}
        s.dedup = bytearray(b"".join(pack_hash(h >> 32, h & 0xFFFFFFFF) for h in dedup))
    s.rules = {k: RuleState(bool(r[0]), r[1], r[2], bool(r[3])) for k, r in rules.items()}
    s.gauges = {k: (g[0], g[1]) for k, g in s.gauges.items()} if s.gauges else None
    return _unused_to_none(s)


# The older versions a worker can write (UPSELL_STATE_WRITE_VERSION; statecodec.STATE_WRITERS).
WRITERS: dict[int, Callable[[AccountState], bytes]] = {3: to_bytes_v3, V4: to_bytes_v4}
