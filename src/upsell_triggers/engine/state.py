"""Per-account state: its layout and the accessors the engine reads and writes it through.

The layout is this version's (AccountState, one MessagePack array on the wire); its bytes are
statecodec.py's, and older versions are read, and written during rolling upgrades, by statelegacy.py.
Bounds, per account: one reading per gauge, one open period per period counter, at most MAX_SERIES
rolling series (paywall features + rolling metrics, windows.py) of at most window/bucket buckets each,
one rule state per (rule, feature), DEDUP_HORIZON recent event ids, RECENT_PROMPTS prompt ids for
feedback (recentprompts.py), CAP_HISTORY prompt times for the frequency cap.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from sys import intern
from types import MappingProxyType
from typing import Any

from msgspec import Struct

from upsell_triggers.engine.leadstate import LeadState
from upsell_triggers.engine.outcomes import Group
from upsell_triggers.engine.recentprompts import RecentPrompts
from upsell_triggers.engine.recentprompts import shared as shared_recent
from upsell_triggers.engine.windows import Series

DEDUP_HORIZON = 16  # producer retries repeat recent ids; Kafka redelivery is caught by offset
_RING_BYTES = 8 * DEDUP_HORIZON  # the dedup ring's length when full: 8-byte hashes
CAP_HISTORY = 8
MAX_SERIES = 32
# 6: rolling series (windows.py) and recent prompts (recentprompts.py) packed, billing periods as one flat
# list. 5: gauges as one flat list, the dedup ring as bytes, the two source offsets as fields (a decoded
# state takes 480 bytes, 730 in version 4's layout). Older versions: statelegacy.py.
STATE_VERSION = 6
Num = int | float  # kept apart on decode: event times stay ints, readings stay floats
pack_hash = struct.Struct("<II").pack  # an event-id hash: CRC-32, Adler-32
UNUSED: Mapping[str, Any] = MappingProxyType({})  # what an account's unused container reads as


class Attribution(Struct, array_like=True, gc=False, frozen=True):
    """The account's last prompt decision (or holdout assignment), which an upgrade within the policy's
    attribution window converts. A MessagePack array on the wire; gc=False, as AccountState: it holds
    only strings and an int, so the collector need not track it."""

    prompt_id: str  # "holdout:<rule id>" for a holdout account
    rule_id: str
    rule_group: str
    group: Group
    ts: int


class BillingPeriod(Struct, array_like=True, gc=False):
    """A period counter's open billing period: [start, end) in event time and the total counted in it.
    A MessagePack array of three on the wire, as a list would be; gc=False (numbers only), and mutable:
    the engine adds each increment in place."""

    start: int
    end: int
    total: Num


# Open billing periods, flat: metric, its period, metric, its period... (a list of two takes 72 bytes, a
# dict of one 184). Read and written through period_of() and set_period() only; names are the only
# strings, as in Gauges.
Periods = list[str | BillingPeriod]


def period_of(periods: Periods | None, metric: str) -> BillingPeriod | None:
    """metric's open billing period, or None."""
    if periods is not None:
        try:
            p: Any = periods[periods.index(metric) + 1]
        except ValueError:
            return None
        return p  # type: ignore[no-any-return]
    return None


def _set_pair(pairs: list[Any] | None, name: str, value: Any) -> list[Any]:
    """A flat name, value, name, value... list with name's value set (the same list, or a new one for
    None): billing periods and packed structures are kept this way."""
    if pairs is None:
        return [name, value]
    try:
        pairs[pairs.index(name) + 1] = value
    except ValueError:
        pairs += (name, value)
    return pairs


def set_period(periods: Periods | None, metric: str, p: BillingPeriod) -> Periods:
    """The list with metric's period set (the same list, or a new one for None)."""
    return _set_pair(periods, metric, p)


def period_items(periods: Periods | None) -> dict[str, BillingPeriod]:
    """metric -> its open billing period."""
    ps: list[Any] = periods or []
    return {ps[i]: ps[i + 1] for i in range(0, len(ps), 2)}


# Gauge readings, flat: metric, ts, value, metric, ts, value... (a list of three-item tuples cost three
# times the memory). Read and written through gauge_value(), record_gauge() and gauge_readings() only.
Gauges = list[Any]


# Per-metric packed structures, flat: name, bytes, name, bytes... Names are the only strings, so
# list.index finds a name and never a structure. (Any: msgspec takes no union of str and bytes; MessagePack
# keeps them apart as str and bin.)
Blobs = list[Any]


def blob_of(blobs: Blobs | None, name: str) -> bytes | None:
    """name's structure, or None."""
    if blobs is not None:
        try:
            b = blobs[blobs.index(name) + 1]
        except ValueError:
            return None
        assert type(b) is bytes
        return b
    return None


def set_blob(blobs: Blobs | None, name: str, blob: bytes) -> Blobs:
    """The list with name's structure set (the same list, or a new one for None)."""
    return _set_pair(blobs, name, blob)


def blob_names(blobs: Blobs | None) -> list[str]:
    return [n for n in (blobs or ())[::2] if type(n) is str]


class RuleState(Struct, array_like=True, gc=False):
    """Edge-trigger memory of one (rule, feature). Absent = armed and never fired."""

    armed: bool = True
    last_fired: int | None = None
    fired_period: int | None = None
    capped: bool = False  # a frequency_cap decision was already recorded this episode

    def to_list(self) -> list[Any]:
        return [int(self.armed), self.last_fired, self.fired_period, int(self.capped)]


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
    limits: dict[str, Num | None] | None = None  # per-account overrides from plan_changed
    gauges: Gauges | None = None  # metric, ts, value, ... (see Gauges)
    periods: Periods | None = None  # metric, its open billing period, ... (see Periods)
    rolling: dict[str, Series] | None = None  # series -> its buckets, packed (windows.py)
    rules: dict[str, RuleState] | None = None  # feature_key(rule id, feature or None) -> state
    # Replaced when a prompt is decided (rare): a tuple, where a list costs 16-40 bytes more (a MessagePack
    # array either way), and the recent prompts packed (recentprompts.py).
    sent: tuple[int, ...] | None = None  # times of recent prompts counted by the frequency cap
    attribution: Attribution | None = None
    recent_prompts: RecentPrompts | None = None
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
    # had traits (statecodec.encode_state), so such a state is byte for byte what it is without the
    # feature; a state written without them decodes with these defaults.
    traits: dict[str, str | bool | Num] | None = None
    traits_ts: int = 0
    # Erasure (engine/erasure.py): the event time of the account's deletion, 0 if it was never deleted. A
    # deleted account's state is a marker: this, last_seen and the source offsets, nothing else. Trailing
    # and left out of the bytes while 0, as the traits are; a worker that does not know the field reads a
    # marker as an empty state.
    erased_at: int = 0
    # Daily history of the metrics forecast rules read (forecast.py): metric, its packed doubles, ... (a
    # gauge's first day and samples, or a period counter's period start, first day and increments; at
    # most 15 numbers each), read through forecast.history(). Left out of the bytes while None, as the
    # traits are.
    pace: Blobs | None = None
    # Distinct counts (engine/distinct.py: metric, its packed structure, ...; at most distinct.MAX_BYTES
    # each) and growth history (engine/growth.py: gauge, its packed change points, ...): flat lists read
    # through blob_of() and set_blob() (a list of four takes 88 bytes, a dict of two 184). Trailing and
    # left out of the bytes of an account that uses neither (statecodec.encode_state), as traits are.
    distinct: Blobs | None = None
    history: Blobs | None = None
    # Lead bookkeeping (leadstate.py): last, and left out of the bytes of an account that never had a
    # lead, as the traits are.
    leads: LeadState | None = None
    # Readiness score (score.py): source, value, ts, ... one part per scoring source the account scored
    # from (at most score.MAX_SOURCES). Last, and left out of the bytes of an account that never scored.
    score: list[Any] | None = None

    @property
    def version(self) -> int:
        return STATE_VERSION


def gauge_value(gauges: Gauges | None, metric: str) -> Num:
    """metric's latest reading, 0 if it has none. Metric names are the only strings in the list, so
    list.index (C, identity first) cannot match a ts or a value."""
    if gauges is not None:
        try:
            value: Num = gauges[gauges.index(metric) + 2]
        except ValueError:
            pass
        else:
            return value
    return 0


def record_gauge(state: AccountState, metric: str, ts: int, value: float) -> bool:
    """Sets metric's reading; False (nothing changed) if the account has a reading of a later time."""
    gauges = state.gauges
    if gauges is None:
        state.gauges = [metric, ts, value]
        return True
    try:
        i = gauges.index(metric)
    except ValueError:
        gauges += (metric, ts, value)
        return True
    if ts < gauges[i + 1]:
        return False
    gauges[i + 1] = ts
    gauges[i + 2] = value
    return True


def gauge_readings(gauges: Gauges | None) -> dict[str, tuple[Num, Num]]:
    """metric -> (ts, value)."""
    g = gauges or []
    return {g[i]: (g[i + 1], g[i + 2]) for i in range(0, len(g), 3)}


def shared_strings(st: AccountState) -> AccountState:
    """Names decoded from bytes are new strings per account (~55 bytes each); interned, every account
    shares one copy of each plan, metric and rule name, as the states the engine creates do; and
    numbers a decoded state holds twice (a prompt's time) are one object again. Runs on
    every cache miss, so written for speed (0.58 us for a typical state)."""
    p = st.plan
    if p is not None:
        st.plan = intern(p)
    # Prompt times: the frequency cap's, each rule's last, the attribution's are mostly the same few
    # numbers (32 bytes each as separate ints), one object each as in a state the engine built.
    sent = st.sent
    times: dict[int, int] = {t: t for t in sent} if sent else {}
    # Dict keys too: rule keys, series and metric names.
    rules = st.rules
    if rules:
        for r in rules.values():
            lf = r.last_fired
            if lf is not None:
                r.last_fired = times.get(lf, lf)
        st.rules = {intern(k): v for k, v in rules.items()}
    if st.rolling:
        st.rolling = {intern(k): v for k, v in st.rolling.items()}
    ps = st.periods
    if ps:
        for i in range(0, len(ps), 2):
            n = ps[i]
            if type(n) is str:
                ps[i] = intern(n)
    if st.limits:
        st.limits = {intern(k): v for k, v in st.limits.items()}
    g = st.gauges
    if g:
        for i in range(0, len(g), 3):
            g[i] = intern(g[i])
    rp = st.recent_prompts
    if rp:
        st.recent_prompts = shared_recent(rp)
    a = st.attribution
    if a:
        st.attribution = Attribution(
            a.prompt_id, intern(a.rule_id), intern(a.rule_group), a.group, times.get(a.ts, a.ts)
        )
    sc = st.score
    if sc:
        for i in range(0, len(sc), 3):
            sc[i] = intern(sc[i])
    t = st.traits
    if t:
        st.traits = {intern(k): intern(v) if type(v) is str else v for k, v in t.items()}
    for blobs in (st.pace, st.distinct, st.history):
        if blobs:
            for i in range(0, len(blobs), 2):
                n = blobs[i]
                if type(n) is str:
                    blobs[i] = intern(n)
    return st


def event_hash(event_id: str) -> bytes:
    """A stable 8-byte id for the dedup ring: CRC-32 and Adler-32 side by side (two C calls, a tenth of
    a blake2b's cost). Two ids collide only if both checksums do, among one account's last 16 events."""
    b = event_id.encode()
    return pack_hash(zlib.crc32(b), zlib.adler32(b))


def seen_id(st: AccountState, event_id: str) -> bool:
    """seen(st, event_hash(event_id)) in one call: every event asks it."""
    b = event_id.encode()
    h = pack_hash(zlib.crc32(b), zlib.adler32(b))
    dedup = st.dedup
    i = dedup.find(h)
    while i > 0 and i % 8:  # a match straddling two hashes is not one
        i = dedup.find(h, i + 1)
    if i >= 0:
        return True
    st.dedup = dedup[8:] + h if len(dedup) >= _RING_BYTES else dedup + h
    return False


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
