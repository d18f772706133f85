"""Whether the Kafka worker is stuck: the decision of the stall watchdog, without Faust or a broker.

Faust and aiokafka have known hangs (faust-streaming issues #47, #74) in which a worker keeps its
partitions, and its process, but reads nothing: records wait on an assigned input partition and none is
consumed, or a recovery waits for changelog records that never come. Kafka does not move the partitions
(the member still heartbeats), and a liveness probe that only asks "is the process up" keeps such a
worker forever. This module decides from what the watchdog observes on a timer (runtime/watchdog.py):

- an input partition is stalled when it was assigned, records were waiting on it (lag: high watermark
  minus the consumer's position, > 0) and its position did not move for `stall_s` seconds;
- a recovery is stalled when it had changelog records left to read and read none for `stall_s`.

Only time watched with the broker answering counts: a tick on which the broker did not answer (an
outage is not a worker stall; /readyz says it), a gap between ticks longer than half the window (the
process was paused, or not watched; a caller may allow more for a short window), caught-up
partitions (lag 0) and a change of phase (rebalance, recovery, back to work) restart the clock.
`stall_s` 0 turns the watchdog off.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    """One thing watched: its records waiting, and a marker that changes when records are consumed."""

    waiting: int  # records left: lag (input partition) or changelog records to read (recovery)
    marker: Hashable  # the consumer's position; the recovery's offsets


@dataclass(frozen=True, slots=True)
class Stalled:
    """What is stalled, for how long, and with how many records waiting."""

    name: str  # e.g. "usage-events[0]"
    topic: str
    waiting: int
    for_s: float


class StallDetector:
    """Feed it `observe` on a timer; `stalled` and `reason` say what is stuck."""

    def __init__(self, stall_s: float, clock: Callable[[], float], max_gap_s: float | None = None) -> None:
        """`max_gap_s`: a longer time between ticks restarts the clocks (default: half of stall_s)."""
        self.stall_s, self.clock = stall_s, clock
        self.max_gap_s = stall_s / 2 if max_gap_s is None else max_gap_s
        self.stalled: tuple[Stalled, ...] = ()
        self._since: dict[str, tuple[Hashable, float]] = {}  # name -> (marker, when it last moved)
        self._phase: Hashable = None
        self._last_tick: float | None = None

    @property
    def enabled(self) -> bool:
        return self.stall_s > 0

    def observe(
        self,
        *,
        broker_ok: bool,
        phase: Hashable,
        watched: Mapping[tuple[str, str], Progress],
    ) -> tuple[Stalled, ...]:
        """One tick. `phase` says what the worker does, e.g. ("working", generation): a new phase (a
        rebalance, a recovery, its end) restarts every clock. `watched` maps (name, topic) to its
        progress; what is not in it is forgotten (revoked, or not judged in this phase). Returns what
        is stalled now."""
        now = self.clock()
        if not self.enabled:
            return ()
        gap = self._last_tick is not None and now - self._last_tick > self.max_gap_s
        self._last_tick = now
        if not broker_ok or gap or phase != self._phase:
            self._phase = phase if broker_ok else None
            self._since.clear()
        stalled: list[Stalled] = []
        seen: set[str] = set()
        for (name, topic), progress in watched.items():
            seen.add(name)
            previous = self._since.get(name)
            if previous is None or progress.waiting <= 0 or previous[0] != progress.marker:
                self._since[name] = (progress.marker, now)
                continue
            idle = now - previous[1]
            if idle >= self.stall_s:
                stalled.append(Stalled(name, topic, progress.waiting, idle))
        for name in [n for n in self._since if n not in seen]:
            del self._since[name]
        self.stalled = tuple(stalled)
        return self.stalled

    def unwatched_for(self) -> float | None:
        """Seconds since the last tick once that is at least `stall_s` (the event loop that runs the
        ticks is blocked), else None. Read from the HTTP thread."""
        last = self._last_tick
        if not self.enabled or last is None:
            return None
        idle = self.clock() - last
        return idle if idle >= self.stall_s else None

    def reason(self) -> str | None:
        """One line for /healthz, or None when nothing is stalled."""
        unwatched = self.unwatched_for()
        if unwatched is not None:
            return f"stalled: the worker's event loop ran no watchdog check for {unwatched:.0f} s"
        stalled = self.stalled
        if not stalled:
            return None
        parts = ", ".join(f"{s.name} ({s.waiting} waiting, {s.for_s:.0f} s)" for s in stalled)
        return f"stalled: no record consumed with records waiting, for at least {self.stall_s:g} s: {parts}"
