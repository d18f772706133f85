"""Prometheus metrics (listed in docs/operations.md). Labels are rules, outcomes, reasons: never accounts.

A runtime registers only the metrics it writes: the Kafka runtime's batch, lag, changelog and
redelivery metrics are not served by the embedded runtime, nor the embedded store's evictions by the
Kafka runtime. tests/unit/test_metrics_written.py (embedded) and
tests/integration/test_metrics_written_kafka.py (Kafka worker) scrape each after a workload and fail on
a registered metric that nothing wrote.

The per-event counters are `Tally`s: plain dicts of ints read by a registered collector at scrape time,
so the hot path pays one dict update instead of prometheus-client's labels() lookup and lock per event
(about 1 µs, a fifth of the engine's per-event budget).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from upsell_triggers.engine.engine import EMITTED, Decision, Outcome
from upsell_triggers.engine.events import EVENT_TYPES

_TYPE_KEYS: Final = {t: (t,) for t in EVENT_TYPES}
RELOAD_RESULTS: Final = ("success", "rejected", "unchanged")  # runtime/reload.py's outcomes


class Tally:
    """A labelled counter as plain ints. Single-threaded writers (the event loop); scrapes copy."""

    __slots__ = ("doc", "labelnames", "name", "values")

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name, self.doc, self.labelnames = name, doc, labelnames
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str, n: int = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + n

    def family(self) -> CounterMetricFamily:
        fam = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, v in list(self.values.items()):
            fam.add_metric(list(labels), float(v))
        return fam


class _TallyCollector(Collector):
    def __init__(self, tallies: list[Tally]) -> None:
        self.tallies = tallies

    def collect(self) -> Iterator[Metric]:
        for t in self.tallies:
            yield t.family()


Runtime = Literal["kafka", "embedded"]


class Metrics:
    """All of the service's metrics as attributes; those of `runtime` (all if None) are registered."""

    def __init__(self, registry: CollectorRegistry | None = None, runtime: Runtime | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        kafka = r if runtime in (None, "kafka") else None  # the Kafka runtime's own metrics
        embedded = r if runtime in (None, "embedded") else None  # the embedded store's
        self.events = Tally("upsell_events_consumed", "Events consumed, by type", ("type",))
        self.invalid = Tally("upsell_invalid_events", "Events rejected to the DLQ, by reason", ("reason",))
        self.duplicates = Tally("upsell_duplicate_events", "Events dropped as duplicate event_id")
        self.ignored = Tally(
            "upsell_out_of_order_events",
            "Valid events that changed nothing: stale gauge readings, late counter increments",
            ("kind",),
        )
        self.decisions = Tally("upsell_decisions", "Rule decisions, by rule and outcome", ("rule", "outcome"))
        # `variant` is the copy variant of rules that have them, empty otherwise (PromQL: absent).
        self.prompts = Tally(
            "upsell_prompts_emitted",
            "Prompts emitted, by rule, copy variant and placement",
            ("rule", "variant", "placement"),
        )
        self.feedback = Tally(
            "upsell_feedback",
            "Prompt feedback, by rule, copy variant and action",
            ("rule", "variant", "action"),
        )
        self.conversions = Tally(
            "upsell_conversions",
            "Upgrades attributed to a rule, by copy variant and group (treatment/holdout)",
            ("rule", "variant", "group"),
        )
        # Leads (docs/leads.md): per rule, team and band (reserved for a score: empty), never per account.
        self.leads = Tally(
            "upsell_leads_emitted",
            "Expansion leads emitted, by rule, team and band",
            ("rule", "team", "band"),
        )
        self.leads_suppressed = Tally(
            "upsell_leads_suppressed",
            "Lead rule decisions that sent no lead, by rule, team and reason (the suppression words)",
            ("rule", "team", "reason"),
        )
        self.lead_conversions = Tally(
            "upsell_lead_conversions",
            "Upgrades within the attribution window after a lead, by rule, team and the lead's band",
            ("rule", "team", "band"),
        )
        self.dlq = Tally("upsell_dlq_records", "Records written to the dead letter output")
        self.erased = Tally(
            "upsell_erased_account_events",
            "Events of a deleted account (account_deleted) dropped because their time is not after the "
            "deletion's: in flight when it was deleted",
        )
        self.redelivered = Tally(
            "upsell_redelivered_events",
            "Kafka records skipped because their account had already applied that offset (redelivery "
            "after a crash or rebalance: at-least-once delivery made exact)",
        )
        self.restored = Tally(
            "upsell_state_restored_records",
            "Changelog records applied to the account-state store while recovering (start, rebalance)",
        )
        tallies = [
            self.events,
            self.invalid,
            self.duplicates,
            self.ignored,
            self.decisions,
            self.prompts,
            self.feedback,
            self.conversions,
            self.leads,
            self.leads_suppressed,
            self.lead_conversions,
            self.dlq,
            self.erased,
        ]
        r.register(_TallyCollector(tallies + ([self.redelivered, self.restored] if kafka else [])))
        self.latency = Histogram(
            "upsell_event_to_prompt_latency_seconds",
            "From event receipt to prompt handed to the output",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.batch_records = Histogram(
            "upsell_batch_records",
            "Records handed to the handler per batch (Kafka runtime); batches at UPSELL_MAX_BATCH_RECORDS "
            "mean the worker is working off a backlog",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000),
            registry=kafka,
        )
        self.lag = Gauge(
            "upsell_event_time_lag_seconds",
            "Processing clock minus the newest event time seen",
            registry=kafka,
        )
        self.consumer_lag = Gauge(
            "upsell_consumer_lag_records",
            "Records behind the partition's high watermark after the last batch (Kafka runtime)",
            ["topic", "partition"],
            registry=kafka,
        )
        self.stalled_partitions = Gauge(
            "upsell_stalled_partitions",
            "Partitions the stall watchdog finds stuck: records waiting and none consumed (input topics), "
            "or none read by a recovery (changelog), for UPSELL_STALL_S while the broker answers "
            "(Kafka runtime)",
            ["topic"],
            registry=kafka,
        )
        self.rules_loaded = Gauge("upsell_rules_loaded", "Rules in the running rule set", registry=r)
        self.reloads = Counter("upsell_rule_reloads_total", "Rule reloads, by result", ["result"], registry=r)
        # Every result from 0 at start: a series that first appears at 1 has no increase() to Prometheus,
        # so the first rejected reload after a restart would not fire UpsellRuleReloadRejected.
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)
        self.accounts = Gauge("upsell_accounts_in_memory", "Account states held by this process", registry=r)
        self.unwritten_accounts = Gauge(
            "upsell_state_unwritten_accounts",
            "Accounts changed since their state was last written to the changelog (Kafka runtime)",
            registry=kafka,
        )
        self.decoded_accounts = Gauge(
            "upsell_state_decoded_accounts",
            "Account states held decoded, unwritten ones included; the others are held as bytes until their "
            "next event (UPSELL_STATE_IDLE_S, UPSELL_STATE_CACHE_ACCOUNTS) (Kafka runtime)",
            registry=kafka,
        )
        self.decoded_accounts_bound = Gauge(
            "upsell_state_decoded_accounts_bound",
            "The account states a worker holds decoded at most once written: UPSELL_STATE_CACHE_ACCOUNTS, "
            "or with auto the bound the running rules call for (Kafka runtime)",
            registry=kafka,
        )
        self.expired = Counter(
            "upsell_accounts_expired_total",
            "Account states removed, with a changelog tombstone, because their newest event is older than "
            "UPSELL_STATE_RETENTION_DAYS before their partition's newest, or because they are the marker "
            "of an account deleted UPSELL_ERASURE_HOLD_DAYS before it (Kafka runtime)",
            registry=kafka,
        )
        self.evictions = Counter(
            "upsell_account_evictions_total",
            "Account states dropped by the embedded store: idle past its TTL (ttl) or at its bound (bound)",
            ["cause"],
            registry=embedded,
        )
        self.ready = Gauge(
            "upsell_ready", "1 when partitions are assigned and state is recovered", registry=r
        )

    def count_events(self, types: Iterable[str]) -> None:
        """Events applied that decided nothing, by type: what record() counts of them, once per batch
        (Processor.handle_records) instead of a call per event."""
        counts = self.events.values
        for etype, n in collections.Counter(types).items():
            key = _TYPE_KEYS.get(etype) or (etype,)
            counts[key] = counts.get(key, 0) + n

    def record(self, etype: str, outcome: Outcome) -> None:
        counts, key = self.events.values, _TYPE_KEYS.get(etype) or (etype,)  # no *args per event
        counts[key] = counts.get(key, 0) + 1
        status = outcome.status
        if status == "applied":
            pass
        elif status == "duplicate":
            self.duplicates.inc()
        elif status in ("stale", "late"):
            self.ignored.inc(status)
        elif status == "erased":
            self.erased.inc()
        # The tallies most decisions touch are updated here rather than through Tally.inc: near the
        # limits a third of the events decide something, and the call (its *labels tuple and keyword)
        # cost as much as the update.
        tally: dict[tuple[str, ...], int]
        labels: tuple[str, ...]
        for d in outcome.decisions:
            if d.outcome == "feedback":
                tally, labels = self.feedback.values, (d.rule_id, d.variant or "", d.action or "")
            elif d.outcome == "conversion":
                if d.channel == "lead":
                    self.lead_conversions.inc(d.rule_id, d.team or "", d.band or "")
                else:
                    self.conversions.inc(d.rule_id, d.variant or "", d.group or "")
                continue
            else:
                tally, labels = self.decisions.values, (d.rule_id, d.outcome)
                if d.outcome == EMITTED and d.prompt is not None:
                    prompts, by = self.prompts.values, (d.rule_id, d.variant or "", d.prompt["placement"])
                    prompts[by] = prompts.get(by, 0) + 1
                if d.team is not None:  # a lead rule's decision
                    self._lead_decision(d)
            tally[labels] = tally.get(labels, 0) + 1

    def _lead_decision(self, d: Decision) -> None:
        if d.lead is not None:
            self.leads.inc(d.rule_id, d.team or "", d.band or "")
        elif d.outcome != EMITTED and d.channel != "prompt":  # a capped prompt channel is the prompt's
            self.leads_suppressed.inc(d.rule_id, d.team or "", d.outcome)

    def count_evictions(self, cause: str, n: int) -> None:
        self.evictions.labels(cause).inc(n)

    def record_invalid(self, reason: str) -> None:
        self.invalid.inc(reason)
        self.dlq.inc()
