"""`python -m tests.integration.paused_worker run`: the service, made to stall on request, for the stall
watchdog's test (test_stall_kafka.py). Only that test runs it; the service itself has no such hook.

- While the file named by UPSELL_TEST_PAUSE_FILE exists, the events partitions are paused in the
  consumer (resumed when it is removed): records wait on assigned partitions and none is handed on,
  while the process, its group membership and the broker stay healthy.
- While the file named by UPSELL_TEST_HOLD_RECOVERY_FILE exists, every changelog fetch is put back
  unapplied (sought back to its first record): a recovery that reads nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from faust.types import TP

from upsell_triggers.cli import main
from upsell_triggers.runtime import faust_app
from upsell_triggers.runtime.changelog_restore import ChangelogRestore
from upsell_triggers.settings import Settings

_create_app = faust_app.create_app
_deliver = ChangelogRestore.deliver


def _flag(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def create_app(s: Settings) -> faust_app.Worker:
    worker = _create_app(s)
    app: Any = worker.app
    flag = _flag("UPSELL_TEST_PAUSE_FILE")
    paused: set[TP] = set()

    async def pause_on_request() -> None:
        wanted = flag is not None and flag.exists()
        if wanted and not paused and worker.ready():
            paused.update(tp for tp in app.consumer.assignment() if tp.topic == s.topic_events)
            app.consumer.pause_partitions(paused)
        elif paused and not wanted:
            app.consumer.resume_partitions(paused)
            paused.clear()

    app.timer(interval=0.2)(pause_on_request)
    return worker


async def deliver(self: ChangelogRestore, records: Mapping[TP, Sequence[Any]], generation: int) -> None:
    hold = _flag("UPSELL_TEST_HOLD_RECOVERY_FILE")
    if hold is not None and hold.exists():
        await self.consumer._rewind(records)  # type: ignore[attr-defined]  # (BatchConsumer's)
        await asyncio.sleep(0.05)
        return
    await _deliver(self, records, generation)


faust_app.create_app = create_app
ChangelogRestore.deliver = deliver  # type: ignore[method-assign]

if __name__ == "__main__":
    raise SystemExit(main())
