"""Erasure of an account (docs/erasure.md): what an `account_deleted` event does to its state, and what
happens to the account's events that arrive after it.

The deletion replaces the account's state with a marker: the deletion's event time (`erased_at`), and
the newest Kafka offsets applied from each source topic, which a worker needs to skip a redelivered
record exactly after a crash or rebalance. Nothing else of the account is kept. An event of the account
with an event time up to the deletion's is dropped (it was in flight when the account was deleted: a
producer's retry, a late batch, a click on an old prompt) and produces no prompt and no decision. An
event after the deletion's time is a new account under the same id (the id was reused, or the customer
signed up again): it starts from an empty state. The marker is removed, with a changelog tombstone, by
the store's retention sweep once the partition's event time is `UPSELL_ERASURE_HOLD_DAYS` past the
deletion (engine/retention.py), so only the account's id is kept, and only for that long.
"""

from __future__ import annotations

from typing import Final

from upsell_triggers.engine.state import AccountState

_DEFAULTS: Final = tuple(
    (name, getattr(AccountState(), name))
    for name in AccountState.__struct_fields__
    if name not in ("events_offset", "feedback_offset")
)


def _clear(state: AccountState) -> None:
    """Every field back to its default but the source offsets, in place: the stores hold this object."""
    for name, default in _DEFAULTS:
        setattr(state, name, default)


def erase(state: AccountState, ts: int) -> None:
    """Turns the state into the marker of an account deleted at event time `ts` (a later deletion of an
    account already erased moves its time forward, never back)."""
    erased_at = max(ts, state.erased_at)
    _clear(state)
    state.erased_at = state.last_seen = erased_at


def reopen(state: AccountState) -> None:
    """The marker of an erased account becomes an empty state, for an event after the deletion."""
    _clear(state)
