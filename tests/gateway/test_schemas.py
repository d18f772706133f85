"""The gateway's published schemas: the browser's prompt is the topic's prompt minus account_id (kept in
step with schemas/prompts.schema.json), and what the gateway really sends validates against them."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson

from tests.gateway.helpers import Clock, prompt
from tests.schemacheck import SCHEMAS
from upsell_triggers.engine.prompts import prompt_id
from upsell_triggers.gateway.hub import Hub, dismissed_frame
from upsell_triggers.gateway.server import FeedbackRequest


def derived_prompt_schema() -> dict[str, Any]:
    src = json.loads((SCHEMAS / "prompts.schema.json").read_text())
    out = copy.deepcopy(src)
    out["$id"] = "https://upsell-triggers.dev/schema/gateway-prompt.schema.json"
    out["title"] = "Prompt as the gateway delivers it"
    out["description"] = (
        "The data of a `prompt` event on the gateway's stream (GET /v1/stream) and an item of GET "
        "/v1/prompts: the upgrade-prompts record without account_id (the browser knows its account). "
        "The SSE event id is the resume point. Unknown fields must be ignored."
    )
    del out["properties"]["account_id"]
    out["required"] = [f for f in src["required"] if f != "account_id"]
    return out


def test_gateway_prompt_schema_follows_the_prompt_schema() -> None:
    shipped = json.loads((SCHEMAS / "gateway-prompt.schema.json").read_text())
    assert shipped == derived_prompt_schema(), "regenerate: python -m tests.gateway.test_schemas"


def errors(name: str, doc: Any) -> list[str]:
    """Like tests/schemacheck.errors, with the gateway schemas' $refs resolved from schemas/."""
    import jsonschema
    from referencing import Registry, Resource

    resources = [
        (s["$id"], Resource.from_contents(s))
        for s in (json.loads(f.read_text()) for f in SCHEMAS.glob("*.schema.json"))
    ]
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    v = jsonschema.Draft202012Validator(
        schema, registry=Registry().with_resources(resources), format_checker=jsonschema.FormatChecker()
    )
    return [f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in v.iter_errors(doc)]


def data(frame: bytes) -> Any:
    return orjson.loads(frame.split(b"\ndata: ", 1)[1])


def test_what_the_gateway_sends_validates() -> None:
    hub = Hub(Clock())
    sub, _ = hub.subscribe("acct-1", "u")
    pid = prompt_id("acct-1", "storage-80", None, "e1")
    hub.publish(prompt(pid, user="u"))
    hub.mark("acct-1", "u", pid, "dismissed")
    sent, dismissed = sub.frames
    assert errors("gateway-prompt", data(sent)) == []
    assert errors("gateway-dismissed", data(dismissed)) == []
    assert dismissed == dismissed_frame(pid)
    bad = data(sent) | {"account_id": 7}
    assert errors("gateway-prompt", {k: v for k, v in bad.items() if k != "title"})  # the schema bites
    pending = {"prompts": [data(sent)], "last_event_id": "1"}
    assert errors("gateway-pending", pending) == []
    assert errors("gateway-pending", {"prompts": [], "last_event_id": None}) == []


def test_feedback_request_schema_matches_the_model() -> None:
    ok = {"prompt_id": "p1", "action": "clicked"}
    assert errors("gateway-feedback-request", ok) == []
    FeedbackRequest.model_validate(ok)
    for bad in (
        {"prompt_id": "p1", "action": "liked"},
        {"prompt_id": "", "action": "shown"},
        {"action": "shown"},
    ):
        assert errors("gateway-feedback-request", bad)


if __name__ == "__main__":
    (SCHEMAS / "gateway-prompt.schema.json").write_text(json.dumps(derived_prompt_schema(), indent=2) + "\n")
