"""BatchFreezer: the collector skips what lived through a batch, and a periodic full collection still
frees the cycles that freezing deferred."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from upsell_triggers.gctune import BatchFreezer


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.collect()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _cycle() -> None:
    a: list[object] = []
    a.append(a)


def test_after_batch_freezes_survivors() -> None:
    clock = Clock()
    f = BatchFreezer(full_every_s=60, clock=clock)
    gc.unfreeze()
    kept = [[i] for i in range(1000)]  # e.g. account states cached by this batch
    f.after_batch()
    assert gc.get_freeze_count() >= len(kept)  # the collector will not walk them again
    assert f.last_collected == 0  # no full collection before the interval


def test_full_collection_frees_frozen_cycles_after_the_interval() -> None:
    clock = Clock()
    f = BatchFreezer(full_every_s=60, clock=clock)
    for _ in range(100):
        _cycle()
    f.after_batch()  # the cycles are frozen: no automatic collection can free them now
    assert gc.collect() == 0
    clock.t = 59.0
    f.after_batch()
    assert f.last_collected == 0
    clock.t = 60.0
    f.after_batch()
    assert f.last_collected >= 100  # found by the full collection, and logged
