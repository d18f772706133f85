"""How long the broker may hold the worker's fetch requests: 100 ms, not the 1.5 s Faust sets.

aiokafka keeps one fetch request in flight per broker. Records fetched but not yet taken by the batch
loop hold back the next fetch of their broker for prefetch_backoff (0.1 s); after it, the fetcher sends
a request for the broker's other partitions only. With every hot partition buffered, those are the
idle ones (the feedback topic, Faust's leader topic): the broker holds that request for the fetch
wait, and the hot partitions cannot be fetched until it returns empty. At Faust's 1.5 s the next fetch
then brings 1.5 s of events, too many to take within 0.1 s, and the same happens at every fetch: a
worker at 20% of its capacity stays 1.3-2 s behind for good, entered by one batch that comes back late
(a collector pause, a slow delivery, CPU contention). `bench/latency.py --timings` shows those empty
fetches (docs/operations.md, Latency; RELIABILITY.md #10).

At 100 ms a request for idle partitions costs at most that, and the state cannot feed itself while the
worker runs below half its capacity (100 ms of events then take less than 100 ms). An idle worker sends
ten fetches a second. A longer prefetch_backoff would avoid the idle request altogether but stalls
every fetch for that long once per partition whose records the batch loop never takes (the table's
changelog partitions after recovery): 1 s gave 1 s stalls at 1k events/s. The setting itself is
compat's (a member of aiokafka's fetcher, set when Faust's consumer thread has started it).
"""

from __future__ import annotations

FETCH_MAX_WAIT_MS = 100
