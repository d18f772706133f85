"""Validation of real output against the shipped JSON Schemas, shared by unit and integration tests."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from upsell_triggers.prompt_model import PromptEvent

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def errors(name: str, doc: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in validator(name).iter_errors(doc)
    ]


def assert_valid_prompts(prompts: list[dict[str, Any]]) -> None:
    """Every prompt valid against schemas/prompts.schema.json and the pydantic model, with every one of
    the schema's required fields and no field it does not document (the published schema allows unknown fields
    for consumers; the service must not emit undocumented ones)."""
    assert prompts, "no prompts to check"
    fields = set(validator("prompts").schema["properties"])
    required = set(validator("prompts").schema["required"])
    for p in prompts:
        assert not errors("prompts", p), (errors("prompts", p), p)
        PromptEvent.model_validate(p)
        assert required <= set(p) <= fields, (set(p) - fields, required - set(p), p)


def assert_valid_leads(leads: list[dict[str, Any]]) -> None:
    """Every lead valid against schemas/leads.schema.json and the pydantic model, with every required field
    and no undocumented one."""
    from upsell_triggers.lead_model import LeadEvent

    assert leads, "no leads to check"
    fields = set(validator("leads").schema["properties"])
    required = set(validator("leads").schema["required"])
    for lead in leads:
        assert not errors("leads", lead), (errors("leads", lead), lead)
        LeadEvent.model_validate(lead)
        assert required <= set(lead) <= fields, (set(lead) - fields, required - set(lead), lead)
