"""How the batch path gets into Faust: a transport whose consumer is BatchConsumer, carrying the hot
topics, the sink and the observers the consumer reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from upsell_triggers.runtime.batch_consumer import BatchConsumer
from upsell_triggers.runtime.changelog_restore import ChangelogRestore
from upsell_triggers.runtime.kafka.compat import ConsumerAdapter
from upsell_triggers.runtime.kafka.raw_records import serve_raw_records
from upsell_triggers.runtime.sink import BatchSink


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer

    def __init__(
        self,
        url: Any,
        app: Any,
        hot_topics: frozenset[str],
        sink: BatchSink,
        on_lag: Callable[[TP, int], None] | None = None,
        on_restored: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(url, app)
        self.hot_topics = hot_topics
        self.sink = sink
        self.on_lag = on_lag  # (partition, records behind its high watermark) after each batch
        self.on_restored = on_restored  # (changelog records applied) after each restored fetch
        self._restore: ChangelogRestore | None = None

    def restore_for(self, consumer: ConsumerAdapter) -> ChangelogRestore:
        """Where `consumer` hands the records of the topics that are not hot."""
        if self._restore is None or self._restore.consumer is not consumer:
            self._restore = ChangelogRestore(consumer, self.on_restored)
        return self._restore


def install(
    app: Any,
    hot_topics: frozenset[str],
    sink: BatchSink,
    on_lag: Callable[[TP, int], None] | None = None,
    on_restored: Callable[[int], None] | None = None,
) -> None:
    """Makes `app` consume `hot_topics` through BatchConsumer (call before the worker starts)."""
    serve_raw_records(hot_topics)
    app.transport = BatchTransport(app.conf.broker_consumer, app, hot_topics, sink, on_lag, on_restored)
