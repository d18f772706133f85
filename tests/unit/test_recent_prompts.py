"""Recent prompts (engine/recentprompts.py): the packed form finds what a tuple of RecentPrompt found,
for ids of any (non-empty) form, and keeps each id as it was written."""

from __future__ import annotations

import sys

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine import recentops
from upsell_triggers.engine.recentprompts import RECENT_PROMPTS, RecentPrompt, RecentPrompts

hex_ids = st.binary(min_size=12, max_size=12).map(lambda b: "pr_" + b.hex())
other_ids = st.sampled_from(["pr_x", "pr_" + "AB" * 12, "pr_" + "0" * 24, "holdout:r", "pr_" + "ab " * 8])
ids = hex_ids | other_ids
rules = st.sampled_from([("seats-80", "seats"), ("paywall-repeat", "paywall"), ("api-growth", "growth")])


def reference_find(prompts: list[RecentPrompt], prompt_id: str) -> RecentPrompt | None:
    """The definition: the last of the kept prompts with that id."""
    found = None
    for p in prompts:
        if p.prompt_id == prompt_id:
            found = p
    return found


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(ids, rules), min_size=1, max_size=20), st.lists(ids, max_size=5))
def test_packed_prompts_find_what_the_tuple_found(
    sent: list[tuple[str, tuple[str, str]]], asked: list[str]
) -> None:
    rp: RecentPrompts | None = None
    ref: list[RecentPrompt] = []
    for pid, (rule, group) in sent:
        rp = recentops.add(rp, pid, rule, group)
        ref = [*ref, RecentPrompt(pid, rule, group)][-RECENT_PROMPTS:]
    assert rp is not None
    assert rp.prompts() == tuple(ref)  # every id as it was written
    assert recentops.pack(ref) == rp
    for pid in [p.prompt_id for p in ref] + asked + [pid for pid, _ in sent]:
        hit, want = rp.find(pid), reference_find(ref, pid)
        assert (hit.rule_id, hit.rule_group) == (want.rule_id, want.rule_group) if want else hit is None
    back = msgspec.msgpack.decode(msgspec.msgpack.encode(rp), type=RecentPrompts)
    assert recentops.shared(back) == rp


def test_eight_prompts_take_a_fraction_of_their_strings() -> None:
    rp = None
    for i in range(RECENT_PROMPTS):
        rp = recentops.add(rp, "pr_" + f"{0xABC0 + i:024x}", "seats-80", "seats")
    assert rp is not None and len(rp.ids) == 12 * RECENT_PROMPTS
    assert rp.entries[0] is rp.entries[-1]  # one shared entry per rule
    own = sys.getsizeof(rp) + sys.getsizeof(rp.ids) + sys.getsizeof(rp.entries)
    assert own < 300
    assert rp.find("pr_" + f"{0xABC3:024x}") is rp.entries[3]
    assert rp.find("pr_" + f"{0xABC3:024X}") is None  # upper case is another id


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=12, max_size=12), rules), min_size=1, max_size=12))
def test_add_packed_is_add_of_the_engines_ids(sent: list[tuple[bytes, tuple[str, str]]]) -> None:
    by_id: RecentPrompts | None = None
    by_raw: RecentPrompts | None = None
    for raw, (rule, group) in sent:
        by_id = recentops.add(by_id, "pr_" + raw.hex(), rule, group)
        by_raw = recentops.add_packed(by_raw, raw, rule, group)
        assert by_raw == by_id
        assert by_raw.entries[-1] is by_id.entries[-1]  # the shared entry
