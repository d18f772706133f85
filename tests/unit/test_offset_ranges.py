"""Acked offsets as ranges must commit exactly what Faust's per-offset bookkeeping would."""

from hypothesis import given
from hypothesis import strategies as st

from upsell_triggers.runtime.offset_ranges import add_range, committable


def test_adjacent_and_overlapping_ranges_merge() -> None:
    r: list[list[int]] = []
    add_range(r, 10, 19)
    add_range(r, 20, 29)  # touches: one range
    assert r == [[10, 29]]
    add_range(r, 40, 49)
    add_range(r, 0, 4)
    assert r == [[0, 4], [10, 29], [40, 49]]
    add_range(r, 5, 41)  # bridges all three
    assert r == [[0, 49]]
    add_range(r, 3, 7)  # inside
    assert r == [[0, 49]]


def test_commit_stops_at_the_first_hole_and_keeps_ranges_until_committed() -> None:
    r: list[list[int]] = []
    add_range(r, 0, 9)
    add_range(r, 15, 19)
    assert committable(r, None) == 10
    assert r == [[0, 9], [15, 19]]  # a failed commit must be able to retry
    assert committable(r, 10) is None  # 10..14 not acked: nothing more to commit
    assert r == [[15, 19]]
    add_range(r, 10, 14)
    assert committable(r, 10) == 20


def test_faust_rule_for_the_head_of_the_ranges() -> None:
    # Faust's _new_offset accepts a first acked offset one past the committed one (a record the
    # broker skipped right after a seek), and any when nothing or 0 is committed.
    assert committable([[11, 20]], 10) == 21
    assert committable([[12, 20]], 10) is None
    assert committable([[5, 9]], 0) == 10
    assert committable([[5, 9]], None) == 10


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 20)), max_size=30))
def test_ranges_hold_exactly_the_acked_offsets(spans: list[tuple[int, int]]) -> None:
    r: list[list[int]] = []
    acked: set[int] = set()
    for first, length in spans:
        add_range(r, first, first + length)
        acked.update(range(first, first + length + 1))
    assert [o for a, b in r for o in range(a, b + 1)] == sorted(acked)
    assert all(r[i][1] + 1 < r[i + 1][0] for i in range(len(r) - 1))  # disjoint, not touching
    # The offset to commit from scratch is the end of the first consecutive run, as in Faust.
    if acked:
        start = min(acked)
        end = start
        while end + 1 in acked:
            end += 1
        assert committable(r, None) == end + 1
