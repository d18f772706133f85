"""exactly_once's early take (runtime/fresh_take.py): when the loop takes early, and how the two takes
become one batch within the batch bound. The aiokafka behaviour it answers is shown on the broker in
tests/integration/test_fetch_pacing.py; that the take starts as EndTxn is sent, in test_transactions.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from upsell_triggers.runtime.fresh_take import caught_up, merge


def recs(*offsets: int) -> list[Any]:
    return [SimpleNamespace(offset=o) for o in offsets]


def test_caught_up_means_every_hot_partition_taken_to_its_high_watermark() -> None:
    ev0, ev1, cl = TP("events", 0), TP("events", 1), TP("changelog", 0)
    hw = {ev0: 13, ev1: 4, cl: 100}.get
    assert caught_up({ev0: recs(11, 12), ev1: recs(3)}, hw, {"events"})
    assert caught_up({ev0: recs(11, 12), cl: recs(5)}, hw, {"events"})  # other topics do not count
    assert not caught_up({ev0: recs(10, 11), ev1: recs(3)}, hw, {"events"})  # offset 12 not taken yet
    assert not caught_up({ev0: recs(1)}, {}.get, {"events"})  # no high watermark known


def test_the_second_take_follows_the_first_per_partition() -> None:
    ev0, ev1 = TP("events", 0), TP("events", 1)
    batch, left = merge({ev0: recs(1, 2)}, {ev0: recs(3), ev1: recs(7, 8)}, limit=10)
    assert {tp: [r.offset for r in rs] for tp, rs in batch.items()} == {ev0: [1, 2, 3], ev1: [7, 8]}
    assert left == {}


def test_what_exceeds_the_batch_bound_is_left_to_read_again() -> None:
    ev0, ev1 = TP("events", 0), TP("events", 1)
    first = {ev0: recs(1, 2)}
    batch, left = merge(first, {ev0: recs(3, 4), ev1: recs(7, 8)}, limit=5)
    assert sum(map(len, batch.values())) == 5
    assert [r.offset for r in batch[ev0]] == [1, 2, 3, 4] and [r.offset for r in batch[ev1]] == [7]
    assert {tp: [r.offset for r in rs] for tp, rs in left.items()} == {ev1: [8]}
    assert [r.offset for r in first[ev0]] == [1, 2]  # the first take is not changed


def test_a_second_take_sought_back_in_between_does_not_repeat_the_first() -> None:
    """Faust's recovery seeks to the committed offsets while the loop runs: the fetch after the early
    take can start at or before it again. The batch keeps each record once, in ascending order."""
    ev0, ev1 = TP("events", 0), TP("events", 1)
    batch, left = merge({ev0: recs(5, 6, 7)}, {ev0: recs(3, 4, 5, 6, 7, 8, 9), ev1: recs(1)}, limit=6)
    assert {tp: [r.offset for r in rs] for tp, rs in batch.items()} == {ev0: [5, 6, 7, 8, 9], ev1: [1]}
    assert left == {}
    batch, left = merge({ev0: recs(5, 6, 7)}, {ev0: recs(3, 4, 5, 6, 7, 8, 9)}, limit=4)
    assert [r.offset for r in batch[ev0]] == [5, 6, 7, 8]
    assert {tp: [r.offset for r in rs] for tp, rs in left.items()} == {ev0: [9]}
    batch, left = merge({ev0: recs(5, 6, 7)}, {ev0: recs(3, 4)}, limit=10)  # all of it taken already
    assert [r.offset for r in batch[ev0]] == [5, 6, 7] and left == {}
