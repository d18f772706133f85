"""Garbage-collector settings for a process that holds many long-lived account states.

With CPython's default gen-0 threshold (700 allocations) the collector keeps rescanning the account
states it can never free: replay of 1M events over 100k accounts ran 20% slower with it (measured in
bench/replay_bench.py). Reference cycles are rare here, so collecting less often costs little memory.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

GEN0_THRESHOLD = 10_000

log = logging.getLogger("upsell_triggers.gc")


def tune() -> None:
    gc.freeze()  # what is alive at start-up (modules, rules) is never scanned again
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, g1, g2)


class BatchFreezer:
    """Keeps the collector off the cached account states between full collections.

    The worker's cached states are hundreds of thousands of container objects that die by reference
    count (cache eviction), never by the collector; but every gen-1 and gen-2 collection walked them
    all: one 186 ms and several 15-30 ms pauses per 15 s at 10k events/s (measured with a gc callback),
    which is what made the latency p99. Freezing after each batch (O(1) in CPython: it splices the
    generation lists) leaves the collector only the objects younger than the current batch. Cycles
    frozen before the collector saw them would never be freed, so every `full_every_s` everything is
    unfrozen and collected once; the count it finds is logged (the measure of what freezing defers).
    """

    def __init__(self, full_every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every_s = full_every_s
        self.clock = clock
        self.last_full = clock()
        self.last_collected = 0

    def after_batch(self) -> None:
        now = self.clock()
        if now - self.last_full >= self.full_every_s:
            self.last_full = now
            gc.unfreeze()
            t = time.perf_counter()
            self.last_collected = gc.collect()
            log.info(
                "full garbage collection: %d unreachable objects, %.0f ms",
                self.last_collected,
                (time.perf_counter() - t) * 1000,
            )
        gc.freeze()
