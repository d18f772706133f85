"""Exactness of the Kafka runtime against a replay: SIGKILL mid-stream, two workers and a rebalance,
RocksDB store. The workers' state is read back from the table's changelog and compared field by field
with `replay` of the same events; prompts and leads on their topics must be the replay's, each id with
one content."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Set
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from devkit.exactness import Report, check_exact, read_all, replay_expected, wait_committed
from devkit.kafka_io import event, produce, sim_records, with_erasures
from devkit.worker import ROOT

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]


async def check(  # type: ignore[no-untyped-def]
    bs: str,
    w,
    events: list[bytes],
    leads: bool = False,
    rules: Path = ROOT / "rules",
    in_flight: Set[str] = frozenset(),
) -> Report:
    """`leads`: the workload has high-touch accounts, so the leads topic must have leads. `in_flight`:
    ids of events of deleted accounts that must produce nothing. Accounts whose last event is their
    deletion must hold the bare marker."""
    rep = await check_exact(bs, w.env["UPSELL_APP_ID"], w.topics, events, rules, in_flight=in_flight)
    assert rep.accounts > 0 and rep.distinct_prompts > 0  # the workload did something
    assert not rep.state_mismatches, (rep.state_mismatches[:5], rep.first_diff)
    assert rep.missing_accounts == 0
    assert not rep.conflicting_ids, rep.conflicting_ids[:5]
    assert (rep.missing_prompts, rep.unexpected_prompts) == (0, 0)
    assert not rep.conflicting_lead_ids, rep.conflicting_lead_ids[:5]
    assert (rep.missing_leads, rep.unexpected_leads) == (0, 0)
    assert rep.distinct_leads > 0 or not leads
    assert (rep.not_markers, rep.in_flight_outputs) == ([], 0)
    return rep


async def assert_keyed_as_aiokafka_would(bs: str, topic: str, records: list[Any]) -> None:
    """Every record is on the partition aiokafka's DefaultPartitioner chooses for its key: the worker's
    own partitioner (runtime/kafka/partitioner.py) leaves the topics laid out as Kafka's default."""
    producer = AIOKafkaProducer(bootstrap_servers=bs)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
    finally:
        await producer.stop()
    default = DefaultPartitioner()
    assert records and len({r.partition for r in records}) > 1
    misplaced = [
        (r.key, r.partition) for r in records if r.partition != default(r.key, partitions, partitions)
    ]
    assert misplaced == []


async def test_sigkill_mid_stream_equals_replay(worker_factory, kafka_bootstrap):
    """With account deletions among the events (an event in flight after each, then the account's later
    events) and high-touch accounts (leads): deleted accounts' changelog states are the replay's, markers
    included, no prompt or lead comes from an event in flight, and the leads topic holds the replay's
    leads, across the kills."""
    records, in_flight = with_erasures(list(sim_records(12_000, 1_500, seed=3, high_touch_every=5)))
    assert len(in_flight) > 50
    w = worker_factory().start()
    w.wait_ready()
    rng = random.Random(5)
    chunks = [records[i : i + 3_000] for i in range(0, len(records), 3_000)]
    for i, chunk in enumerate(chunks):
        await produce(kafka_bootstrap, w.topics["events"], chunk)
        if i < 2:  # kill while the chunk is being processed, at a random moment
            await asyncio.sleep(rng.uniform(0.05, 1.5))
            w.stop(kill=True)
            w = worker_factory(name=w.name).start()
            w.wait_ready(90)
    rep = await check(kafka_bootstrap, w, [v for _, v in records], leads=True)
    prompts = await read_all(kafka_bootstrap, w.topics["prompts"])
    assert not {orjson.loads(r.value)["trigger_event_id"] for r in prompts} & in_flight
    leads = await read_all(kafka_bootstrap, w.topics["leads"])
    assert not {orjson.loads(r.value)["trigger_event_id"] for r in leads} & in_flight
    await assert_keyed_as_aiokafka_would(kafka_bootstrap, w.topics["prompts"], prompts)
    await assert_keyed_as_aiokafka_would(kafka_bootstrap, w.topics["leads"], leads)
    print(f"sigkill x2: {rep}, {len(in_flight)} deletions with an event in flight")


SCORING = """
version: 1
scoring:
  half_life: 6h
  rules: {seats-80: 30}
  signals: {paywall: 20, usage_limit: 15}
  fit: [{trait: segment, in: [high_touch], points: 10}]
groups:
  - id: scored
    rules:
      - id: hot-account
        action: lead
        team: sales
        when: {all: [{metric: seats, at_least: 1}, {score: {at_least: 50}}]}
        rearm: 0
        cooldown: 30d
"""


async def test_scores_survive_sigkill(worker_factory, kafka_bootstrap, tmp_path: Path):
    """The shipped rules with a readiness score and a lead rule on it: the accounts' score parts in the
    changelog and the leads (score, band, contributions) are the replay's after a SIGKILL mid-stream."""
    rules = tmp_path / "scored-rules"
    rules.mkdir()
    for f in (ROOT / "rules").glob("*.yaml"):
        (rules / f.name).write_text(f.read_text())
    (rules / "scoring.yaml").write_text(SCORING)
    records = list(sim_records(4_000, 500, seed=12, high_touch_every=4))
    events = [v for _, v in records]
    expected = replay_expected(events, rules)
    assert sum(st.score is not None for st in expected.states.values()) > 20
    assert any(orjson.loads(v)["band"] for v in expected.leads.values())
    w = worker_factory(rules_dir=rules).start()
    w.wait_ready(90)
    await produce(kafka_bootstrap, w.topics["events"], records[:2_000])
    await asyncio.sleep(random.Random(7).uniform(0.2, 1.5))
    w.stop(kill=True)
    w = worker_factory(name=w.name, rules_dir=rules).start()
    w.wait_ready(90)
    await produce(kafka_bootstrap, w.topics["events"], records[2_000:])
    rep = await check(kafka_bootstrap, w, events, leads=True, rules=rules)
    print(f"scores, sigkill: {rep}")


async def test_two_workers_split_and_take_over(worker_factory, kafka_bootstrap):
    records, _ = with_erasures(list(sim_records(10_000, 1_200, seed=4)))
    a = worker_factory().start()
    b = worker_factory(app_id=a.env["UPSELL_APP_ID"], name=a.name).start()
    a.wait_ready(90)
    b.wait_ready(90)
    await produce(kafka_bootstrap, a.topics["events"], records[:5_000])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if a.metric("upsell_events_consumed_total") and b.metric("upsell_events_consumed_total"):
            break
        await asyncio.sleep(0.3)
    assert a.metric("upsell_events_consumed_total") > 0 and b.metric("upsell_events_consumed_total") > 0, (
        "both workers should own partitions"
    )
    b.stop()  # clean leave: a takes over b's partitions and their accounts' state
    await produce(kafka_bootstrap, a.topics["events"], records[5_000:])
    await check(kafka_bootstrap, a, [v for _, v in records])


async def test_rebalance_commits_what_was_acked(worker_factory, kafka_bootstrap):
    """Partitions a worker processed to the end within one commit interval and kept through a
    rebalance are committed to their end (Faust drops acked offsets on revoke; RELIABILITY.md #7).
    The commit timer is set beyond the test here, so only the commit on revoke can move them."""
    records = list(sim_records(5_000, 1_200, seed=4))
    env = {"UPSELL_COMMIT_INTERVAL_S": "600"}
    a = worker_factory(extra_env=env).start()
    b = worker_factory(app_id=a.env["UPSELL_APP_ID"], name=a.name, extra_env=env).start()
    a.wait_ready(90)
    b.wait_ready(90)
    await produce(kafka_bootstrap, a.topics["events"], records)
    deadline = time.monotonic() + 60
    consumed = (0.0, 0.0)
    while time.monotonic() < deadline:
        consumed = (a.metric("upsell_events_consumed_total"), b.metric("upsell_events_consumed_total"))
        if sum(consumed) >= len(records):
            break
        await asyncio.sleep(0.3)
    assert all(consumed) and sum(consumed) == len(records), consumed
    b.stop()  # b commits on leaving; a keeps its partitions and gains b's
    await wait_committed(kafka_bootstrap, a.env["UPSELL_APP_ID"], a.topics["events"], timeout=30)
    await check(kafka_bootstrap, a, [v for _, v in records])


async def test_rocksdb_store_survives_sigkill(worker_factory, kafka_bootstrap, tmp_path: Path):
    """With deletions in the first half (each followed by an event in flight, and 20 accounts deleted
    after their last event of that half): the deletion markers the RocksDB store holds survive the
    SIGKILL, so events in flight for those 20 accounts sent after the restart are dropped (no prompt
    or lead), and states, markers included, equal the replay's."""
    pytest.importorskip("rocksdict")
    records = list(sim_records(6_000, 800, seed=6, high_touch_every=5))
    first, in_flight = with_erasures(records[:3_000])
    deleted = [orjson.loads(v) for _, v in first[-20:]]  # with_erasures puts the last deletions last
    assert {d["type"] for d in deleted} == {"account_deleted"}
    late = [
        event(
            d["account_id"],
            f"late-{d['account_id']}",
            d["ts"] - 1,
            type="usage",
            metric="seats",
            value=100_000,
        )
        for d in deleted
    ]
    in_flight |= {f"late-{d['account_id']}" for d in deleted}
    second = late + records[3_000:]
    env = {"UPSELL_STORE": "rocksdb://", "UPSELL_DATA_DIR": str(tmp_path / "rocks")}  # kept across restart
    w = worker_factory(extra_env=env).start()
    w.wait_ready(90)
    await produce(kafka_bootstrap, w.topics["events"], first)
    await wait_committed(kafka_bootstrap, w.env["UPSELL_APP_ID"], w.topics["events"], timeout=60)
    w.stop(kill=True)
    w = worker_factory(name=w.name, extra_env=env).start()  # same data dir: RocksDB files reused
    w.wait_ready(90)
    await produce(kafka_bootstrap, w.topics["events"], second)
    rep = await check(kafka_bootstrap, w, [v for _, v in first + second], leads=True, in_flight=in_flight)
    assert w.metric("upsell_erased_account_events_total") == len(late)  # nothing else in flight since
    print(f"rocksdb: {rep.deleted_accounts} deleted, {len(late)} events in flight after the restart dropped")


def _histogram(body: str, name: str) -> dict[str, float]:
    """A histogram's samples from a /metrics body: {'le=...': cumulative count, 'count': n, 'sum': s}."""
    out = {
        f"le={le}": float(v) for le, v in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', body, re.M)
    }
    for part in ("count", "sum"):
        found = re.search(rf"^{name}_{part} (\S+)$", body, re.M)
        out[part] = float(found.group(1)) if found else 0.0
    return out


async def test_backlog_is_handled_in_batches_of_at_most_max_batch_records(worker_factory, kafka_bootstrap):
    """A backlog that one fetch brings whole (8 MiB per partition holds all 20,000 records) reaches the
    handler in batches of at most UPSELL_MAX_BATCH_RECORDS (it bounds the memory of a batch in flight),
    and the state and prompts are still the replay's."""
    records = list(sim_records(20_000, 2_000, seed=9))
    env = {"UPSELL_MAX_BATCH_RECORDS": "1000"}
    w = worker_factory(extra_env=env).start()
    w.wait_ready(90)
    w.stop()  # the topics exist now; the next worker starts on the whole backlog
    await produce(kafka_bootstrap, w.topics["events"], records)
    w = worker_factory(name=w.name, extra_env=env).start()
    w.wait_ready(90)
    await wait_committed(kafka_bootstrap, w.env["UPSELL_APP_ID"], w.topics["events"], timeout=120)
    code, body = w.get("/metrics")
    assert code == 200
    h = _histogram(body, "upsell_batch_records")
    print(f"batches: {h}")
    assert h["sum"] == len(records)  # every record went through a batch
    assert h["le=1000.0"] == h["count"], "a batch above the cap"
    assert h["count"] >= len(records) / 1000
    assert h["le=500.0"] < h["count"], "no batch above 500 records: the worker was never behind"
    await check(kafka_bootstrap, w, [v for _, v in records])


async def test_write_behind_is_bounded_and_written_once_caught_up(worker_factory, kafka_bootstrap):
    """While behind, states are written at each commit or when the unwritten ones reach their bound;
    once caught up, within about 50 ms of each batch. The commit timer is set beyond the test and fetches are small (many
    batches behind), so the changelog can only equal the replay if the bound and the caught-up write work."""
    records = list(sim_records(60_000, 3_000, seed=8))
    bound = 400
    env = {
        "UPSELL_COMMIT_INTERVAL_S": "600",
        "UPSELL_STATE_UNWRITTEN_ACCOUNTS": str(bound),
        "UPSELL_STATE_CACHE_ACCOUNTS": "200",  # fewer decoded than unwritten: evictions skip dirty states
        "UPSELL_FETCH_PARTITION_BYTES": str(32 * 1024),
    }
    w = worker_factory(extra_env=env).start()
    w.wait_ready(90)
    await produce(kafka_bootstrap, w.topics["events"], records)
    unwritten: list[float] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        unwritten.append(w.metric("upsell_state_unwritten_accounts"))
        if w.metric("upsell_events_consumed_total") >= len(records):
            break
        await asyncio.sleep(0.02)
    assert w.metric("upsell_events_consumed_total") == len(records)
    print(f"unwritten accounts: max {max(unwritten):.0f} over {len(unwritten)} samples")
    assert max(unwritten) > 0, "never behind: the test did not exercise write-behind"
    # Checked after each batch, so the bound holds up to one fetch (4 partitions x 32 KiB, < 1,000
    # records); unbounded, all 3,000 accounts would wait for the commit.
    assert max(unwritten) <= bound + 1_000, max(unwritten)
    await asyncio.sleep(0.5)
    assert w.metric("upsell_state_unwritten_accounts") == 0  # caught up: written without a commit
    w.stop()  # the commit timer would come in 600 s: the clean stop commits
    await check(kafka_bootstrap, w, [v for _, v in records])


async def test_states_evicted_when_idle_and_read_back_packed_equal_replay(worker_factory, kafka_bootstrap):
    """UPSELL_STATE_IDLE_S at 0.2 s: between the chunks, every account goes back to bytes (compressed,
    packed_states) and is decoded again at its next event, many times over; the changelog, prompts and
    leads must still be the replay's."""
    records = list(sim_records(8_000, 600, seed=21, high_touch_every=5))
    w = worker_factory(extra_env={"UPSELL_STATE_IDLE_S": "0.2"}).start()
    w.wait_ready(90)
    decoded = []
    for i in range(0, len(records), 1_000):
        await produce(kafka_bootstrap, w.topics["events"], records[i : i + 1_000])
        await asyncio.sleep(1.5)  # idle: evicted
        decoded.append(w.metric("upsell_state_decoded_accounts"))
    assert min(decoded) < 100, decoded  # the accounts did go back to bytes between chunks
    await wait_committed(kafka_bootstrap, w.env["UPSELL_APP_ID"], w.topics["events"], timeout=120)
    w.stop()
    await check(kafka_bootstrap, w, [v for _, v in records], leads=True)


async def test_exactly_once_batch_bound_leaves_records_to_read_again_without_losing_any(
    worker_factory, kafka_bootstrap
):
    """exactly_once with a small batch bound: while caught up on some partitions and behind on others,
    the early take (fresh_take) and the fetch after it hold more than one batch, and what exceeds the
    bound is put back to be read again. The records of the batch before them must still be applied:
    putting the rest back once moved Faust's read offset past them, and the batch dropped them as
    read already (a whole stretch of a partition's events never applied)."""
    records = list(sim_records(12_000, 1_500, seed=21))
    env = {"UPSELL_PROCESSING_GUARANTEE": "exactly_once", "UPSELL_MAX_BATCH_RECORDS": "40"}
    w = worker_factory(extra_env=env).start()
    w.wait_ready()
    rng = random.Random(21)
    for i in range(0, len(records), 600):  # uneven chunks: partitions catch up at different times
        await produce(kafka_bootstrap, w.topics["events"], records[i : i + 600])
        await asyncio.sleep(rng.uniform(0.0, 0.3))
    rep = await check_exact(
        kafka_bootstrap,
        w.env["UPSELL_APP_ID"],
        w.topics,
        [v for _, v in records],
        ROOT / "rules",
        read_committed=True,
    )
    assert rep.accounts > 0 and rep.distinct_prompts > 0
    assert not rep.state_mismatches, (len(rep.state_mismatches), rep.first_diff)
    assert (rep.missing_prompts, rep.unexpected_prompts, rep.duplicates_delivered) == (0, 0, 0)
    prompts = await read_all(kafka_bootstrap, w.topics["prompts"], read_committed=True)
    await assert_keyed_as_aiokafka_would(kafka_bootstrap, w.topics["prompts"], prompts)  # transactional
