"""Per-account state: compact, bounded, serializable (it lives in a Faust table / changelog).

Bounds, per account: one reading per gauge, one open period per period counter, at most
MAX_SERIES rolling series (paywall features + rolling metrics) of at most window/bucket buckets each,
one rule state per (rule, feature), DEDUP_HORIZON recent event ids, RECENT_PROMPTS prompt ids for
feedback, CAP_HISTORY prompt times for the frequency cap.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Mapping
from sys import intern
from types import MappingProxyType
from typing import Any, cast

import msgspec
import orjson
from msgspec import Struct, field

DEDUP_HORIZON = 16  # producer retries repeat recent ids; Kafka redelivery is caught by offset
_RING_BYTES = 8 * DEDUP_HORIZON  # the dedup ring's length when full: 8-byte hashes
RECENT_PROMPTS = 8
CAP_HISTORY = 8
MAX_SERIES = 32
# 5: gauges as one flat list, the dedup ring as bytes, the two source offsets as fields (a decoded state takes
# 480 bytes, 730 in version 4's layout); 4: MessagePack, containers an account has not used are nil; 3: JSON
# by msgspec, rule states as booleans, dedup ring packed (base64); 2: crc32|adler32 dedup hashes as ints and
# source offsets; 1: blake2b hashes (dropped on load). All are still read; 1-3 are JSON arrays (their first
# byte is '['), 4 and 5 MessagePack arrays.
STATE_VERSION = 5
V4 = 4
_Num = int | float  # kept apart on decode: event times stay ints, readings stay floats
_pack_hash = struct.Struct("<II").pack  # an event-id hash: CRC-32, Adler-32
FEATURE_SEP = "\x1f"  # between a name and a feature in a key (no metric, rule id or feature has it)
UNUSED: Mapping[str, Any] = MappingProxyType({})  # what an account's unused container reads as


def feature_key(name: str, feature: str | None) -> str:
    """The key of a per-feature entry: a rolling series (metric name) or a rule state (rule id), with
    the paywall feature it counts; the name alone for an entry without a feature."""
    return name if feature is None else name + FEATURE_SEP + feature


def split_feature_key(key: str) -> tuple[str, str | None]:
    """feature_key() undone: (name, feature or None)."""
    name, sep, feature = key.partition(FEATURE_SEP)
    return (name, feature) if sep else (name, None)


def has_feature(key: str, feature: str) -> bool:
    """Whether key is feature_key(name, feature) for some name."""
    return key.endswith(FEATURE_SEP + feature)


class RuleState(Struct, array_like=True, gc=False):
    """Edge-trigger memory of one (rule, feature). Absent = armed and never fired."""

    armed: bool = True
    last_fired: int | None = None
    fired_period: int | None = None
    capped: bool = False  # a frequency_cap decision was already recorded this episode

    def to_list(self) -> list[Any]:
        return [int(self.armed), self.last_fired, self.fired_period, int(self.capped)]

    @classmethod
    def from_list(cls, v: list[Any]) -> RuleState:
        return cls(bool(v[0]), v[1], v[2], bool(v[3]))


class AccountState(Struct, array_like=True, gc=False, tag=STATE_VERSION):
    """msgspec encodes and decodes it in C as a MessagePack array (fields in this order): a typical
    account is 84 bytes, encoded in 0.14 us and decoded in 0.3 us, against 148 bytes, 0.23 and 0.35 us
    as a JSON array (version 3), and 2.3 and 3.3 us for orjson plus building the objects in Python
    (version 2). The bytes come out exact-size (orjson's 4 KiB buffers had to be copied).
    gc=False: a state never references itself, so the collector need not track it (its containers are
    still tracked).

    The decoded state is what a worker holds per active account (100k by default), so its layout is
    chosen for memory: containers are None until the account uses them (a typical account uses one or
    two of the seven; each empty dict or list costs 56-64 bytes), gauge readings are one flat list
    instead of a dict of tuples (a one-reading dict and its tuple take 240 bytes, the list 80), the
    dedup ring is one bytes object, and the source offsets are two fields instead of a list
    (bench/ANALYSIS.md, "memory per account")."""

    # The version is the struct's tag: encoded first (the same bytes as a leading version field) and
    # checked on decode, without 8 bytes per decoded state.
    plan: str | None = None  # None: the policy's default plan
    plan_ts: int = 0
    period_anchor: int | None = None
    limits: dict[str, _Num | None] | None = None  # per-account overrides from plan_changed
    # Readings, flat: metric, ts, value, metric, ts, value... (gauge_value reads a metric's).
    gauges: list[str | _Num] | None = None
    periods: dict[str, list[_Num]] | None = None  # metric -> [start, end, total]
    rolling: dict[str, dict[int, _Num]] | None = None  # series -> {bucket start: sum}
    rules: dict[str, RuleState] | None = None  # rule id [+ '\x1f' + feature] -> state
    # Tuples, replaced when a prompt is decided (rare), where lists cost 16-40 bytes more each: MessagePack
    # arrays either way.
    sent: tuple[int, ...] | None = None  # times of recent prompts counted by the frequency cap
    attribution: tuple[Any, ...] | None = None  # (prompt_id, rule_id, rule_group, group, ts)
    recent_prompts: tuple[tuple[str, ...], ...] | None = None  # (prompt_id, rule_id, rule_group)
    # Ring of event-id hashes (8 bytes each, newest last), packed: as a list of 16 int objects
    # scattered on the heap, checking an event against it was the engine's costliest line (cache
    # misses over 100k accounts). Immutable bytes, replaced per event (see seen()).
    dedup: bytes = b""
    last_seen: int = 0  # newest event time applied
    # Per source topic: the newest Kafka offset applied to this account. An account lives on one
    # partition of each, so a redelivered record is one at or below it.
    events_offset: int = -1
    feedback_offset: int = -1
    # Account traits (account_updated): name -> value (a time trait as epoch ms), at most MAX_TRAITS, and
    # the event time they were last set at. Trailing and left out of the bytes of an account that never
    # had traits (to_bytes), so such a state is byte for byte what it is without the feature; a state
    # written without them decodes with these defaults.
    traits: dict[str, str | bool | _Num] | None = None
    traits_ts: int = 0

    @property
    def version(self) -> int:
        return STATE_VERSION

    def to_bytes(self) -> bytes:
        data = _encode(self)
        if self.traits is None:  # the two trailing defaults dropped, the array header counting 2 fewer
            return _HEAD_NO_TRAITS + data[_HEAD_LEN:-2]
        return data

    @classmethod
    def from_bytes(cls, data: bytes) -> AccountState:
        if data[:1] == b"[":
            return _from_v4(_from_json(data))  # versions 1-3, written before the upgrade
        try:
            st = _decode(data)
        except msgspec.ValidationError:
            st = None
        if st is not None:
            return _shared_strings(st)
        try:
            old = _decode_v4(data)
        except msgspec.ValidationError:
            old = None
        if old is None or old.version != V4:
            raise ValueError(f"unsupported account state version: {_version(data)!r}")
        return _from_v4(old)


class StateV4(Struct, array_like=True, gc=False):
    """Version 4's layout: read from workers of the release before version 5, and written
    (UPSELL_STATE_WRITE_VERSION=4) while such workers may still run. Also the shape of versions 1-3."""

    version: int = V4
    plan: str | None = None
    plan_ts: int = 0
    period_anchor: int | None = None
    limits: dict[str, _Num | None] | None = None
    gauges: dict[str, tuple[_Num, _Num]] | None = None  # metric -> (ts, value)
    periods: dict[str, list[_Num]] | None = None
    rolling: dict[str, dict[int, _Num]] | None = None
    rules: dict[str, RuleState] | None = None
    sent: list[int] | None = None
    attribution: list[Any] | None = None
    recent_prompts: list[list[str]] | None = None
    dedup: bytearray = bytearray()
    last_seen: int = 0
    offsets: list[int] = field(default_factory=lambda: [-1, -1])


def gauge_value(gauges: list[str | _Num] | None, metric: str) -> _Num:
    """metric's latest reading in a flat gauges list (metric, ts, value, ...), 0 if it has none. Metric
    names are the only strings in the list, so list.index (C, identity first) cannot match a ts or a
    value."""
    if gauges is not None:
        try:
            return gauges[gauges.index(metric) + 2]  # type: ignore[return-value]
        except ValueError:
            pass
    return 0


def gauge_readings(gauges: list[str | _Num] | None) -> dict[str, tuple[_Num, _Num]]:
    """The flat gauges list (metric, ts, value, ...) as metric -> (ts, value)."""
    g = gauges or []
    return {cast(str, g[i]): (cast(_Num, g[i + 1]), cast(_Num, g[i + 2])) for i in range(0, len(g), 3)}


def _shared_strings(st: AccountState) -> AccountState:
    """Names decoded from bytes are new strings per account (~55 bytes each); interned, every account
    shares one copy of each plan, metric and rule name, as the states the engine creates do. Runs on
    every cache miss, so written for speed (0.58 us for a typical state)."""
    p = st.plan
    if p is not None:
        st.plan = intern(p)
    g = st.gauges
    if g:
        for i in range(0, len(g), 3):
            g[i] = intern(g[i])  # type: ignore[arg-type]
    a = st.attribution
    if a:
        st.attribution = (a[0], intern(a[1]), intern(a[2]), *a[3:])
    rp = st.recent_prompts
    if rp:
        st.recent_prompts = tuple((r[0], intern(r[1]), intern(r[2]), *r[3:]) for r in rp)
    return st


def _from_v4(o: StateV4) -> AccountState:
    gauges: list[str | _Num] | None = None
    if o.gauges:
        gauges = []
        for m, (ts, value) in o.gauges.items():
            gauges += (m, ts, value)
    return _shared_strings(
        AccountState(
            o.plan,
            o.plan_ts,
            o.period_anchor,
            o.limits,
            gauges,
            o.periods,
            o.rolling,
            o.rules,
            tuple(o.sent) if o.sent else None,
            tuple(o.attribution) if o.attribution else None,
            tuple(map(tuple, o.recent_prompts)) if o.recent_prompts else None,
            bytes(o.dedup),
            o.last_seen,
            o.offsets[0],
            o.offsets[1],
        )
    )


def _to_v4(st: AccountState, version: int = V4) -> StateV4:
    g = st.gauges
    return StateV4(
        version,
        st.plan,
        st.plan_ts,
        st.period_anchor,
        st.limits,
        gauge_readings(g) if g else None,
        st.periods,
        st.rolling,
        st.rules,
        list(st.sent) if st.sent else None,
        list(st.attribution) if st.attribution else None,
        [list(r) for r in st.recent_prompts] if st.recent_prompts else None,
        bytearray(st.dedup),
        st.last_seen,
        [st.events_offset, st.feedback_offset],
    )


def to_bytes_v4(st: AccountState) -> bytes:
    """The state as version 4, which the release before version 5 reads: written during a rolling
    upgrade from it (UPSELL_STATE_WRITE_VERSION=4), when an account can move back to an old worker."""
    return _encode(_to_v4(st))


def event_hash(event_id: str) -> bytes:
    """A stable 8-byte id for the dedup ring: CRC-32 and Adler-32 side by side (two C calls, a tenth of
    a blake2b's cost). Two ids collide only if both checksums do, among one account's last 16 events."""
    b = event_id.encode()
    return _pack_hash(zlib.crc32(b), zlib.adler32(b))


def seen(st: AccountState, h: bytes) -> bool:
    """Records an event-id hash (event_hash()) in the account's ring; True if it was among the last
    DEDUP_HORIZON."""
    dedup = st.dedup
    i = dedup.find(h)
    while i > 0 and i % 8:  # a match straddling two hashes is not one
        i = dedup.find(h, i + 1)
    if i >= 0:
        return True
    st.dedup = dedup[8:] + h if len(dedup) >= _RING_BYTES else dedup + h
    return False


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(AccountState).decode
_HEAD_LEN = 3  # array16: 0xdc and a 2-byte count (the tag and 17 fields)
_HEAD_NO_TRAITS = b"\xdc" + (len(AccountState.__struct_fields__) - 1).to_bytes(2, "big")
assert _encode(AccountState())[:_HEAD_LEN] == b"\xdc" + (len(AccountState.__struct_fields__) + 1).to_bytes(
    2, "big"
), "AccountState's array header is not array16"
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
    can move from a new worker to an old one. Slower and larger than to_bytes(); not for steady use."""
    old = _to_v4(st, version=3)
    empties = {name: getattr(old, name) or empty() for name, empty in _CONTAINERS.items()}
    return _encode_v3(msgspec.structs.replace(old, **empties))


def _version(data: bytes) -> Any:
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
        s.dedup = bytearray(b"".join(_pack_hash(h >> 32, h & 0xFFFFFFFF) for h in dedup))
    s.rules = {k: RuleState.from_list(r) for k, r in rules.items()}
    s.gauges = {k: (g[0], g[1]) for k, g in s.gauges.items()} if s.gauges else None
    return _unused_to_none(s)


def rolling_add(buckets: dict[int, float], ts: int, delta: float, bucket_ms: int, keep_ms: int) -> bool:
    """Adds delta to ts's bucket; drops buckets that fell out of the kept horizon.

    False when ts is too old for the horizon (the event is late and counts nowhere).
    """
    b = ts - ts % bucket_ms
    newest = max(buckets) if buckets else b
    if b <= newest - keep_ms:
        return False
    buckets[b] = buckets.get(b, 0) + delta
    if b > newest:
        cutoff = b - keep_ms
        for k in [k for k in buckets if k <= cutoff]:
            del buckets[k]
    return True


def rolling_sum(buckets: dict[int, float], window_ms: int) -> float:
    """Sum of the buckets within window_ms of the newest bucket (windows are aligned to buckets)."""
    if not buckets:
        return 0
    cutoff = max(buckets) - window_ms
    return sum(c for b, c in buckets.items() if b > cutoff)


# UPSELL_STATE_WRITE_VERSION -> encoder: older versions only while a rolling upgrade from a release that
# reads nothing newer may still move accounts back to its workers.
STATE_WRITERS: dict[int, Callable[[AccountState], bytes]] = {
    3: to_bytes_v3,
    V4: to_bytes_v4,
    STATE_VERSION: AccountState.to_bytes,
}
