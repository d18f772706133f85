"""The stall watchdog of the Kafka worker: what it observes of Faust on a timer, and what it reports.

Each tick it reads what the worker is doing and feeds runtime/stall.py's StallDetector:

- recovering (Faust's recovery reads the changelog): per active changelog partition, the records left
  (the recovery's high watermark minus its offset) and its offset, read from Faust's Recovery through
  kafka.compat (checked at start-up);
- working (ready): per assigned input partition, the lag (the broker's end offset, asked each tick with a
  ListOffsets through the consumer, minus the consumer's position) and the position, which moves when
  records are handed to the batch path. A tick whose request fails or times out reuses the last answer:
  a consumer that stopped answering with records waiting is a stall too;
- anything else (joining the group, seeking): nothing is judged.

The broker's answer is the readiness probe's (a metadata request each second). It reports through the
`upsell_stalled_partitions` gauge (per topic), a warning when a partition's stall starts and when it
ends, and /healthz (503 with the reason while stalled), which the liveness probe reads. Nothing of it
runs per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faust.types import TP
from mode import Service

from upsell_triggers.metrics import Metrics
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.runtime.stall import Progress, StallDetector

log = logging.getLogger("upsell_triggers.watchdog")

REQUEST_TIMEOUT_S = 3.0  # the ListOffsets and position requests of a tick


def tick_interval(stall_s: float) -> float:
    """A quarter of the window, between 0.5 and 5 s: a stall is seen within a few s of stall_s."""
    return max(0.5, min(5.0, stall_s / 4))


def _name(tp: TP) -> str:
    return f"{tp.topic}[{tp.partition}]"


class Watchdog:
    """Observes the worker each tick and reports what the detector decides."""

    def __init__(
        self,
        app: Any,
        hot_topics: frozenset[str],
        detector: StallDetector,
        metrics: Metrics,
        broker_ok: Callable[[], bool],
        ready: Callable[[], bool],
    ) -> None:
        self.app, self.hot_topics, self.detector, self.metrics = app, hot_topics, detector, metrics
        self.broker_ok, self.ready = broker_ok, ready
        self._last: dict[TP, Progress] = {}  # the last answer per input partition
        self._reported: set[str] = set()
        self._topics: set[str] = set(hot_topics)
        for topic in hot_topics:
            metrics.stalled_partitions.labels(topic).set(0)

    async def tick(self) -> None:
        phase, watched = await self.observe()
        stalled = self.detector.observe(broker_ok=self.broker_ok(), phase=phase, watched=watched)
        self.report({s.name: s for s in stalled})

    async def observe(self) -> tuple[Any, dict[tuple[str, str], Progress]]:
        generation = self.app.consumer_generation_id
        recovery = compat.RecoveryView(self.app.tables)
        if recovery.in_recovery:
            offsets, highwaters = recovery.active_offsets, recovery.active_highwaters
            watched: dict[tuple[str, str], Progress] = {}
            for tp in recovery.active_tps:
                end, done = highwaters.get(tp), offsets.get(tp)
                if end is not None and done is not None:
                    watched[(_name(tp), tp.topic)] = Progress(max(0, end - done), done)
            return ("recovering", generation), watched
        if not self.ready():
            self._last.clear()
            return ("rebalancing", generation), {}
        tps = [tp for tp in self.app.consumer.assignment() if tp.topic in self.hot_topics]
        self._last = {tp: p for tp, p in self._last.items() if tp in tps}
        if tps:
            with contextlib.suppress(Exception):  # e.g. timed out: the last answer stands
                self._last.update(await asyncio.wait_for(self._progress(tps), REQUEST_TIMEOUT_S))
        return ("working", generation), {(_name(tp), tp.topic): p for tp, p in self._last.items()}

    async def _progress(self, tps: list[TP]) -> dict[TP, Progress]:
        consumer = self.app.consumer
        ends = await consumer.highwaters(*tps)
        positions = await asyncio.gather(*(consumer.position(tp) for tp in tps))
        return {
            tp: Progress(max(0, ends[tp] - position), position)
            for tp, position in zip(tps, positions, strict=True)
            if position is not None and ends.get(tp) is not None
        }

    def report(self, stalled: dict[str, Any]) -> None:
        for name in sorted(stalled.keys() - self._reported):
            s = stalled[name]
            log.warning(
                "stall: no record consumed from %s for %.0f s with %d waiting (the broker answers)",
                name,
                s.for_s,
                s.waiting,
                extra={"fields": {"partition": name, "waiting": s.waiting, "for_s": round(s.for_s)}},
            )
        for name in sorted(self._reported - stalled.keys()):
            log.warning("stall over: %s", name, extra={"fields": {"partition": name}})
        self._reported = set(stalled)
        per_topic: dict[str, int] = dict.fromkeys(self._topics, 0)
        for s in stalled.values():
            per_topic[s.topic] = per_topic.get(s.topic, 0) + 1
        self._topics |= per_topic.keys()
        for topic, n in per_topic.items():
            self.metrics.stalled_partitions.labels(topic).set(n)


class Probes(Service):
    """The readiness probe each second and the watchdog's ticks, from the app's start: Faust starts an
    app's timers only once the first recovery completed, and a first recovery can stall too."""

    def __init__(
        self,
        probe: Callable[[], Awaitable[None]],
        watchdog: Watchdog | None,
        interval_s: float,
        **kwargs: Any,
    ) -> None:
        self.probe, self.watchdog, self.interval_s = probe, watchdog, interval_s
        super().__init__(**kwargs)

    @Service.task
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while not self.should_stop:
            await self.probe()
            if self.watchdog is not None and loop.time() >= next_tick:
                next_tick = loop.time() + self.interval_s
                try:
                    await self.watchdog.tick()
                except Exception as exc:  # never stop the readiness probe
                    log.warning("stall watchdog check failed: %r", exc)
            await self.sleep(1.0)
