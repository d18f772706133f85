"""MemoryStore's bound and TTL, as the embedded runtime runs them: evictions are reported by cause, and
expire_step goes round the whole store in bounded slices without dropping an account early."""

from __future__ import annotations

from upsell_triggers.engine.timeutil import DAY
from upsell_triggers.processor import MemoryStore


def test_expire_step_goes_round_the_store_in_slices_and_drops_only_idle_accounts() -> None:
    evicted: list[tuple[str, int]] = []
    store = MemoryStore(max_accounts=100, ttl_ms=10 * DAY, on_evict=lambda c, n: evicted.append((c, n)))
    for i in range(10):
        store.get(f"active-{i}").last_seen = 100 * DAY
    for i in range(5):
        store.get(f"idle-{i}").last_seen = 80 * DAY  # 20 days before the newest activity
    assert store.expire_step(budget=4) == 0  # four active accounts: the watermark is 100 days
    assert store.expire_step(budget=4) == 0
    assert store.expire_step(budget=4) == 2  # two active, then the first two idle ones
    assert store.expire_step(budget=4) == 3  # the other idle ones come round
    assert sorted(a for a, _ in store.items()) == sorted(f"active-{i}" for i in range(10))
    assert evicted == [("ttl", 2), ("ttl", 3)]


def test_an_account_is_not_dropped_before_the_newest_activity_seen_is_ttl_later() -> None:
    store = MemoryStore(ttl_ms=10 * DAY)
    store.get("old").last_seen = 0
    store.get("newer").last_seen = 9 * DAY
    assert store.expire_step() == 0 and len(store) == 2
    store.get("newest").last_seen = 11 * DAY
    assert store.expire_step() == 1 and {a for a, _ in store.items()} == {"newer", "newest"}


def test_the_bound_evicts_and_reports_it() -> None:
    evicted: list[tuple[str, int]] = []
    store = MemoryStore(max_accounts=3, on_evict=lambda c, n: evicted.append((c, n)))
    for i in range(5):
        store.get(f"a{i}").last_seen = i
    assert len(store) == 3 and store.evicted == 2 and evicted == [("bound", 1), ("bound", 1)]
