"""Account states of the partitions this worker owns, over a Faust table's store.

The table's store holds each account's state as bytes (memory dict, or RocksDB per partition) and its
changelog topic makes it durable; Faust recovers it on start and rebalance. In front of it sits a
bounded cache of decoded AccountState objects, so an active account is decoded once, not per event.
Touched states are written back when the consumer asks (each batch when caught up, each commit while
behind): one store write and one changelog record per dirty account, not per event (a changelog record
per event was measured 10x slower). Dirty states stay cached until written, so `max_cached` bounds both.

Store access goes around Faust's Table API (which needs a current stream event per write) into the two
store classes' data: faust.stores.memory.Store (`data`, `_key_partition`) and faust.stores.rocksdb.Store
(`_db_for_partition`, `_key_index`, `set_persisted_offset`). Pinned with faust-streaming==0.15.3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from upsell_triggers.engine.state import AccountState


class TableState:
    def __init__(
        self,
        table: Any,
        max_cached: int = 100_000,
        encode: Callable[[AccountState], bytes] = AccountState.to_bytes,
    ) -> None:
        self.table = table
        self.max_cached = max_cached
        self.encode = encode  # an older version during a rolling upgrade (state.STATE_WRITERS)
        self.cache: dict[bytes, AccountState] = {}
        self.dirty: dict[bytes, int] = {}  # key -> partition
        self.partition = 0  # the partition of the records being handled: set by the batch loop

    @property
    def _store(self) -> Any:
        return self.table.data

    @property
    def rocksdb(self) -> bool:
        return hasattr(self._store, "_db_for_partition")

    def _read(self, partition: int, key: bytes) -> bytes | None:
        store = self._store
        if self.rocksdb:
            value: bytes | None = store._db_for_partition(partition).get(key)
            return value
        got: bytes | None = store.data.get(key)
        return got

    def _writer(self) -> Callable[[int, bytes, bytes], None]:
        """put(partition, key, value) into this table's store; resolved once per flush, used per account."""
        store = self._store
        if self.rocksdb:

            def put(partition: int, key: bytes, value: bytes) -> None:
                store._db_for_partition(partition).put(key, value)
                store._key_index[key] = partition

            return put
        data, key_partition = store.data, store._key_partition

        def put_memory(partition: int, key: bytes, value: bytes) -> None:
            data[key] = value
            key_partition[key] = partition

        return put_memory

    def get(self, account_id: str) -> AccountState:
        """The state to apply an event to; it is written back by flush()."""
        key = account_id.encode()
        st = self.cache.get(key)
        if st is None:
            raw = self._read(self.partition, key)
            st = AccountState.from_bytes(raw) if raw else AccountState()
            self.cache[key] = st
        self.dirty[key] = self.partition
        return st

    def must_flush(self) -> bool:
        """Dirty states cannot be evicted: write them before they outgrow the cache's bound."""
        return len(self.dirty) >= self.max_cached

    def trim(self) -> None:
        """Evicts the oldest-cached clean states beyond the bound (their bytes are in the store)."""
        cache, dirty = self.cache, self.dirty
        excess = len(cache) - self.max_cached
        if excess <= 0:
            return
        victims = []
        for key in cache:
            if key not in dirty:
                victims.append(key)
                if len(victims) == excess:
                    break
        for key in victims:
            del cache[key]

    def flush(self) -> dict[int, list[tuple[bytes, bytes]]]:
        """Writes dirty states to the store; returns the changelog records to send, by partition."""
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        cache, encode = self.cache, self.encode
        put = self._writer()
        for key, partition in self.dirty.items():
            value = encode(cache[key])
            put(partition, key, value)
            out.setdefault(partition, []).append((key, value))
        self.dirty.clear()
        self.trim()
        return out

    def drop_cache(self) -> None:
        """On rebalance: another worker may own (and change) any of these accounts next."""
        self.cache.clear()
        self.dirty.clear()

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        """RocksDB remembers the changelog offset it holds, so recovery reads only what is newer."""
        if self.rocksdb:
            self._store.set_persisted_offset(tp, offset)
