"""Bytes in, prompts and dead letters out: the engine with a bounded account store and metrics.

Kafka-free; the embedded runner, `replay` and the Faust runtime all drive it, so they decide alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from upsell_triggers.engine.engine import APPLIED, Decision, Engine, Outcome
from upsell_triggers.engine.events import MAX_ID_LEN, InvalidEvent, decode_event
from upsell_triggers.engine.retention import DEFAULT_ERASURE_HOLD_MS, state_expired
from upsell_triggers.engine.ruleset import RuleSet
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.timeutil import DAY
from upsell_triggers.metrics import Metrics

# Re-exported: the runtime and the tests import them from here.
from upsell_triggers.recordsource import EVENTS as EVENTS
from upsell_triggers.recordsource import FEEDBACK as FEEDBACK
from upsell_triggers.recordsource import HotTopic as HotTopic
from upsell_triggers.recordsource import RecordSource as RecordSource

REDELIVERED: Final = Outcome("redelivered")


def _last_seen(item: tuple[str, AccountState]) -> int:
    _, state = item
    return state.last_seen


# The longest-held accounts that eviction at the bound picks the stalest of (MemoryStore). Module
# constants, not class attributes: mypyc keeps no class attribute of this dict subclass.
EVICTION_SAMPLE: Final = 32


class _States(dict[str, AccountState]):
    """Account id -> state; a missing account gets a new state, evicting one at the bound. A subclass
    so that a hit is one C-level lookup (no Python frame per event); only a miss runs Python."""

    __slots__ = ("evicted", "max_accounts", "on_evict")

    def __init__(self, max_accounts: int, on_evict: Callable[[str, int], None] | None = None) -> None:
        super().__init__()
        self.max_accounts = max_accounts
        self.evicted = 0
        self.on_evict = on_evict

    def __missing__(self, account_id: str) -> AccountState:
        if len(self) >= self.max_accounts:
            self._evict_one()
        st = self[account_id] = AccountState()
        return st

    def _evict_one(self) -> None:
        sample = itertools.islice(self.items(), EVICTION_SAMPLE)
        victim, _ = min(sample, key=_last_seen)
        del self[victim]
        self.evicted += 1
        if self.on_evict is not None:
            self.on_evict("bound", 1)


# Accounts checked per expire_step: a bounded pause, whatever the store holds. A module constant, not a
# class attribute: mypyc resolves no class attribute in a default argument.
EXPIRE_STEP: Final = 10_000


class MemoryStore:
    """Account states in memory, bounded: at most max_accounts, and an account idle for ttl_ms of event
    time is dropped (expire_step, which the embedded runtime runs every second).

    At the bound, the stalest of the EVICTION_SAMPLE longest-held accounts goes (approximate LRU, as
    Redis does): exact LRU would cost an OrderedDict move on every event, a fifth of the engine's time.
    `on_evict(cause, n)` hears of every account dropped, at the bound ("bound") or idle ("ttl"). The
    marker of a deleted account (engine/erasure.py) is dropped hold_ms after its deletion, as idle.
    """

    def __init__(
        self,
        max_accounts: int = 2_000_000,
        ttl_ms: int = 90 * DAY,
        on_evict: Callable[[str, int], None] | None = None,
        hold_ms: int = DEFAULT_ERASURE_HOLD_MS,
    ) -> None:
        self.ttl_ms = ttl_ms
        self.hold_ms = hold_ms
        self.states = _States(max_accounts, on_evict)
        self.get: Callable[[str], AccountState] = self.states.__getitem__
        self.on_evict = on_evict
        # The newest event time of the accounts checked so far: expire_step's clock. It lags the true
        # newest event time by at most one pass over the store, so an account is never dropped early.
        self.watermark_ms = 0

    @property
    def max_accounts(self) -> int:
        return self.states.max_accounts

    @property
    def evicted(self) -> int:
        return self.states.evicted

    def expire(self, watermark_ms: int) -> int:
        """Drops every account idle for ttl_ms before watermark_ms (one pass over all of them)."""
        ttl, hold = self.ttl_ms, self.hold_ms
        old = [a for a, s in self.states.items() if state_expired(s, watermark_ms, ttl, hold)]
        for a in old:
            del self.states[a]
        if old and self.on_evict is not None:
            self.on_evict("ttl", len(old))
        return len(old)

    def expire_step(self, budget: int = EXPIRE_STEP) -> int:
        """Checks the `budget` longest-held accounts: those idle for ttl_ms are dropped, the others move
        to the back, so that successive steps go round the whole store. Returns how many were dropped."""
        states = self.states
        checked = list(itertools.islice(states.items(), min(budget, len(states))))
        if not checked:
            return 0
        self.watermark_ms = watermark = max(self.watermark_ms, max(st.last_seen for _, st in checked))
        ttl, hold = self.ttl_ms, self.hold_ms
        dropped = 0
        for account, st in checked:
            del states[account]
            if state_expired(st, watermark, ttl, hold):
                dropped += 1
            else:
                states[account] = st
        if dropped and self.on_evict is not None:
            self.on_evict("ttl", dropped)
        return dropped

    def __len__(self) -> int:
        return len(self.states)

    def items(self) -> Iterator[tuple[str, AccountState]]:
        return iter(self.states.items())


@dataclass(slots=True)
class Result:
    """Treated as immutable: the result of most events is one shared instance (_APPLIED)."""

    outcome: Outcome | None
    invalid: InvalidEvent | None = None
    decisions: Sequence[Decision] = ()


_APPLIED: Final = Result(APPLIED)
# Compiled, a global name is a dict lookup per use and a Final one a C variable: the decoder every record
# goes through, from an interpreted module, is bound here once.
_decode_event: Final = decode_event
_INVALID: Final = InvalidEvent


class Processor:
    def __init__(
        self,
        rules: RuleSet,
        metrics: Metrics | None = None,
        store: MemoryStore | None = None,
        get_state: Callable[[str], AccountState] | None = None,
    ) -> None:
        self.engine = Engine(rules)
        self.metrics = metrics or Metrics()
        self.store = store if store is not None else MemoryStore(on_evict=self.metrics.count_evictions)
        self._get = get_state or self.store.get
        self.metrics.rules_loaded.set(len(rules.rules))

    @property
    def rules(self) -> RuleSet:
        return self.engine.rules

    def swap_rules(self, rules: RuleSet) -> None:
        self.engine.swap_rules(rules)
        self.metrics.rules_loaded.set(len(rules.rules))

    def handle(
        self,
        raw: bytes,
        key: bytes | None = None,
        now_ms: int | None = None,
        source: RecordSource | None = None,
    ) -> Result:
        """`source`: where a Kafka record came from. A record at or below the newest offset the
        account has applied from that topic is a redelivery (after a crash or rebalance) and is skipped,
        exactly, however many events the account sent since the last commit.

        A rejected record is dead-lettered once: its offset is applied to the account its record key
        names (the key decides the partition, so that account's state is on it), and a redelivery of it
        is skipped like any other. A rejected record without a usable key (none, not UTF-8, empty or
        longer than an id may be) has no account to remember it: it is dead-lettered again when it is
        redelivered (RELIABILITY.md, the delivery guarantee of each output topic)."""
        ev = _decode_event(raw, key)
        if isinstance(ev, _INVALID):
            if (
                source is not None
                and key is not None
                and self._rejected_before(key, source.topic, source.offset)
            ):
                return Result(REDELIVERED)
            self.metrics.record_invalid(ev.reason)
            return Result(None, ev)
        state = self._get(ev.account_id)
        if source is not None and self._applied_before(state, source.topic, source.offset):
            return Result(REDELIVERED)
        out = self.engine.process(ev, state, now_ms)
        if out.invalid is not None:
            self.metrics.record_invalid(out.invalid.reason)
            return Result(out, out.invalid)
        self.metrics.record(ev.type, out)
        return _APPLIED if out is APPLIED else Result(out, None, out.decisions)

    def handle_records(
        self,
        records: Iterable[Any],
        topic: HotTopic,
        decided: list[Decision],
        rejected: list[Rejected],
    ) -> None:
        """handle() for a run of Kafka records of one hot topic (objects with `value`, `key`,
        `timestamp` and `offset`, as aiokafka hands them), in order: the same state changes, metrics and
        redelivery checks, the record's timestamp as the clock. The decisions of applied events are
        appended to `decided`, and each record to dead-letter to `rejected`, with its reason and message.

        The worker's batch path: one call per partition of a fetch instead of one per record, with no
        Result and RecordSource per record, and the events that changed state without deciding anything
        (most of them) counted once per call. An exception on one record rejects that record as
        `internal_error` (its exception in the entry, for the caller to log): an exception must not stop
        the Kafka fetcher or lose the record. Kept next to handle() so that the two stay one logic."""
        process, get, metrics = self.engine.process, self._get, self.metrics
        feedback = topic == FEEDBACK
        applied: list[str] = []  # types of the events that decided nothing, counted at the end
        record = metrics.record
        for r in records:
            raw = r.value
            if raw is None:
                raw = b""
            try:
                ev = _decode_event(raw, r.key)
                if isinstance(ev, _INVALID):
                    key = r.key
                    if key is not None and self._rejected_before(key, topic, r.offset):
                        continue
                    metrics.record_invalid(ev.reason)
                    rejected.append((r, ev.reason, ev.message, None))
                    continue
                state = get(ev.account_id)
                offset = r.offset
                # _applied_before, inlined: one check per record
                if feedback:
                    if offset <= state.feedback_offset:
                        metrics.redelivered.inc()
                        continue
                    state.feedback_offset = offset
                else:
                    if offset <= state.events_offset:
                        metrics.redelivered.inc()
                        continue
                    state.events_offset = offset
                out = process(ev, state, r.timestamp)
                if out is APPLIED:
                    applied.append(ev.type)
                    continue
                invalid = out.invalid
                if invalid is not None:
                    metrics.record_invalid(invalid.reason)
                    rejected.append((r, invalid.reason, invalid.message, None))
                    continue
                record(ev.type, out)
                if out.decisions:
                    decided += out.decisions
            except Exception as exc:  # a bug must not stop the fetcher or lose the record
                metrics.record_invalid("internal_error")
                rejected.append((r, "internal_error", f"{type(exc).__name__}: {str(exc)[:200]}", exc))
        if applied:
            metrics.count_events(applied)

    def _rejected_before(self, key: bytes, topic: HotTopic, offset: int) -> bool:
        """Whether a rejected record was applied (dead-lettered) already, by the applied offset of the
        account its key names; if not, that offset moves to it. Rejections are rare, so the account's
        state is looked up (and, for a key with no state yet, created) only for them."""
        try:
            account_id = key.decode()
        except UnicodeDecodeError:
            return False
        if not 0 < len(account_id) <= MAX_ID_LEN:
            return False
        return self._applied_before(self._get(account_id), topic, offset)

    def _applied_before(self, state: AccountState, topic: HotTopic, offset: int) -> bool:
        """Whether the account applied the record already (a redelivery, counted); if not, the account's
        offset for the record's topic moves to it."""
        if topic == FEEDBACK:
            if offset <= state.feedback_offset:
                self.metrics.redelivered.inc()
                return True
            state.feedback_offset = offset
        else:
            if offset <= state.events_offset:
                self.metrics.redelivered.inc()
                return True
            state.events_offset = offset
        return False


# A record handle_records rejected: (the record, reason, message, the exception of an internal error).
Rejected = tuple[Any, str, str, Exception | None]
