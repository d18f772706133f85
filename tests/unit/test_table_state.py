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
