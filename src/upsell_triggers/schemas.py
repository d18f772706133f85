"""JSON Schemas (draft 2020-12) of everything the service reads and writes, generated from the models.

`upsell-triggers schema NAME` prints one; `upsell-triggers schema all -o schemas/` writes the shipped
files. tests/unit/test_schemas.py fails when a shipped file differs from what the models generate, and
validates real output against them. The compatibility policy is in docs/schemas.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, TypeAdapter

from upsell_triggers.deadletter import DeadLetter
from upsell_triggers.engine.events import (
    AccountDeletedEvent,
    AccountUpdatedEvent,
    FeedbackEvent,
    PaywallHitEvent,
    PlanChangedEvent,
    UsageEvent,
)
from upsell_triggers.engine.rulefile import rules_json_schema
from upsell_triggers.prompt_model import PromptEvent

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE_URL = "https://upsell-triggers.dev/schema/"

_UsageTopicEvent = Annotated[
    UsageEvent | PaywallHitEvent | PlanChangedEvent | AccountUpdatedEvent | AccountDeletedEvent,
    Field(discriminator="type"),
]


def _finish(schema: dict[str, Any], name: str, title: str, description: str) -> dict[str, Any]:
    out = {"$schema": DRAFT, "$id": f"{BASE_URL}{name}.schema.json", "title": title}
    out["description"] = description
    out.update((k, v) for k, v in schema.items() if k not in out)
    return out


def events_schema() -> dict[str, Any]:
    return _finish(
        TypeAdapter(_UsageTopicEvent).json_schema(),
        "events",
        "Usage event",
        "An event on the usage-events topic (or a line of an events file): usage, paywall_hit, "
        "plan_changed, account_updated or account_deleted, chosen by `type`. Unknown fields are ignored.",
    )


def feedback_schema() -> dict[str, Any]:
    return _finish(
        FeedbackEvent.model_json_schema(),
        "feedback",
        "Prompt feedback event",
        "An event on the prompt-feedback topic: a prompt was shown, clicked or dismissed. "
        "Unknown fields are ignored.",
    )


def prompts_schema() -> dict[str, Any]:
    model: type[BaseModel] = PromptEvent
    return _finish(
        model.model_json_schema(),
        "prompts",
        "Upgrade prompt",
        "A record on the upgrade-prompts topic (or a line of `run`/`replay` output). Consumers must "
        "ignore fields they do not know: a minor release may add optional ones.",
    )


def leads_schema() -> dict[str, Any]:
    from upsell_triggers.lead_model import LeadEvent

    return _finish(
        LeadEvent.model_json_schema(),
        "leads",
        "Expansion lead",
        "A record on the expansion-leads topic (or a line of `replay --leads FILE` / `run --leads FILE`): "
        "an account a sales or customer-success team should act on, with the evidence behind it. "
        "Consumers must ignore fields they do not know: a minor release may add optional ones.",
    )


def dead_letters_schema() -> dict[str, Any]:
    return _finish(
        DeadLetter.envelope_schema(),
        "dead-letters",
        "Dead letter (embedded runtime)",
        "A line of the embedded runtime's dead-letter output (`run --dlq FILE`, or stderr): a rejected "
        "input and why. The Kafka worker writes the original bytes to the dead-letter topic with the "
        "reason and error as headers instead.",
    )


def holdout_schema() -> dict[str, Any]:
    from upsell_triggers.report.holdout_model import HoldoutDecision

    return _finish(
        HoldoutDecision.model_json_schema(),
        "holdout",
        "Holdout decision",
        "A line of `replay --holdout FILE`: an account a rule would have prompted, held out instead "
        "(policy.holdout). `report --holdout FILE` reads these.",
    )


def rules_schema() -> dict[str, Any]:
    return rules_json_schema()


SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "events": events_schema,
    "feedback": feedback_schema,
    "prompts": prompts_schema,
    "leads": leads_schema,
    "dead-letters": dead_letters_schema,
    "holdout": holdout_schema,
    "rules": rules_schema,
}


def render(name: str) -> str:
    """The schema as the shipped file holds it (2-space indent, trailing newline)."""
    return json.dumps(SCHEMAS[name](), indent=2, ensure_ascii=False) + "\n"


def write_all(directory: str | Path) -> list[Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMAS:
        path = d / f"{name}.schema.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written
