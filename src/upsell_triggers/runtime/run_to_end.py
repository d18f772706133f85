"""A batch the drain loop started runs to its end, whatever cancels the loop meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def run_to_end(aw: Coroutine[Any, Any, None]) -> None:
    """Awaits a batch to its end even when the awaiting task is cancelled meanwhile, then passes the
    cancellation on. Faust cancels the drain loop on stop (Fetcher.on_stop, again every second while it
    runs); cancelled between applying a batch and acking it, the batch was in the account states but
    not among the unwritten batches, so the clean stop's commit left its offsets out (a CI run of
    test_rebalance_commits_what_was_acked) and the states written later said applied while its offsets
    were not acked. The caller holds in_flight, so the stop's commit waits for the batch."""
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
