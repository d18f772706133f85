"""What an account's state keeps about its leads (docs/leads.md): the times counted by the lead cap and
the latest lead, which an upgrade within the attribution window converts.

Absent (None) in the state of an account that never had a lead, so such a state's bytes are what they
are without the feature (state.AccountState.to_bytes).
"""

from __future__ import annotations

from msgspec import Struct

LEAD_CAP_HISTORY = 8  # lead times kept for the lead cap (policy.lead_cap.max_leads is at most this useful)


class LeadState(Struct, array_like=True, gc=False):
    """A MessagePack array inside the account's. `ts` 0: no lead to attribute an upgrade to."""

    sent: tuple[int, ...] = ()  # times of recent leads, counted by the lead cap (newest last)
    lead_id: str = ""
    rule_id: str = ""
    team: str = ""
    band: str = ""
    ts: int = 0
