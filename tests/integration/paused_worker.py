"""`python -m tests.integration.paused_worker run`: the service, with its events partitions paused in
its consumer while the file named by UPSELL_TEST_PAUSE_FILE exists, and resumed when it is removed.

A real stall, for the stall watchdog's test (test_stall_kafka.py): records wait on assigned partitions
and none is handed on, while the worker's process, group membership and broker stay healthy. Only this
test module installs it; the service has no such hook."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from faust.types import TP

from upsell_triggers.cli import main
from upsell_triggers.runtime import faust_app
from upsell_triggers.settings import Settings

_create_app = faust_app.create_app


def create_app(s: Settings) -> faust_app.Worker:
    worker = _create_app(s)
    app: Any = worker.app
    flag = Path(os.environ["UPSELL_TEST_PAUSE_FILE"])
    paused: set[TP] = set()

    async def pause_on_request() -> None:
        wanted = flag.exists()  # noqa: ASYNC240 (a stat of a local file, in a test)
        if wanted and not paused and worker.ready():
            paused.update(tp for tp in app.consumer.assignment() if tp.topic == s.topic_events)
            app.consumer.pause_partitions(paused)
        elif paused and not wanted:
            app.consumer.resume_partitions(paused)
            paused.clear()

    app.timer(interval=0.2)(pause_on_request)
    return worker


faust_app.create_app = create_app

if __name__ == "__main__":
    raise SystemExit(main())
