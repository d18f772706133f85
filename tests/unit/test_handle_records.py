"""Processor.handle_records, the worker's batch form of handle(): over the near-limits benchmark mix
with bad records, mismatched keys, events of the future and redelivered runs mixed in, it decides,
rejects, counts and leaves the account states exactly as handle() one record at a time does."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.statecodec import encode_state
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import EVENTS, FEEDBACK, HotTopic, Processor, RecordSource, Rejected

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from workloads import records as workload_records  # noqa: E402


def _kafka_records() -> list[SimpleNamespace]:
    recs = workload_records("near-limits", 6_000, 300)
    now = 4_102_444_800_000  # the records' clock (2100): no event is ahead of it but the last one
    out = []
    offset = 0
    for i, (key, value) in enumerate(recs):
        k: bytes | None = key
        if i % 500 == 7:
            value = b'{"event_id": "x", "account_id": '  # not JSON
        elif i % 500 == 11:
            k = b"someone-else"  # key_mismatch
        elif i % 500 == 13:
            k = None  # no key: applied by its account_id
        elif i % 500 == 17:
            value = None  # a tombstone on the events topic
        out.append(SimpleNamespace(key=k, value=value, offset=offset, timestamp=now))
        offset += 1
        if i % 700 == 699:  # a redelivered run (after a crash): offsets already applied
            for r in out[-5:]:
                out.append(SimpleNamespace(key=r.key, value=r.value, offset=r.offset, timestamp=now))
    # A record far ahead of the clock (ts_in_future) and a redelivery of it.
    future = SimpleNamespace(key=recs[0][0], value=recs[0][1], offset=offset, timestamp=0)
    return [*out, future, future]


def _tallies(m: Metrics) -> list[tuple[str, list[Any]]]:
    tallies = [m.events, m.invalid, m.duplicates, m.ignored, m.decisions, m.prompts, m.feedback]
    tallies += [m.conversions, m.leads, m.leads_suppressed, m.dlq, m.erased, m.redelivered]
    return [(t.name, sorted(t.values.items())) for t in tallies]


@pytest.mark.parametrize("topic", [EVENTS, FEEDBACK])
def test_handle_records_does_what_handle_does_record_by_record(topic: HotTopic) -> None:
    rules = load_ruleset(ROOT / "rules")
    records = _kafka_records()
    one, batch = Processor(rules, Metrics()), Processor(rules, Metrics())

    expected_prompts, expected_rejected = [], []
    for r in records:
        res = one.handle(
            r.value if r.value is not None else b"", r.key, r.timestamp, RecordSource(topic, r.offset)
        )
        if res.invalid is not None:
            expected_rejected.append((r.offset, res.invalid.reason, res.invalid.message))
        expected_prompts += [(d.rule_id, d.prompt, d.lead) for d in res.decisions]

    decided: list[Any] = []
    rejected: list[Rejected] = []
    for i in range(0, len(records), 997):  # runs of records, as a batch's partitions hand them over
        batch.handle_records(records[i : i + 997], topic, decided, rejected)
    assert [(d.rule_id, d.prompt, d.lead) for d in decided] == expected_prompts
    assert [(r.offset, reason, message) for r, reason, message, exc in rejected] == expected_rejected
    assert all(exc is None for *_, exc in rejected)
    assert expected_rejected and any(p is not None for _, p, _ in expected_prompts)
    assert _tallies(batch.metrics) == _tallies(one.metrics)
    assert batch.metrics.redelivered.values[()] > 0
    assert sorted((a, encode_state(s)) for a, s in batch.store.items()) == sorted(
        (a, encode_state(s)) for a, s in one.store.items()
    )


@pytest.mark.interpreted  # replaces an Engine method: compiled code calls it directly (conftest.py)
def test_a_record_that_raises_is_rejected_as_an_internal_error_and_the_run_goes_on() -> None:
    proc = Processor(load_ruleset(ROOT / "rules"), Metrics())
    records = _kafka_records()[:50]

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug")

    process = proc.engine.process
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return boom() if calls[0] == 3 else process(*args, **kwargs)

    proc.engine.process = flaky  # type: ignore[method-assign]
    decided: list[Any] = []
    rejected: list[Rejected] = []
    proc.handle_records(records, EVENTS, decided, rejected)
    internal = [(reason, message) for _, reason, message, exc in rejected if exc is not None]
    assert internal == [("internal_error", "ValueError: a bug")]
    assert proc.metrics.invalid.values[("internal_error",)] == 1
    assert calls[0] > 3  # the records after it were applied
