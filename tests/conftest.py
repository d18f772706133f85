"""Shared fixtures. The real-broker ones (integration and reliability tests): KAFKA_BOOTSTRAP_SERVERS
wins; otherwise the session starts deploy/kafka-local. Under CI (CI=true) a broker that does not come up
fails the run with its log tail: never a silent skip.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.kafka_io import delete_topics
from devkit.worker import ROOT, Worker, start_local_kafka


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `interpreted` replace a method of a class that the build compiles (the engine's):
    compiled code calls its own methods directly, so the replacement would not be seen. With the
    compiled modules imported they are skipped; scripts/test.sh runs them again with UPSELL_NATIVE=0."""
    from upsell_triggers import native

    if native.mode() != "native":
        return
    skip = pytest.mark.skip(
        reason="replaces a compiled method: run with UPSELL_NATIVE=0 (scripts/test.sh does)"
    )
    for item in items:
        if "interpreted" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env
    t0 = time.monotonic()
    code, bs, err = start_local_kafka()
    if code != 0 or not bs:
        msg = f"local Kafka broker did not start (exit {code}):\n{err[-4000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    sys.stderr.write(f"\n[kafka] {err.strip()}\n[kafka] broker ready in {time.monotonic() - t0:.1f}s\n")
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bs
    return bs


@pytest.fixture
def worker_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[object]:
    workers: list[Worker] = []
    rules = ROOT / "rules"

    def make(
        name: str | None = None,
        rules_dir: Path = rules,
        app_id: str | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> Worker:
        w = Worker(
            kafka_bootstrap, name or f"t{uuid.uuid4().hex[:8]}", tmp_path, rules_dir, app_id, extra_env
        )
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()
        _TEST_TOPIC_PREFIXES.update((f"{w.name}-", f"{w.env['UPSELL_APP_ID']}-"))


# Topic prefixes of every worker the session ran; deleted when the session ends. Not per test: deleting
# topics keeps the broker busy for seconds, and the test after a per-test deletion failed twice in CI
# (a two-worker takeover left two partitions unconsumed), never without it.
_TEST_TOPIC_PREFIXES: set[str] = set()


@pytest.fixture(scope="session", autouse=True)
def _delete_test_topics_at_end() -> Iterator[None]:
    yield
    bs = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bs or not _TEST_TOPIC_PREFIXES or os.environ.get("UPSELL_TEST_KEEP_TOPICS"):
        return  # kept on request: to diagnose a failed run (python -m devkit.diagnose)
    try:
        n = asyncio.run(delete_topics(bs, sorted(_TEST_TOPIC_PREFIXES)))
        sys.stderr.write(f"\n[kafka] deleted {n} topics created by this session\n")
    except Exception as exc:  # housekeeping: never fail the run on it
        sys.stderr.write(f"\n[kafka] could not delete this session's topics: {exc!r}\n")


@pytest.fixture(scope="session")
def rules_dir() -> Path:
    return ROOT / "rules"
