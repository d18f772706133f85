"""exactly_once: the next batch's records are taken while the last batch's transaction ends, so that
the fetch this makes room for brings the records that arrived during that transaction.

aiokafka sends a broker no fetch while records of any of its partitions wait in its buffer (the
fetcher's `_get_actions_per_node`); taking them makes it fetch again at once. A batch loop that
takes records only when its batch is done therefore gets, at each take, what was fetched right after
the previous take: with every batch waiting for its transaction (~13 ms of a ~17 ms batch at 10k
events/s, when each partition had its own), a batch held the records that arrived during the batch
before the previous one. A record waited a batch and a half on average before it was taken, then a
batch until its transaction committed: about two and a half batches, where the loop's own work is
one.

So once a batch's transaction sends EndTxn (the last round trip), the loop takes what is buffered
without waiting (`on_ending`); the fetch this starts comes back about when the transaction ends,
with the records that arrived meanwhile, and the next batch is both takes (`merge`): a record waits
about half a batch before it is taken. The next take waits at most `FRESH_WAIT_S` for that fetch
when it already holds records. Only while caught up (`caught_up`): while behind, the buffer holds a
full fetch already and the next batch would only be split off again by the batch bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from faust.types import TP

# How long the next take waits for the fetch the early take started, when it already holds the early
# take's records: about a fetch round trip on a busy machine. Records that come later are taken by the
# batch after, as without the early take.
FRESH_WAIT_S = 0.005


def caught_up(records: Mapping[TP, Sequence[Any]], highwater: Any, hot: AbstractSet[str]) -> bool:
    """Every hot partition taken is taken up to its high watermark as of its last fetch."""
    for tp, recs in records.items():
        if tp.topic in hot and recs:
            hw = highwater(tp)
            if hw is None or recs[-1].offset + 1 < hw:
                return False
    return True


def merge(
    first: Mapping[TP, Sequence[Any]], second: Mapping[TP, Sequence[Any]], limit: int
) -> tuple[dict[TP, list[Any]], dict[TP, Sequence[Any]]]:
    """(both takes as one batch of at most `limit` records, the second take's records beyond it by
    partition: to be read again). A partition's records of the second take follow its records of the
    first (the fetch started where the take ended), except after a seek in between: Faust's recovery
    seeks the input partitions to their committed offsets while the loop already runs, and the second
    take can then start at or before the first's records again. Those are dropped here, so that a
    batch's records of a partition always ascend (the checks of what was read or committed already
    look at a partition's first record only)."""
    out: dict[TP, list[Any]] = {tp: list(recs) for tp, recs in first.items()}
    room = limit - sum(map(len, out.values()))
    left: dict[TP, Sequence[Any]] = {}
    for tp, recs in second.items():
        had = out.get(tp)
        if had and recs and recs[0].offset <= had[-1].offset:
            recs = [r for r in recs if r.offset > had[-1].offset]
        if not recs:
            continue
        kept = recs[: max(0, room)]
        room -= len(kept)
        if kept:
            out.setdefault(tp, []).extend(kept)
        if len(kept) < len(recs):
            left[tp] = recs[len(kept) :]
    return out, left
