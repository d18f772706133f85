"""How the batch path gets into Faust: a transport whose consumer is BatchConsumer, carrying the hot
topics, the sink and the observers the consumer reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from upsell_triggers.runtime.batch_consumer import BatchConsumer
from upsell_triggers.runtime.batch_timings import BatchTimings
from upsell_triggers.runtime.changelog_restore import ChangelogRestore
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.runtime.kafka.compat import ConsumerAdapter
from upsell_triggers.runtime.kafka.raw_records import serve_raw_records
from upsell_triggers.runtime.sink import BatchSink


@dataclass(frozen=True, slots=True)
class HotPath:
    """The hot topics, where their batches go, and who hears about the batch path's progress."""

    topics: frozenset[str]
    sink: BatchSink
    on_lag: Callable[[TP, int], None] | None = None  # (partition, records behind its high watermark)
    on_restored: Callable[[int], None] | None = None  # (changelog records applied) per restored fetch
    timings: BatchTimings | None = None  # per-batch phase timings (batch_timings), None when off


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer

    def __init__(self, url: Any, app: Any, hot: HotPath) -> None:
        super().__init__(url, app)
        self.hot_topics, self.sink, self.on_lag = hot.topics, hot.sink, hot.on_lag
        self.on_restored, self.timings = hot.on_restored, hot.timings
        self._restore: ChangelogRestore | None = None

    def restore_for(self, consumer: ConsumerAdapter) -> ChangelogRestore:
        """Where `consumer` hands the records of the topics that are not hot."""
        if self._restore is None or self._restore.consumer is not consumer:
            self._restore = ChangelogRestore(consumer, self.on_restored)
        return self._restore


def install(app: Any, hot: HotPath) -> None:
    """Makes `app` consume the hot topics through BatchConsumer (call before the worker starts)."""
    serve_raw_records(hot.topics)
    if hot.timings is not None:
        compat.time_fetches(hot.timings.on_fetch)
        compat.watch_retries(hot.timings.on_retry)
    app.transport = BatchTransport(app.conf.broker_consumer, app, hot)
