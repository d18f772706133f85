"""Where a Kafka record came from: which hot topic, and its offset there (Processor.handle).

A msgspec struct, in a module of its own because processor.py is compiled with mypyc
(docs/architecture.md, "Compiled modules"), which drops the keyword arguments of a class statement
(`frozen=True, gc=False` here): every msgspec struct lives in a module that is not compiled.
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

# The hot topics, as an account's state counts the offsets it applied from each.
HotTopic = Literal[0, 1]
EVENTS: HotTopic = 0
FEEDBACK: HotTopic = 1


class RecordSource(Struct, frozen=True, gc=False):
    """A msgspec struct: built in C. The worker's batch path reads the records themselves
    (Processor.handle_records)."""

    topic: HotTopic
    offset: int
