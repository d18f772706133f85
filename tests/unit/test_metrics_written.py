"""Every metric the embedded runtime registers is written by a workload that exercises it: the runtime
runs as a subprocess on its own rules, then /metrics is scraped and a registered family without a
non-zero sample fails the test (a metric registered but never written is a promise the code does not
keep). The workload: prompts and their feedback, leads (one held back by its cooldown), a conversion, a
duplicate, a stale reading, an invalid line, an account deleted with an event of it in flight, a rule
reload (SIGHUP), accounts beyond the store's bound, and one account idle past the TTL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from devkit.worker import free_port
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
BOUND = 25  # the store holds fewer accounts than the workload has


def workload(rules_dir: Path) -> list[bytes]:
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
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return {f.name: f for f in text_string_to_metric_families(r.read().decode())}


def written(family: Any) -> bool:
    if family.type == "histogram":
        return any(s.name.endswith("_count") and s.value > 0 for s in family.samples)
    return any(s.value != 0 for s in family.samples)


def test_every_registered_metric_is_written_by_the_embedded_runtime(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name, text in RULES.items():
        (rules / name).write_text(text)
    lines = workload(rules)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    port = free_port()
    env = {
        **os.environ,
        "UPSELL_RULES_DIR": str(rules),
        "UPSELL_HTTP_PORT": str(port),
        "UPSELL_WATCH_RULES": "false",
        "UPSELL_EMBEDDED_MAX_ACCOUNTS": str(BOUND),
        "UPSELL_EMBEDDED_ACCOUNT_TTL_DAYS": "90",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    cmd = [sys.executable, "-m", "upsell_triggers", "run", "--embedded", "--input", str(events)]
    cmd += ["--output", str(tmp_path / "prompts.jsonl"), "--dlq", str(tmp_path / "dlq.jsonl")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        families: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            try:
                families = scrape(port)
            except OSError:
                time.sleep(0.2)
                continue
            consumed = families["upsell_events_consumed"].samples
            if sum(s.value for s in consumed) + 1 >= len(lines):  # all but the invalid line
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGHUP)  # a rule reload
        time.sleep(2.5)  # the TTL step runs every second
        families = scrape(port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    never = sorted(name for name, f in families.items() if not written(f))
    assert never == [], f"registered but never written: {never}"
    evictions = {s.labels["cause"]: s.value for s in families["upsell_account_evictions"].samples}
    assert evictions.get("bound", 0) >= ACCOUNTS - BOUND and evictions.get("ttl", 0) >= 1, evictions
    assert families["upsell_accounts_in_memory"].samples[0].value < BOUND
