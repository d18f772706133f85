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
from typing import Any


def add_range(ranges: list[list[int]], first: int, last: int) -> None:
    """Adds [first, last] (first <= last), merging it with every range it overlaps or touches."""
    i = bisect_left(ranges, [first])
    if i:
        _, before_last = ranges[i - 1]
        if before_last >= first - 1:
            i -= 1  # the range before it reaches it
    j = i
    while j < len(ranges):
        r_first, r_last = ranges[j]
        if r_first > last + 1:
            break
        first, last = min(first, r_first), max(last, r_last)
        j += 1
    ranges[i:j] = [[first, last]]


def committable(ranges: list[list[int]], committed: int | None) -> int | None:
    """The offset to commit (the next one to read) or None, with the rule of Faust's _new_offset: the
    first range must start at most one past the committed offset (any start if none is committed).
    Ranges wholly below the committed offset are dropped; the others are kept until a commit moves the
    committed offset past them, so a failed commit loses nothing."""
    if committed is not None:
        done = 0
        for _, r_last in ranges:
            if r_last >= committed:
                break
            done += 1
        del ranges[:done]
    if not ranges:
        return None
    first, last = ranges[0]
    if committed and first - committed > 1:
        return None
    return last + 1


class AckedRanges:
    """The acked offsets of the hot partitions, as ranges; Faust's per-offset _acked list and set keep
    serving the other topics."""

    __slots__ = ("ranges",)

    def __init__(self) -> None:
        self.ranges: dict[Any, list[list[int]]] = {}

    def ack(self, tp: Any, first: int, last: int, committed: int | None) -> int:
        """Consumer.ack() for offsets first..last of tp (no Message objects): how many were new."""
        if committed is not None:
            first = max(first, committed)
        if first > last:
            return 0
        add_range(self.ranges.setdefault(tp, []), first, last)
        return last - first + 1

    def pending(self, topics: Any = None) -> list[Any]:
        """The partitions with acked ranges, of `topics` (partitions or topic names; None: all)."""
        return [
            tp
            for tp, ranges in self.ranges.items()
            if ranges and (topics is None or tp in topics or tp.topic in topics)
        ]

    def forget(self, tp: Any) -> None:
        self.ranges.pop(tp, None)
