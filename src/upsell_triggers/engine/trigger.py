"""A rule whose conditions hold on an event, on its way through the engine's _decide.

A msgspec struct (built in C, as a dataclass's __init__ is not), in a module of its own because the
engine is compiled with mypyc (docs/architecture.md, "Compiled modules"), which drops the keyword
arguments of a class statement (`gc=False` here): every msgspec struct lives in a module that is not
compiled.
"""

from __future__ import annotations

from msgspec import Struct

from upsell_triggers.engine.rulemodel import Rule
from upsell_triggers.engine.state import Num


class Trigger(Struct, gc=False):
    rule: Rule
    feature: str | None
    key: str
    value: Num  # a count stays an int
    limit: float | None
    period: int | None
