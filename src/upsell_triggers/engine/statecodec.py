"""Which encoding of account states a worker writes: this version's (state.py) in steady running, or
an older one (statelegacy.py) while a rolling upgrade from a release that reads nothing newer may still
move accounts back to its workers. Reading needs no choice: AccountState.from_bytes reads every version.
"""

from __future__ import annotations

from collections.abc import Callable

from upsell_triggers.engine.state import STATE_VERSION, AccountState
from upsell_triggers.engine.statelegacy import WRITERS

# UPSELL_STATE_WRITE_VERSION -> encoder.
STATE_WRITERS: dict[int, Callable[[AccountState], bytes]] = {**WRITERS, STATE_VERSION: AccountState.to_bytes}
