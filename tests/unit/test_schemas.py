"""The shipped JSON Schemas: up to date with the models, valid draft 2020-12, and true of real output
(`replay` prompts, simulator events) and of what the decoder accepts and rejects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import jsonschema
import orjson
import pytest

from upsell_triggers import schemas
from upsell_triggers.deadletter import DeadLetter
from upsell_triggers.engine import prompts as engine_prompts
from upsell_triggers.engine.events import InvalidEvent, decode_event, validate_event
from upsell_triggers.engine.rulefile import PLACEMENTS
from upsell_triggers.prompt_model import PROMPT_SCHEMA_VERSION, PromptEvent
from upsell_triggers.simulate import Simulator

from ..schemacheck import SCHEMAS, assert_valid_prompts, errors
from .helpers import RULES, SHIPPED_RULES, T0

FIX = "regenerate with: upsell-triggers schema all -o schemas && upsell-triggers rules schema -o rules/rules.schema.json"


@pytest.mark.parametrize("name", sorted(schemas.SCHEMAS))
def test_shipped_schema_is_what_the_models_generate(name: str):
    shipped = (SCHEMAS / f"{name}.schema.json").read_text()
    assert shipped == schemas.render(name), FIX
    doc = json.loads(shipped)
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_rules_directory_carries_the_same_rules_schema_for_editors():
    assert (SHIPPED_RULES / "rules.schema.json").read_text() == schemas.render("rules"), FIX


def test_prompt_model_agrees_with_the_engine():
    assert PROMPT_SCHEMA_VERSION == engine_prompts.SCHEMA_VERSION
    assert get_args(PromptEvent.model_fields["schema_version"].annotation) == (PROMPT_SCHEMA_VERSION,)
    assert get_args(PromptEvent.model_fields["placement"].annotation) == PLACEMENTS


def test_schema_command_prints_each_schema_and_rules_schema_stays_an_alias(tmp_path: Path):
    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "upsell_triggers", *args], capture_output=True, check=True, text=True
        ).stdout

    for name in schemas.SCHEMAS:
        assert cli("schema", name) == schemas.render(name)
    assert cli("rules", "schema") == schemas.render("rules")
    cli("schema", "all", "-o", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.schema.json" for n in schemas.SCHEMAS)


def _sim_events(n: int, accounts: int) -> list[dict[str, Any]]:
    return list(Simulator(accounts=accounts, seed=5).events(n))


def test_replay_output_is_valid_against_the_prompt_schema(tmp_path: Path):
    events = _sim_events(30_000, 400)
    f = tmp_path / "events.jsonl"
    f.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    p = subprocess.run(
        [sys.executable, "-m", "upsell_triggers", "replay", str(f), "--rules", str(RULES)],
        capture_output=True,
        check=True,
    )
    prompts = [orjson.loads(line) for line in p.stdout.splitlines()]
    assert_valid_prompts(prompts)
    # The workload covers the shapes: paywall (feature set), usage (limit), several placements.
    assert any(x["feature"] for x in prompts) and any(x["limit"] is not None for x in prompts)
    assert len({x["placement"] for x in prompts}) >= 2 and len({x["rule_id"] for x in prompts}) >= 3


def test_simulated_events_are_valid_input_events():
    for ev in _sim_events(5_000, 100):
        assert not errors("events", ev), (errors("events", ev), ev)


GOOD_EVENTS = [
    {"type": "usage", "metric": "seats", "value": 4},
    {"type": "usage", "metric": "api_calls", "delta": 120, "user_id": "u-1"},
    {"type": "usage", "metric": "api_calls", "delta": -3.5},
    {"type": "usage", "metric": "seats", "value": 4, "delta": None},
    {"type": "usage", "metric": "seats", "value": 4, "ts": "2026-11-22T10:00:00Z"},
    {"type": "usage", "metric": "seats", "value": 4, "ts": "2026-11-22T11:00:00+01:00"},
    {"type": "paywall_hit", "feature": "sso"},
    {"type": "plan_changed", "plan": "team"},
    {"type": "plan_changed", "plan": "team", "period_start": T0, "limits": {"seats": 50, "api_calls": None}},
    {"type": "usage", "metric": "seats", "value": 4, "something_new": [1, 2]},  # unknown fields are ignored
]
BAD_EVENTS = [
    {"type": "usage", "metric": "seats"},
    {"type": "usage", "metric": "seats", "value": 4, "delta": 1},
    {"type": "usage", "metric": "seats", "value": -1},
    {"type": "usage", "metric": "seats", "value": "4"},
    {"type": "usage", "metric": "seats", "value": 4, "ts": T0 // 1000},  # seconds, not milliseconds
    {"type": "usage", "metric": "", "value": 4},
    {"type": "usage", "metric": "seats", "value": 4, "event_id": ""},
    {"type": "paywall_hit"},
    {"type": "plan_changed", "plan": "team", "limits": {"seats": -5}},
    {"type": "teleport"},
]


def _event(fields: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": "e1", "account_id": "acme", "ts": T0, **fields}


@pytest.mark.parametrize("fields", GOOD_EVENTS)
def test_schema_accepts_what_the_service_accepts(fields: dict[str, Any]):
    ev = _event(fields)
    assert not isinstance(validate_event(ev), InvalidEvent)
    assert not errors("events", ev)


@pytest.mark.parametrize("fields", BAD_EVENTS)
def test_schema_rejects_what_the_service_rejects(fields: dict[str, Any]):
    ev = _event(fields)
    assert isinstance(validate_event(ev), InvalidEvent)
    assert errors("events", ev)


@pytest.mark.parametrize("action", ["prompt_shown", "prompt_clicked", "prompt_dismissed"])
def test_feedback_schema(action: str):
    ev = _event({"type": action, "prompt_id": "pr_0123456789abcdef01234567"})
    assert not isinstance(validate_event(ev), InvalidEvent) and not errors("feedback", ev)
    no_id = _event({"type": action})
    assert isinstance(validate_event(no_id), InvalidEvent) and errors("feedback", no_id)
    assert errors("events", ev), "feedback belongs on the feedback topic's schema, not the usage events'"


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1]", b'{"event_id": "e", "account_id": "a", "ts": 1, "type": "usage"}', b"\xff\xfe{"],
)
def test_dead_letters_match_their_schema(raw: bytes):
    """The envelope the embedded runtime writes (deadletter.DeadLetter.envelope), for text and non-UTF-8
    input."""
    invalid = decode_event(raw)
    assert isinstance(invalid, InvalidEvent)
    letter = DeadLetter.of(raw, invalid, {"source": "events.jsonl", "line": 3})
    record = orjson.loads(orjson.dumps(letter.envelope()))
    assert not errors("dead-letters", record), errors("dead-letters", record)
    both = {**record, "original": "x", "original_b64": "eA=="}
    neither = {k: v for k, v in record.items() if k not in ("original", "original_b64")}
    assert errors("dead-letters", both) and errors("dead-letters", neither)  # exactly one original
