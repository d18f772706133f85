"""Per-batch timings: one JSON line per batch with its phases, group events and collector pauses."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import orjson

from upsell_triggers.runtime.batch_timings import BatchTimings, open_timings


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_off_without_a_file() -> None:
    assert open_timings(None) is None
    assert open_timings("") is None


def test_a_batch_is_one_line_with_its_phases_in_order_written(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    timings = BatchTimings(str(path))
    try:
        before = time.time()
        timings.start()
        time.sleep(0.02)
        timings.lap("fetch")
        timings.note(records=3, lag=0)
        timings.lap("apply")
        timings.lap("apply")  # a phase lapped twice adds up
        timings.end()
        timings.start()  # a fetch that handled no records is not a batch
        timings.lap("fetch")
        timings.end()
        timings.event("assigned", generation=2, partitions=4)
    finally:
        timings.close()
    batch, assigned = lines(path)
    assert before <= batch["t"] <= assigned["t"]
    assert batch["records"] == 3 and batch["lag"] == 0
    assert batch["fetch_ms"] >= 20 and batch["apply_ms"] >= 0
    # Asleep in the fetch lap: its wall time, not its CPU time.
    assert 0 <= batch["fetch_cpu_ms"] < 10 <= batch["fetch_ms"] - batch["fetch_cpu_ms"]
    assert batch["apply_cpu_ms"] >= 0
    assert assigned == {"t": assigned["t"], "event": "assigned", "generation": 2, "partitions": 4}


def test_full_collections_are_written_as_pauses(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    timings = BatchTimings(str(path))
    try:
        gc.collect()
    finally:
        timings.close()
    pauses = [r for r in lines(path) if r.get("event") == "gc"]
    assert any(r["generation"] == 2 and r["ms"] >= 0 and r["cpu_ms"] >= 0 for r in pauses)
    assert timings._on_gc not in gc.callbacks  # closed: the collector no longer calls it


def test_a_retried_request_is_an_event_and_counts_in_the_batch_under_way(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    timings = BatchTimings(str(path))
    try:
        timings.on_retry("AddPartitionsToTxn", "ConcurrentTransactions", 0.002)  # between batches
        timings.start()
        timings.on_retry("Produce", "NotEnoughReplicasError", 0.1)
        timings.on_retry("Produce", "NotEnoughReplicasError", 0.1)
        timings.note(records=5)
        timings.end()
    finally:
        timings.close()
    first, second, third, batch = lines(path)
    assert first["event"] == "retry" and first["request"] == "AddPartitionsToTxn"
    assert first["error"] == "ConcurrentTransactions" and first["backoff_ms"] == 2.0
    assert second["request"] == third["request"] == "Produce" and second["backoff_ms"] == 100.0
    assert batch["records"] == 5 and batch["retries"] == 2 and batch["retry_wait_ms"] == 200.0
