"""TableState, the write-behind cache in front of the table's store: dirty states are never evicted,
every write goes to the store and the changelog records once per account, and the cache stays bounded.
The store is a stand-in with the two members of faust's memory Store that TableState uses."""

from __future__ import annotations

from types import SimpleNamespace

from upsell_triggers.engine.state import AccountState, to_bytes_v3
from upsell_triggers.runtime.table_state import TableState


def table() -> SimpleNamespace:
    return SimpleNamespace(data=SimpleNamespace(data={}, _key_partition={}))


def touch(states: TableState, account: str, partition: int, plan: str) -> None:
    states.partition = partition
    states.get(account).plan = plan


def test_dirty_states_survive_trim_and_flush_writes_each_once() -> None:
    t = table()
    states = TableState(t, max_cached=2)
    for i in range(5):
        touch(states, f"a{i}", i % 2, "team")
    touch(states, "a0", 0, "business")  # changed twice: one record
    states.trim()
    assert len(states.cache) == 5  # all dirty: none may go before it is written
    assert states.must_flush()
    out = states.flush()
    assert sorted(k for recs in out.values() for k, _ in recs) == [b"a0", b"a1", b"a2", b"a3", b"a4"]
    assert {p: len(r) for p, r in out.items()} == {0: 3, 1: 2}
    assert AccountState.from_bytes(t.data.data[b"a0"]).plan == "business"
    assert t.data._key_partition[b"a3"] == 1
    assert len(states.cache) == 2 and not states.dirty and not states.must_flush()
    assert list(states.cache) == [b"a3", b"a4"]  # the oldest cached went first


def test_trim_evicts_clean_states_only_and_reads_them_back() -> None:
    t = table()
    states = TableState(t, max_cached=2)
    touch(states, "a", 0, "team")
    touch(states, "b", 0, "team")
    states.flush()  # a, b written and clean
    touch(states, "c", 0, "business")  # dirty, newest
    states.trim()
    assert list(states.cache) == [b"b", b"c"] and b"c" in states.dirty
    assert states.flush() == {0: [(b"c", states.cache[b"c"].to_bytes())]}
    states.partition = 0
    assert states.get("a").plan == "team"  # evicted, decoded again from the store


def test_states_are_written_in_the_format_asked_for() -> None:
    t = table()
    states = TableState(t, encode=to_bytes_v3)  # UPSELL_STATE_WRITE_VERSION=3
    touch(states, "a", 0, "team")
    ((key, value),) = states.flush()[0]
    assert key == b"a" and value.startswith(b"[3,") and t.data.data[b"a"] == value
    assert AccountState.from_bytes(value).plan == "team"
