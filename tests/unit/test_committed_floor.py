"""exactly_once: records below a partition's committed offset are never applied again, whatever moved
the consumer's position back (see runtime/committed_floor.py); the floor never falls."""

from dataclasses import dataclass

from faust.types import TP

from upsell_triggers.runtime.committed_floor import CommittedFloor

EVENTS0, EVENTS1 = TP("events", 0), TP("events", 1)


@dataclass
class Rec:
    offset: int


def recs(first: int, last: int) -> list[Rec]:
    return [Rec(o) for o in range(first, last + 1)]


def test_without_a_committed_offset_every_record_is_kept() -> None:
    floor = CommittedFloor()
    floor.raise_to({EVENTS0: None})
    batch = recs(0, 9)
    assert floor.unapplied(EVENTS0, batch) is batch
    assert floor.get(EVENTS0) is None


def test_records_below_the_committed_offset_are_dropped_the_one_at_it_kept() -> None:
    floor = CommittedFloor()
    floor.raise_to({EVENTS0: 105})
    assert [r.offset for r in floor.unapplied(EVENTS0, recs(100, 109))] == list(range(105, 110))
    assert floor.unapplied(EVENTS0, recs(90, 104)) == []
    assert [r.offset for r in floor.unapplied(EVENTS0, recs(105, 107))] == [105, 106, 107]
    assert [r.offset for r in floor.unapplied(EVENTS1, recs(0, 2))] == [0, 1, 2]  # per partition


def test_an_older_committed_offset_read_later_does_not_lower_the_floor() -> None:
    # This worker committed up to 9865; an offset fetch answered before the broker wrote the
    # transaction's markers still says 7402: the batch 7402..9864 must not be applied again.
    floor = CommittedFloor()
    floor.raise_to({EVENTS0: 7402})
    floor.raise_to({EVENTS0: 9865})
    floor.raise_to({EVENTS0: 7402, EVENTS1: 3})
    assert floor.get(EVENTS0) == 9865 and floor.get(EVENTS1) == 3
    assert floor.unapplied(EVENTS0, recs(7402, 9864)) == []
    assert [r.offset for r in floor.unapplied(EVENTS0, recs(7402, 9866))] == [9865, 9866]
