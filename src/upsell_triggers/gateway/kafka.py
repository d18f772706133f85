"""The gateway's Kafka side: reads every partition of the prompts topic (and of the feedback topic, for
dismissals and feedback other replicas recorded) with its own group-less consumer, and produces
feedback events.

Why every partition and no consumer group: any replica can then serve any user, so browsers need no
sticky routing and a load balancer may send each request anywhere; replicas scale the number of open
streams, and each reads the whole prompt rate (bench/gateway_bench.py measures how many prompts per
second one replica takes in, against the rates the workers produce).

On start it reads each partition from the offset of (now - rebuild window) to the end offset it found
at start (prompts first, then feedback, so a dismissal finds its prompt), and only then reports ready;
then it follows both topics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from upsell_triggers.engine.engine import FEEDBACK_ACTIONS
from upsell_triggers.engine.events import Feedback, decode_event
from upsell_triggers.gateway.hub import Hub
from upsell_triggers.gateway.metrics import GatewayMetrics
from upsell_triggers.settings import Settings

log = logging.getLogger("upsell_triggers.gateway")


def client_options(s: Settings) -> dict[str, Any]:
    from upsell_triggers.runtime.kafka.auth import aiokafka_auth  # the broker-security mapping, once

    return {
        "bootstrap_servers": s.kafka_bootstrap_servers,
        "security_protocol": s.security_protocol,
        **aiokafka_auth(s),
    }


class KafkaFeedbackSink:
    def __init__(self, s: Settings) -> None:
        self.topic = s.topic_feedback
        self.producer = AIOKafkaProducer(**client_options(s), acks="all", linger_ms=1)

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def send(self, key: bytes, value: bytes) -> None:
        await self.producer.send_and_wait(self.topic, value, key=key)


class PromptFeed:
    def __init__(
        self,
        s: Settings,
        hub: Hub,
        metrics: GatewayMetrics,
        rebuild_window_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = s
        self.hub = hub
        self.metrics = metrics
        self.window_ms = rebuild_window_s * 1000
        self.clock = clock
        self.ready = False
        self.consumer = AIOKafkaConsumer(
            **client_options(s),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
            fetch_max_wait_ms=100,
            # Workers with UPSELL_PROCESSING_GUARANTEE=exactly_once write prompts in transactions: only
            # committed ones reach a browser. Without transactions on the topic it reads the same.
            isolation_level="read_committed",
        )

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions, waiting (with one log line) while it does not exist yet."""
        admin = AIOKafkaAdminClient(**client_options(self.s))
        await admin.start()
        try:
            waited = False
            while True:
                described = await admin.describe_topics([topic])
                parts = [p["partition"] for d in described for p in d.get("partitions") or ()]
                if parts:
                    return [TopicPartition(topic, p) for p in sorted(parts)]
                if not waited:
                    log.info("waiting for topic to exist", extra={"fields": {"topic": topic}})
                    waited = True
                await asyncio.sleep(1)
        finally:
            await admin.close()

    async def _seek_to_window(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Seeks to (now - window); returns the end offsets to read up to before being ready."""
        start_ms = max(0, int(self.clock() * 1000) - self.window_ms)
        found = await self.consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(tps)
        for tp in tps:
            ot = found.get(tp)
            self.consumer.seek(tp, ot.offset if ot is not None else ends[tp])
        return ends

    async def _read_until(self, ends: dict[TopicPartition, int]) -> None:
        left = {tp: end for tp, end in ends.items() if end > 0}
        while left:
            for tp in list(left):
                if await self.consumer.position(tp) >= left[tp]:
                    del left[tp]
            if left:
                self._apply(await self.consumer.getmany(*left, timeout_ms=200))

    async def run(self) -> None:
        t0 = time.monotonic()
        await self.consumer.start()
        try:
            prompts = await self._partitions(self.s.topic_prompts)
            self.consumer.assign(prompts)
            await self._read_until(await self._seek_to_window(prompts))
            positions = {tp: await self.consumer.position(tp) for tp in prompts}
            feedback = await self._partitions(self.s.topic_feedback)
            self.consumer.assign(prompts + feedback)
            for tp, pos in positions.items():
                self.consumer.seek(tp, pos)
            await self._read_until(await self._seek_to_window(feedback))
            self.ready = True
            self.metrics.ready.set(1)
            log.info(
                "gateway ready: pending prompts rebuilt",
                extra={"fields": {"pending": self.hub.total, "seconds": round(time.monotonic() - t0, 2)}},
            )
            tps = prompts + feedback
            next_lag = 0.0
            while True:
                self._apply(await self.consumer.getmany(timeout_ms=1000))
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + 1.0
                    await self._report_lag(tps)
        finally:
            self.ready = False
            self.metrics.ready.set(0)
            await self.consumer.stop()

    async def _report_lag(self, tps: list[TopicPartition]) -> None:
        lag = 0
        for tp in tps:
            hw = self.consumer.highwater(tp)
            if hw is not None:
                lag += max(0, hw - await self.consumer.position(tp))
        self.metrics.lag.set(lag)

    def _apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        prompts_topic = self.s.topic_prompts
        for tp, records in batch.items():
            if tp.topic == prompts_topic:
                for r in records:
                    t0 = time.perf_counter()
                    outcome = self.hub.publish_raw(r.value, seq=r.offset)
                    self.metrics.prompts.labels(outcome).inc()
                    if outcome == "delivered":
                        self.metrics.delivery.observe(time.perf_counter() - t0)
            else:
                for r in records:
                    ev = decode_event(r.value)
                    if isinstance(ev, Feedback) and ev.user_id:
                        self.hub.mark(ev.account_id, ev.user_id, ev.prompt_id, FEEDBACK_ACTIONS[ev.type])
