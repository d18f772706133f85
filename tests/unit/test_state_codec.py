"""Account state bytes: the msgspec v6 codec round-trips exactly, older versions are still read (and 3-5
written for rolling upgrades), and the packed dedup ring matches whole hashes only."""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import orjson

from upsell_triggers.engine import recentops, windows
from upsell_triggers.engine.recentprompts import RecentPrompt
from upsell_triggers.engine.state import STATE_VERSION, AccountState, Attribution, BillingPeriod, RuleState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.engine.statelegacy import to_bytes_v3, to_bytes_v4
from upsell_triggers.engine.stateops import event_hash, seen, seen_id


def full_state() -> AccountState:
    st = AccountState()
    st.plan, st.plan_ts, st.period_anchor = "team", 1_800_000_000_000, 1_799_000_000_000
    st.limits = {"seats": 40.0, "storage_bytes": None}
    st.gauges = ["seats", 1_800_000_000_123, 33.0, "storage_bytes", 1_800_000_000_100, 1e9]
    st.periods = ["api_calls", BillingPeriod(1_799_000_000_000, 1_801_000_000_000, 12.5)]
    st.rolling = {
        "paywall_hits\x1fsso": windows.pack({1_800_000_000_000 - 3_600_000: 2, 1_800_000_000_000: 1})
    }
    st.rules = {
        "seats-80": RuleState(False, 1_800_000_000_123, None, True),
        "paywall-repeat\x1fsso": RuleState(),
    }
    st.sent = (1_800_000_000_123,)
    st.attribution = Attribution("pr_x", "seats-80", "seats", "treatment", 1_800_000_000_123)
    st.recent_prompts = recentops.pack(
        (RecentPrompt("pr_x", "seats-80", "seats"), RecentPrompt("pr_" + "0a" * 12, "seats-80", "seats"))
    )
    for i in range(20):
        seen(st, event_hash(f"e-{i}"))
    st.last_seen, st.events_offset = 1_800_000_000_123, 41
    return st


def test_roundtrip_is_exact_with_types_kept():
    st = full_state()
    back = decode_state(encode_state(st))
    assert back == st
    assert [type(v) for v in back.gauges] == [str, int, float] * 2
    assert all(type(b) is int for b in windows.buckets(back.rolling["paywall_hits\x1fsso"]))
    assert len(back.dedup) == 8 * 16  # bounded to the horizon
    assert seen(back, event_hash("e-19")) and not seen(back, event_hash("e-0"))  # e-0 fell out
    assert msgspec.msgpack.decode(encode_state(st))[0] == STATE_VERSION


def test_version_2_bytes_are_read_and_keep_their_dedup_ids():
    ids = ["a", "b", "c"]
    hashes = [
        int.from_bytes(event_hash(i)[:4], "little") << 32 | int.from_bytes(event_hash(i)[4:], "little")
        for i in ids
    ]
    v2 = orjson.dumps(
        [
            2,
            "team",
            5,
            None,
            None,
            {"seats": [7, 3.0]},
            {},
            {"paywall_hits\x1fsso": {"3600000": 2}},
            {"seats-80": [0, 7, None, 1]},
            [7],
            None,
            [],
            hashes,
            7,
            [12, 3],
        ]
    )
    st = decode_state(v2)
    assert st.plan == "team" and st.gauges == ["seats", 7, 3.0]
    assert (st.events_offset, st.feedback_offset) == (12, 3)
    assert st.periods is None and st.recent_prompts is None  # empty in v2: unused since v4
    assert st.rolling == {"paywall_hits\x1fsso": windows.pack({3_600_000: 2})}
    assert st.rules["seats-80"] == RuleState(False, 7, None, True)
    # An event seen before the upgrade stays a duplicate.
    assert all(seen(st, event_hash(i)) for i in ids)
    assert decode_state(encode_state(st)) == st


def test_version_3_bytes_are_read_with_their_empty_containers_as_unused():
    v3 = (
        b'[3,"team",5,null,null,{"seats":[7,3.0]},{},{},{"seats-80":[false,7,null,true]},[],null,[],'
        b'"",7,[12,-1]]'
    )
    st = decode_state(v3)
    assert st.version == STATE_VERSION and st.gauges == ["seats", 7, 3.0] and st.events_offset == 12
    assert st.rules == {"seats-80": RuleState(False, 7, None, True)}
    assert (st.periods, st.rolling, st.sent, st.recent_prompts) == (None, None, None, None)
    assert decode_state(encode_state(st)) == st


def test_an_unknown_version_is_refused_with_its_number():
    fields = msgspec.msgpack.decode(encode_state(full_state()))
    v4 = msgspec.msgpack.decode(to_bytes_v4(full_state()))
    v3 = orjson.loads(to_bytes_v3(full_state()))
    for version in (7, 0):
        for data in (
            msgspec.msgpack.encode([version, *fields[1:]]),
            msgspec.msgpack.encode([version, *v4[1:]]),
            orjson.dumps([version, *v3[1:]]),
        ):
            try:
                decode_state(data)
            except ValueError as err:
                assert f"unsupported account state version: {version}" in str(err)
            else:
                raise AssertionError(f"version {version} was read from {data[:1]!r}")


def test_a_full_version_3_state_reads_as_it_was_written():
    st = full_state()
    v3 = orjson.loads(to_bytes_v3(st))
    assert v3[0] == 3
    assert decode_state(orjson.dumps(v3)) == st


def test_a_new_account_keeps_no_empty_containers():
    st = AccountState()
    assert (st.gauges, st.periods, st.rolling, st.rules, st.sent, st.recent_prompts) == (None,) * 6
    assert decode_state(encode_state(st)) == st


def test_a_match_straddling_two_hashes_is_not_a_duplicate():
    st = AccountState(dedup=b"\x00" * 4 + b"ABCD" + b"EFGH" + b"\x00" * 4)  # hashes 0000ABCD, EFGH0000
    assert not seen(st, b"ABCDEFGH")  # found at offset 4: across the boundary
    assert st.dedup.endswith(b"ABCDEFGH") and len(st.dedup) == 24
    assert seen(st, b"ABCDEFGH")  # now it is a whole hash


def test_seen_id_is_seen_of_the_event_hash():
    ids = [f"e-{i % 23}" for i in range(60)] + ["", "ü", "e-1"]
    by_hash, by_id = AccountState(), AccountState()
    for i in ids:
        assert seen(by_hash, event_hash(i)) == seen_id(by_id, i)
        assert by_hash.dedup == by_id.dedup
    straddled = AccountState(dedup=b"\x00" * 4 + event_hash("x")[:4] + event_hash("x")[4:] + b"\x00" * 4)
    assert not seen_id(straddled, "x") and seen_id(straddled, "x")


def as_lists(v: Any) -> Any:
    """Tuples and array-like structs (this release's in-memory containers) as the lists a released
    decoder builds."""
    if isinstance(v, msgspec.Struct):
        v = msgspec.structs.astuple(v)
    return [as_lists(x) for x in v] if isinstance(v, tuple) else v


class _ReleasedV3(msgspec.Struct, array_like=True):
    """The state schema of the last build that wrote version 3, as its decoder read it: containers are
    never null there."""

    version: int
    plan: str | None
    plan_ts: int
    period_anchor: int | None
    limits: dict[str, int | float | None] | None
    gauges: dict[str, list[int | float]]
    periods: dict[str, list[int | float]]
    rolling: dict[str, dict[int, int | float]]
    rules: dict[str, RuleState]
    sent: list[int]
    attribution: list[Any] | None
    recent_prompts: list[list[str]]
    dedup: bytearray
    last_seen: int
    offsets: list[int]


def test_version_3_written_for_a_rolling_upgrade_is_what_the_previous_release_reads():
    for st in (full_state(), AccountState(plan="team", last_seen=5, events_offset=3)):
        data = to_bytes_v3(st)
        old = msgspec.json.decode(data, type=_ReleasedV3)  # raises if a container were null
        assert old.version == 3 and old.plan == st.plan
        assert old.offsets == [st.events_offset, st.feedback_offset]
        g = st.gauges or []
        assert old.gauges == {g[i]: [g[i + 1], g[i + 2]] for i in range(0, len(g), 3)}
        rp = st.recent_prompts.prompts() if st.recent_prompts else ()
        assert old.rules == (st.rules or {}) and old.recent_prompts == as_lists(rp)
        assert decode_state(data) == st  # and this release reads it back as it was


class _ReleasedV4(msgspec.Struct, array_like=True, gc=False):
    """The state schema of the last build that wrote version 4, as its decoder read it."""

    version: int = 4
    plan: str | None = None
    plan_ts: int = 0
    period_anchor: int | None = None
    limits: dict[str, int | float | None] | None = None
    gauges: dict[str, tuple[int | float, int | float]] | None = None
    periods: dict[str, list[int | float]] | None = None
    rolling: dict[str, dict[int, int | float]] | None = None
    rules: dict[str, RuleState] | None = None
    sent: list[int] | None = None
    attribution: list[Any] | None = None
    recent_prompts: list[list[str]] | None = None
    dedup: bytearray = bytearray()
    last_seen: int = 0
    offsets: list[int] = msgspec.field(default_factory=lambda: [-1, -1])


def test_version_4_written_for_a_rolling_upgrade_is_what_the_previous_release_reads():
    for st in (full_state(), AccountState(plan="team", last_seen=5, feedback_offset=3)):
        old = msgspec.msgpack.decode(to_bytes_v4(st), type=_ReleasedV4)
        assert old.version == 4 and (old.plan, old.plan_ts, old.last_seen) == (
            st.plan,
            st.plan_ts,
            st.last_seen,
        )
        assert old.offsets == [st.events_offset, st.feedback_offset] and old.dedup == st.dedup
        g = st.gauges or []
        assert (old.gauges or {}) == {g[i]: (g[i + 1], g[i + 2]) for i in range(0, len(g), 3)}
        assert (old.rules, old.sent, old.attribution, old.recent_prompts) == (
            st.rules,
            as_lists(st.sent),
            as_lists(st.attribution),
            as_lists(st.recent_prompts.prompts()) if st.recent_prompts else None,
        )
        assert decode_state(to_bytes_v4(st)) == st  # and this release reads it back as it was


def test_version_4_bytes_of_the_previous_release_are_read_with_names_shared():
    old = _ReleasedV4(
        plan="team",
        gauges={"seats": (7, 3.0), "storage_bytes": (6, 1e9)},
        attribution=("pr_x", "seats-80", "seats", "treatment", 7),
        recent_prompts=(("pr_x", "seats-80", "seats"),),
        dedup=bytearray(event_hash("a")),
        last_seen=7,
        offsets=[12, 3],
    )
    st = decode_state(msgspec.msgpack.encode(old))
    assert st.version == STATE_VERSION and st.gauges == ["seats", 7, 3.0, "storage_bytes", 6, 1e9]
    assert (st.events_offset, st.feedback_offset, st.last_seen) == (12, 3, 7)
    assert seen(st, event_hash("a"))  # an event applied before the upgrade stays a duplicate
    # Decoded names are the one interned copy, as in states the engine creates.
    names = [st.plan, st.gauges[0], st.attribution.rule_id, st.recent_prompts.entries[0].rule_group]  # type: ignore[union-attr,index]
    # (an equal string built anew interns to the decoded one only if the decoded one is the interned copy)
    assert all(sys.intern("".join(list(n))) is n for n in names) and names[1] is names[3]


def test_a_billing_period_is_the_three_item_array_every_version_stores():
    period = BillingPeriod(1_799_000_000_000, 1_801_000_000_000, 12.5)
    assert msgspec.msgpack.encode(period) == msgspec.msgpack.encode([period.start, period.end, period.total])
    old = _ReleasedV4(periods={"api_calls": [1_799_000_000_000, 1_801_000_000_000, 12]})
    st = decode_state(msgspec.msgpack.encode(old))
    assert st.periods == ["api_calls", BillingPeriod(1_799_000_000_000, 1_801_000_000_000, 12)]
    assert type(st.periods[1].total) is int  # type: ignore[union-attr]  # a count stays an int
