"""Rolling-window series (paywall features and rolling counters): bucket start -> sum, packed.

A series is what `AccountState.rolling` holds per series name, in one of two forms:

- packed (the usual one): one bytes object, a format byte (`i`: the sums are ints, `d`: floats), the n
  bucket starts in ascending order as little-endian uint32 seconds, then the n sums as int32 or double:
  1 + 8n bytes for a paywall feature's counts, 1 + 12n for a usage counter's, plus 33 as a Python
  object. A dict of Python numbers took about 90 bytes per bucket, and a 45-day account's windows were
  most of its resident state (BENCHMARKS.md, `bench/expansion_bench.py`); on the wire (MessagePack)
  a dict took 10-18 bytes per bucket.
- a dict {bucket start (ms): sum} in insertion order, for a series the packed form cannot hold exactly:
  one whose sums mix ints and floats (a paywall series counts ints and a usage counter's increments are
  floats, so neither does in practice), an int sum past 32 bits, a bucket start that is not a whole
  second (a bucket declared in ms) or not in uint32 seconds, or a late event opening a bucket behind
  the newest. The last matters because a float window is summed in insertion order, as Python's sum()
  of the dict's values did; the packed form's ascending order is that order only while no bucket has
  been opened behind the newest. A series in this form stays in it.

Both forms give the same sums, bit for bit and type for type, as one dict per series gave: the same
values added in the same order (sum() adds a memoryview's doubles one by one as it adds a list's
floats). add() replaces a packed series (bytes are immutable), so callers store what it returns.
"""

from __future__ import annotations

import struct
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Final, Literal

Num = int | float
Series = bytes | dict[int, Num]

INTS: Final = ord("i")  # a packed series' format byte
FLOATS: Final = ord("d")
_HEAD: Final = 1  # the format byte
_S: Final = 1000  # bucket starts are kept in seconds
_KEY: Final = struct.Struct("<I")
_SUM: Final = {INTS: struct.Struct("<i"), FLOATS: struct.Struct("<d")}
_STRIDE: Final = {INTS: 8, FLOATS: 12}  # bytes per bucket: its start and its sum
_TYPE: Final = {int: INTS, float: FLOATS}
_VIEW: Final[dict[int, Literal["i", "d"]]] = {INTS: "i", FLOATS: "d"}
_LITTLE: Final = sys.byteorder == "little"  # memoryviews read the packed numbers as they are


def _parts(s: bytes) -> tuple[int, Sequence[int], Sequence[Num]]:
    """(n, bucket starts in seconds, sums) of a packed series, as views of its bytes (copies, swapped,
    on a big-endian machine). One definition with the branch inside: mypyc compiles no conditional
    function definitions."""
    fmt = s[0]
    n = (len(s) - _HEAD) // _STRIDE[fmt]
    mid = _HEAD + 4 * n
    if _LITTLE:
        mv = memoryview(s)
        return n, mv[_HEAD:mid].cast("I"), mv[mid:].cast(_VIEW[fmt])
    from array import array  # pragma: no cover - the bytes are little-endian on every machine

    keys, sums = array("I", s[_HEAD:mid]), array(_VIEW[fmt], s[mid:])  # pragma: no cover
    keys.byteswap()  # pragma: no cover
    sums.byteswap()  # pragma: no cover
    return n, keys, sums  # pragma: no cover


def pack(buckets: dict[int, Num]) -> Series:
    """The dict packed if the packed form holds it exactly (same type of sum throughout, ascending
    insertion order, whole seconds, ints within 32 bits); else the dict itself. An empty dict stays a
    dict."""
    if not buckets:
        return buckets
    keys = list(buckets)
    sums = list(buckets.values())
    fmt = _TYPE.get(type(sums[0]))
    if (
        fmt is None
        or any(type(v) is not type(sums[0]) for v in sums)
        or any(k % _S for k in keys)
        or keys != sorted(keys)
    ):
        return buckets
    try:
        return b"".join(
            (
                bytes((fmt,)),
                struct.pack(f"<{len(keys)}I", *(k // _S for k in keys)),
                struct.pack(f"<{len(sums)}{_VIEW[fmt]}", *sums),
            )
        )
    except struct.error:  # out of range
        return buckets


def buckets(s: Series | None) -> dict[int, Num]:
    """{bucket start (ms): sum} in the series' order (a copy for a packed series)."""
    if s is None:
        return {}
    if isinstance(s, dict):
        return s
    _, keys, sums = _parts(s)
    return {k * _S: v for k, v in zip(keys, sums, strict=True)}


def count(s: Series) -> int:
    """The number of buckets."""
    return len(s) if isinstance(s, dict) else (len(s) - _HEAD) // _STRIDE[s[0]]


def newest(s: Series) -> int:
    """The newest bucket's start in ms (0 for an empty dict)."""
    if isinstance(s, bytes):
        n = (len(s) - _HEAD) // _STRIDE[s[0]]
        k: int = _KEY.unpack_from(s, _HEAD + 4 * n - 4)[0] * _S
        return k
    return max(s, default=0)


def add(s: Series | None, ts: int, delta: Num, bucket_ms: int, keep_ms: int) -> Series | None:
    """The series with delta added to ts's bucket and the buckets that fell out of the kept horizon
    dropped (a new bytes object, or the same dict changed); None when ts is too old for the horizon
    (the event is late and counts nowhere), the series unchanged."""
    b = ts - ts % bucket_ms
    if isinstance(s, bytes):
        fmt = s[0]
        if _TYPE.get(type(delta)) == fmt and not b % _S:
            width = _STRIDE[fmt] - 4
            try:
                if _KEY.unpack_from(s, len(s) - width * ((len(s) - _HEAD) // (width + 4)) - 4)[0] == b // _S:
                    # The common event: the newest bucket's.
                    pack_sum = _SUM[fmt]
                    return s[:-width] + pack_sum.pack(pack_sum.unpack_from(s, len(s) - width)[0] + delta)
                return _add_packed(s, fmt, b // _S, delta, keep_ms)
            except struct.error:  # a sum or a start out of range: kept as a dict from here on
                pass
        return _add_dict(buckets(s), b, delta, keep_ms)
    if s is None:
        new = _TYPE.get(type(delta))
        if new is not None and not b % _S:
            try:
                return b"".join((bytes((new,)), _KEY.pack(b // _S), _SUM[new].pack(0 + delta)))
            except struct.error:
                pass
        return {b: 0 + delta}
    return _add_dict(s, b, delta, keep_ms)


def _add_packed(s: bytes, fmt: int, b: int, delta: Num, keep_ms: int) -> Series | None:
    """add() on a packed series, b the bucket's start in seconds."""
    keep = -(-keep_ms // _S)  # whole seconds: start * 1000 <= b * 1000 - keep_ms  <=>  start <= b - keep
    n = (len(s) - _HEAD) // _STRIDE[fmt]
    mid = _HEAD + 4 * n  # where the sums start
    newest_b: int = _KEY.unpack_from(s, mid - 4)[0]
    pack_sum = _SUM[fmt]
    width = _STRIDE[fmt] - 4
    if b == newest_b:  # the common event: the newest bucket's
        return s[:-width] + pack_sum.pack(pack_sum.unpack_from(s, len(s) - width)[0] + delta)
    if b > newest_b:  # a new newest bucket: the ones at or before b - keep fall out
        cutoff = b - keep
        i = 0 if _KEY.unpack_from(s, _HEAD)[0] > cutoff else bisect_right(_parts(s)[1], cutoff)
        return b"".join(
            (s[:1], s[_HEAD + 4 * i : mid], _KEY.pack(b), s[mid + width * i :], pack_sum.pack(0 + delta))
        )
    if b <= newest_b - keep:
        return None
    i = bisect_left(_parts(s)[1], b)
    if _KEY.unpack_from(s, _HEAD + 4 * i)[0] != b:  # a bucket opened behind the newest: see the docstring
        return _add_dict(buckets(s), b * _S, delta, keep_ms)
    at = mid + width * i
    return s[:at] + pack_sum.pack(pack_sum.unpack_from(s, at)[0] + delta) + s[at + width :]


def _add_dict(s: dict[int, Num], b: int, delta: Num, keep_ms: int) -> Series | None:
    newest_b = max(s) if s else b
    if b <= newest_b - keep_ms:
        return None
    s[b] = s.get(b, 0) + delta
    if b > newest_b:
        cutoff = b - keep_ms
        for k in [k for k in s if k <= cutoff]:
            del s[k]
    return s


def _u32(s: bytes, i: int) -> int:
    """The little-endian uint32 at s[i:i + 4]: compiled, four byte reads cost a tenth of a
    Struct.unpack_from call."""
    return s[i] | (s[i + 1] << 8) | (s[i + 2] << 16) | (s[i + 3] << 24)


def window_sum(s: Series, window_ms: int) -> Num:
    """Sum of the buckets within window_ms of the newest bucket (windows are aligned to buckets)."""
    if isinstance(s, bytes):
        fmt = s[0]
        if fmt == INTS:
            # Read in place, newest bucket first, until one falls out of the window: a paywall
            # feature's window (its events' counts) is summed on every paywall hit. Ints: the order of
            # the additions does not change the sum.
            n = (len(s) - _HEAD) >> 3
            mid = _HEAD + 4 * n
            at = mid - 4
            cutoff = _u32(s, at) + (-window_ms // _S)
            int_total = 0
            end = len(s) - 4
            while at >= _HEAD and _u32(s, at) > cutoff:
                v = _u32(s, end)
                int_total += v - (1 << 32) if v & 0x80000000 else v
                at -= 4
                end -= 4
            return int_total
        mid = len(s) - (_STRIDE[fmt] - 4) * ((len(s) - _HEAD) // _STRIDE[fmt])  # where the sums start
        # start * 1000 > newest * 1000 - window  <=>  start > newest - ceil(window / 1000)
        cutoff = _KEY.unpack_from(s, mid - 4)[0] + (-window_ms // _S)
        if _LITTLE and _KEY.unpack_from(s, _HEAD)[0] > cutoff:  # every bucket: no search
            total: Num = sum(memoryview(s)[mid:].cast(_VIEW[fmt]))
            return total
        _, keys, sums = _parts(s)
        total = sum(sums[bisect_right(keys, cutoff) :])
        return total
    if not s:
        return 0
    cutoff = max(s) - window_ms
    return sum(c for k, c in s.items() if k > cutoff)


def range_sum(s: Series, lo: int, hi: int) -> Num:
    """Sum of the buckets starting in (lo, hi] (ms), in the series' order."""
    if isinstance(s, bytes):
        _, keys, sums = _parts(s)
        # start * 1000 > lo  <=>  start > lo // 1000, and start * 1000 <= hi  <=>  start <= hi // 1000
        total: Num = sum(sums[bisect_right(keys, lo // _S) : bisect_right(keys, hi // _S)])
        return total
    return sum(c for k, c in s.items() if lo < k <= hi)
