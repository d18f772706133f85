"""Every metric the embedded runtime registers is written by a workload that exercises it: the runtime
runs as a subprocess on its own rules, then /metrics is scraped and a registered family without a
non-zero sample fails the test (a metric registered but never written is a promise the code does not
keep). The workload is tests/metricscheck.py's (prompts, feedback, leads, a conversion, a duplicate, a
stale reading, an invalid line, an erasure), run with a rule reload (SIGHUP), a store bound below its
accounts, and one account idle past the TTL. The Kafka worker's: tests/integration/test_metrics_written_kafka.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devkit.worker import free_port

from ..metricscheck import ACCOUNTS, scrape, workload, write_rules, written

BOUND = 25  # the store holds fewer accounts than the workload has


def test_every_registered_metric_is_written_by_the_embedded_runtime(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "rules")
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
