"""A batch the drain loop started runs to its end, whatever cancels the loop meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def run_to_end(aw: Coroutine[Any, Any, None]) -> None:
    """Awaits a batch to its end even when the awaiting task is cancelled meanwhile, then passes the
    cancellation on. Faust cancels the drain loop on stop (Fetcher.on_stop, again every second while it
    runs); a batch cancelled between applying and acking would be in the account states with its
    offsets left out of the stop's commit (RELIABILITY.md #9). The caller holds in_flight, so the
    stop's commit waits for the batch."""
    task = asyncio.ensure_future(aw)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError
