"""The service (Faust worker subprocess) against the real local Kafka broker."""

from __future__ import annotations

import asyncio
import base64
import time

import msgspec
import orjson
import pytest

from devkit.exactness import read_all
from devkit.kafka_io import collect, event, produce
from tests.polling import until
from upsell_triggers.engine.state import STATE_VERSION
from upsell_triggers.engine.statecodec import decode_state
from upsell_triggers.engine.stateops import event_hash

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


CONTRACT_FIELDS = {
    "schema_version",
    "prompt_id",
    "account_id",
    "user_id",
    "rule_id",
    "signal",
    "metric",
    "feature",
    "value",
    "limit",
    "ratio",
    "plan",
    "target_plan",
    "placement",
    "priority",
    "title",
    "body",
    "cta",
    "trigger_event_id",
    "created_at",
    "expires_at",
}


async def test_seats_event_becomes_prompt_on_topic(worker_factory, kafka_bootstrap):
    w = worker_factory().start()
    w.wait_ready()
    now = int(time.time() * 1000)
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [
            event("acme", "e-1", now - 2000, type="plan_changed", plan="free"),
            event("acme", "e-2", now - 1000, type="usage", metric="seats", value=3),
            event("acme", "e-3", now, type="usage", metric="seats", value=4, user_id="u-9"),
        ],
    )
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=1, settle=1.0)
    assert len(recs) == 1, [r.value for r in recs]
    rec = recs[0]
    assert rec.key == b"acme"
    p = orjson.loads(rec.value)
    assert set(p) == CONTRACT_FIELDS
    assert p["schema_version"] == 1 and p["rule_id"] == "seats-80" and p["signal"] == "usage_limit"
    assert (p["value"], p["limit"], p["ratio"]) == (4, 5, 0.8)
    assert (p["plan"], p["target_plan"], p["placement"]) == ("free", "team", "banner")
    assert p["title"] == "You're using 4 of 5 seats"
    assert p["cta"] == {"label": "Upgrade to Team", "url": "/billing/upgrade?plan=team"}
    assert p["trigger_event_id"] == "e-3" and p["user_id"] == "u-9"
    assert p["prompt_id"].startswith("pr_")
    status, body = w.get("/metrics")
    assert status == 200
    assert 'upsell_decisions_total{outcome="emitted",rule="seats-80"} 1.0' in body


async def test_malformed_bytes_go_to_dlq_with_reason(worker_factory, kafka_bootstrap):
    w = worker_factory().start()
    w.wait_ready()
    now = int(time.time() * 1000)
    bad = [
        (b"acme", b"\xff\xfe not json"),
        (
            b"acme",
            orjson.dumps(
                {
                    "event_id": "x",
                    "account_id": "acme",
                    "type": "usage",
                    "ts": now,
                    "metric": "seats",
                    "value": "four",
                }
            ),
        ),
        (
            b"other",
            orjson.dumps(
                {"event_id": "y", "account_id": "acme", "type": "paywall_hit", "ts": now, "feature": "sso"}
            ),
        ),
        (
            b"acme",
            orjson.dumps(
                {
                    "event_id": "z",
                    "account_id": "acme",
                    "type": "usage",
                    "ts": now,
                    "metric": "bogus",
                    "value": 1,
                }
            ),
        ),
    ]
    await produce(kafka_bootstrap, w.topics["events"], bad)
    recs = await collect(kafka_bootstrap, [w.topics["dlq"]], want=4, settle=0.5)
    assert len(recs) == 4
    by_value = {r.value: dict(r.headers) for r in recs}
    assert set(by_value) == {v for _, v in bad}  # original bytes, unchanged
    reasons = {v: h["reason"].decode() for v, h in by_value.items()}
    assert reasons[bad[0][1]] == "not_json"
    assert reasons[bad[1][1]] == "invalid_field"
    assert reasons[bad[2][1]] == "key_mismatch"
    assert reasons[bad[3][1]] == "unknown_metric"
    for h in by_value.values():
        assert h["source_topic"].decode() == w.topics["events"]
        assert int(h["source_partition"]) >= 0 and int(h["source_offset"]) >= 0
        assert h["error"]
    assert b"'value'" in by_value[bad[1][1]]["error"]
    assert w.proc is not None and w.proc.poll() is None  # still running
    _, body = w.get("/metrics")
    assert 'upsell_invalid_events_total{reason="not_json"} 1.0' in body


async def test_redelivered_malformed_records_are_dead_lettered_once_per_account_key(
    worker_factory, kafka_bootstrap
):
    """A SIGKILL before any offset commit redelivers every record: the rejected records whose key names
    an account are skipped by that account's applied offset; one without a key is dead-lettered again
    (RELIABILITY.md: the dead-letter topic's delivery guarantee)."""
    env = {"UPSELL_COMMIT_INTERVAL_S": "600"}  # nothing committed: the restart reads the topic again
    w = worker_factory(extra_env=env).start()
    w.wait_ready()
    now = int(time.time() * 1000)
    keyed = [
        (b"acme", b"\xff\xfe not json"),
        (b"acme", orjson.dumps({"event_id": "x", "account_id": "acme", "type": "usage", "ts": now})),
        (b"globex", event("acme", "k", now, type="paywall_hit", feature="sso")[1]),  # key mismatch
        (b"initech", event("initech", "u", now, type="usage", metric="bogus", value=1)[1]),
    ]
    unkeyed = (None, b"[1, 2")
    await produce(kafka_bootstrap, w.topics["events"], [*keyed, unkeyed])
    assert len(await collect(kafka_bootstrap, [w.topics["dlq"]], want=5, settle=1.0)) == 5
    await asyncio.sleep(1.5)  # the states (with the applied offsets) are written within ~50 ms
    w.stop(kill=True)
    w2 = worker_factory(name=w.name, extra_env=env).start()
    w2.wait_ready(90)
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [event("acme", "e-1", now, type="usage", metric="seats", value=4)],
    )
    assert len(await collect(kafka_bootstrap, [w.topics["prompts"]], want=1)) == 1
    dead = await collect(kafka_bootstrap, [w.topics["dlq"]], want=7, timeout=5, settle=1.0)
    counts = {v: sum(1 for r in dead if r.value == v) for _, v in [*keyed, unkeyed]}
    assert counts == {**{v: 1 for _, v in keyed}, unkeyed[1]: 2}, counts


async def test_restart_keeps_state_and_dedups(worker_factory, kafka_bootstrap):
    """State survives a SIGKILL (changelog recovery): a crossing after restart is not re-fired, and
    a re-sent event changes nothing."""
    w = worker_factory().start()
    w.wait_ready()
    now = int(time.time() * 1000)
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [event("acme", "e-1", now - 5000, type="usage", metric="seats", value=4)],
    )
    assert len(await collect(kafka_bootstrap, [w.topics["prompts"]], want=1)) == 1
    await asyncio.sleep(1.5)  # let the commit interval pass (offsets + changelog)
    w.stop(kill=True)
    w2 = worker_factory(name=w.name).start()
    w2.wait_ready(90)
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [
            event("acme", "e-1", now - 5000, type="usage", metric="seats", value=4),  # duplicate
            event("acme", "e-2", now - 4000, type="usage", metric="seats", value=4),  # still disarmed
            event("acme", "e-3", now - 3000, type="usage", metric="seats", value=5),  # seats-100
        ],
    )
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=2, settle=1.5)
    rules = [orjson.loads(r.value)["rule_id"] for r in recs]
    assert rules == ["seats-80", "seats-100"], rules


@pytest.mark.parametrize("version", [3, 4])
async def test_worker_upgraded_in_place_reads_older_states(worker_factory, kafka_bootstrap, version):
    """A changelog written by an older release (version 3: JSON; 4: MessagePack with a gauges dict and
    an offsets list) is recovered and used: the account keeps its plan and its dedup ring, and its next
    write is the current version."""
    w = worker_factory().start()
    w.wait_ready()  # creates the topics, the changelog included
    w.stop()
    now = int(time.time() * 1000)
    if version == 3:
        ring = base64.b64encode(event_hash("e-old")).decode()
        seats = {"seats": [now - 9000, 10.0]}
        old = orjson.dumps(
            [3, "team", now - 9000, None, None, seats, {}, {}, {}, [], None, [], ring, now - 9000, [-1, -1]]
        )
    else:
        seats4 = {"seats": [now - 9000, 10.0]}
        unused = [None] * 6  # periods, rolling, rules, sent, attribution, recent_prompts
        old = msgspec.msgpack.encode(
            [4, "team", now - 9000, None, None, seats4, *unused, event_hash("e-old"), now - 9000, [-1, -1]]
        )
    changelog = f"{w.env['UPSELL_APP_ID']}-account-state-changelog"
    await produce(kafka_bootstrap, changelog, [(b"acme", old)])  # same partitioner as the events
    w2 = worker_factory(name=w.name).start()
    w2.wait_ready(90)
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [
            event("acme", "e-old", now - 2000, type="usage", metric="seats", value=25),  # seen before
            event("acme", "e-new", now - 1000, type="usage", metric="seats", value=21),
        ],
    )
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=1, settle=1.5)
    assert len(recs) == 1, [r.value for r in recs]
    p = orjson.loads(recs[0].value)
    # The team plan (25 seats) came from the old state: a new account would be on free (5 seats).
    assert (p["rule_id"], p["plan"], p["value"], p["limit"]) == ("seats-80", "team", 21, 25)
    await until(lambda: w2.metric("upsell_state_unwritten_accounts") == 0, 30)
    last = [r.value for r in await read_all(kafka_bootstrap, changelog) if r.key == b"acme"][-1]
    assert last[:1] != b"[" and msgspec.msgpack.decode(last)[0] == STATE_VERSION
    st = decode_state(last)
    assert st.plan == "team" and st.gauges == ["seats", now - 1000, 21.0]


async def test_bad_rules_edit_keeps_worker_on_old_rules_then_good_edit_applies(
    worker_factory, kafka_bootstrap, tmp_path
):
    import shutil

    from devkit.worker import ROOT

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("tests"))
    w = worker_factory(rules_dir=rules).start()
    w.wait_ready()
    path = rules / "usage-limits.yaml"
    good = path.read_text()
    path.write_text(good.replace("ratio: 0.8}", "ratio: 0.8, bogus: 1}", 1))  # unknown field
    await until(lambda: w.metric('upsell_rule_reloads_total{result="rejected"}') > 0, 20)
    assert w.metric('upsell_rule_reloads_total{result="rejected"}') >= 1
    log = w.log.read_text()
    assert "rule reload rejected" in log and "usage-limits.yaml:" in log  # file and line in the log
    assert '"level":"error"' in log  # structured JSON, Faust lines included
    now = int(time.time() * 1000)
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [
            event("acme", "e-1", now - 2000, type="plan_changed", plan="free"),
            event("acme", "e-2", now - 1000, type="usage", metric="seats", value=4),
        ],
    )
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=1, settle=0.5)
    assert [orjson.loads(r.value)["rule_id"] for r in recs] == ["seats-80"]  # old rules still run
    assert w.proc is not None and w.proc.poll() is None
    # A valid edit (seats-80 now at 60%) is swapped in, state kept.
    path.write_text(good.replace("ratio: 0.8}\n        rearm: 0.7", "ratio: 0.6}\n        rearm: 0.5", 1))
    await until(lambda: w.metric('upsell_rule_reloads_total{result="success"}') > 0, 20)
    assert w.metric('upsell_rule_reloads_total{result="success"}') >= 1
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [
            event("beta", "b-1", now - 2000, type="plan_changed", plan="free"),
            event("beta", "b-2", now - 1000, type="usage", metric="seats", value=3),  # 60%
        ],
    )
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=2, settle=0.5)
    assert sorted(orjson.loads(r.value)["account_id"] for r in recs) == ["acme", "beta"]


async def test_readyz_flips_after_recovery(worker_factory, kafka_bootstrap):
    """/readyz is 503 until partitions are assigned and the table recovered, then 200; /healthz is up
    as soon as the HTTP server is."""
    w = worker_factory().start()
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, _ = w.get("/readyz")
        if code:
            seen.append(code)
        if code == 200:
            break
        await asyncio.sleep(0.05)
    assert seen and seen[-1] == 200
    assert 503 in seen, f"never observed not-ready before ready: {seen[:5]}"
    assert w.get("/healthz")[0] == 200
    assert w.metric("upsell_ready") == 1.0 or (await asyncio.sleep(1.2)) or w.metric("upsell_ready") == 1.0


async def test_metrics_and_logs_carry_no_account_ids_or_payloads(worker_factory, kafka_bootstrap):
    w = worker_factory().start()
    w.wait_ready()
    now = int(time.time() * 1000)
    secret = "acct-7f3c-privacy-probe"
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [
            event(secret, "e-1", now - 2000, type="plan_changed", plan="free"),
            event(
                secret, "e-2", now - 1000, type="usage", metric="seats", value=5, user_id="user-privacy-probe"
            ),
            (secret.encode(), b'{"account_id": "' + secret.encode() + b'", "broken json'),  # DLQ path too
        ],
    )
    assert len(await collect(kafka_bootstrap, [w.topics["prompts"]], want=1, settle=0.5)) == 1
    await collect(kafka_bootstrap, [w.topics["dlq"]], want=1)
    _, body = w.get("/metrics")
    assert "upsell_decisions_total" in body
    assert secret not in body and "privacy-probe" not in body
    log = w.log.read_text()
    assert "privacy-probe" not in log and "broken json" not in log


async def test_sighup_reloads_rules_when_file_watching_is_off(worker_factory, kafka_bootstrap, tmp_path):
    import shutil
    import signal

    from devkit.worker import ROOT

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("tests"))
    w = worker_factory(rules_dir=rules, extra_env={"UPSELL_WATCH_RULES": "false"}).start()
    w.wait_ready()
    path = rules / "usage-limits.yaml"
    path.write_text(
        path.read_text().replace("ratio: 0.8}\n        rearm: 0.7", "ratio: 0.6}\n        rearm: 0.5", 1)
    )
    await asyncio.sleep(1.5)
    assert w.metric('upsell_rule_reloads_total{result="success"}') == 0  # not watching
    assert w.proc is not None
    w.proc.send_signal(signal.SIGHUP)
    await until(lambda: w.metric('upsell_rule_reloads_total{result="success"}') > 0, 10)
    assert w.metric('upsell_rule_reloads_total{result="success"}') == 1


async def test_partition_count_mismatch_is_a_clear_startup_error(worker_factory, kafka_bootstrap):
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    w = worker_factory()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(w.topics["events"], 4, 1), NewTopic(w.topics["feedback"], 2, 1)])
    finally:
        await admin.close()
    w.start()
    assert w.proc is not None
    assert await asyncio.to_thread(w.proc.wait, 60) != 0
    log = w.log.read_text()
    assert "same partition count" in log and w.topics["feedback"] in log


async def test_recovery_restores_the_newest_state_of_every_account(worker_factory, kafka_bootstrap):
    """Recovery applies each fetch of the changelog as one batch (BatchConsumer._restore), in order: with
    two states per account in the changelog, the newer one wins, for every account. The older state has
    the team plan and seats-80 armed; the newer one has it fired. After the restart, 22 seats must not fire
    seats-80 again, and 25 seats must fire seats-100 against the team's limit (25): a worker that restored
    the older state would re-fire seats-80, and one that restored none would use the free plan's limit (5)."""
    n = 200
    accounts = [f"acct-{i:03d}" for i in range(n)]
    w = worker_factory().start()
    w.wait_ready()
    now = int(time.time() * 1000)
    events = w.topics["events"]
    await produce(
        kafka_bootstrap,
        events,
        [event(a, f"{a}-p", now - 9000, type="plan_changed", plan="team") for a in accounts],
    )
    await until(lambda: w.metric("upsell_events_consumed_total") == n, 30)
    await until(lambda: w.metric("upsell_state_unwritten_accounts") == 0, 30)
    await produce(
        kafka_bootstrap,
        events,
        [event(a, f"{a}-s1", now - 8000, type="usage", metric="seats", value=21) for a in accounts],
    )
    assert len(await collect(kafka_bootstrap, [w.topics["prompts"]], want=n)) == n  # seats-80 each
    await until(lambda: w.metric("upsell_state_unwritten_accounts") == 0, 30)
    await asyncio.sleep(1.5)  # the commit interval: offsets committed
    w.stop()
    changelog = f"{w.env['UPSELL_APP_ID']}-account-state-changelog"
    written = await read_all(kafka_bootstrap, changelog)
    assert len(written) >= 2 * n  # every account's state written at least twice

    w2 = worker_factory(name=w.name).start()  # a fetch holds both states of an account
    w2.wait_ready(90)
    assert w2.metric("upsell_state_restored_records_total") == len(written)
    await produce(
        kafka_bootstrap,
        events,
        [event(a, f"{a}-s2", now - 7000, type="usage", metric="seats", value=22) for a in accounts]
        + [event(a, f"{a}-s3", now - 6000, type="usage", metric="seats", value=25) for a in accounts],
    )
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=2 * n, settle=1.5)
    # the topic's partitions interleave in `recs`: the prompts after the restart are told by their
    # trigger, not by their position
    after = [
        p for p in map(orjson.loads, (r.value for r in recs)) if not p["trigger_event_id"].endswith("-s1")
    ]
    assert sorted(p["account_id"] for p in after) == accounts
    assert {(p["rule_id"], p["plan"], p["limit"]) for p in after} == {("seats-100", "team", 25)}


async def test_traits_and_the_eligibility_gate_survive_a_restart(worker_factory, kafka_bootstrap):
    """rules/examples (a trait catalog and an eligibility gate) in the worker: traits set before a
    SIGKILL are recovered from the changelog and still decide the audience and the gate after it; an
    undeclared trait is dead-lettered with its reason."""
    from devkit.worker import ROOT

    w = worker_factory(rules_dir=ROOT / "rules" / "examples").start()
    w.wait_ready()
    now = int(time.time() * 1000)
    old, new = now - 60 * 86_400_000, now - 86_400_000  # signed up 60 days ago; 1 day ago
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [
            event(
                "acme",
                "a-1",
                now - 9000,
                type="account_updated",
                traits={"segment": "self_serve", "signed_up_at": new},
            ),
            event("acme", "a-2", now - 8000, type="usage", metric="seats", value=4),  # ineligible: 1 day old
            event(
                "globex",
                "g-1",
                now - 9000,
                type="account_updated",
                traits={"segment": "self_serve", "signed_up_at": old},
            ),
            event("globex", "g-2", now - 8000, type="usage", metric="seats", value=4),  # eligible: prompt
            event(
                "initech",
                "i-1",
                now - 9000,
                type="account_updated",
                traits={"segment": "self_serve", "signed_up_at": old},
            ),
            event("initech", "i-2", now - 8000, type="usage", metric="seats", value=3),  # below 80%
            event("hooli", "h-1", now - 9000, type="account_updated", traits={"tier": "gold"}),
        ],
    )
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=1, settle=1.0)
    assert [(r.key, orjson.loads(r.value)["rule_id"]) for r in recs] == [(b"globex", "seats-80-self-serve")]
    dlq = await collect(kafka_bootstrap, [w.topics["dlq"]], want=1, settle=0.5)
    assert [dict(r.headers)["reason"] for r in dlq] == [b"unknown_trait"]
    _, body = w.get("/metrics")
    assert 'upsell_decisions_total{outcome="ineligible",rule="seats-80-self-serve"} 1.0' in body
    await asyncio.sleep(1.5)  # let the commit interval pass (offsets + changelog)
    w.stop(kill=True)
    w2 = worker_factory(name=w.name, rules_dir=ROOT / "rules" / "examples").start()
    w2.wait_ready(90)
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [
            # acme keeps its segment (recovered) and is now old enough; its rule stayed armed
            event("acme", "a-3", now - 7000, type="account_updated", traits={"signed_up_at": old}),
            event("acme", "a-4", now - 6000, type="usage", metric="seats", value=4),
            # initech's traits (recovered) put it in the audience and through the gate
            event("initech", "i-3", now - 6000, type="usage", metric="seats", value=4),
        ],
    )
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=3, settle=1.5)
    got = sorted((r.key, orjson.loads(r.value)["rule_id"]) for r in recs)
    assert got == [
        (b"acme", "seats-80-self-serve"),
        (b"globex", "seats-80-self-serve"),
        (b"initech", "seats-80-self-serve"),
    ], got


async def test_a_forecast_history_survives_a_restart(worker_factory, kafka_bootstrap):
    """rules/examples/pace in the worker: six days of seat growth before a SIGKILL are recovered from
    the changelog, so the seventh day's reading after it completes the trend and the forecast fires,
    with its days in the copy."""
    from devkit.worker import ROOT

    rules = ROOT / "rules" / "examples" / "pace"
    day = 86_400_000
    now = int(time.time() * 1000)
    w = worker_factory(rules_dir=rules).start()
    w.wait_ready()
    t0 = now - 10 * day
    before = [event("acme", "p-0", t0, type="plan_changed", plan="business")]
    before += [
        event("acme", f"s-{d}", t0 + (d + 1) * day, type="usage", metric="seats", value=150 + 2 * d)
        for d in range(7)  # days 0-6: six full days of trend, one short of the seven it needs
    ]
    before.append(event("globex", "g-1", now - 5000, type="usage", metric="seats", value=5))  # a marker
    await produce(kafka_bootstrap, w.topics["events"], before)
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=1, settle=1.0)
    assert [(r.key, orjson.loads(r.value)["rule_id"]) for r in recs] == [(b"globex", "seats-100")]
    await asyncio.sleep(1.5)  # let the commit interval pass (offsets + changelog)
    w.stop(kill=True)
    w2 = worker_factory(name=w.name, rules_dir=rules).start()
    w2.wait_ready(90)
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [event("acme", "s-7", t0 + 8 * day, type="usage", metric="seats", value=164)],
    )
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=2, settle=1.5)
    got = [orjson.loads(r.value) for r in recs if r.key == b"acme"]
    assert [(p["rule_id"], p["signal"], p["value"]) for p in got] == [("seats-pace", "usage_forecast", 164)]
    assert got[0]["title"] == "At this rate your team fills all 200 seats in about 18 days"


async def test_distinct_counts_survive_a_restart(worker_factory, kafka_bootstrap):
    """rules/examples/expansion (distinct counts) in the worker: the people and teams counted before a
    SIGKILL are recovered from the changelog, so the values seen after it complete the counts."""
    from devkit.worker import ROOT

    rules = ROOT / "rules" / "examples" / "expansion"
    w = worker_factory(rules_dir=rules).start()
    w.wait_ready()
    now = int(time.time() * 1000)

    def use(account: str, n: int, user: str, team: str) -> tuple[bytes, bytes]:
        return event(
            account, f"{account}-{n}", now - 9000 + n, type="usage", metric="api_calls", delta=1,
            user_id=user, attributes={"team_id": team},
        )  # fmt: skip

    # acme: 5 people before the restart, 3 more after (8 in a week on 5 seats); globex: 2 teams, 1 more
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [use("acme", i, f"u-{i}", "t-a") for i in range(5)] + [use("globex", 0, "u-1", "design"), use("globex", 1, "u-2", "sales")],
    )  # fmt: skip
    await asyncio.sleep(2.5)  # the commit interval passes: offsets and changelog
    assert await collect(kafka_bootstrap, [w.topics["prompts"]], want=1, timeout=2.0) == []
    w.stop(kill=True)
    w2 = worker_factory(name=w.name, rules_dir=rules).start()
    w2.wait_ready(90)
    await produce(
        kafka_bootstrap,
        w.topics["events"],
        [use("acme", i, f"u-{i}", "t-a") for i in range(3, 8)] + [use("globex", 2, "u-1", "support")],
    )  # fmt: skip
    recs = await collect(kafka_bootstrap, [w.topics["prompts"]], want=2, settle=1.5)
    got = sorted((r.key, orjson.loads(r.value)["rule_id"], orjson.loads(r.value)["value"]) for r in recs)
    assert got == [(b"acme", "users-over-seats", 8), (b"globex", "new-teams", 3)], got
