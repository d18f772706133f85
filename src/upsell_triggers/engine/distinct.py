"""Distinct counts over a rolling event-time window (metric kind `distinct`, docs/rules.md).

A distinct metric counts the distinct values of one event field (`user_id`, or an attribute events
carry, such as `team_id`) seen by an account's usage and paywall events within a window. Per account
and metric it is one bytes object (the state keeps it as it is and MessagePack writes it as it is):

    header  level (u8), field tag (u8), bucket minutes (u32), newest bucket (u32)
    entries hash (u32), last-seen bucket mod 2**16 (u16), at most EXACT_BOUND of them

Each entry is a value's 32-bit hash and the bucket it was last seen in. While the window has held at
most EXACT_BOUND distinct values the count is exact (up to a collision of 32-bit hashes: about 1 in 2
million for 64 values). When a new value would exceed the bound, the level rises: only values whose
hash is below 2**(32 - level) are kept, and the count is the kept entries times 2**level. That is
adaptive sampling (Wegman; Flajolet, "On adaptive sampling", 1990): unbiased, with a relative standard
error of about sqrt(2**level / n), between 1/sqrt(64) and 1/sqrt(32) (12.5-18%) once the bound was
passed. The level never falls again (values it did not keep cannot be recovered): an account whose
window once held more than EXACT_BOUND values keeps an estimate.

Why not a sketch library (docs/dependencies.md): none keeps a sliding event-time window; a window of
HyperLogLog or Theta sketches needs one sketch per bucket (30 and more per account), and Sliding
HyperLogLog keeps a list per register. This structure is exact below the bound, at most 394 bytes at
it, and needs no dependency.

The stored bucket is kept modulo 2**16: every entry is within the metric's window of the newest bucket
(at most 744 buckets), so its age is exact in 16 bits.
"""

from __future__ import annotations

import struct
import zlib
from hashlib import blake2b
from typing import Final

from upsell_triggers.engine.events import PaywallHit, Usage
from upsell_triggers.engine.rulemodel import MetricSpec
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.stateops import blob_of, set_blob

EXACT_BOUND: Final = 64  # distinct values per account and metric counted exactly
_HEAD: Final = struct.Struct("<BBIII")  # level, field tag, bucket minutes, newest bucket, last sweep's bucket
_ENTRY: Final = struct.Struct("<IH")  # hash, last-seen bucket mod 2**16
HEAD_LEN: Final = _HEAD.size
ENTRY_LEN: Final = _ENTRY.size
MAX_BYTES: Final = HEAD_LEN + EXACT_BOUND * ENTRY_LEN
_MASK: Final = 0xFFFF


def value_hash(value: str) -> int:
    """A value's 32-bit hash: uniform, so the sampling level keeps an unbiased share of values."""
    return int.from_bytes(blake2b(value.encode(), digest_size=4).digest(), "little")


def field_tag(field: str) -> int:
    """One byte naming the field a structure counts: a reload that changes the field (or the bucket)
    starts the count afresh instead of mixing two fields' values."""
    return zlib.crc32(field.encode()) & 0xFF


def _sweep(entries: bytes, newest: int, window: int) -> bytes:
    """The entries still within the window of the newest bucket."""
    return b"".join(
        _ENTRY.pack(eh, eb) for eh, eb in _ENTRY.iter_unpack(entries) if (newest - eb) & _MASK < window
    )


def add(
    blob: bytes | None,
    value: str,
    ts: int,
    bucket_ms: int,
    window: int,
    tag: int,
    reads: tuple[int, ...] = (),
) -> tuple[bytes | None, bool]:
    """(the structure with `value` seen at event time ts, whether a count of the windows `reads` may have
    changed). The structure is None if ts is older than the window it keeps (a late event), and the
    same object if nothing changed. `window` is the metric's window in buckets, `reads` the windows
    rules read (in buckets; any window when empty).

    Entries that left the window are swept out when the structure is full, and at least once per
    window, so every entry's age stays exact in 16 bits; counting ignores them before that."""
    b = ts // bucket_ms
    minutes = bucket_ms // 60_000
    h = value_hash(value)
    if blob is None:
        return _HEAD.pack(0, tag, minutes, b, b) + _ENTRY.pack(h, b & _MASK), True
    level, blob_tag, blob_minutes, newest, swept = _HEAD.unpack_from(blob)
    if blob_tag != tag or blob_minutes != minutes:  # another field or bucket size: start afresh
        return _HEAD.pack(0, tag, minutes, b, b) + _ENTRY.pack(h, b & _MASK), True
    entries = blob[HEAD_LEN:]
    if b <= newest - window:
        return None, False
    moved = b > newest
    if moved:
        if b - newest >= window:
            entries, swept = b"", b
        elif b - swept >= window:
            entries, swept = _sweep(entries, b, window), b  # every age < 3 windows: exact in 16 bits
        newest = b
    if level and h >> (32 - level):  # not sampled at this level
        return (_HEAD.pack(level, tag, minutes, newest, swept) + entries, True) if moved else (blob, False)
    i = _find(entries, h)
    if i >= 0:
        _, seen = _ENTRY.unpack_from(entries, i)
        old_age = (newest - seen) & _MASK
        age = newest - b
        if old_age <= age:  # seen at least as recently already
            return (
                (_HEAD.pack(level, tag, minutes, newest, swept) + entries, True) if moved else (blob, False)
            )
        entries = entries[:i] + _ENTRY.pack(h, b & _MASK) + entries[i + ENTRY_LEN :]
        changed = moved or not reads or any(age < w <= old_age for w in reads)
        return _HEAD.pack(level, tag, minutes, newest, swept) + entries, changed
    if len(entries) >= EXACT_BOUND * ENTRY_LEN:
        entries, swept = _sweep(entries, newest, window), newest
    while len(entries) >= EXACT_BOUND * ENTRY_LEN:  # full: keep half the hash space
        level += 1
        entries = b"".join(
            _ENTRY.pack(eh, eb) for eh, eb in _ENTRY.iter_unpack(entries) if not eh >> (32 - level)
        )
        if h >> (32 - level):
            return _HEAD.pack(level, tag, minutes, newest, swept) + entries, True
    return _HEAD.pack(level, tag, minutes, newest, swept) + entries + _ENTRY.pack(h, b & _MASK), True


def _find(entries: bytes, h: int) -> int:
    """The offset of the entry with hash h, or -1 (a match across two entries is not one)."""
    key = h.to_bytes(4, "little")
    i = entries.find(key)
    while i >= 0 and i % ENTRY_LEN:
        i = entries.find(key, i + 1)
    return i


def count(blob: bytes | None, window: int) -> int:
    """The distinct values seen within the newest `window` buckets: exact while the level is 0, an
    estimate (kept entries times 2**level) after."""
    if blob is None:
        return 0
    level, _, _, newest, _ = _HEAD.unpack_from(blob)
    n = sum(1 for _, eb in _ENTRY.iter_unpack(blob[HEAD_LEN:]) if (newest - eb) & _MASK < window)
    return n << level if level else n


def level(blob: bytes) -> int:
    """The sampling level (0: exact)."""
    lvl, _, _, _, _ = _HEAD.unpack_from(blob)
    return int(lvl)


USER_ID: Final = "user_id"  # the field every event has; any other field is one of the event's `attributes`


# A distinct metric, the windows rules read of it (in buckets), its field's tag (field_tag()).
DistinctRead = tuple[MetricSpec, tuple[int, ...], int]


def feed(
    state: AccountState, specs: tuple[DistinctRead, ...], names: frozenset[str], ev: Usage | PaywallHit
) -> list[str] | None:
    """Adds the event's values to the account's distinct metrics; the names of those whose counts (of
    the windows rules read) may have changed, or None. Structures of metrics the rule set no longer
    reads (a reload removed them) are dropped here."""
    changed: list[str] | None = None
    d = state.distinct
    attrs = ev.attributes
    for spec, reads, tag in specs:
        f = spec.event_field
        v = ev.user_id if f == USER_ID else attrs.get(f) if attrs and f else None
        if not v:
            continue
        old = blob_of(d, spec.name)
        new, counts = add(old, v, ev.ts, spec.bucket_ms, spec.window_ms // spec.bucket_ms, tag, reads)
        if new is None or new is old:
            continue
        d = state.distinct = set_blob(d, spec.name, new)
        if counts:
            if changed is None:
                changed = []
            changed.append(spec.name)
    if d is not None and any(n not in names for n in d[::2]):
        kept = [x for i in range(0, len(d), 2) if d[i] in names for x in d[i : i + 2]]
        state.distinct = kept or None
    return changed
