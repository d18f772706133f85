"""A broker restart mid-stream, in both processing guarantees, against a broker of the test's own
(deploy/kafka-local with its state in a temporary directory, on ports of its own): stopping the broker
every other test shares would disturb them, and on a shared machine other people's work too.

Every scenario ends with the exactness check of test_crash_rebalance.py (devkit/exactness.py); the
figures are printed and collected in RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.exactness import wait_committed
from devkit.kafka_io import produce, sim_records
from devkit.worker import KAFKA_LOCAL, ROOT, Worker
from tests.reliability.test_crash_rebalance import exact, with_malformed

pytestmark = [pytest.mark.kafka, pytest.mark.reliability, pytest.mark.timeout(600)]


class OwnBroker:
    """deploy/kafka-local with its state under `state`: the same script, its own data, ports and pid."""

    def __init__(self, state: Path) -> None:
        self.env = {**os.environ, "UPSELL_KAFKA_STATE": str(state), "UPSELL_KAFKA_HEAP": "512m"}
        self.bootstrap = ""

    def run(self, command: str) -> str:
        proc = subprocess.run(
            ["bash", str(KAFKA_LOCAL), command], env=self.env, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise AssertionError(f"kafka-local.sh {command} failed:\n{proc.stderr[-3000:]}")
        return proc.stdout

    def start(self) -> str:
        lines = [ln for ln in self.run("start").splitlines() if ln.startswith("KAFKA_BOOTSTRAP_SERVERS=")]
        return lines[-1].split("=", 1)[1]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    broker = OwnBroker(tmp_path_factory.mktemp("restart-kafka") / "state")
    try:
        broker.bootstrap = broker.start()
    except AssertionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    try:
        yield broker
    finally:
        broker.run("stop")


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_broker_restart_during_stream(own_broker: OwnBroker, tmp_path: Path, guarantee: str) -> None:
    """The broker stops while the worker works through a backlog and comes back on the same address:
    the worker reports the outage on /readyz; at least once it reconnects by itself; exactly once it
    reconnects too, or, when a transaction open across the outage failed (aborted by the restarted
    broker, or fenced), it exits and is restarted as its supervisor would. State, prompts and dead
    letters end exact, and with exactly_once a read_committed consumer gets every prompt and dead letter
    once."""
    bs = own_broker.bootstrap
    records = with_malformed(list(sim_records(60_000, 5_000, seed=103)), every=400)
    malformed = len(records) - 60_000
    # Small fetches: many batches (transactions) in the backlog, so the stop lands among them.
    env = {"UPSELL_PROCESSING_GUARANTEE": guarantee, "UPSELL_FETCH_PARTITION_BYTES": str(16 * 1024)}
    name = f"restart-{guarantee}-{int(time.time())}"
    workers: list[Worker] = []

    def worker() -> Worker:
        workers.append(Worker(bs, name, tmp_path, ROOT / "rules", None, env).start())
        return workers[-1]

    def exited(w: Worker) -> bool:
        return w.proc is not None and w.proc.poll() is not None

    async def supervised(w: Worker, timeout: float) -> Worker:
        """Until the group committed the whole input, restarting a worker that exited."""
        deadline = time.monotonic() + timeout
        while True:
            if exited(w):
                assert guarantee == "exactly_once", "at least once, the worker must survive the outage"
                w = worker()  # from the committed offsets
                await asyncio.to_thread(w.wait_ready, 180)
            try:
                await wait_committed(bs, name, w.topics["events"], timeout=5)
                return w
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    try:
        w = worker()
        await asyncio.to_thread(w.wait_ready, 120)
        first = records[: len(records) // 2]
        await produce(bs, w.topics["events"], first)
        consumed_before = 0.0
        deadline = time.monotonic() + 60
        while consumed_before < 2_000 and time.monotonic() < deadline:  # part of the backlog processed
            await asyncio.sleep(0.05)
            consumed_before = w.metric("upsell_events_consumed_total")
        assert 0 < consumed_before < len(first), "the broker must stop while the worker is behind"
        stopped = time.monotonic()
        await asyncio.to_thread(own_broker.run, "stop")
        try:
            deadline = time.monotonic() + 60
            not_ready = False
            while time.monotonic() < deadline and not not_ready:
                not_ready = exited(w) or w.get("/readyz")[0] == 503
                await asyncio.sleep(0.5)
            assert not_ready, "/readyz should report the lost broker"
            await asyncio.sleep(3)  # the outage lasts a few seconds more
        finally:
            assert await asyncio.to_thread(own_broker.start) == bs  # same address after the restart
            outage = time.monotonic() - stopped
        await produce(bs, w.topics["events"], records[len(first) :])
        w = await supervised(w, 240)
        await asyncio.to_thread(w.wait_ready, 60)
        read_committed = guarantee == "exactly_once"
        rep = await exact(bs, w, [v for _, v in records], read_committed=read_committed)
        print(
            f"[reliability] broker restart, {guarantee}: consumed before the stop={consumed_before:.0f} "
            f"outage={outage:.0f}s worker restarts={len(workers) - 1} malformed={malformed}"
        )
        assert rep.dead_letter_records >= malformed
        if read_committed:
            assert rep.duplicates_delivered == 0
            assert rep.dead_letter_records == malformed and rep.dead_letter_duplicates == 0
    finally:
        for w in workers:
            w.stop()
