"""`report --kafka` reads the service's topics and reports what `report` reports from the same run's
files."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from devkit.funnel_sim import Rates, funnel_events
from devkit.kafka_io import produce
from tests.conftest import _TEST_TOPIC_PREFIXES
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.runtime.kafka.topics import ensure_topics
from upsell_triggers.settings import Settings

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


def test_report_from_topics_equals_report_from_files(kafka_bootstrap: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    policy = rules / "policy.yaml"
    policy.write_text(policy.read_text().replace("fraction: 0.0 ", "fraction: 0.2 "))
    events = [
        orjson.dumps(ev)
        for ev in funnel_events(load_ruleset(rules), 300, 12_000, Rates(upgrade_treatment=0.3), seed=4)
    ]
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(events) + b"\n")
    run = [sys.executable, "-m", "upsell_triggers"]
    replayed = subprocess.run(
        [*run, "replay", str(tmp_path / "events.jsonl"), "--rules", str(rules)],
        capture_output=True,
        check=True,
    )
    prompts = replayed.stdout.splitlines()
    assert prompts
    (tmp_path / "prompts.jsonl").write_bytes(replayed.stdout)
    files = subprocess.run(
        [*run, "report", str(tmp_path / "events.jsonl"), "--prompts", str(tmp_path / "prompts.jsonl"), "--rules", str(rules)],
        capture_output=True, check=True,
    )  # fmt: skip

    prefix = f"rep{uuid.uuid4().hex[:8]}-"
    _TEST_TOPIC_PREFIXES.add(prefix)
    topics = {
        "events": f"{prefix}usage-events",
        "feedback": f"{prefix}prompt-feedback",
        "prompts": f"{prefix}upgrade-prompts",
    }

    def key(line: bytes) -> bytes:
        return orjson.loads(line)["account_id"].encode()

    usage = [(key(e), e) for e in events if b'"prompt_' not in e]
    feedback = [(key(e), e) for e in events if b'"prompt_' in e]

    async def load() -> None:
        await ensure_topics(
            Settings(
                kafka_bootstrap_servers=kafka_bootstrap,
                topic_events=topics["events"],
                topic_feedback=topics["feedback"],
                topic_prompts=topics["prompts"],
                topic_dlq=f"{prefix}dlq",
                topic_partitions=3,
            )
        )
        await produce(kafka_bootstrap, topics["events"], usage)
        await produce(kafka_bootstrap, topics["feedback"], feedback)
        await produce(kafka_bootstrap, topics["prompts"], [(key(p), p) for p in prompts])

    asyncio.run(load())
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "UPSELL_TOPIC_EVENTS": topics["events"],
        "UPSELL_TOPIC_FEEDBACK": topics["feedback"],
        "UPSELL_TOPIC_PROMPTS": topics["prompts"],
    }
    kafka = subprocess.run(
        [*run, "report", "--kafka", "--rules", str(rules)], capture_output=True, env=env, timeout=120
    )
    assert kafka.returncode == 0, kafka.stderr.decode()
    assert f"read {len(prompts):,} prompts" in kafka.stderr.decode()
    body = kafka.stdout.decode().split("\n", 1)[1]
    assert body == files.stdout.decode().split("\n", 1)[1]
    assert "holdout    -" in body  # the holdout was found from the events topic
