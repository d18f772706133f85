"""Per-batch phase timings of the Kafka worker, as JSON lines in a file (UPSELL_BATCH_TIMINGS_FILE).

A latency tail or a worker that stays behind is explained by where each batch's time goes: waiting for
the fetch, applying the records, delivering the prompts (broker-acknowledged), writing the states,
committing; and by what happened between batches (group assignment, collector pauses, a producer
request retried after a wait). Histograms of
those phases would average the one slow second away, so this writes one line per batch with wall-clock
stamps that line up with a producer's and a consumer's own clocks (bench/latency.py reads them). Each
phase also gets the loop thread's CPU time (`<phase>_cpu_ms`): on a shared machine a phase's wall time
minus its CPU time is time spent waiting, for the broker or for a CPU, not working.

Off by default: the hot path then pays one `is None` test per phase. On, a line costs a few µs
(orjson, a buffered write), flushed once a second.
"""

from __future__ import annotations

import atexit
import gc
import time
from typing import IO, Any

import orjson


class BatchTimer:
    """Laps of one batch: `lap(phase)` adds the time since the previous lap to that phase, in wall
    clock and in the calling thread's CPU time."""

    __slots__ = ("_last", "_last_cpu", "cpu", "fields", "phases")

    def __init__(self, wall: float, now: float) -> None:
        self.fields: dict[str, Any] = {"t": round(wall, 6)}
        self.phases: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._last = now
        self._last_cpu = time.thread_time()

    def lap(self, phase: str) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu - self._last_cpu
        self._last, self._last_cpu = now, cpu


class BatchTimings:
    """Writes batches, group events and collector pauses to one file, in the order they happen."""

    def __init__(self, path: str) -> None:
        self._out: IO[bytes] = open(path, "ab", buffering=1 << 16)  # noqa: SIM115 (closed by close())
        self._flushed = time.monotonic()
        self._gc_start = self._gc_start_cpu = 0.0
        self._current: BatchTimer | None = None
        atexit.register(self.close)
        gc.callbacks.append(self._on_gc)

    def start(self) -> None:
        """A batch begins (its fetch wait is the first lap)."""
        self._current = BatchTimer(time.time(), time.perf_counter())

    def lap(self, phase: str) -> None:
        if self._current is not None:
            self._current.lap(phase)

    def note(self, **fields: Any) -> None:
        if self._current is not None:
            self._current.fields.update(fields)

    def end(self) -> None:
        """Writes the batch begun last, if it handled records: its laps in ms and its noted fields."""
        timer, self._current = self._current, None
        if timer is None or "records" not in timer.fields:
            return
        line = timer.fields
        for phase, s in timer.phases.items():
            line[phase + "_ms"] = round(1000 * s, 3)
        for phase, s in timer.cpu.items():
            line[phase + "_cpu_ms"] = round(1000 * s, 3)
        self._write(line)

    def event(self, kind: str, **fields: Any) -> None:
        """Something between batches (a partition assignment, a revoke)."""
        self._write({"t": round(time.time(), 6), "event": kind, **fields})

    def on_fetch(self, seconds: float, parts: dict[str, int], data: bool) -> None:
        """A fetch request: its round trip, partitions per topic, and whether it brought records."""
        self.event("fetch", ms=round(1000 * seconds, 3), parts=parts, data=data)

    def on_retry(self, request: str, error: str, backoff: float) -> None:
        """A producer request answered with an error it retries after a wait (kafka.compat.watch_retries):
        one such wait can be the whole of a slow batch. Counted in the batch under way too (`retries`,
        `retry_wait_ms`): the request may be of its transactions or of the producer's background sends."""
        backoff_ms = round(1000 * backoff, 3)
        self.event("retry", request=request, error=error, backoff_ms=backoff_ms)
        timer = self._current
        if timer is not None:
            fields = timer.fields
            fields["retries"] = fields.get("retries", 0) + 1
            fields["retry_wait_ms"] = fields.get("retry_wait_ms", 0.0) + backoff_ms

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start, self._gc_start_cpu = time.perf_counter(), time.thread_time()
            return
        ms = 1000 * (time.perf_counter() - self._gc_start)
        if ms >= 1.0 or info.get("generation") == 2:
            cpu_ms = round(1000 * (time.thread_time() - self._gc_start_cpu), 3)
            line = {"t": round(time.time(), 6), "event": "gc", "generation": info.get("generation"), "ms": ms}
            self._write({**line, "cpu_ms": cpu_ms, "collected": info.get("collected")})

    def _write(self, line: dict[str, Any]) -> None:
        self._out.write(orjson.dumps(line, default=str) + b"\n")
        now = time.monotonic()
        if now - self._flushed >= 1.0:
            self._out.flush()
            self._flushed = now

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if not self._out.closed:
            self._out.close()


def open_timings(path: str | None) -> BatchTimings | None:
    return BatchTimings(path) if path else None
