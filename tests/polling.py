"""Waiting in a test for a condition on another process (a worker's /metrics or /healthz, a topic)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(pred: Callable[[], object], timeout: float, every: float = 0.2) -> bool:
    """Polls `pred` every `every` seconds until it holds (True) or `timeout` passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(every)
    return False
