"""TableState, the decoded states in front of the table's store: dirty states are never evicted, every
write goes to the changelog (and RocksDB) once per account, and the decoded states stay bounded. The
stores are stand-ins with the members of faust's memory and RocksDB stores that TableState uses."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.engine.statelegacy import to_bytes_v3
from upsell_triggers.runtime.packed_states import SAMPLES
from upsell_triggers.runtime.table_state import TableState


class _DB(dict[bytes, bytes]):
    """rocksdict's Rdict as TableState uses it: keys in byte order."""

    def put(self, key: bytes, value: bytes) -> None:
        self[key] = value

    def delete(self, key: bytes) -> None:
        del self[key]

    def items(self, from_key: bytes | None = None) -> Any:  # type: ignore[override]
        return iter([(k, self[k]) for k in sorted(self) if from_key is None or k >= from_key])


def memory_table() -> SimpleNamespace:
    return SimpleNamespace(data=SimpleNamespace(data={}, _key_partition={}))


def rocksdb_table() -> SimpleNamespace:
    dbs: dict[int, _DB] = {}
    store = SimpleNamespace(
        dbs=dbs,
        _db_for_partition=lambda p: dbs.setdefault(p, _DB()),
        _key_index={},
        set_persisted_offset=lambda tp, offset: None,
    )
    return SimpleNamespace(data=store)


def stored(t: SimpleNamespace, key: bytes, partition: int = 0) -> Any:
    """What the store holds for key: bytes, or (memory store) a decoded state."""
    if hasattr(t.data, "dbs"):
        return t.data._db_for_partition(partition).get(key)
    return t.data.data.get(key)


def touch(states: TableState, account: str, partition: int, plan: str) -> None:
    states.partition = partition
    states.get(account).plan = plan


TABLES = pytest.mark.parametrize("make", [memory_table, rocksdb_table], ids=["memory", "rocksdb"])


@TABLES
def test_dirty_states_survive_trim_and_flush_writes_each_once(make: Any) -> None:
    t = make()
    states = TableState(t, max_cached=2, max_unwritten=5)
    for i in range(5):
        touch(states, f"a{i}", i % 2, "team")
    touch(states, "a0", 0, "business")  # changed twice: one record
    states.trim()
    assert len(states.decoded) == 5  # all dirty: none may go before it is written
    assert all(states.cache[f"a{i}".encode()].plan for i in range(5))
    assert states.must_flush()
    out = states.flush()
    assert sorted(k for recs in out.values() for k, _ in recs) == [b"a0", b"a1", b"a2", b"a3", b"a4"]
    assert {p: len(r) for p, r in out.items()} == {0: 3, 1: 2}
    assert decode_state(dict(out[0])[b"a0"]).plan == "business"
    assert not states.dirty and not states.must_flush()
    assert list(states.decoded) == [b"a3", b"a4"]  # the longest decoded went first
    for i in range(5):  # evicted or not, the store gives the written state back
        got = stored(t, f"a{i}".encode(), i % 2)
        if got is None:  # RocksDB cache
            got = states.cache[f"a{i}".encode()]
        st = got if isinstance(got, AccountState) else decode_state(got)
        assert st.plan == ("business" if i == 0 else "team")


def test_the_memory_store_holds_active_states_decoded_and_evicted_ones_as_bytes() -> None:
    t = memory_table()
    states = TableState(t, max_cached=1)
    touch(states, "a", 2, "team")
    touch(states, "b", 3, "business")
    out = states.flush()
    a, b = t.data.data[b"a"], t.data.data[b"b"]
    assert isinstance(b, AccountState) and b.plan == "business"  # decoded, no second copy as bytes
    assert a == out[2][0][1]  # evicted: back to the bytes that were written
    assert t.data._key_partition == {b"a": 2, b"b": 3}  # Faust drops revoked partitions' keys by it
    states.partition = 2
    assert states.get("a").plan == "team" and isinstance(t.data.data[b"a"], AccountState)


def test_states_restored_as_bytes_are_decoded_in_place_once() -> None:
    t = memory_table()
    t.data.data[b"a"] = encode_state(AccountState(plan="team"))  # as Faust's recovery writes them
    t.data._key_partition[b"a"] = 1
    states = TableState(t)
    states.partition = 1
    st = states.get("a")
    assert st.plan == "team" and t.data.data[b"a"] is st and states.get("a") is st
    assert list(states.decoded) == [b"a"]


def test_stale_decoded_keys_are_skipped_and_the_bound_still_holds() -> None:
    """Recovery may overwrite a decoded state with newer bytes, or drop a revoked partition's keys."""
    t = memory_table()
    states = TableState(t, max_cached=2)
    for name in ("a", "b", "c"):
        touch(states, name, 0, "team")
    states.flush()
    newer = encode_state(AccountState(plan="business"))
    t.data.data[b"b"] = newer  # recovery applied a newer changelog record
    t.data.data.pop(b"c")  # the partition was revoked
    touch(states, "d", 0, "team")
    touch(states, "e", 0, "team")
    states.flush()
    assert t.data.data[b"b"] is newer  # left as recovery wrote it, not re-encoded from a stale state
    assert b"c" not in t.data.data
    decoded = [k for k, v in t.data.data.items() if isinstance(v, AccountState)]
    assert len(decoded) <= 2 and len(states.decoded) <= 2


@TABLES
def test_trim_evicts_clean_states_only_and_reads_them_back(make: Any) -> None:
    t = make()
    states = TableState(t, max_cached=2)
    touch(states, "a", 0, "team")
    touch(states, "b", 0, "team")
    states.flush()  # a, b written and clean
    touch(states, "c", 0, "business")  # dirty, newest
    states.trim()
    assert list(states.decoded) == [b"b", b"c"] and b"c" in states.dirty
    assert states.flush() == {0: [(b"c", encode_state(states.cache[b"c"]))]}
    states.partition = 0
    assert states.get("a").plan == "team"  # evicted, decoded again from the store


@TABLES
def test_unwritten_states_have_their_own_bound(make: Any) -> None:
    states = TableState(make(), max_cached=2, max_unwritten=3)
    for name in ("a", "b"):
        touch(states, name, 0, "team")
    assert not states.must_flush()
    touch(states, "c", 0, "team")
    assert states.must_flush()


def test_rebalance_drops_rocksdb_cache_and_keeps_memory_store_data() -> None:
    mem, rdb = TableState(memory_table()), TableState(rocksdb_table())
    for states in (mem, rdb):
        touch(states, "a", 0, "team")
        states.flush()
        states.drop_cache()
        assert not states.dirty
    assert not rdb.cache and not rdb.decoded
    assert isinstance(mem.cache[b"a"], AccountState)  # Faust's own data: its recovery updates it


@TABLES
def test_states_are_written_in_the_format_asked_for(make: Any) -> None:
    t = make()
    states = TableState(t, encode=to_bytes_v3, max_cached=0)  # UPSELL_STATE_WRITE_VERSION=3
    touch(states, "a", 0, "team")
    ((key, value),) = states.flush()[0]
    assert key == b"a" and value.startswith(b"[3,") and stored(t, b"a") == value
    assert decode_state(value).plan == "team"


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _decoded(t: SimpleNamespace, states: TableState) -> set[bytes]:
    """The keys held decoded (the memory store's decoded values, or RocksDB's cache)."""
    if hasattr(t.data, "dbs"):
        return set(states.cache)
    return {k for k, v in t.data.data.items() if isinstance(v, AccountState)}


@TABLES
def test_states_idle_for_idle_s_are_evicted_and_active_ones_stay_decoded(make: Any) -> None:
    t, clock = make(), _Clock()
    states = TableState(t, idle_s=30, clock=clock)
    for name in ("a", "b", "c"):
        touch(states, name, 0, "team")
    written = states.flush()
    assert states.evict_idle() == 0  # just written
    for step in range(1, 13):  # 60 s, a tick each 5 s: b written every 10 s, a and c never again
        clock.now += 5
        if step % 2 == 0:
            touch(states, "b", 0, "business")
            states.flush()
        states.evict_idle()
        if clock.now - 1_000 < 30:
            assert _decoded(t, states) == {b"a", b"b", b"c"}  # not idle for 30 s yet
    assert _decoded(t, states) == {b"b"}  # a and c went between 30 and 60 s after their last write
    assert list(states.decoded) == [b"b"]
    if not hasattr(t.data, "dbs"):  # the memory store holds them as the bytes that were written
        assert t.data.data[b"a"] == dict(written[0])[b"a"]
    states.partition = 0
    assert states.get("a").plan == "team" and states.get("b").plan == "business"
    assert _decoded(t, states) == {b"a", b"b"}


@TABLES
def test_an_idle_state_goes_between_idle_s_and_twice_that_after_its_last_write(make: Any) -> None:
    t, clock = make(), _Clock()
    states = TableState(t, idle_s=10, clock=clock)
    touch(states, "a", 0, "team")
    states.flush()
    states.evict_idle()
    clock.now += 5
    states.evict_idle()  # the timer's tick: the stamp of the writes that follow
    touch(states, "a", 0, "business")  # written again 5 s after it was queued
    states.flush()
    gone_at = None
    for _ in range(40):
        clock.now += 1
        states.evict_idle()
        if not _decoded(t, states):
            gone_at = clock.now - 1_005  # seconds after its last write
            break
    assert gone_at is not None and 10 <= gone_at <= 20
    assert not states.decoded and not states.touched


def test_dirty_states_are_never_evicted_as_idle() -> None:
    t, clock = memory_table(), _Clock()
    states = TableState(t, idle_s=1, clock=clock)
    touch(states, "a", 0, "team")
    states.evict_idle()
    for _ in range(5):
        clock.now += 10
        assert states.evict_idle() == 0  # changed, not written yet
    assert isinstance(t.data.data[b"a"], AccountState)
    assert states.flush() == {0: [(b"a", encode_state(t.data.data[b"a"]))]}


def test_idle_eviction_looks_at_most_budget_states_per_call() -> None:
    t, clock = memory_table(), _Clock()
    states = TableState(t, idle_s=1, clock=clock)
    for i in range(10):
        touch(states, f"a{i}", 0, "team")
    states.flush()
    states.evict_idle()
    clock.now += 2
    assert [states.evict_idle(budget=4) for _ in range(4)] == [4, 4, 2, 0]
    assert not _decoded(t, states) and not states.decoded


def test_idle_eviction_is_off_at_zero_and_keeps_no_touched_keys() -> None:
    t, clock = memory_table(), _Clock()
    states = TableState(t, clock=clock)  # idle_s=0
    touch(states, "a", 0, "team")
    states.flush()
    clock.now += 1e6
    assert states.evict_idle() == 0 and _decoded(t, states) == {b"a"} and not states.touched


def test_states_evicted_by_the_bound_leave_no_touched_key_behind() -> None:
    """touched is bounded by the decoded states: the bound's evictions take their keys out of it."""
    t, clock = memory_table(), _Clock()
    states = TableState(t, max_cached=2, idle_s=30, clock=clock)
    for i in range(10):
        touch(states, f"a{i}", 0, "team")
        states.flush()
    assert len(states.decoded) == 2 and set(states.touched) == {b"a8", b"a9"}


def test_each_batch_evicts_idle_states_too_when_the_timer_is_late() -> None:
    """While a backlog keeps the event loop busy, trim() (after each batch) does the timer's work."""
    t, clock = memory_table(), _Clock()
    states = TableState(t, idle_s=1, clock=clock)
    for name in ("a", "b"):
        touch(states, name, 0, "team")
    states.flush()
    clock.now += 2
    touch(states, "c", 0, "team")
    states.trim()
    assert _decoded(t, states) == {b"c"} and isinstance(t.data.data[b"a"], bytes)


def test_the_memory_store_holds_evicted_states_packed_and_reads_them_back() -> None:
    t, clock = memory_table(), _Clock()
    states = TableState(t, idle_s=1, clock=clock)
    written: dict[bytes, bytes] = {}
    for i in range(SAMPLES + 20):
        touch(states, f"acct-{i:03d}", 0, "team")
        states.get(f"acct-{i:03d}").last_seen = 1_790_000_000_000 + i
    for recs in states.flush().values():
        written.update(recs)
    clock.now += 2
    assert states.evict_idle() == SAMPLES + 20
    held = t.data.data
    packed = [k for k, v in held.items() if isinstance(v, bytes) and v != written[k]]
    assert len(packed) == 20 and all(len(held[k]) < len(written[k]) for k in packed)
    for i in range(SAMPLES + 20):  # each reads back as the state written
        states.partition = 0
        assert states.get(f"acct-{i:03d}").last_seen == 1_790_000_000_000 + i
    assert states.flush()[0] == list(written.items())


@TABLES
def test_a_lowered_bound_is_reached_over_batches_not_in_one_pause(make: Any) -> None:
    """A reload lowering the bound (100k to 20k) would evict everything over it at the next batch: each
    trim evicts the states decoded since the last one and at most `trim_budget` more."""
    states = TableState(make(), max_cached=100)
    states.trim_budget = 10
    for i in range(60):
        touch(states, f"a{i}", 0, "team")
    states.flush()
    assert len(states.decoded) == 60  # under the bound
    states.max_cached = 20  # a reload lowered it
    states.trim()
    assert len(states.decoded) == 50  # nothing decoded since: the budget only
    for i in range(60, 65):  # a batch decoding 5 accounts
        touch(states, f"a{i}", 0, "team")
    states.flush()  # trims: the 5 new ones' worth and the budget
    assert len(states.decoded) == 40
    states.trim()
    states.trim()
    assert len(states.decoded) == 20
    states.trim()
    assert len(states.decoded) == 20  # at the bound
    assert list(states.decoded) == [f"a{i}".encode() for i in range(45, 65)]  # the longest decoded went
