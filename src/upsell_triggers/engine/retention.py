"""How long an account's state is kept: the one rule the Kafka worker's store, the embedded store and
`replay` apply alike.

An account whose newest event (`AccountState.last_seen`) is older than the retention, measured in event
time against the watermark of its partition (the newest event time seen there), is expired: its state
is removed, and an account that sends an event after that starts from a fresh state. Event time, not
the clock, so that reprocessing old data expires the same accounts as processing it live did.

The marker a deleted account leaves (erasure.py) is removed by the same sweep, once the watermark is the
erasure hold past the deletion: it is kept only to drop the account's events still in flight.
"""

from __future__ import annotations

from typing import Final

from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.timeutil import DAY

DEFAULT_RETENTION_DAYS: Final = 400.0
DEFAULT_RETENTION_MS: Final = int(DEFAULT_RETENTION_DAYS * DAY)
DEFAULT_ERASURE_HOLD_DAYS: Final = 7.0
DEFAULT_ERASURE_HOLD_MS: Final = int(DEFAULT_ERASURE_HOLD_DAYS * DAY)


def expired(last_seen_ms: int, watermark_ms: int, retention_ms: int) -> bool:
    """Whether a state last changed by an event at last_seen_ms is past retention_ms of event time at
    watermark_ms (the newest event time of its partition)."""
    return last_seen_ms < watermark_ms - retention_ms


def state_expired(state: AccountState, watermark_ms: int, retention_ms: int, hold_ms: int) -> bool:
    """Whether a stored state is to be removed: an account's past the retention, a deleted account's
    marker past the erasure hold (the shorter of the two)."""
    erased_at = state.erased_at
    if erased_at:
        return erased_at < watermark_ms - min(hold_ms, retention_ms)
    return state.last_seen < watermark_ms - retention_ms
