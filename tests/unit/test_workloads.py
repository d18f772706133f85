"""The benchmark workloads send what the issue's producers send: the shares of timestamp formats, user
ids, resent events and feedback hold, every event is valid, and the near-limits mix prompts far more."""

from __future__ import annotations

import io
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from upsell_triggers.engine.events import InvalidEvent, decode_event
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.replay import replay

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from workloads import encode, generate  # noqa: E402

N, ACCOUNTS = 20_000, 2_000


@pytest.fixture(scope="module")
def docs() -> dict[str, list[bytes]]:
    return {w: encode(generate(w, N, ACCOUNTS)) for w in ("typical", "near-limits")}


@pytest.mark.parametrize("workload", ["typical", "near-limits"])
def test_the_mix_of_shapes(docs: dict[str, list[bytes]], workload: str) -> None:
    evs = [orjson.loads(d) for d in docs[workload]]
    assert len(evs) == N
    strings = [e["ts"] for e in evs if isinstance(e["ts"], str)]
    assert 0.55 < len(strings) / N < 0.65
    zones = Counter(s[-6:] if s[-6] in "+-" else s[-1] for s in strings)
    assert set(zones) == {"Z", "+00:00", "+05:30"} and min(zones.values()) > len(strings) / 4
    assert 0.45 < sum("user_id" in e for e in evs) / N < 0.55
    resent = Counter(docs[workload])
    assert 0.01 < sum(c - 1 for c in resent.values()) / N < 0.03
    types = Counter(e["type"] for e in evs)
    assert types["prompt_shown"] > 0 and types["prompt_clicked"] > 0 and types["prompt_dismissed"] > 0
    assert all(not isinstance(decode_event(d), InvalidEvent) for d in docs[workload])


def test_feedback_refers_to_prompts_the_rules_emit(docs: dict[str, list[bytes]]) -> None:
    rules = load_ruleset(ROOT / "rules")
    out = io.BytesIO()
    replay(rules, io.BytesIO(b"\n".join(docs["typical"]) + b"\n"), out, io.StringIO())
    emitted = {orjson.loads(p)["prompt_id"] for p in out.getvalue().splitlines()}
    shown = {e["prompt_id"] for e in map(orjson.loads, docs["typical"]) if e["type"] == "prompt_shown"}
    assert shown and len(shown & emitted) / len(shown) > 0.95


def test_near_limits_prompts_far_more_than_typical(docs: dict[str, list[bytes]]) -> None:
    rules = load_ruleset(ROOT / "rules")
    prompts = {}
    for w, d in docs.items():
        out = io.BytesIO()
        replay(rules, io.BytesIO(b"\n".join(d) + b"\n"), out, io.StringIO())
        prompts[w] = out.getvalue().count(b"\n")
    assert prompts["near-limits"] > 3 * prompts["typical"] > 0
