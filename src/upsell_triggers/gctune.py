"""Garbage-collector settings for a process that holds many long-lived account states.

With CPython's default gen-0 threshold (700 allocations) the collector keeps rescanning the account
states it can never free: replay of 1M events over 100k accounts ran 20% slower with it (measured in
bench/replay_bench.py). Reference cycles are rare here, so collecting less often costs little memory.
The Kafka worker, which also holds up to 100k decoded states and a fetch of ~100k records, runs 3-8%
faster at 50,000/20/100 than at 10,000/10/10 (5 of 5 A/B pairs on bench/throughput.py's topic), and
replay at 205-214k events/s against 189-200k (4 runs each, alternating): young collections rescan
the batch's survivors, and each older one walks the cached states.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 100


def tune() -> None:
    gc.freeze()  # what is alive at start-up (modules, rules) is never scanned again
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
