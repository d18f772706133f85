"""Acked offsets of a partition as sorted, disjoint [first, last] ranges.

Faust keeps every acked offset in a list and a set and, at each commit, sorts the list and walks it
with a Python lambda per offset to find the first consecutive run (faust.utils.functional
.consecutive_numbers): ~0.3 µs per event, on top of building both. The batch path applies whole
fetches, whose offsets are one contiguous run (offsets the broker skipped, such as compacted records
or transaction markers, are not records and count as done), so a fetch is one range and the usual
partition holds a single range between commits.
"""

from __future__ import annotations

from bisect import bisect_left


def add_range(ranges: list[list[int]], first: int, last: int) -> None:
    """Adds [first, last] (first <= last), merging it with every range it overlaps or touches."""
    i = bisect_left(ranges, [first])
    if i and ranges[i - 1][1] >= first - 1:
        i -= 1  # the range before it reaches it
    j = i
    while j < len(ranges) and ranges[j][0] <= last + 1:
        first = min(first, ranges[j][0])
        last = max(last, ranges[j][1])
        j += 1
    ranges[i:j] = [[first, last]]


def committable(ranges: list[list[int]], committed: int | None) -> int | None:
    """The offset to commit (the next one to read) or None, with the rule of Faust's _new_offset: the
    first range must start at most one past the committed offset (any start if none is committed).
    Ranges wholly below the committed offset are dropped; the others are kept until a commit moves the
    committed offset past them, so a failed commit loses nothing."""
    if committed is not None:
        while ranges and ranges[0][1] < committed:
            del ranges[0]
    if not ranges:
        return None
    if committed and ranges[0][0] - committed > 1:
        return None
    return ranges[0][1] + 1
