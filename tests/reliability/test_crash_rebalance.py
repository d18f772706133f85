"""Reliability on the real broker: crashes under load, rebalances (a broker restart: test_broker_restart.py).

Every scenario ends with the same exactness check (devkit/exactness.py): each account's state in the
table's changelog equals a `replay` of the same input, every prompt id on `upgrade-prompts` has exactly
the replay's content, and the set of prompt ids equals the replay's. The figures (duplicates delivered,
kills, redelivered records) are printed and collected in RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Sequence, Set
from pathlib import Path

import pytest

from devkit.exactness import Report, all_kinds_rules, check_exact
from devkit.kafka_io import all_kinds_records, interleave, produce, sim_records, with_erasures

pytestmark = [pytest.mark.kafka, pytest.mark.reliability, pytest.mark.timeout(900)]


EXACTLY_ONCE = {"UPSELL_PROCESSING_GUARANTEE": "exactly_once"}


async def exact(  # type: ignore[no-untyped-def]
    bs: str, w, events: list[bytes], read_committed: bool = False, in_flight: Set[str] = frozenset()
) -> Report:
    rules = Path(w.env["UPSELL_RULES_DIR"])
    rep = await check_exact(bs, w.env["UPSELL_APP_ID"], w.topics, events, rules, read_committed, in_flight)
    print(
        f"\n[reliability] accounts={rep.accounts} prompts={rep.distinct_prompts} "
        f"prompt_records={rep.prompt_records} duplicates_delivered={rep.duplicates_delivered} "
        f"dead_letters={rep.dead_letter_records} dead_letter_duplicates={rep.dead_letter_duplicates} "
        f"state_mismatches={len(rep.state_mismatches)} missing_accounts={rep.missing_accounts} "
        f"conflicting_ids={len(rep.conflicting_ids)} missing_prompts={rep.missing_prompts} "
        f"unexpected_prompts={rep.unexpected_prompts} leads={rep.distinct_leads} "
        f"lead_records={rep.lead_records} deleted_accounts={rep.deleted_accounts} "
        f"deleted_last={rep.deleted_last} not_markers={len(rep.not_markers)} "
        f"in_flight={len(in_flight)} in_flight_outputs={rep.in_flight_outputs}"
    )
    for repeated in rep.repeated_dead_letters:
        print(f"[reliability] repeated dead letter: {repeated} (worker logs: {w.log.parent})")
    assert rep.accounts > 0 and rep.distinct_prompts > 0
    assert rep.exact, (rep.state_mismatches[:3], rep.first_diff, rep.conflicting_ids[:3], rep.not_markers[:3])
    assert rep.deleted_accounts > 0 or not in_flight
    return rep


# Rules of each kind of per-account state (devkit/rules/all-kinds.yaml), and leads.yaml's, which route by
# a trait: the workload of the all-kinds tests must have made the replay prompt (or lead) by each.
ALL_KINDS_RULES = {
    "distinct count": {"new-teams", "users-over-seats"},
    "growth": {"seats-growth"},
    "forecast": {"api-calls-pace", "seats-pace"},
    "trait": {"seats-80-lead"},
}


def assert_all_kinds(rep: Report) -> None:
    """The accounts of the check held traits, distinct counts, growth and forecast history, and each
    kind of rule decided prompts or leads: the exactness covered them all."""
    print(f"[reliability] all kinds: states {rep.state_kinds}, prompts and leads by rule {rep.by_rule}")
    assert all(rep.state_kinds.values()), rep.state_kinds
    for kind, rules in ALL_KINDS_RULES.items():
        assert sum(rep.by_rule.get(r, 0) for r in rules) > 0, (kind, rep.by_rule)


async def stream(
    bs: str, topic: str, records: Sequence[tuple[bytes | None, bytes]], chunks: int, pause: float
) -> None:
    step = len(records) // chunks + 1
    for i in range(0, len(records), step):
        await produce(bs, topic, records[i : i + step])
        await asyncio.sleep(pause)


async def test_crash_under_load_sigkill_five_times(worker_factory, kafka_bootstrap):
    """>= 200k events over >= 10k accounts streamed while the worker is SIGKILLed at random moments."""
    records, in_flight = with_deletions(list(sim_records(200_000, 10_000, seed=101, high_touch_every=5)))
    w = worker_factory().start()
    w.wait_ready(120)
    producer = asyncio.create_task(stream(kafka_bootstrap, w.topics["events"], records, chunks=40, pause=0.4))
    rng = random.Random(7)
    kills = 0
    while kills < 5:
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        await asyncio.to_thread(w.stop, True)  # never block the loop: the producer task runs on it
        kills += 1
        w = worker_factory(name=w.name).start()
        await asyncio.to_thread(w.wait_ready, 180)
    await producer
    rep = await exact(kafka_bootstrap, w, [v for _, v in records], in_flight=in_flight)
    print(
        f"[reliability] crash under load: kills={kills} redelivered_last_worker={w.metric('upsell_redelivered_events_total'):.0f}"
    )
    assert rep.conflicting_ids == []


def with_deletions(
    records: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], set[str]]:
    """One account in 12 deleted mid-stream, spread over the stream (after its 2nd to 9th event), each
    deletion followed by an event of the account from before it (in flight) and then by its later
    events (a new account); 20 more deleted after their last event. With the ids of the events in
    flight: no prompt or lead may come from them."""
    return with_erasures(records, every=12, after=2, final=20, spread=8)


def with_malformed(records: list[tuple[bytes, bytes]], every: int) -> list[tuple[bytes | None, bytes]]:
    """Every `every`-th record followed by a malformed one (dead-lettered): for the same account, or,
    every other time, without a key (at least once dead-letters those again on each redelivery)."""
    out: list[tuple[bytes | None, bytes]] = []
    for i, (key, value) in enumerate(records):
        out.append((key, value))
        if i % every == every - 1:
            out.append((key if i % (2 * every) < every else None, b'{"type": "usage", "account_id": '))
    return out


async def test_crash_under_load_exactly_once(worker_factory, kafka_bootstrap):
    """exactly_once, SIGKILLed three times under load: a read_committed consumer receives every prompt
    and every dead letter exactly once, and state and prompts equal a replay."""
    deleted, in_flight = with_deletions(list(sim_records(80_000, 5_000, seed=104, high_touch_every=5)))
    records = with_malformed(deleted, every=400)
    malformed = len(records) - len(deleted)
    w = worker_factory(extra_env=EXACTLY_ONCE).start()
    w.wait_ready(120)
    producer = asyncio.create_task(stream(kafka_bootstrap, w.topics["events"], records, chunks=20, pause=0.4))
    rng = random.Random(8)
    for _ in range(3):
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        await asyncio.to_thread(w.stop, True)
        w = worker_factory(name=w.name, extra_env=EXACTLY_ONCE).start()
        await asyncio.to_thread(w.wait_ready, 180)
    await producer
    rep = await exact(kafka_bootstrap, w, [v for _, v in records], True, in_flight)
    print(f"[reliability] exactly_once crash under load: kills=3 malformed={malformed}")
    assert rep.duplicates_delivered == 0
    assert rep.dead_letter_records == malformed and rep.dead_letter_duplicates == 0, rep.repeated_dead_letters


async def test_rebalance_two_three_one(worker_factory, kafka_bootstrap, tmp_path):
    """2 -> 3 -> 1 workers (a clean leave, then a SIGKILL) on the shipped rules plus a distinct count, a
    growth and forecasts (devkit/rules/all-kinds.yaml), among accounts with traits and deletions: state
    and prompts equal to a replay, for every kind of state."""
    workload = interleave(
        list(sim_records(70_000, 7_000, seed=102, high_touch_every=5)),
        all_kinds_records(24_000, 240, seed=112),
    )
    records, in_flight = with_deletions(workload)
    rules = all_kinds_rules(tmp_path / "rules")
    first = worker_factory(rules_dir=rules)
    ws = [first.start(), worker_factory(name=first.name, rules_dir=rules).start()]
    for w in ws:
        w.wait_ready(120)
    producer = asyncio.create_task(
        stream(kafka_bootstrap, first.topics["events"], records, chunks=30, pause=0.4)
    )
    await asyncio.sleep(3)
    ws.append(worker_factory(name=first.name, rules_dir=rules).start())  # 2 -> 3
    await asyncio.sleep(5)
    await asyncio.to_thread(ws[0].stop)  # 3 -> 2 (clean)
    await asyncio.sleep(3)
    await asyncio.to_thread(ws[1].stop, True)  # 2 -> 1 (crash)
    await producer
    survivor = ws[2]
    await asyncio.to_thread(survivor.wait_ready, 180)
    # also: every partition committed to its end
    rep = await exact(kafka_bootstrap, survivor, [v for _, v in records], in_flight=in_flight)
    assert_all_kinds(rep)


async def test_rebalance_two_three_one_exactly_once(worker_factory, kafka_bootstrap, tmp_path):
    """exactly_once through 2 -> 3 -> 1 workers (a clean leave, then a SIGKILL), on the rules and kinds
    of state of test_rebalance_two_three_one: every prompt and dead letter once to a read_committed
    consumer, state and prompts equal to a replay."""
    workload = interleave(
        list(sim_records(28_000, 3_000, seed=105, high_touch_every=5)),
        all_kinds_records(12_000, 150, seed=115),
    )
    deleted, in_flight = with_deletions(workload)
    records = with_malformed(deleted, every=400)
    malformed = len(records) - len(deleted)
    rules = all_kinds_rules(tmp_path / "rules")
    first = worker_factory(extra_env=EXACTLY_ONCE, rules_dir=rules)
    ws = [first.start(), worker_factory(name=first.name, extra_env=EXACTLY_ONCE, rules_dir=rules).start()]
    for w in ws:
        w.wait_ready(120)
    producer = asyncio.create_task(
        stream(kafka_bootstrap, first.topics["events"], records, chunks=20, pause=0.4)
    )
    await asyncio.sleep(2)
    ws.append(worker_factory(name=first.name, extra_env=EXACTLY_ONCE, rules_dir=rules).start())  # 2 -> 3
    await asyncio.sleep(4)
    await asyncio.to_thread(ws[0].stop)  # 3 -> 2 (clean)
    await asyncio.sleep(2)
    await asyncio.to_thread(ws[1].stop, True)  # 2 -> 1 (crash)
    await producer
    survivor = ws[2]
    await asyncio.to_thread(survivor.wait_ready, 180)
    rep = await exact(kafka_bootstrap, survivor, [v for _, v in records], True, in_flight)
    assert rep.duplicates_delivered == 0
    assert rep.dead_letter_records == malformed and rep.dead_letter_duplicates == 0, rep.repeated_dead_letters
    assert_all_kinds(rep)


async def test_a_paused_worker_is_fenced_exactly_once(worker_factory, kafka_bootstrap):
    """exactly_once: a worker paused (SIGSTOP) past its session while it streams; another takes its
    partitions; the paused one resumes as a zombie. Its transactions after that are refused (its
    membership and generation are gone, KIP-447) or fenced, and a read_committed consumer still gets
    every prompt once, state and prompts equal to a replay."""
    env = {**EXACTLY_ONCE, "UPSELL_SESSION_TIMEOUT_S": "6"}
    records = list(sim_records(30_000, 3_000, seed=106))
    zombie = worker_factory(extra_env=env).start()
    zombie.wait_ready(120)
    producer = asyncio.create_task(
        stream(kafka_bootstrap, zombie.topics["events"], records, chunks=15, pause=0.4)
    )
    await asyncio.sleep(1.5)
    assert zombie.proc is not None
    os.kill(zombie.proc.pid, signal.SIGSTOP)
    successor = worker_factory(name=zombie.name, extra_env=env).start()
    try:
        await asyncio.to_thread(successor.wait_ready, 180)  # after the paused worker's session expired
        await asyncio.sleep(1)
    finally:
        os.kill(zombie.proc.pid, signal.SIGCONT)
    await producer
    await asyncio.sleep(8)  # the zombie rejoins or stops; either way the group settles
    await asyncio.to_thread(zombie.stop)
    await asyncio.to_thread(successor.wait_ready, 180)
    rep = await exact(kafka_bootstrap, successor, [v for _, v in records], read_committed=True)
    log = zombie.log.read_text()
    fenced = "GroupMovedOn" in log or "ProducerFenced" in log  # whether it tried to write (timing decides)
    print(f"[reliability] paused worker: its transaction fenced={fenced}")
    assert rep.duplicates_delivered == 0
