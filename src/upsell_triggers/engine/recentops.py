"""What reads and writes an account's recent prompts (recentprompts.py holds the structs): finding the
prompt a feedback event names, adding a prompt, packing and sharing entries.

Apart from the structs so that it compiles (native.py: mypyc drops a class statement's keyword
arguments, so the msgspec structs' module stays pure Python). Feedback events and prompts both pass
through here; as Python, its frames were about 4% of the instructions per event near the limits.
"""

from __future__ import annotations

from sys import intern
from typing import Final

from upsell_triggers.engine.recentprompts import RECENT_PROMPTS, RecentPrompt, RecentPrompts

_ID_PREFIX: Final = "pr_"
_ID_BYTES: Final = 12
_NO_ID: Final = bytes(_ID_BYTES)
_KEEP: Final = 1 - RECENT_PROMPTS

# (rule id, group) -> the entry every account shares: one per rule the engine has prompted for (or a
# decoded state named), so bounded by the rule sets loaded.
_SHARED: Final[dict[tuple[str, str], RecentPrompt]] = {}
_BY_RULE: Final[dict[str, RecentPrompt]] = {}  # rule id -> its latest shared entry: one lookup per prompt


def find(rp: RecentPrompts, prompt_id: str) -> RecentPrompt | None:
    """The entry of the prompt with this id (the newest, should an id repeat), or None."""
    entries = rp.entries
    ids = rp.ids
    raw = packed_id(prompt_id)
    if raw is not None:
        i = ids.rfind(raw)
        while i >= 0:
            if not i % _ID_BYTES:  # a match straddling two ids is not one
                e = entries[i // _ID_BYTES]
                if not e.prompt_id:  # (an entry holding its own id has zeros there)
                    return e
            i = ids.rfind(raw, 0, i + _ID_BYTES - 1)  # the next match before i
    if _NO_ID in ids:  # entries holding their own ids (none that this engine writes)
        for e in reversed(entries):
            if e.prompt_id == prompt_id:
                return e
    return None


def prompts(rp: RecentPrompts) -> tuple[RecentPrompt, ...]:
    """Every entry with its id, oldest first (as the layouts before packing held them)."""
    ids = rp.ids
    return tuple(
        e
        if e.prompt_id
        else RecentPrompt(
            _ID_PREFIX + ids[_ID_BYTES * i : _ID_BYTES * (i + 1)].hex(), e.rule_id, e.rule_group
        )
        for i, e in enumerate(rp.entries)
    )


def shared_entry(rule_id: str, rule_group: str) -> RecentPrompt:
    """The entry of (rule, group) that every account shares."""
    e = _BY_RULE.get(rule_id)
    if e is not None and e.rule_group == rule_group:
        return e
    e = _SHARED.get((rule_id, rule_group))
    if e is None:
        rule_id, rule_group = intern(rule_id), intern(rule_group)
        e = _SHARED[(rule_id, rule_group)] = RecentPrompt("", rule_id, rule_group)
    _BY_RULE[rule_id] = e
    return e


def packed_id(prompt_id: str) -> bytes | None:
    """The 12 bytes a "pr_" + 24 lowercase hex digits id spells; None for an id of any other form."""
    if len(prompt_id) != 27 or prompt_id[:3] != _ID_PREFIX:
        return None
    h = prompt_id[3:]
    try:
        raw = bytes.fromhex(h)
    except ValueError:
        return None
    return raw if len(raw) == _ID_BYTES and raw.hex() == h else None  # fromhex takes upper case, spaces


def _entry(prompt_id: str, rule_id: str, rule_group: str) -> tuple[bytes, RecentPrompt]:
    raw = packed_id(prompt_id)
    if raw is None:
        return _NO_ID, RecentPrompt(prompt_id, intern(rule_id), intern(rule_group))
    return raw, shared_entry(rule_id, rule_group)


def add(rp: RecentPrompts | None, prompt_id: str, rule_id: str, rule_group: str) -> RecentPrompts:
    """rp with this prompt added as the newest, the oldest dropped past RECENT_PROMPTS."""
    raw, e = _entry(prompt_id, rule_id, rule_group)
    return _added(rp, raw, e)


def add_packed(rp: RecentPrompts | None, raw: bytes, rule_id: str, rule_group: str) -> RecentPrompts:
    """add() of the prompt whose id is "pr_" and raw's 24 hex digits (raw: 12 bytes), as the engine
    makes them: the id is not read back from its text, which cost a third of add()."""
    assert len(raw) == _ID_BYTES
    return _added(rp, raw, shared_entry(rule_id, rule_group))


def _added(rp: RecentPrompts | None, raw: bytes, e: RecentPrompt) -> RecentPrompts:
    """rp with (raw, e) added as the newest, the oldest dropped past RECENT_PROMPTS: add() and
    add_packed() share it."""
    if rp is None:
        return RecentPrompts(raw, (e,))
    return RecentPrompts(rp.ids[_ID_BYTES * _KEEP :] + raw, (*rp.entries[_KEEP:], e))


def pack(entries: tuple[RecentPrompt, ...] | list[RecentPrompt]) -> RecentPrompts | None:
    """Prompts with their ids (an older layout's, oldest first) packed; None for none."""
    if not entries:
        return None
    parts = [_entry(p.prompt_id, p.rule_id, p.rule_group) for p in entries]
    return RecentPrompts(b"".join(raw for raw, _ in parts), tuple(e for _, e in parts))


def shared(rp: RecentPrompts) -> RecentPrompts:
    """A decoded RecentPrompts with its entries the shared ones (decoded, each is its own object)."""
    return RecentPrompts(
        rp.ids,
        tuple(
            shared_entry(e.rule_id, e.rule_group)
            if not e.prompt_id
            else RecentPrompt(e.prompt_id, intern(e.rule_id), intern(e.rule_group))
            for e in rp.entries
        ),
    )
