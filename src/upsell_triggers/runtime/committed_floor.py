"""exactly_once: the offset below which every record of an input partition is committed already.

A record below it was applied in a committed transaction (its offsets, states and outputs are on the
broker), so applying it again would repeat its effects: the account's applied offset skips a repeated
event, but a dead letter of a record without an account key has nothing to remember it by and would
be written twice. The consumer's position alone does not keep such records out, since three things
move it back after an assignment:

- aiokafka reads the committed offsets of newly assigned partitions in a task it starts before the
  rebalance listener runs, so before the wait for stable offsets (kafka.transactions) saw the
  previous owner's last transaction end: the position can be that transaction's start;
- Faust's recovery resumes the partitions and only then seeks them to the committed offsets it reads
  (one request per partition): a batch applied and committed meanwhile is sought back to its start;
- an offset commit returns before the broker wrote the transaction's markers, and aiokafka's offset
  fetch (version 3, without KIP-447's require_stable) returns the previous offset until then.

The floor of a partition is its stable committed offset read at assignment (kafka.kip447), raised by
each transaction
this worker commits (the last offset + 1); it only rises, and a fetch's records below it are dropped
before they are applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from faust.types import TP


class CommittedFloor:
    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next: dict[TP, int] = {}

    def raise_to(self, offsets: Mapping[TP, int | None]) -> None:
        """Committed offsets (the next offset to read; None: nothing committed) read at assignment, or
        committed by this worker. A lower one than the floor known is an older one and changes nothing."""
        floor = self._next
        for tp, offset in offsets.items():
            if offset is not None and offset > floor.get(tp, -1):
                floor[tp] = offset

    def get(self, tp: TP) -> int | None:
        return self._next.get(tp)

    def unapplied(self, tp: TP, recs: Sequence[Any]) -> Sequence[Any]:
        """The records of one fetch not committed yet (all of them unless some are below the floor)."""
        floor = self._next.get(tp)
        if floor is None or recs[0].offset >= floor:
            return recs
        return [r for r in recs if r.offset >= floor]
