"""One fetch of the hot topics through the Processor: account states change in memory, and what the
batch must send (prompts, dead letters) is collected for the sink to deliver before any state is
written."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from faust.types import TP

from upsell_triggers.deadletter import DeadLetter
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import HotTopic, Processor, RecordSource
from upsell_triggers.runtime.table_state import TableState

log = logging.getLogger("upsell_triggers.worker")


@dataclass(slots=True)
class Outputs:
    """What one batch sends: prompts and leads as (account key, JSON), and dead letters."""

    prompts: list[tuple[bytes, bytes]] = field(default_factory=list)
    leads: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    newest_ts: int | None = None  # the newest record timestamp of the batch (ms)
    # Per input partition of the batch, in order: (partition, prompts end, dead letters end), so that
    # the outputs of each partition can go into its own transaction (exactly_once).
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    lead_ends: list[int] = field(default_factory=list)  # per span: where its partition's leads end


class BatchApplier:
    """Applies a batch's records in partition order. `hot_topics` names each hot topic's `HotTopic` (as
    the account state counts its offsets): a record at or below the account's offset for its topic is a
    redelivery and changes nothing."""

    def __init__(
        self, processor: Processor, states: TableState, hot_topics: Mapping[str, HotTopic], metrics: Metrics
    ) -> None:
        self.processor, self.states, self.hot_topics, self.metrics = processor, states, hot_topics, metrics

    def __call__(self, batch: Mapping[TP, Sequence[Any]]) -> Outputs:
        """Synchronous on purpose: no rebalance can interleave with a batch's state changes."""
        out = Outputs()
        handle, states = self.processor.handle, self.states
        newest_ts = None
        for tp, records in batch.items():
            states.partition = tp.partition
            topic = self.hot_topics[tp.topic]
            for r in records:
                raw = r.value if r.value is not None else b""
                try:
                    res = handle(raw, r.key, r.timestamp, RecordSource(topic, r.offset))
                    bad = (res.invalid.reason, res.invalid.message) if res.invalid is not None else None
                except Exception as exc:  # a bug must not stop the fetcher or lose the record
                    log.exception("internal error on %s[%d]@%d", tp.topic, tp.partition, r.offset)
                    bad = ("internal_error", f"{type(exc).__name__}: {str(exc)[:200]}")
                    self.metrics.record_invalid("internal_error")
                if bad is not None:
                    reason, message = bad
                    source = {
                        "source_topic": tp.topic,
                        "source_partition": tp.partition,
                        "source_offset": r.offset,
                    }
                    out.dead_letters.append(DeadLetter(reason, message, raw, r.key, source))
                    continue
                for d in res.decisions:
                    if d.prompt is not None:
                        out.prompts.append((d.account_id.encode(), orjson.dumps(d.prompt)))
                    if d.lead is not None:
                        out.leads.append((d.account_id.encode(), orjson.dumps(d.lead)))
            newest_ts = records[-1].timestamp if newest_ts is None else max(newest_ts, records[-1].timestamp)
            out.spans.append((tp.partition, len(out.prompts), len(out.dead_letters)))
            out.lead_ends.append(len(out.leads))
        out.newest_ts = newest_ts
        return out
