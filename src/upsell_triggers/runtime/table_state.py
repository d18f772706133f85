"""Account states of the partitions this worker owns, over a Faust table's store.

The table's store holds each account's state (memory dict, or RocksDB per partition) and its changelog
topic makes it durable; Faust recovers it on start and rebalance. Touched states are written back when
the consumer asks (each batch when caught up, each commit while behind): one changelog record (and
RocksDB write) per dirty account, not per event (a changelog record per event measured 10x slower).

Active accounts are held decoded, as AccountState objects, so an event does not decode its account's
state: dirty ones until written (`max_unwritten` bounds them), written ones while fewer than
`max_cached` are decoded, the longest decoded evicted first. With RocksDB the decoded states are a
cache in front of the database. The memory store holds them itself, in place of their bytes: its
dict's value is a state's bytes (as Faust's recovery writes them) or, once the account is active, the
decoded state, turned back into bytes when evicted (compressed: packed_states). A decoded
state's bytes are only needed by the changelog, and a second dict of decoded states cost ~52 bytes per
account, its bytes ~175 more (bench/ANALYSIS.md).

A decoded state costs two to three times its bytes in memory (bench/expansion_bench.py: 1,830 B
against 601 with every kind of the example rules), so states not written for `idle_s` (the clock's
seconds, UPSELL_STATE_IDLE_S) are evicted too, a budget at a time (evict_idle, on a timer and after
each batch): memory follows the accounts active in the last `idle_s`, not every account of the
partitions. An account used again within `idle_s` pays no decode. `decoded` is the queue they are
looked at in: marks, one per MARK_S at most, note how far it reached by when, and each flush stamps
its keys with the last mark's time (`touched`: once per written state, not per event). A key whose
mark is `idle_s` old is evicted unless its stamp is newer, then it goes round again: a state goes
between `idle_s` and twice that after its last write, and the accounts of a burst after about
`idle_s`.

Store access goes around Faust's Table API (which needs a current stream event per write) into the two
store classes' data, reached through kafka.compat (checked at start-up).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from typing import Any

from upsell_triggers.engine.retention import DEFAULT_ERASURE_HOLD_MS, state_expired
from upsell_triggers.engine.ruleset import RuleSet
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.runtime.packed_states import Packer

# UPSELL_STATE_CACHE_ACCOUNTS=auto: the decoded states a worker keeps. With the shipped rules a decoded
# state and its entry take ~1 KiB, so 100k accounts fit the contract's 1 KiB per account all decoded.
# States that keep histories (RuleSet.keeps_histories) take twice that and more: 20k decoded, the others
# compressed (~0.1 KiB), holds 100k such accounts to ~0.9 KiB each, for a decode on each event of an
# account beyond the 20k most recently decoded (docs/operations.md#sizing gives both prices).
DECODED_ACCOUNTS = 100_000
DECODED_ACCOUNTS_WITH_HISTORIES = 20_000


def decoded_bound(setting: int | str, rules: RuleSet, current: int | None = None) -> int:
    """The decoded states to keep under `rules`: the setting, or when it is "auto", the bound the rule
    set's state size calls for. On a reload (`current`: the bound in force) auto only ever lowers it: a
    reload that adds a forecast lowers it, and trim() evicts down to it over the next batches; one
    that removes the last such condition keeps it, since the accounts' states keep the histories those
    rules stored until they expire (docs/rules.md), and raising the bound would let them take twice
    the memory."""
    if isinstance(setting, int):
        return setting
    bound = DECODED_ACCOUNTS_WITH_HISTORIES if rules.keeps_histories else DECODED_ACCOUNTS
    return bound if current is None else min(bound, current)


class TableState:
    def __init__(
        self,
        table: Any,
        max_cached: int = 100_000,
        encode: Callable[[AccountState], bytes] = encode_state,
        max_unwritten: int = 100_000,
        retention_ms: int | None = None,
        on_expired: Callable[[int], None] | None = None,
        hold_ms: int = DEFAULT_ERASURE_HOLD_MS,
        idle_s: float = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        # Retention (engine/retention.py): each flush checks one stored account plus one per
        # SWEEP_RATIO states written, at most sweep_budget (per partition with RocksDB), against their
        # partition's watermark, the newest event time of the states written or checked there;
        # expired ones are removed with a changelog tombstone, as are the markers of deleted accounts
        # hold_ms after their deletion (engine/erasure.py).
        self.retention_ms = retention_ms
        self.hold_ms = hold_ms
        self.on_expired = on_expired  # (accounts removed) after each sweep that removed some
        self.sweep_budget = 1_000
        self.watermarks: dict[int, int] = {}
        self._cursors: dict[int, bytes | None] = {}  # RocksDB: partition -> the key to sweep from
        self._sweep_keys: list[bytes] = []  # memory store: the keys of the pass under way
        self._sweep_pos = 0
        self.max_cached = max_cached  # decoded states, dirty ones included (only clean ones are evicted)
        self.max_unwritten = max_unwritten
        self.encode = encode  # an older version during a rolling upgrade (state.STATE_WRITERS)
        # key -> decoded state; with the memory store, its own dict (values: bytes or decoded states).
        # Empty and unbound until the first miss, when the table's store exists.
        self.cache: dict[bytes, Any] = {}
        self.decoded: deque[bytes] = deque()  # keys decoded, longest decoded first (may hold stale keys)
        self.dirty: dict[bytes, int] = {}  # key -> partition
        # Idle eviction (0: off). _marks: (clock time, entries appended to `decoded` by then, counted
        # as _popped + len(decoded)); touched: decoded key -> the last mark's time (_stamp) when it was
        # last written (one float object per flush, shared by its keys).
        self.idle_s = idle_s
        self.clock = clock
        self.touched: dict[bytes, float] = {}
        self._marks: deque[tuple[float, int]] = deque()
        self._popped = 0  # entries taken from the front of `decoded`
        # trim(): how far `decoded` reached at the last trim (counted as _popped + len(decoded)), and how
        # many states it evicts beyond the ones decoded since, at most (see trim).
        self._trimmed_at = 0
        self.trim_budget = TRIM_BUDGET
        self._stamp = float("-inf")
        # The memory store's evicted states, compressed (packed_states); read back by _load and the sweep.
        self.packer = Packer()
        self.partition = 0  # the partition of the records being handled: set by the batch loop
        self._bound = False
        self._memory = False
        # Bound with the store (see _bind): memory store key -> partition; RocksDB partition -> database
        # and key -> partition.
        self._partition_of: MutableMapping[bytes, int] = {}
        self._db_for: Callable[[int], Any] = _unbound
        self._rocksdb_partition_of: MutableMapping[bytes, int] = {}

    @property
    def _store(self) -> Any:
        return self.table.data

    @property
    def rocksdb(self) -> bool:
        return compat.is_rocksdb(self._store)

    def _bind(self) -> None:
        store = self._store
        self._memory = not self.rocksdb
        if self._memory:
            self.cache = compat.memory_store_data(store)
            self._partition_of = compat.memory_store_partitions(store)
        else:
            self._db_for = compat.rocksdb_partition_db(store)
            self._rocksdb_partition_of = compat.rocksdb_key_index(store)
        self._bound = True

    def get(self, account_id: str) -> AccountState:
        """The state to apply an event to; it is written back by flush()."""
        key = account_id.encode()
        st = self.cache.get(key)
        if st.__class__ is not AccountState:  # not cached, or the memory store's bytes
            st = self._load(key, st)
        self.dirty[key] = self.partition
        return st

    def _load(self, key: bytes, raw: Any) -> AccountState:
        if not self._bound:  # the first miss: the store exists now
            self._bind()
            raw = self.cache.get(key)
            if raw.__class__ is AccountState:
                return raw
        if self._memory:
            if raw is None:
                self._partition_of[key] = self.partition
        else:
            raw = self._db_for(self.partition).get(key)
        st = decode_state(self.packer.unpack(raw)) if raw else AccountState()
        self.cache[key] = st
        self.decoded.append(key)
        return st

    def must_flush(self) -> bool:
        """Dirty states cannot be evicted: write them before they outgrow their bound."""
        return len(self.dirty) >= self.max_unwritten

    def trim(self) -> None:
        """Evicts the longest-decoded clean states beyond max_cached: the memory store gets their bytes
        back, RocksDB has them already. At most as many as were decoded since the last trim plus
        `trim_budget`: at the bound that is every state over it, and a bound lowered by a reload (100k
        to 20k) is reached over a few batches rather than in one pause of ~0.2 s (an eviction encodes
        and compresses a state, ~2-3 us)."""
        if self.idle_s:
            self.evict_idle(BATCH_IDLE_BUDGET)
        decoded, dirty = self.decoded, self.dirty
        reached = self._popped + len(decoded)
        n = min(len(decoded) - self.max_cached, reached - self._trimmed_at + self.trim_budget)
        self._trimmed_at = reached
        if n <= 0:
            return
        keep = []
        popped = 0
        evict, touched = self._evict, self.touched
        while n > 0 and decoded:
            key = decoded.popleft()
            popped += 1
            if key in dirty:
                keep.append(key)
                continue
            n -= 1
            evict(key)
            touched.pop(key, None)
        self._popped += popped
        decoded.extend(keep)
        self._trimmed_at = self._popped + len(decoded)  # the dirty keys put back are not new decodes

    def _evict(self, key: bytes) -> bool:
        """A clean decoded state out of memory: the memory store gets its bytes back, compressed, RocksDB
        has them already. False if the key is not held decoded (stale: since replaced by recovery's
        bytes, or dropped). Encoding and compressing cost ~2 us a state with the example rules
        (bench/pack_bench.py): at the bound (more accounts active than max_cached) it is paid on the
        batch path."""
        st = self.cache.get(key)
        if st.__class__ is not AccountState:
            return False
        if self._memory:
            self.cache[key] = self.packer.pack(self.encode(st))
        else:
            del self.cache[key]
        return True

    def evict_idle(self, budget: int = 500) -> int:
        """Evicts the decoded states not written for `idle_s`, looking at `budget` states at most (an
        eviction encodes and compresses a state, ~2 us: the budget bounds the event loop's pause);
        returns how many it evicted. Called on a timer, and by trim() after each batch so that eviction
        keeps up with a backlog, when the timer fires seldom. Notes a mark every MARK_S: the stamp of
        the writes that follow, and how far `decoded` reached."""
        if not self.idle_s:
            return 0
        now = self.clock()
        marks = self._marks
        cutoff = now - self.idle_s
        evicted = 0
        if marks and marks[0][0] <= cutoff:
            evicted = self._evict_idle(cutoff, budget)
        if now - self._stamp >= MARK_S:
            self._stamp = now
            end = self._popped + len(self.decoded)
            if not marks or marks[-1][1] != end:  # else the older mark stands for the same entries
                marks.append((now, end))
        return evicted

    def _evict_idle(self, cutoff: float, budget: int) -> int:
        decoded, marks, dirty, touched = self.decoded, self._marks, self.dirty, self.touched
        evicted = 0
        while marks and marks[0][0] <= cutoff and budget > 0:
            end = marks[0][1]  # the entries before it were queued before its time: idle_s ago
            popped = self._popped
            while popped < end and budget > 0:
                key = decoded.popleft()
                popped += 1
                budget -= 1
                written = touched.get(key)
                if key in dirty or (written is not None and written > cutoff):
                    decoded.append(key)  # written since: looked at again idle_s from now
                    continue
                if self._evict(key):
                    evicted += 1
                if written is not None:
                    del touched[key]
            self._popped = popped
            if popped >= end:
                marks.popleft()
        if not touched:
            self.touched = {}  # a dict keeps its table when emptied: let an emptied one go
        return evicted

    def flush(self) -> dict[int, list[tuple[bytes, bytes | None]]]:
        """Writes dirty states (RocksDB; the memory store holds them already); returns the changelog
        records to send, by partition: states, and tombstones (None) of the accounts expired."""
        out: dict[int, list[tuple[bytes, bytes | None]]] = {}
        cache, encode, watermarks = self.cache, self.encode, self.watermarks
        db_for, key_index = (None, None) if self._memory else (self._db_for, self._rocksdb_partition_of)
        touched, stamp = (self.touched, self._stamp) if self.idle_s else (None, 0.0)
        for key, partition in self.dirty.items():
            st = cache[key]
            if st.__class__ is not AccountState:  # replaced by the store's bytes: a bug, not a state
                raise RuntimeError(f"account state {key!r} is no longer held decoded before it was written")
            value = encode(st)
            if st.last_seen > watermarks.get(partition, 0):
                watermarks[partition] = st.last_seen
            if db_for is not None and key_index is not None:
                db_for(partition).put(key, value)
                key_index[key] = partition
            out.setdefault(partition, []).append((key, value))
            if touched is not None:
                touched[key] = stamp
        written = len(self.dirty)
        self.dirty.clear()
        if self.retention_ms is not None and self._bound:
            # Checks in proportion to the states written (O(1) per event), at most sweep_budget.
            budget = min(self.sweep_budget, 1 + written // SWEEP_RATIO)
            if self._memory:
                n = self._sweep_memory(out, self.retention_ms, budget)
            else:
                n = self._sweep_rocksdb(out, budget)
            if n and self.on_expired is not None:
                self.on_expired(n)
        self.trim()
        return out

    def _sweep_memory(
        self, out: dict[int, list[tuple[bytes, bytes | None]]], retention_ms: int, budget: int
    ) -> int:
        """Checks the next `budget` accounts of a snapshot of the memory store's keys, taken again when
        it is used up (a pointer per account, once per pass). Deleting and re-inserting checked keys to
        go round the dict instead left a run of deleted slots at its front that every later slice
        scanned, ~10 us per state written."""
        data, partitions, watermarks = self.cache, self._partition_of, self.watermarks
        keys, i = self._sweep_keys, self._sweep_pos
        if i >= len(keys):
            keys = self._sweep_keys = list(data)
            i = 0
        end = min(i + budget, len(keys))
        self._sweep_pos = end
        n, hold_ms = 0, self.hold_ms
        for key in keys[i:end]:
            value = data.get(key)
            partition = partitions.get(key)
            if value is None or partition is None:
                continue  # removed since the snapshot
            st = value if value.__class__ is AccountState else decode_state(self.packer.unpack(value))
            watermark = watermarks.get(partition, 0)
            if st.last_seen > watermark:
                watermarks[partition] = watermark = st.last_seen
            if state_expired(st, watermark, retention_ms, hold_ms):
                del data[key], partitions[key]
                out.setdefault(partition, []).append((key, None))
                n += 1
        return n

    def _sweep_rocksdb(self, out: dict[int, list[tuple[bytes, bytes | None]]], budget: int) -> int:
        """Checks up to `budget` accounts of each partition written since the worker started, from
        where the last sweep of that partition stopped (in key order, round and round)."""
        assert self.retention_ms is not None
        n = 0
        for partition in list(self.watermarks):
            db = self._db_for(partition)
            start = self._cursors.get(partition)
            items = itertools.islice(db.items(from_key=start), budget + 1)
            self._cursors[partition] = None  # the end reached: start again from the first key
            expired_keys = []
            watermark = self.watermarks[partition]
            for i, (key, value) in enumerate(items):
                if i == budget:
                    self._cursors[partition] = key
                    break
                if key.startswith(_FAUST_KEYS) or key in self.dirty:
                    continue
                st = decode_state(value)
                if st.last_seen > watermark:
                    self.watermarks[partition] = watermark = st.last_seen
                if state_expired(st, watermark, self.retention_ms, self.hold_ms):
                    expired_keys.append(key)
            for key in expired_keys:
                db.delete(key)
                self._rocksdb_partition_of.pop(key, None)
                self.cache.pop(key, None)
                out.setdefault(partition, []).append((key, None))
            n += len(expired_keys)
        return n

    def drop_cache(self) -> None:
        """On rebalance, after the dirty states were written: another worker may own (and change) any of
        these accounts next. RocksDB's cache goes; the memory store's decoded states are its data, which
        Faust's recovery updates and whose revoked partitions it drops, as it would their bytes."""
        self.dirty.clear()
        if not self._memory:
            self.cache.clear()
            self._popped += len(self.decoded)
            self.decoded.clear()
            self.touched = {}
            # The sweep reads only partitions written since: a revoked one's database is not reopened.
            self.watermarks.clear()
            self._cursors.clear()

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        """RocksDB remembers the changelog offset it holds, so recovery reads only what is newer."""
        if self.rocksdb:
            self._store.set_persisted_offset(tp, offset)


# Idle eviction: a mark (and the stamp of the writes after it) every MARK_S; states looked at after
# each batch at most (the timer's calls look at more: faust_app).
MARK_S = 0.25
BATCH_IDLE_BUDGET = 200
# States trim() evicts per batch beyond those decoded since the last one (~15 ms at most).
TRIM_BUDGET = 5_000

# Stored accounts checked for retention: one per state write plus one per SWEEP_RATIO states written.
# A check costs about what writing a state does (it decodes an evicted state), so this keeps the sweep
# to a small fraction of the writes' cost; a pass over 1M accounts at 1,000 writes/s takes about 4.5
# hours, against a retention of months.
SWEEP_RATIO = 16
_FAUST_KEYS = b"__faust"  # Faust's own keys in a partition's database (its changelog offset)


def _unbound(partition: int) -> Any:
    raise RuntimeError("the table's store is not bound yet")
