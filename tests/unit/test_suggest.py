"""'Did you mean' suggestions find the allowed fields at any depth of the rule-file schema."""

from __future__ import annotations

import pytest

from upsell_triggers.engine.rulefile import RulesFile
from upsell_triggers.engine.suggest import fields_at, unknown_field

SCHEMA = RulesFile.model_json_schema()


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("groups", 0, "rules", 1, "when", "ratoi"), "did you mean 'ratio'?"),
        (("groups", 0, "rules", 1, "when", "all", 0, "windw"), "did you mean 'window'?"),
        (("groups", 0, "rules", 1, "cooldwn"), "did you mean 'cooldown'?"),
        (("groups", 0, "defaults", "placment"), "did you mean 'placement'?"),
        (("groups", 0, "rules", 1, "prompt", "cta", "lable"), "did you mean 'label'?"),
        (("metrics", "seats_used", "knd"), "did you mean 'kind'?"),
        (("plans", 2, "limts"), "did you mean 'limits'?"),
        (("policy", "frequency_cap", "max_prompt"), "did you mean 'max_prompts'?"),
        (("polcy",), "did you mean 'policy'?"),
    ],
)
def test_suggests_the_closest_allowed_field(loc: tuple[str | int, ...], expected: str):
    assert unknown_field(SCHEMA, loc) == f"unknown field '{loc[-1]}'; {expected}"


def test_without_a_close_field_lists_the_allowed_ones():
    msg = unknown_field(SCHEMA, ("plans", 0, "zzzz"))
    assert msg == "unknown field 'zzzz'; allowed here: " + ", ".join(fields_at(SCHEMA, ("plans", 0, "x")))
    assert "limits" in msg and "features" in msg
