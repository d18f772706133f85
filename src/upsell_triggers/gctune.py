"""Garbage-collector settings for a process that holds many long-lived account states.

With CPython's default gen-0 threshold (700 allocations) the collector keeps rescanning the account
states it can never free: replay of 1M events over 100k accounts ran 20% slower with it (measured in
bench/replay_bench.py). Reference cycles are rare here, so collecting less often costs little memory.
The Kafka worker, which also holds up to 100k decoded states and a fetch of ~100k records, ran 3-8%
faster at 50,000/20/100 than at 10,000/10/10 (5 of 5 A/B pairs on bench/throughput.py's topic), and
replay at 205-214k events/s against 189-200k (4 runs each, alternating): each older collection walks
the cached states, and 10/10 ran them ten times as often as 20/100 does.

The young threshold is 10,000 with an older collection every 100 young ones: the older collections
come every 1M allocations as at 50,000/20, but a young collection, which runs on the batch loop's
thread and stops it, scans a fifth of the objects. At 50,000 one took 17 ms of CPU (median; up to 23,
and 47 ms of wall clock on a loaded machine) every few seconds at 10k events/s, as long as a whole
exactly-once batch, which it held up with the prompts behind it; at 10,000, 2 ms (up to 4). Working off
the same backlog the worker spent less CPU collecting (78 against 110 ms over 300k events,
exactly_once), and the engine alone 0.2% more instructions per event (bench/instructions.py).
bench/results/eos-tail.json has the figures.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000
GEN1_THRESHOLD = 100
GEN2_THRESHOLD = 100


def tune() -> None:
    gc.freeze()  # what is alive at start-up (modules, rules) is never scanned again
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
