"""Reads and writes of an account's state, per event: apart from its layout (state.py) so that they
are compiled (native.py). The layout's msgspec structs stay interpreted, as mypyc drops their class
keywords (array_like, gc, tag), which would change the bytes of every state; these functions only
read and write the structs' fields, so they compile as they are.
"""

from __future__ import annotations

import zlib
from sys import intern
from typing import Any, Final

from upsell_triggers.engine.recentops import shared as shared_recent
from upsell_triggers.engine.state import (
    DEDUP_HORIZON,
    AccountState,
    Attribution,
    BillingPeriod,
    Blobs,
    Gauges,
    Num,
    Periods,
    pack_hash,
)

_RING_BYTES: Final = 8 * DEDUP_HORIZON  # the dedup ring's length when full: 8-byte hashes
# Compiled, a global name is a dict lookup per use and a Final one a C variable: what every event's
# dedup check calls is bound here once.
_crc32: Final = zlib.crc32
_adler32: Final = zlib.adler32
_pack_hash: Final = pack_hash


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
    # Any, not int: compiled, an int read as an int is held as a C integer and boxed anew where it is
    # stored, which would undo the sharing (an optional int stays an object).
    sent: Any = st.sent
    times: dict[Any, Any] = {t: t for t in sent} if sent else {}
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
    a: Any = st.attribution  # Any: its ts stays the object it is (see times)
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
    return _pack_hash(_crc32(b), _adler32(b))


def seen_id(st: AccountState, event_id: str) -> bool:
    """seen(st, event_hash(event_id)): every event asks it. Compiled, the two calls are C calls."""
    return seen(st, event_hash(event_id))


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
