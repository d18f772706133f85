"""run_to_end: a batch the drain loop started is finished even when Faust cancels the loop (stop)."""

from __future__ import annotations

import asyncio

import pytest

from upsell_triggers.runtime.run_to_end import run_to_end


async def test_a_cancelled_caller_waits_for_the_batch_then_is_cancelled() -> None:
    done: list[str] = []

    async def batch() -> None:
        await asyncio.sleep(0.05)  # delivering its outputs
        done.append("acked")

    caller = asyncio.ensure_future(run_to_end(batch()))
    await asyncio.sleep(0.01)
    caller.cancel()
    await asyncio.sleep(0.01)
    caller.cancel()  # Faust cancels again every second while the loop runs
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert done == ["acked"]


async def test_the_batch_errors_reach_the_caller() -> None:
    async def batch() -> None:
        raise ValueError("producer gave up")

    with pytest.raises(ValueError, match="producer gave up"):
        await run_to_end(batch())


async def test_an_uncancelled_caller_returns_normally() -> None:
    done: list[int] = []

    async def batch() -> None:
        done.append(1)

    await run_to_end(batch())
    assert done == [1]
