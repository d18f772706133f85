"""Gives the memory a worked-off backlog used back to the operating system.

While a worker is behind, its fetches (up to UPSELL_FETCH_PARTITION_BYTES per partition), their
records and the changelog batches it sends are large and short-lived. CPython hands those buffers
to glibc's malloc, which keeps freed memory for reuse: by itself it returns only the free top of the
main heap, while malloc_trim also releases free pages inside it and in other threads' arenas (Faust's
consumer thread parses fetches in one). Measured after
a 1M-account backlog (bench/state_bench.py conditions): 1,013 B resident per account, 768 B after one
malloc_trim(0), which took 22 ms. So the worker calls it when it is caught up after handling records,
at most once per interval, in a thread (ctypes releases the GIL; the event loop keeps serving).

glibc also raises its mmap threshold (from 128 KiB, up to 32 MiB) each time a freed block was mmapped:
after the first freed fetch, fetch-sized buffers come from the heap, where the long-lived account states
allocated between them keep pages from being returned. Pinned at 128 KiB, every large buffer is its own
mapping, unmapped when freed: at 100k accounts, 919-928 bytes per account at rest against 1,026-1,102
unpinned with the memory store, and 1,005-1,026 against 1,096-1,176 with RocksDB (bench/ANALYSIS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger("upsell_triggers.memory")


def _libc(name: str, argtypes: list[Any]) -> Any:
    """The C library's function `name` with its argument types set, or None where it has none (musl,
    macOS)."""
    lib = ctypes.util.find_library("c")
    if lib is None:
        return None
    try:
        fn = getattr(ctypes.CDLL(lib), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


def malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0) as a function, or None where the C library has none (musl, macOS)."""
    trim = _libc("malloc_trim", [ctypes.c_size_t])
    if trim is None:
        return None

    def release() -> None:
        t0 = time.perf_counter()
        trim(0)
        log.debug("returned freed memory to the OS in %.1f ms", (time.perf_counter() - t0) * 1000)

    return release


MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """mallopt(M_MMAP_THRESHOLD, threshold), which also turns glibc's dynamic threshold off; False where
    the C library has no mallopt. glibc reads MALLOC_MMAP_THRESHOLD_ from the environment too; a value
    set there is kept."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    mallopt = _libc("mallopt", [ctypes.c_int, ctypes.c_int])
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, threshold))


class ReleasePolicy:
    """When to release: every interval_s at most, if batches were handled or changelog records restored
    since the last release and no partition was behind after its last batch (0 = never). Asked by a
    timer, so that the end of a load is released too, not only a catch-up that happens to fall outside
    the interval."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.lags: dict[Hashable, int] = {}
        self.active = False
        self.last_release: float | None = None

    def on_lag(self, partition: Hashable, lag: int) -> None:
        """A partition's lag after a batch of it."""
        self.lags[partition] = lag
        self.active = True

    def on_restored(self) -> None:
        """Changelog records were restored (start, rebalance): a load whose fetches are freed too."""
        self.active = True

    def on_freed(self) -> None:
        """Account states were evicted (their decoded objects freed): memory to give back too."""
        self.active = True

    def forget(self, partition: Hashable) -> None:
        """A revoked partition no longer counts."""
        self.lags.pop(partition, None)

    def due(self) -> bool:
        if not self.active or self.interval_s <= 0 or any(self.lags.values()):
            return False
        now = self.clock()
        if self.last_release is not None and now - self.last_release < self.interval_s:
            return False
        self.active = False
        self.last_release = now
        return True
