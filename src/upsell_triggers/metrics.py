"""Prometheus metrics (contract §5). Labels are rules, outcomes, reasons: never accounts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from upsell_triggers.engine.engine import EMITTED, Outcome


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "upsell_events_consumed_total", "Events consumed, by type", ["type"], registry=r
        )
        self.invalid = Counter(
            "upsell_invalid_events_total", "Events rejected to the DLQ, by reason", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "upsell_duplicate_events_total", "Events dropped as duplicate event_id", registry=r
        )
        self.ignored = Counter(
            "upsell_out_of_order_events_total",
            "Valid events that changed nothing: stale gauge readings, late counter increments",
            ["kind"],
            registry=r,
        )
        self.decisions = Counter(
            "upsell_decisions_total", "Rule decisions, by rule and outcome", ["rule", "outcome"], registry=r
        )
        self.prompts = Counter(
            "upsell_prompts_emitted_total",
            "Prompts emitted, by rule and placement",
            ["rule", "placement"],
            registry=r,
        )
        self.feedback = Counter(
            "upsell_feedback_total", "Prompt feedback, by rule and action", ["rule", "action"], registry=r
        )
        self.conversions = Counter(
            "upsell_conversions_total",
            "Upgrades attributed to a rule, by group (treatment/holdout)",
            ["rule", "group"],
            registry=r,
        )
        self.latency = Histogram(
            "upsell_event_to_prompt_latency_seconds",
            "From event receipt to prompt handed to the output",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.lag = Gauge(
            "upsell_event_time_lag_seconds", "Processing clock minus the newest event time seen", registry=r
        )
        self.rules_loaded = Gauge("upsell_rules_loaded", "Rules in the running rule set", registry=r)
        self.reloads = Counter("upsell_rule_reloads_total", "Rule reloads, by result", ["result"], registry=r)
        self.dlq = Counter(
            "upsell_dlq_records_total", "Records written to the dead letter output", registry=r
        )
        self.accounts = Gauge("upsell_accounts_in_memory", "Account states held by this process", registry=r)
        self.evictions = Counter(
            "upsell_account_evictions_total", "Account states evicted by TTL or bound", ["cause"], registry=r
        )
        self.ready = Gauge(
            "upsell_ready", "1 when partitions are assigned and state is recovered", registry=r
        )

    def record(self, etype: str, outcome: Outcome) -> None:
        self.events.labels(etype).inc()
        status = outcome.status
        if status == "duplicate":
            self.duplicates.inc()
        elif status in ("stale", "late"):
            self.ignored.labels(status).inc()
        for d in outcome.decisions:
            if d.outcome == "feedback":
                self.feedback.labels(d.rule_id, d.action).inc()
            elif d.outcome == "conversion":
                self.conversions.labels(d.rule_id, d.group).inc()
            else:
                self.decisions.labels(d.rule_id, d.outcome).inc()
                if d.outcome == EMITTED and d.prompt is not None:
                    self.prompts.labels(d.rule_id, d.prompt["placement"]).inc()

    def record_invalid(self, reason: str) -> None:
        self.invalid.labels(reason).inc()
        self.dlq.inc()
