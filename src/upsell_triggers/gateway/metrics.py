"""The gateway's Prometheus metrics. No account, user, prompt or token in any label; each is written by
the workload of tests/gateway/test_gateway_kafka.py::test_every_gateway_metric_is_written."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.streams = Gauge("upsell_gateway_streams", "Open push streams", registry=r)
        self.pending = Gauge("upsell_gateway_pending_prompts", "Prompts held as pending", registry=r)
        self.prompts = Counter(
            "upsell_gateway_prompts",
            "Prompt records read, by outcome (delivered, duplicate, expired, invalid)",
            ("outcome",),
            registry=r,
        )
        self.frames = Counter("upsell_gateway_frames_sent", "Prompt events written to streams", registry=r)
        self.feedback = Counter(
            "upsell_gateway_feedback",
            "Feedback requests, by action and result (produced, duplicate, unknown_prompt, invalid, "
            "rate_limited, failed)",
            ("action", "result"),
            registry=r,
        )
        self.auth_failures = Counter(
            "upsell_gateway_auth_failures", "Refused tokens, by reason", ("reason",), registry=r
        )
        self.lag = Gauge(
            "upsell_gateway_consumer_lag",
            "Records of the prompts and feedback topics not yet read by this gateway",
            registry=r,
        )
        self.ready = Gauge(
            "upsell_gateway_ready", "1 once pending prompts are rebuilt from the topic", registry=r
        )
        self.evicted = Gauge(
            "upsell_gateway_pending_evicted", "Pending prompts dropped by a bound before expiry", registry=r
        )
        self.delivery = Histogram(
            "upsell_gateway_publish_seconds",
            "From a prompt record read to its frames queued on every matching stream",
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1),
            registry=r,
        )
