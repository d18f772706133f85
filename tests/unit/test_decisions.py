"""Decision semantics, one by one, on the fixture rules (fixtures/rules)."""

from __future__ import annotations

from upsell_triggers.engine.prompts import in_holdout
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.engine.stateops import period_items

from .helpers import DAY, HOUR, Account, outcomes, with_policy


def test_edge_trigger_fires_once_then_rearms_below_level():
    a = Account()
    assert outcomes(a.seats(0, 4)) == [("seats-80", "emitted")]
    assert a.seats(HOUR, 4) == []  # still above: disarmed
    assert a.seats(2 * HOUR, 3.6) == []  # 72%: above the 70% re-arm level
    assert a.seats(3 * HOUR, 4) == []  # not re-armed, so no new edge
    assert a.seats(4 * HOUR, 3) == []  # 60%: re-armed
    assert outcomes(a.seats(8 * DAY, 4)) == [("seats-80", "emitted")]  # new edge, after cooldown


def test_cooldown_suppresses_rearmed_rule():
    a = Account()
    a.seats(0, 4)
    a.seats(HOUR, 2)
    assert outcomes(a.seats(2 * DAY, 4)) == [("seats-80", "cooldown")]
    a.seats(3 * DAY, 2)
    assert outcomes(a.seats(7 * DAY + 1, 4)) == [("seats-80", "emitted")]


def test_highest_threshold_wins_on_same_event():
    a = Account()
    assert sorted(outcomes(a.seats(0, 5))) == [("seats-100", "emitted"), ("seats-80", "superseded")]


def test_frequency_cap_priority_and_bypass():
    a = Account()
    assert outcomes(a.seats(0, 4)) == [("seats-80", "emitted")]
    # storage-80 is capped (1 per 24h) and stays armed; recorded once per episode
    assert outcomes(a.send(HOUR, type="usage", metric="storage_bytes", value=1.7 * 2**30)) == [
        ("storage-80", "frequency_cap")
    ]
    assert a.send(2 * HOUR, type="usage", metric="storage_bytes", value=1.75 * 2**30) == []
    # the modal bypasses the cap
    assert outcomes(a.seats(3 * HOUR, 5)) == [("seats-100", "emitted")]
    # once the cap window has passed, the still-armed storage rule fires
    assert outcomes(a.send(DAY + 4 * HOUR, type="usage", metric="storage_bytes", value=1.76 * 2**30)) == [
        ("storage-80", "emitted")
    ]


def test_audience_and_no_upgrade_path():
    a = Account()
    a.send(0, type="plan_changed", plan="enterprise")
    # enterprise is outside the audience of seats rules (and unlimited anyway): nothing
    assert a.seats(HOUR, 10_000) == []
    b = Account()
    b.send(0, type="plan_changed", plan="business", limits={"seats": 10})
    assert outcomes(b.seats(HOUR, 8)) == [("seats-80", "emitted")]
    c = Account(with_policy("policy: {frequency_cap: {max_prompts: 5}}\n"))
    c.send(0, type="plan_changed", plan="enterprise", limits={"seats": 10})
    c.state.plan = "enterprise"
    ds = c.send(HOUR, type="paywall_hit", feature="sso") + c.send(2 * HOUR, type="paywall_hit", feature="sso")
    ds += c.send(3 * HOUR, type="paywall_hit", feature="sso")
    assert outcomes(ds) == [("paywall-repeat", "no_upgrade_path")]


def test_paywall_per_feature_cooldown_and_target():
    a = Account(with_policy("policy: {frequency_cap: {max_prompts: 10}}\n"))
    for i in range(3):
        ds = a.send(i * HOUR, type="paywall_hit", feature="sso")
    assert outcomes(ds) == [("paywall-repeat", "emitted")]
    p = ds[0].prompt
    assert p is not None and p["feature"] == "sso" and p["target_plan"] == "business" and p["value"] == 3
    for i in range(3):  # another feature has its own state and cooldown
        ds = a.send(4 * HOUR + i * HOUR, type="paywall_hit", feature="scim")
    assert outcomes(ds) == [("paywall-repeat", "emitted")]
    assert ds[0].prompt is not None and ds[0].prompt["target_plan"] == "enterprise"
    assert a.send(8 * HOUR, type="paywall_hit", feature="sso") == []  # still ≥3: disarmed


def test_paywall_window_expires_and_rearms():
    a = Account()
    a.send(0, type="paywall_hit", feature="sso")
    a.send(DAY, type="paywall_hit", feature="sso")
    assert a.send(8 * DAY, type="paywall_hit", feature="sso") == []  # the first hit left the 7d window


def test_holdout_records_and_attributes():
    rs = with_policy("policy: {holdout: {fraction: 1.0, salt: s}}\n")
    a = Account(rs)
    assert in_holdout("acme", "s", 1.0)
    ds = a.seats(0, 4)
    assert outcomes(ds) == [("seats-80", "holdout")] and ds[0].prompt is None
    conv = a.send(3 * DAY, type="plan_changed", plan="team")
    assert [(d.rule_id, d.outcome, d.group) for d in conv] == [("seats-80", "conversion", "holdout")]


def test_holdout_fraction_is_stable_and_proportional():
    picked = [in_holdout(f"acct-{i}", "salt", 0.2) for i in range(20_000)]
    assert 0.18 < sum(picked) / len(picked) < 0.22
    assert picked == [in_holdout(f"acct-{i}", "salt", 0.2) for i in range(20_000)]


def test_attribution_window():
    a = Account()
    a.seats(0, 4)
    conv = a.send(13 * DAY, type="plan_changed", plan="team")
    assert [(d.rule_id, d.outcome, d.group) for d in conv] == [("seats-80", "conversion", "treatment")]
    b = Account()
    b.seats(0, 4)
    assert [d for d in b.send(15 * DAY, type="plan_changed", plan="team") if d.outcome == "conversion"] == []
    c = Account()
    c.seats(0, 4)
    assert [d for d in c.send(DAY, type="plan_changed", plan="free") if d.outcome == "conversion"] == []


def test_plan_change_rearms_and_reevaluates_against_new_limits():
    a = Account()
    a.send(0, type="plan_changed", plan="team")
    assert a.seats(HOUR, 15) == []  # 60% of 25
    # a downgrade to free makes 15 seats 300%: re-evaluated at once
    assert sorted(outcomes(a.send(2 * HOUR, type="plan_changed", plan="free"))) == [
        ("seats-100", "emitted"),
        ("seats-80", "superseded"),
    ]


def test_api_calls_period_counter_rearms_in_new_period():
    a = Account()
    a.send(0, type="plan_changed", plan="free", period_start="2026-11-01T00:00:00Z")
    assert outcomes(a.send(HOUR, type="usage", metric="api_calls", delta=8000)) == [
        ("api-calls-80", "emitted")
    ]
    assert a.send(2 * HOUR, type="usage", metric="api_calls", delta=100) == []
    # next period (Dec 1): counter restarts; 8,000 in one go fires again (after the 7d cooldown)
    ds = a.send(9 * DAY, type="usage", metric="api_calls", delta=8000)
    assert outcomes(ds) == [("api-calls-80", "emitted")]
    assert ds[0].prompt is not None and ds[0].prompt["value"] == 8000


def test_stale_gauge_and_late_counter_change_nothing():
    a = Account()
    a.seats(HOUR, 2)
    assert a.seats(0, 5) == []  # older reading: ignored
    g = a.state.gauges
    assert g is not None and len(g) == 3 and g[0] == "seats" and g[2] == 2
    a.send(0, type="plan_changed", plan="free", period_start="2026-11-01T00:00:00Z")
    a.send(20 * DAY, type="usage", metric="api_calls", delta=10)
    a.send(5 * DAY, type="usage", metric="api_calls", delta=99_999)  # previous period: late
    assert period_items(a.state.periods)["api_calls"].total == 10


def test_duplicates_dropped():
    a = Account()
    from upsell_triggers.engine.events import validate_event

    ev = validate_event(
        {
            "event_id": "same",
            "account_id": "acme",
            "ts": 1_795_341_600_000,
            "type": "usage",
            "metric": "seats",
            "value": 4,
        }
    )
    assert a.engine.process(ev, a.state).status == "applied"  # type: ignore[arg-type]
    assert a.engine.process(ev, a.state).status == "duplicate"  # type: ignore[arg-type]


def test_feedback_is_attributed_to_rule():
    a = Account()
    pid = a.seats(0, 4)[0].prompt["prompt_id"]  # type: ignore[index]
    ds = a.send(HOUR, type="prompt_clicked", prompt_id=pid)
    assert [(d.rule_id, d.outcome, d.action) for d in ds] == [("seats-80", "feedback", "clicked")]


def test_prompt_id_is_deterministic():
    ids = []
    for _ in range(2):
        a = Account()
        ids.append(a.seats(0, 4)[0].prompt["prompt_id"])  # type: ignore[index]
    assert ids[0] == ids[1]


def test_state_roundtrip_preserves_behaviour():

    a = Account()
    a.seats(0, 4)
    a.send(HOUR, type="paywall_hit", feature="sso")
    a.state = decode_state(encode_state(a.state))
    assert a.seats(2 * HOUR, 4) == []
    assert len(encode_state(a.state)) < 1024


def test_state_bytes_hold_no_more_memory_than_their_length():
    """Stores keep these bytes: orjson >= 3.12 hands out a 4 KiB buffer for any short document."""
    import tracemalloc

    a = Account()
    a.seats(0, 4)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [encode_state(a.state) for _ in range(100)]
        per_copy = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_copy < len(kept[0]) + 128
    assert encode_state(decode_state(kept[0])) == kept[0]


def test_all_condition_with_custom_rolling_metric_requires_activation():
    """seats ≥ 80% fires only once active_users (a custom rolling counter) reaches 5 in 7 days."""
    from upsell_triggers.engine.ruleset import compile_sources

    from .helpers import RULES

    extra = (
        "metrics:\n  active_users: {kind: rolling_counter, window: 7d, bucket: 1h}\n"
        "groups:\n  - id: activated\n    rules:\n      - id: seats-80-active\n"
        "        when:\n          all:\n            - {metric: seats, ratio: 0.8}\n"
        "            - {metric: active_users, at_least: 5, window: 7d}\n"
        "        rearm: 0.7\n        prompt: {title: 'Using {value} of {limit}', cta: {label: l, url: u}}\n"
    )
    sources = [(p.name, p.read_text()) for p in sorted(RULES.glob("*.yaml")) if p.name != "usage-limits.yaml"]
    rs = compile_sources([*sources, ("activated.yaml", extra)])
    assert [r.id for r in rs.by_metric["active_users"]] == ["seats-80-active"]
    a = Account(rs)
    assert a.seats(0, 4) == []  # not activated yet: condition false, stays armed
    assert a.send(HOUR, type="usage", metric="active_users", delta=3) == []
    ds = a.send(
        2 * HOUR, type="usage", metric="active_users", delta=2
    )  # the event on the 2nd metric fires it
    assert outcomes(ds) == [("seats-80-active", "emitted")]
    assert ds[0].prompt is not None and ds[0].prompt["metric"] == "seats" and ds[0].prompt["value"] == 4


def test_absurd_but_valid_readings_still_render_a_prompt():
    """Found by the fuzz suite: a seats reading of 1e308 crashed prompt rendering (percent overflow)."""
    a = Account()
    a.send(0, type="plan_changed", plan="free")
    ds = a.seats(HOUR, 1e308)
    assert [d.rule_id for d in ds if d.prompt] == ["seats-100"]
    p = ds[-1].prompt
    assert p is not None and "over 100%" not in p["title"]
    import orjson

    orjson.dumps(p)  # serializable (no integer beyond 64 bits)


def test_state_keeps_only_what_the_account_used_and_catalog_names_once():
    """Memory per account: unused containers stay None, and a metric's name in a state is the
    catalog's string, not a copy decoded from each event."""
    a, b = Account(account="a"), Account(account="b")
    a.seats(0, 1)
    b.seats(0, 2)
    assert (a.state.periods, a.state.rolling, a.state.rules, a.state.sent) == (None, None, None, None)
    ka, kb = (a.state.gauges or [None])[0], (b.state.gauges or [None])[0]
    assert ka == "seats" and ka is kb
    a.seats(HOUR, 5)  # fires: the rule state and the cap history are created
    assert a.state.rules is not None and a.state.sent is not None and a.state.recent_prompts is not None


def test_a_prompt_time_is_one_object_in_the_state():
    """The rule state, the frequency cap and the attribution keep the same prompt time: one int object
    for the three (32 bytes each), compiled or not (compiled code would box a C integer anew for each
    field it stores it in)."""
    a = Account()
    assert outcomes(a.seats(0, 4)) == [("seats-80", "emitted")]
    st = a.state
    assert st.sent is not None and st.attribution is not None and st.rules is not None
    fired = [r.last_fired for r in st.rules.values() if r.last_fired is not None]
    assert fired and fired[0] is st.sent[-1] is st.attribution.ts
    h = Account(with_policy("policy: {holdout: {fraction: 1.0, salt: s}}\n"))
    assert outcomes(h.seats(0, 4)) == [("seats-80", "holdout")]
    assert h.state.attribution is not None and h.state.rules is not None
    held = [r.last_fired for r in h.state.rules.values() if r.last_fired is not None]
    assert held and held[0] is h.state.attribution.ts
