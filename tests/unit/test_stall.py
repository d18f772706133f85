"""The stall watchdog's decision (runtime/stall.py) on a fake clock, and /healthz answering it."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from upsell_triggers.runtime.http import make_app
from upsell_triggers.runtime.stall import Progress, StallDetector

P0 = ("usage-events[0]", "usage-events")
P1 = ("usage-events[1]", "usage-events")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def ticks(d: StallDetector, clock: Clock, until: float, step: float = 1.0, **kw: object) -> tuple:  # type: ignore[type-arg]
    """Observes every `step` s up to `until` s after now; the last verdict."""
    end = clock.t + until
    verdict: tuple = ()  # type: ignore[type-arg]
    while clock.t < end:
        clock.t += step
        verdict = d.observe(**kw)  # type: ignore[arg-type]
    return verdict


def working(*watched: tuple[tuple[str, str], int, int], broker_ok: bool = True) -> dict[str, object]:
    return {
        "broker_ok": broker_ok,
        "phase": ("working", 1),
        "watched": {key: Progress(lag, position) for key, lag, position in watched},
    }


def test_lag_without_progress_stalls_after_exactly_stall_s() -> None:
    clock = Clock()
    d = StallDetector(120, clock)
    assert d.observe(**working((P0, 5, 10))) == ()  # type: ignore[arg-type]
    assert ticks(d, clock, 119.5, step=0.5, **working((P0, 5, 10))) == ()
    assert d.reason() is None
    clock.t += 0.5
    (s,) = d.observe(**working((P0, 5, 10), (P1, 0, 3)))  # type: ignore[arg-type]
    assert (s.name, s.topic, s.waiting, s.for_s) == ("usage-events[0]", "usage-events", 5, 120.0)
    assert d.reason() == (
        "stalled: no record consumed with records waiting, for at least 120 s: usage-events[0] (5 waiting, 120 s)"
    )


def test_progress_restarts_the_clock_and_ends_a_stall() -> None:
    clock = Clock()
    d = StallDetector(10, clock)
    assert ticks(d, clock, 9, **working((P0, 5, 10))) == ()
    clock.t += 1
    assert d.observe(**working((P0, 5, 11))) == ()  # type: ignore[arg-type]  # one record consumed
    assert ticks(d, clock, 9, **working((P0, 5, 11))) == ()
    assert len(ticks(d, clock, 1, **working((P0, 5, 11)))) == 1
    assert d.observe(**working((P0, 4, 12))) == ()  # type: ignore[arg-type]
    assert d.reason() is None


def test_no_lag_never_stalls() -> None:
    clock = Clock()
    d = StallDetector(10, clock)
    assert ticks(d, clock, 600, **working((P0, 0, 10))) == ()
    # records arrive on an idle, caught-up partition: the clock starts then, not at the last record
    assert ticks(d, clock, 9, **working((P0, 3, 10))) == ()
    assert len(ticks(d, clock, 1, **working((P0, 3, 10)))) == 1


def test_broker_down_never_stalls_and_restarts_the_clock() -> None:
    clock = Clock()
    d = StallDetector(10, clock)
    assert ticks(d, clock, 9, **working((P0, 5, 10))) == ()
    assert ticks(d, clock, 300, **working((P0, 5, 10), broker_ok=False)) == ()
    # the window starts at the first tick on which the broker answers again
    assert d.observe(**working((P0, 5, 10))) == ()  # type: ignore[arg-type]
    assert ticks(d, clock, 9, **working((P0, 5, 10))) == ()
    assert len(ticks(d, clock, 1, **working((P0, 5, 10)))) == 1
    assert d.observe(**working((P0, 5, 10), broker_ok=False)) == ()  # type: ignore[arg-type]
    assert d.reason() is None


def test_off_when_zero() -> None:
    clock = Clock()
    d = StallDetector(0, clock)
    assert not d.enabled
    assert ticks(d, clock, 3600, **working((P0, 5, 10))) == ()
    clock.t += 3600
    assert d.reason() is None


def test_a_new_phase_or_a_gap_between_ticks_restarts_the_clock() -> None:
    clock = Clock()
    d = StallDetector(10, clock)
    ticks(d, clock, 9, **working((P0, 5, 10)))
    rebalanced = {"broker_ok": True, "phase": ("working", 2), "watched": {P0: Progress(5, 10)}}
    assert ticks(d, clock, 9, **rebalanced) == ()
    clock.t += 6  # longer than half the window without a tick: the process was paused
    assert d.observe(**rebalanced) == ()  # type: ignore[arg-type]
    assert ticks(d, clock, 9, **rebalanced) == ()
    assert len(ticks(d, clock, 1, **rebalanced)) == 1


def test_a_recovery_without_progress_stalls() -> None:
    clock = Clock()
    d = StallDetector(10, clock)
    tp = ("app-account-state-changelog[2]", "app-account-state-changelog")

    def recovering(left: int, offset: int) -> dict[str, object]:
        return {"broker_ok": True, "phase": ("recovering", 3), "watched": {tp: Progress(left, offset)}}

    assert ticks(d, clock, 9, **recovering(400, 100)) == ()
    assert ticks(d, clock, 9, **recovering(300, 200)) == ()  # reading: progress
    (s,) = ticks(d, clock, 10, **recovering(300, 200))
    assert (s.topic, s.waiting) == ("app-account-state-changelog", 300)
    assert ticks(d, clock, 1, **recovering(0, 500)) == ()  # done


def test_a_revoked_partition_is_forgotten() -> None:
    clock = Clock()
    d = StallDetector(10, clock)
    ticks(d, clock, 9, **working((P0, 5, 10)))
    ticks(d, clock, 5, **working())
    assert ticks(d, clock, 9, **working((P0, 5, 10))) == ()  # assigned again: a new window


def test_no_tick_for_stall_s_is_a_stall() -> None:
    clock = Clock()
    d = StallDetector(10, clock)
    assert d.reason() is None  # not started yet: nothing to say
    d.observe(**working())  # type: ignore[arg-type]
    clock.t += 9.9
    assert d.reason() is None
    clock.t += 0.1
    assert d.reason() == "stalled: the worker's event loop ran no watchdog check for 10 s"


def test_healthz_answers_503_with_the_reason_while_stalled() -> None:
    why: list[str | None] = [None]

    async def run() -> list[tuple[int, dict[str, str]]]:
        app = make_app(CollectorRegistry(), lambda: True, lambda: why[0])
        async with TestClient(TestServer(app)) as client:
            out = []
            for reason in (None, "stalled: usage-events[0] (5 waiting, 121 s)", None):
                why[0] = reason
                r = await client.get("/healthz")
                out.append((r.status, await r.json()))
            return out

    assert asyncio.run(run()) == [
        (200, {"status": "ok"}),
        (503, {"status": "stalled", "reason": "stalled: usage-events[0] (5 waiting, 121 s)"}),
        (200, {"status": "ok"}),
    ]
