"""Distinct counts (metric kind `distinct`): exact against a brute-force count below the bound, within
the documented error above it, bounded in bytes, fed by usage and paywall events, left out of the state
of accounts that do not use them."""

from __future__ import annotations

import math
import random
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine import distinct
from upsell_triggers.engine.events import InvalidEvent, decode_event, validate_event
from upsell_triggers.engine.rulemodel import RulesError
from upsell_triggers.engine.ruleset import compile_sources, load_ruleset
from upsell_triggers.engine.state import STATE_VERSION, Attribution, RuleState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.engine.stateops import blob_names, blob_of

from .helpers import DAY, HOUR, T0, Account, fixture_rules, outcomes

ROOT = Path(__file__).resolve().parents[2]
EXPANSION = ROOT / "rules" / "examples" / "expansion"
TAG = distinct.field_tag("user_id")


def brute_force(events: list[tuple[str, int]], bucket: int, keep: int, window: int) -> int:
    """Distinct values within `window` buckets of the newest bucket, applying events in arrival order
    with the structure's lateness rule (an event `keep` buckets or more behind the newest is late)."""
    newest: int | None = None
    last: dict[str, int] = {}
    for value, ts in events:
        b = ts // bucket
        if newest is not None and b <= newest - keep:
            continue
        newest = b if newest is None else max(newest, b)
        last[value] = max(last.get(value, b), b)
    if newest is None:
        return 0
    return sum(1 for b in last.values() if b > newest - window)


def run(events: list[tuple[str, int]], bucket: int, keep: int, reads: tuple[int, ...] = ()) -> bytes | None:
    """The structure after the events; checks on the way that an add said to change no count of the
    windows `reads` changed none."""
    blob: bytes | None = None
    for value, ts in events:
        new, changed = distinct.add(blob, value, ts, bucket, keep, TAG, reads)
        if new is not None:
            if not changed and blob is not None:
                assert [distinct.count(new, w) for w in reads] == [distinct.count(blob, w) for w in reads]
            blob = new
    return blob


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, distinct.EXACT_BOUND - 1), st.integers(0, 60 * DAY)),
        min_size=1,
        max_size=300,
    ),
    st.sampled_from([HOUR, DAY]),
    st.integers(1, 30),
)
def test_exact_below_the_bound_in_any_order(raw: list[tuple[int, int]], bucket: int, days: int) -> None:
    """At most EXACT_BOUND distinct values ever: the count equals the brute force for every window a
    rule may ask, whatever the arrival order (late events excluded by the same rule)."""
    events = [(f"user-{v}", T0 + ts) for v, ts in raw]
    keep = 30 * DAY // bucket
    window = days * DAY // bucket
    blob = run(events, bucket, keep, (window, keep))
    assert blob is not None and distinct.level(blob) == 0
    assert distinct.count(blob, window) == brute_force(events, bucket, keep, window)
    assert len(blob) <= distinct.MAX_BYTES


def test_above_the_bound_the_estimate_has_the_documented_error() -> None:
    """Above EXACT_BOUND the count is an estimate: unbiased, relative standard error under 20% (the
    documented 12.5-18%), bytes bounded."""
    rng = random.Random(11)
    for n in (100, 1000, 5000):
        runs = 120 if n <= 1000 else 30
        errors = []
        for _ in range(runs):
            salt = rng.getrandbits(64)
            events = [(f"{salt}-{i}", T0 + rng.randrange(7 * DAY)) for i in range(n)]
            blob = run(events, HOUR, 720)
            assert blob is not None and distinct.level(blob) > 0
            assert len(blob) <= distinct.MAX_BYTES
            errors.append(distinct.count(blob, 720) / n - 1)
        rse = math.sqrt(sum(e * e for e in errors) / runs)
        bias = sum(errors) / runs
        assert rse < 0.20, (n, rse)
        assert abs(bias) < 3 * 0.18 / math.sqrt(runs), (n, bias)


def add(blob: bytes | None, value: str, ts: int, bucket: int, keep: int, tag: int = TAG) -> bytes | None:
    return distinct.add(blob, value, ts, bucket, keep, tag)[0]


def test_the_window_moves_and_late_events_count_nowhere() -> None:
    blob = add(None, "a", T0, HOUR, 24)
    blob = add(blob, "b", T0 + 5 * HOUR, HOUR, 24)
    assert blob is not None and distinct.count(blob, 24) == 2 and distinct.count(blob, 5) == 1
    assert add(blob, "c", T0 - 20 * HOUR, HOUR, 24) is None  # 25 buckets behind: late
    blob = add(blob, "b", T0 + 26 * HOUR, HOUR, 24)
    assert blob is not None and distinct.count(blob, 24) == 1  # a left the window
    assert len(blob) == distinct.HEAD_LEN + distinct.ENTRY_LEN  # and the structure


def test_a_changed_field_or_bucket_starts_afresh() -> None:
    blob = add(None, "a", T0, HOUR, 24)
    blob = add(blob, "b", T0, HOUR, 24)
    assert distinct.count(add(blob, "c", T0, HOUR, 24), 24) == 3
    assert distinct.count(add(blob, "c", T0, HOUR, 24, distinct.field_tag("team_id")), 24) == 1
    assert distinct.count(add(blob, "c", T0, DAY, 24), 24) == 1


# ---- in the engine ---------------------------------------------------------------------------------


def expansion() -> Account:
    return Account(load_ruleset(EXPANSION))


def test_usage_and_paywall_events_feed_and_fire_once() -> None:
    a = expansion()
    for i, at in enumerate((0, HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR, 5 * HOUR, 6 * HOUR)):
        assert a.send(at, type="usage", metric="api_calls", delta=1, user_id=f"u-{i}") == []
    ds = a.send(7 * HOUR, type="paywall_hit", feature="sso", user_id="u-7")
    assert outcomes(ds) == [("users-over-seats", "emitted")]
    assert ds[0].prompt is not None and ds[0].prompt["value"] == 8
    assert a.send(8 * HOUR, type="usage", metric="api_calls", delta=1, user_id="u-8") == []  # disarmed


def test_invalid_and_duplicate_events_count_nothing() -> None:
    a = expansion()
    a.send(0, type="usage", metric="api_calls", delta=1, user_id="u-1")
    before = list(a.state.distinct or [])
    ev = validate_event(
        {"type": "usage", "event_id": "e1", "account_id": "acme", "ts": T0, "metric": "api_calls", "delta": 1}
        | {"user_id": "u-2"}
    )
    assert not isinstance(ev, InvalidEvent)
    assert a.engine.process(ev, a.state).status == "duplicate"
    bad = validate_event(
        {"type": "usage", "event_id": "x", "account_id": "acme", "ts": T0, "metric": "nope", "delta": 1}
        | {"user_id": "u-3"}
    )
    assert not isinstance(bad, InvalidEvent)
    assert a.engine.process(bad, a.state).invalid is not None
    assert a.state.distinct == before


def test_a_distinct_metric_is_not_sent_itself() -> None:
    a = expansion()
    ev = validate_event(
        {
            "type": "usage",
            "event_id": "e",
            "account_id": "acme",
            "ts": T0,
            "metric": "active_users",
            "delta": 1,
        }
    )
    assert not isinstance(ev, InvalidEvent)
    out = a.engine.process(ev, a.state)
    assert out.invalid is not None and out.invalid.reason == "invalid_field"
    assert "counts distinct user_id values" in out.invalid.message


def test_attributes_are_validated_at_the_edge() -> None:
    base = b'{"event_id":"e","account_id":"a","type":"usage","metric":"seats","value":3,"ts":1767000000000'
    ok = decode_event(base + b',"attributes":{"team_id":"t-1"}}')
    assert not isinstance(ok, InvalidEvent) and ok.attributes == {"team_id": "t-1"}
    bad = decode_event(base + b',"attributes":{"team_id":5}}')
    assert (
        isinstance(bad, InvalidEvent)
        and bad.reason == "invalid_field"
        and "attributes.team_id" in bad.message
    )
    many = ",".join(f'"k{i}":"v"' for i in range(9)).encode()
    assert isinstance(decode_event(base + b',"attributes":{' + many + b"}}"), InvalidEvent)


def test_state_of_accounts_without_distinct_counts_is_byte_identical() -> None:
    """The bytes of an account that uses no distinct count and no growth history are those of the
    layout without them (the trailing fields are left out), with and without traits."""

    class Plain(msgspec.Struct, array_like=True, tag=STATE_VERSION):  # the layout's fields before traits
        plan: str | None = None
        plan_ts: int = 0
        period_anchor: int | None = None
        limits: dict[str, float | None] | None = None
        gauges: list[object] | None = None
        periods: dict[str, list[float]] | None = None
        rolling: dict[str, bytes | dict[int, float]] | None = None
        rules: dict[str, RuleState] | None = None
        sent: tuple[int, ...] | None = None
        attribution: Attribution | None = None
        recent_prompts: tuple[object, ...] | None = None
        dedup: bytes = b""
        last_seen: int = 0
        events_offset: int = -1
        feedback_offset: int = -1

    class WithTraits(Plain, tag=STATE_VERSION):
        traits: dict[str, object] | None = None
        traits_ts: int = 0

    a = Account(fixture_rules())
    a.seats(0, 3)
    a.seats(HOUR, 5)
    st_ = a.state
    fields = {f: getattr(st_, f) for f in Plain.__struct_fields__}
    enc = msgspec.msgpack.encode
    assert st_.rules and encode_state(st_) == enc(Plain(**fields))
    st_.traits, st_.traits_ts = {"segment": "x"}, T0
    assert encode_state(st_) == enc(WithTraits(**fields, traits={"segment": "x"}, traits_ts=T0))
    assert decode_state(encode_state(st_)).distinct is None
    st_.distinct = ["active_users", b"\x00" * 11]
    assert decode_state(encode_state(st_)).distinct == ["active_users", b"\x00" * 11]


def test_reload_adds_and_removes_a_distinct_metric() -> None:
    """Adding a distinct metric to a running rule set starts counting at the next event; removing it
    drops the account's structure at its next event (and rules can no longer name it)."""
    sources = [(str(p), p.read_text()) for p in sorted(EXPANSION.glob("*.yaml"))]
    with_it = compile_sources(sources)
    without = compile_sources([(n, t) for n, t in sources if not n.endswith("expansion.yaml")])
    assert without.distinct == () and with_it.distinct_names == {"active_users", "active_teams"}
    a = Account(without)
    a.send(0, type="usage", metric="api_calls", delta=1, user_id="u-1")
    assert a.state.distinct is None
    a.engine.swap_rules(with_it)
    a.send(HOUR, type="usage", metric="api_calls", delta=1, user_id="u-1", attributes={"team_id": "t"})
    assert a.state.distinct is not None and set(blob_names(a.state.distinct)) == {
        "active_users",
        "active_teams",
    }
    only_users = compile_sources(
        [
            *[(n, t) for n, t in sources if not n.endswith("expansion.yaml")],
            (
                "r.yaml",
                "version: 1\ngroups:\n- id: g\n  rules:\n  - id: r\n    when: {metric: active_users, at_least: 9}\n"
                "    target_plan: team\n    prompt: {title: t, cta: {label: l, url: u}}\n",
            ),
        ]
    )
    a.engine.swap_rules(only_users)
    a.send(2 * HOUR, type="usage", metric="api_calls", delta=1, user_id="u-2", attributes={"team_id": "t"})
    assert blob_names(a.state.distinct) == ["active_users"]


def test_rule_file_mistakes_are_reported() -> None:
    catalog = (EXPANSION / "catalog.yaml").read_text()

    def problems(extra: str) -> str:
        with pytest.raises(RulesError) as err:
            compile_sources([("catalog.yaml", catalog), ("x.yaml", "version: 1\n" + extra)])
        return str(err.value)

    assert "field only applies to distinct" in problems("metrics:\n  m: {kind: gauge, field: team_id}\n")
    assert "longer than the 30d that metric 'active_users' keeps" in problems(
        "groups:\n- id: g\n  rules:\n  - id: r\n    when: {metric: active_users, at_least: 3, window: 60d}\n"
        "    prompt: {title: t, cta: {label: l, url: u}}\n"
    )


def test_an_erased_account_keeps_no_distinct_values() -> None:
    """An event in flight when the account was deleted counts nothing (the marker holds no values); an
    event after the deletion starts the account afresh and counts."""
    a = expansion()
    a.send(0, type="usage", metric="api_calls", delta=1, user_id="u-1")
    a.send(HOUR, type="account_deleted")
    assert a.state.erased_at and a.state.distinct is None
    a.send(HOUR // 2, type="usage", metric="api_calls", delta=1, user_id="u-2")  # in flight: dropped
    assert a.state.distinct is None
    a.send(2 * HOUR, type="usage", metric="api_calls", delta=1, user_id="u-3")
    assert not a.state.erased_at and a.state.distinct is not None
    assert distinct.count(blob_of(a.state.distinct, "active_users"), 7) == 1
