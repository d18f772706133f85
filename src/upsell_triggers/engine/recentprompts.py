"""The prompts recently sent to an account, which feedback events name by id (`AccountState.recent_prompts`).

Packed for memory: a prompt id is "pr_" and 24 hex digits (prompts.prompt_id()), so each is kept as the
12 bytes it spells, all of them in one bytes object, and each prompt's rule as one RecentPrompt per
(rule, group) shared by every account. Eight prompts take about 270 bytes per account; as a tuple of
RecentPrompt, each with its own id string, they took about 950. An id of another form (none that this
engine writes; a state could only hold one from elsewhere) keeps its own RecentPrompt with the id, and
zeros in its 12 bytes, so every id reads back as it was written (every id but "", which marks a packed
entry: no prompt has it).

The functions that read and write them are in recentops.py, which compiles.
"""

from __future__ import annotations

from msgspec import Struct

RECENT_PROMPTS = 8


class RecentPrompt(Struct, array_like=True, gc=False, frozen=True):
    """A prompt sent to the account: its id ("" when its RecentPrompts holds it packed), its rule and
    the rule's group."""

    prompt_id: str
    rule_id: str
    rule_group: str


class RecentPrompts(Struct, array_like=True, gc=False, frozen=True):
    """The last RECENT_PROMPTS prompts, oldest first: `ids` 12 bytes each (zeros for an entry that
    holds its own id), `entries` each one's rule. Immutable: recentops.add() returns a new one. A
    MessagePack array of a bin and an array on the wire."""

    ids: bytes
    entries: tuple[RecentPrompt, ...]

    def find(self, prompt_id: str) -> RecentPrompt | None:
        """recentops.find(self, prompt_id), for callers outside the engine."""
        from upsell_triggers.engine import recentops

        return recentops.find(self, prompt_id)

    def prompts(self) -> tuple[RecentPrompt, ...]:
        """Every entry with its id, oldest first (recentops.prompts)."""
        from upsell_triggers.engine import recentops

        return recentops.prompts(self)
