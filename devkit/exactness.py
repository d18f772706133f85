"""Exactness checks for the Kafka runtime: what the workers left behind must equal a replay.

The workers' durable state is the table's changelog topic (last record per account); the replay is the
same Processor over the same events in production order (an account's events keep their order within
its partition, so per-account results must match exactly).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from upsell_triggers.engine.erasure import erase
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state
from upsell_triggers.processor import MemoryStore, Processor

ROOT = Path(__file__).resolve().parents[1]
ALL_KINDS = ROOT / "devkit" / "rules" / "all-kinds.yaml"


def all_kinds_rules(dest: Path) -> Path:
    """A rules directory of the shipped rules (rules/*.yaml: traits, leads) and devkit/rules/all-kinds.yaml
    (distinct counts, growth, forecasts): every kind of per-account state a rule set keeps, so that the
    checks below compare each of them with a replay."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in [*sorted((ROOT / "rules").glob("*.yaml")), ALL_KINDS]:
        (dest / src.name).write_bytes(src.read_bytes())
    return dest


VIEW_FIELDS = (
    "plan",
    "plan_ts",
    "period_anchor",
    "limits",
    "gauges",
    "periods",
    "rolling",
    "rules",
    "sent",
    "attribution",
    "recent_prompts",
    "dedup",
    "last_seen",
    "traits",
    "traits_ts",
    "erased_at",
    "pace",
    "distinct",
    "history",
    "leads",
    "score",
)


def view(st: AccountState) -> tuple[Any, ...]:
    """Everything the engine decides from; the source offsets are Kafka bookkeeping a replay does not have."""
    return (
        st.plan,
        st.plan_ts,
        st.period_anchor,
        st.limits,
        st.gauges or None,  # an emptied container and an unused one (None) are the same state
        st.periods or None,
        st.rolling or None,
        {k: r.to_list() for k, r in (st.rules or {}).items()},
        st.sent or None,
        st.attribution,
        st.recent_prompts or None,
        st.dedup,
        st.last_seen,
        st.traits or None,
        st.traits_ts,
        st.erased_at,
        st.pace,
        st.distinct,
        st.history,
        st.leads,
        st.score,
    )


def differing_fields(got: AccountState, want: AccountState) -> list[tuple[str, Any, Any]]:
    """(field, got, want) for every field of view() that differs."""
    return [(n, a, b) for n, a, b in zip(VIEW_FIELDS, view(got), view(want), strict=True) if a != b]


@dataclass
class Expected:
    states: dict[str, AccountState]
    prompts: dict[str, bytes]  # prompt_id -> the prompt's JSON
    leads: dict[str, bytes] = field(default_factory=dict)  # lead_id -> the lead's JSON


def replay_expected(
    events: list[bytes], rules_dir: Path, reloads: Sequence[tuple[int, Path]] = ()
) -> Expected:
    """`reloads`: (i, directory): the rules of the directory from the i-th event on, as a hot reload
    between two events does."""
    swaps = dict(reloads)
    proc = Processor(load_ruleset(rules_dir), store=MemoryStore(max_accounts=10_000_000))
    prompts: dict[str, bytes] = {}
    leads: dict[str, bytes] = {}
    for i, raw in enumerate(events):
        if i in swaps:
            proc.swap_rules(load_ruleset(swaps[i]))
        res = proc.handle(raw)
        for d in res.decisions:
            if d.prompt is not None:
                prompts[d.prompt["prompt_id"]] = orjson.dumps(d.prompt)
            if d.lead is not None:
                leads[d.lead["lead_id"]] = orjson.dumps(d.lead)
    return Expected(dict(proc.store.items()), prompts, leads)


async def read_all(bs: str, topic: str, timeout: float = 60.0, read_committed: bool = False) -> list[Any]:
    """Every record of a topic, from the start to its end offsets at call time (with read_committed:
    the committed records, to the last stable offsets)."""
    isolation = "read_committed" if read_committed else "read_uncommitted"
    c = AIOKafkaConsumer(
        bootstrap_servers=bs, enable_auto_commit=False, group_id=None, isolation_level=isolation
    )
    await c.start()
    try:
        parts = c.partitions_for_topic(topic)
        if parts is None:
            await c._client.force_metadata_update()
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while True:
            positions = [await c.position(tp) for tp in tps]
            if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets")
            batch = await c.getmany(timeout_ms=500)
            for msgs in batch.values():
                out.extend(msgs)
        return out
    finally:
        await c.stop()


async def changelog_states(
    bs: str, app_id: str, table: str = "account-state", read_committed: bool = False
) -> dict[str, AccountState]:
    last: dict[bytes, bytes | None] = {}
    for r in await read_all(bs, f"{app_id}-{table}-changelog", read_committed=read_committed):
        last[r.key] = r.value
    return {k.decode(): decode_state(v) for k, v in last.items() if v}


async def wait_committed(bs: str, group: str, topic: str, timeout: float) -> None:
    """Until the group's committed offsets reach the topic's end offsets (everything processed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    c = AIOKafkaConsumer(bootstrap_servers=bs, group_id=None)
    await c.start()
    try:
        await c._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        end = await c.end_offsets(tps)
        deadline = time.monotonic() + timeout
        committed: dict[Any, Any] = {}
        while time.monotonic() < deadline:
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            if all(tp in committed and committed[tp].offset >= end[tp] for tp in tps):
                return
            await asyncio.sleep(0.5)
        got = {tp.partition: (committed[tp].offset if tp in committed else None) for tp in tps}
        raise TimeoutError(f"group {group} committed {got}, end offsets {end}")
    finally:
        await c.stop()
        await admin.close()


@dataclass
class Report:
    accounts: int = 0
    state_mismatches: list[str] = field(default_factory=list)
    missing_accounts: int = 0
    prompt_records: int = 0
    distinct_prompts: int = 0
    duplicates_delivered: int = 0  # the same prompt id delivered more than once (same content)
    dead_letter_records: int = 0
    dead_letter_duplicates: int = 0  # dead letters of an input record already dead-lettered
    repeated_dead_letters: list[str] = field(default_factory=list)  # the first few, where they are
    conflicting_ids: list[str] = field(default_factory=list)  # an id with other content than the replay's
    missing_prompts: int = 0
    unexpected_prompts: int = 0
    first_diff: str = ""  # of the first state mismatch: field, worker's value, replay's value
    # Leads, checked as prompts are: each id with the replay's content, none missing, none extra.
    lead_records: int = 0
    distinct_leads: int = 0
    conflicting_lead_ids: list[str] = field(default_factory=list)
    missing_leads: int = 0
    unexpected_leads: int = 0
    # What the replay exercised, so a test can show its workload reached each kind of state and rule:
    # accounts holding traits, distinct counts, growth history, forecast history; prompts and leads by rule.
    state_kinds: dict[str, int] = field(default_factory=dict)
    by_rule: dict[str, int] = field(default_factory=dict)
    # Erasure (account_deleted in the input): accounts deleted, of them those whose last input record is
    # the deletion (their changelog state must be the bare marker), those whose state is not, and the
    # prompts and leads triggered by an event in flight (an event of a deleted account from before its
    # deletion that arrived after it: it must produce nothing).
    deleted_accounts: int = 0
    deleted_last: int = 0
    not_markers: list[str] = field(default_factory=list)
    in_flight_outputs: int = 0

    @property
    def exact(self) -> bool:
        return not (
            self.not_markers
            or self.in_flight_outputs
            or self.state_mismatches
            or self.missing_accounts
            or self.conflicting_ids
            or self.missing_prompts
            or self.unexpected_prompts
            or self.conflicting_lead_ids
            or self.missing_leads
            or self.unexpected_leads
        )


def marker(erased_at: int) -> AccountState:
    """What a deleted account's state is until an event after the deletion arrives (engine/erasure.py)."""
    st = AccountState()
    erase(st, erased_at)
    return st


def check_erasures(
    rep: Report,
    events: list[bytes],
    expected: Expected,
    states: dict[str, AccountState],
    outputs: Sequence[bytes],
    in_flight: Set[str],
) -> None:
    """Fills the erasure figures of `rep`: each account whose last input record is its deletion must
    have the bare marker in the changelog (erased, nothing else kept), and no prompt or lead may come
    from an event in flight."""
    last_type: dict[str, str] = {}
    deleted: set[str] = set()
    for raw in events:
        try:
            ev = orjson.loads(raw)
            account, etype = ev["account_id"], ev["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # a malformed record: dead-lettered, not an event of the account
        last_type[account] = etype
        if etype == "account_deleted":
            deleted.add(account)
    rep.deleted_accounts = len(deleted)
    for account in sorted(deleted):
        if last_type[account] != "account_deleted":
            continue
        rep.deleted_last += 1
        want, got = expected.states.get(account), states.get(account)
        if want is None or not want.erased_at or got is None or view(got) != view(marker(want.erased_at)):
            rep.not_markers.append(account)
    rep.in_flight_outputs = sum(1 for v in outputs if orjson.loads(v)["trigger_event_id"] in in_flight)


def compare(
    expected: Expected,
    states: dict[str, AccountState],
    prompt_values: list[bytes],
    lead_values: Sequence[bytes] = (),
) -> Report:
    rep = Report(accounts=len(expected.states))
    rep.state_kinds = {
        kind: sum(1 for st in expected.states.values() if getattr(st, kind))
        for kind in ("traits", "distinct", "history", "pace")
    }
    rules = [orjson.loads(v)["rule_id"] for v in [*expected.prompts.values(), *expected.leads.values()]]
    rep.by_rule = dict(sorted(Counter(rules).items()))
    for acct, st in expected.states.items():
        got = states.get(acct)
        if got is None:
            rep.missing_accounts += 1
        elif view(got) != view(st):
            rep.state_mismatches.append(acct)
            if not rep.first_diff:
                names = AccountState.__struct_fields__
                diffs = [f"{n}: {a!r} != {b!r}" for n, a, b in differing_fields(got, st)]
                offsets = f"{got.events_offset}, {got.feedback_offset}"
                rep.first_diff = (
                    f"{acct}: " + "; ".join(diffs) + f" (offsets {offsets}; fields of {len(names)})"
                )
    by_id: dict[str, set[bytes]] = defaultdict(set)
    for v in prompt_values:
        p = orjson.loads(v)
        by_id[p["prompt_id"]].add(v)
    rep.prompt_records = len(prompt_values)
    rep.distinct_prompts = len(by_id)
    rep.duplicates_delivered = rep.prompt_records - rep.distinct_prompts
    rep.conflicting_ids = [
        pid
        for pid, vs in by_id.items()
        if len(vs) > 1 or (pid in expected.prompts and expected.prompts[pid] not in vs)
    ]
    rep.missing_prompts = len(set(expected.prompts) - set(by_id))
    rep.unexpected_prompts = len(set(by_id) - set(expected.prompts))
    leads: dict[str, set[bytes]] = defaultdict(set)
    for v in lead_values:
        leads[orjson.loads(v)["lead_id"]].add(v)
    rep.lead_records, rep.distinct_leads = len(lead_values), len(leads)
    rep.conflicting_lead_ids = [
        lid
        for lid, vs in leads.items()
        if len(vs) > 1 or (lid in expected.leads and expected.leads[lid] not in vs)
    ]
    rep.missing_leads = len(set(expected.leads) - set(leads))
    rep.unexpected_leads = len(set(leads) - set(expected.leads))
    return rep


async def check_exact(
    bs: str,
    app_id: str,
    topics: dict[str, str],
    events: list[bytes],
    rules_dir: Path,
    read_committed: bool = False,
    in_flight: Set[str] = frozenset(),
    reloads: Sequence[tuple[int, Path]] = (),
) -> Report:
    """Waits until the group committed everything, then compares its changelog and prompts with a replay
    (read as a consumer with read_committed would, when asked; with the rules reloaded where `reloads`
    says), counts repeated dead letters, and checks deleted accounts (check_erasures; `in_flight`: the
    ids of events sent after their account's deletion, from before it)."""
    await wait_committed(bs, app_id, topics["events"], timeout=300)
    expected = replay_expected(events, rules_dir, reloads)
    states = await changelog_states(bs, app_id, read_committed=read_committed)
    prompts = [r.value for r in await read_all(bs, topics["prompts"], read_committed=read_committed)]
    leads = (
        [r.value for r in await read_all(bs, topics["leads"], read_committed=read_committed)]
        if "leads" in topics
        else []
    )
    rep = compare(expected, states, prompts, leads)
    check_erasures(rep, events, expected, states, [*prompts, *leads], in_flight)
    if "dlq" in topics:
        dead = await read_all(bs, topics["dlq"], read_committed=read_committed)
        sources = [tuple(v for k, v in r.headers if k.startswith("source_")) for r in dead]
        seen: set[tuple[bytes, ...]] = set()
        for r, src in zip(dead, sources, strict=True):
            if src in seen and len(rep.repeated_dead_letters) < 5:
                rep.repeated_dead_letters.append(f"{r.topic}/{r.partition}@{r.offset} key={r.key!r} {src}")
            seen.add(src)
        rep.dead_letter_records = len(dead)
        rep.dead_letter_duplicates = len(sources) - len(set(sources))
    return rep
