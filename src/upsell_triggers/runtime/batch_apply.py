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
from upsell_triggers.engine.outcomes import Decision
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import HotTopic, Processor, Rejected
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
        """Synchronous on purpose: no rebalance can interleave with a batch's state changes. Each
        partition's records go to the processor in one call (Processor.handle_records)."""
        out = Outputs()
        prompts, leads, dead_letters, spans, lead_ends = (
            out.prompts,
            out.leads,
            out.dead_letters,
            out.spans,
            out.lead_ends,
        )
        handle_records, states, hot_topics = self.processor.handle_records, self.states, self.hot_topics
        decided: list[Decision] = []
        rejected: list[Rejected] = []
        dumps = orjson.dumps
        newest_ts = None
        for tp, records in batch.items():
            if not records:
                continue
            states.partition = tp.partition
            handle_records(records, hot_topics[tp.topic], decided, rejected)
            for d in decided:
                if d.prompt is not None:
                    prompts.append((d.account_id.encode(), dumps(d.prompt)))
                if d.lead is not None:
                    leads.append((d.account_id.encode(), dumps(d.lead)))
            decided.clear()
            for r, reason, message, exc in rejected:
                if exc is not None:
                    log.error("internal error on %s[%d]@%d", tp.topic, tp.partition, r.offset, exc_info=exc)
                source = {
                    "source_topic": tp.topic,
                    "source_partition": tp.partition,
                    "source_offset": r.offset,
                }
                raw = r.value if r.value is not None else b""
                dead_letters.append(DeadLetter(reason, message, raw, r.key, source))
            rejected.clear()
            ts = records[-1].timestamp
            newest_ts = ts if newest_ts is None or ts > newest_ts else newest_ts
            spans.append((tp.partition, len(prompts), len(dead_letters)))
            lead_ends.append(len(leads))
        out.newest_ts = newest_ts
        return out
