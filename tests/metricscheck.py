"""Whether a process writes every metric it registers, shared by the embedded runtime's test
(tests/unit/test_metrics_written.py) and the Kafka worker's (tests/integration/test_metrics_written_kafka.py).

A registered family is written when one of its samples is non-zero (a histogram: one observation). A
gauge that is zero when idle (consumer lag, unwritten states) is written while the process works: the
Kafka test scrapes throughout its workload and keeps what any scrape saw written (`Scrapes`).

The workload both runtimes start from: prompts and their feedback, leads (one held back by its cooldown),
a conversion, a duplicate, a stale reading, an invalid line, an account deleted with an event of it in
flight, and one account 299 days newer than the others (the TTL of the embedded store, the retention of
the Kafka worker's)."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.timeutil import DAY, HOUR
from upsell_triggers.processor import Processor

RULES = {
    "plans.yaml": """version: 1
plans:
  - {id: free, name: Free, limits: {seats: 5}, features: []}
  - {id: team, name: Team, limits: {seats: 25}, features: []}
""",
    "rules.yaml": """version: 1
traits:
  segment: {type: string, values: [self_serve, high_touch]}
groups:
  - id: leads
    rules:
      - id: seats-lead
        when: {metric: seats, ratio: 0.8}
        rearm: 0.7
        cooldown: 7d
        action: lead
        team: sales
        audience: {traits: [{trait: segment, in: [high_touch]}]}
  - id: seats
    defaults: {audience: [free], target_plan: next}
    rules:
      - id: seats-80
        when: {metric: seats, ratio: 0.8}
        rearm: 0.7
        cooldown: 7d
        placement: banner
        priority: 50
        prompt:
          title: "{value} of {limit} seats"
          body: "More room on {target_plan_name}."
          cta: {label: "Upgrade", url: "/billing/upgrade?plan={target_plan}"}
""",
    "policy.yaml": """version: 1
policy:
  default_plan: free
  frequency_cap: {max_prompts: 1, per: 24h}
  holdout: {fraction: 0.0, salt: s}
  attribution_window: 14d
  prompt_expiry: 7d
""",
}
ACCOUNTS = 40


def write_rules(rules_dir: Path) -> Path:
    rules_dir.mkdir()
    for name, text in RULES.items():
        (rules_dir / name).write_text(text)
    return rules_dir


def workload(rules_dir: Path) -> list[bytes]:
    """The events, as the lines of a JSONL file (the Kafka test keys and routes them by account and type)."""
    now = int(time.time() * 1000)
    base = now - 300 * DAY
    lines: list[bytes] = []
    replay = Processor(load_ruleset(rules_dir))  # to learn the prompt ids the runtime will emit

    def send(account: str, at: int, event_id: str | None = None, **fields: Any) -> list[Any]:
        ev = {"event_id": event_id or f"e{len(lines)}", "account_id": account, "ts": at, **fields}
        lines.append(orjson.dumps(ev))
        return [d.prompt for d in replay.handle(lines[-1]).decisions if d.prompt is not None]

    for i in range(ACCOUNTS):
        a = f"acct-{i:03d}"
        prompts = send(a, base, type="usage", metric="seats", value=4, event_id=f"seats-{a}")
        assert prompts, "the workload's rules emit a prompt for 4 of 5 seats"
        send(a, base, type="usage", metric="seats", value=4, event_id=f"seats-{a}")  # duplicate
        send(a, base - HOUR, type="usage", metric="seats", value=2)  # stale: older than the last reading
        send(a, base + HOUR, type="prompt_clicked", prompt_id=prompts[0]["prompt_id"])
        if i == 0:  # a high-touch account: a lead, a lead held back by its cooldown, a lead conversion
            send(a, base + 2 * HOUR, type="account_updated", traits={"segment": "high_touch"})
            send(a, base + 2 * HOUR, type="usage", metric="seats", value=3)
            send(a, base + 3 * HOUR, type="usage", metric="seats", value=4)
            send(a, base + 4 * HOUR, type="usage", metric="seats", value=3)
            send(a, base + 5 * HOUR, type="usage", metric="seats", value=4)
        send(a, base + 3 * DAY, type="plan_changed", plan="team")  # conversion
    send("acct-000", base + 4 * DAY, type="account_deleted")  # erasure ...
    send("acct-000", base + 4 * DAY - HOUR, type="usage", metric="seats", value=1)  # ... and one in flight
    lines.append(b"not json")
    send("acct-recent", now - DAY, type="usage", metric="seats", value=1)  # the others are 299 days older
    return lines


def scrape(port: int) -> dict[str, Any]:
    """The families on /metrics of the process serving `port`, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return {f.name: f for f in text_string_to_metric_families(r.read().decode())}


def written(family: Any) -> bool:
    if family.type == "histogram":
        return any(s.name.endswith("_count") and s.value > 0 for s in family.samples)
    return any(s.value != 0 for s in family.samples)


class Scrapes:
    """Scrapes a process's /metrics every `interval` seconds in a thread, until stopped: the names of the
    families it registers and of those any scrape saw written."""

    def __init__(self, port: int, interval: float = 0.05) -> None:
        self.port, self.interval = port, interval
        self.registered: set[str] = set()
        self.written: set[str] = set()
        self.last: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scrapes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def once(self) -> None:
        """One scrape (the process may be down or restarting: then nothing is learned)."""
        try:
            families = scrape(self.port)
        except OSError:
            return
        self.last = families
        self.registered |= families.keys()
        self.written |= {name for name, f in families.items() if written(f)}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.once()
            self._stop.wait(self.interval)

    def never_written(self) -> list[str]:
        return sorted(self.registered - self.written)

    def wait_written(self, names: set[str], timeout: float) -> bool:
        """Polls until every one of `names` was seen written, or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if names <= self.written:
                return True
            time.sleep(0.1)
        return names <= self.written
