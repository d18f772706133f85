"""The latency benchmark's floor and gateway modes measure what the kafka mode measures: the floor's relay
produces a record for exactly the events the shipped rules prompt on in the benchmark's mix, and the
gateway mode streams only accounts whose prompts are measured, at most as many as asked."""

from __future__ import annotations

import io
import sys
import time
from itertools import pairwise
from pathlib import Path

import orjson

from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.replay import replay

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from latency import TRIGGER, gateway_accounts, mix  # noqa: E402
from relay import prompts  # noqa: E402


def test_the_relay_prompts_where_the_rules_do() -> None:
    base = int(time.time() * 1000) - 60_000
    events = [value for n in range(1, 3001) for _, _, value in mix(n, base)]
    out = io.BytesIO()
    replay(load_ruleset(ROOT / "rules"), io.BytesIO(b"\n".join(events) + b"\n"), out, io.StringIO())
    lines = out.getvalue().splitlines()
    by_rules = {orjson.loads(line)["trigger_event_id"] for line in lines}
    assert {m.group(1).decode() for line in lines if (m := TRIGGER.search(line))} == by_rules
    by_relay = {eid for value in events if (eid := prompts(value)) is not None}
    assert len(by_rules) == 300
    assert by_relay == by_rules
    measured = {m for n in range(1, 3001) for m, _, _ in mix(n, base) if m is not None}
    assert measured == by_rules


def test_the_gateway_streams_measured_accounts_only() -> None:
    every = gateway_accounts(1000, 15, 1.0, 2000)
    assert every == list(range(1010, 16000, 10))  # every prompting account after the warm-up's 1,000 events
    sample = gateway_accounts(10_000, 15, 1.0, 2000)
    assert 1800 < len(sample) <= 2000
    assert all(n % 10 == 0 and n > 10_000 for n in sample)
    assert len({b - a for a, b in pairwise(sample)}) == 1  # evenly spaced
    assert gateway_accounts(10_000, 0.0005, 1.0, 2000) == []
