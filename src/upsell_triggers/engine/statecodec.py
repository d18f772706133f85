"""Account state bytes: this version's encoding and decoding, and which version a worker writes.

Reading needs no choice: decode_state reads this version (state.py's layout) and every older one
(statelegacy.py). Writing is this version's in steady running, or an older one
(UPSELL_STATE_WRITE_VERSION) while a rolling upgrade from a release that reads nothing newer may still
move accounts back to its workers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec

from upsell_triggers.engine import statelegacy
from upsell_triggers.engine.state import STATE_VERSION, AccountState
from upsell_triggers.engine.stateops import shared_strings

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(AccountState).decode
_HEAD_LEN: Final = 3  # array16: 0xdc and a 2-byte count (the tag and the fields)
_FIELDS: Final = len(AccountState.__struct_fields__)
# The array header of a state whose last n fields are left out (the tag is one more item).
_HEAD_WITHOUT: Final = {n: b"\xdc" + (_FIELDS + 1 - n).to_bytes(2, "big") for n in (1, 2, 3, 4, 5, 6, 8)}
assert _encode(AccountState())[:_HEAD_LEN] == b"\xdc" + (_FIELDS + 1).to_bytes(2, "big"), (
    "AccountState's array header is not array16"
)
assert len(statelegacy.StateV5.__struct_fields__) == _FIELDS  # _trimmed's headers fit both
assert AccountState.__struct_fields__[-8:] == (
    "traits",
    "traits_ts",
    "erased_at",
    "pace",
    "distinct",
    "history",
    "leads",
    "score",
)


def encode_state(st: AccountState) -> bytes:
    """This version's bytes: one MessagePack array, the version (the struct's tag) first. The trailing
    fields left at their defaults are left out (the readiness score of an account that never scored; the
    lead bookkeeping of an account that never had a lead;
    growth history, distinct counts and a forecast's history while None, erased_at 0, and the traits of
    an account that never had any; one byte each), so a state's bytes are what they are without those
    features."""
    return _trimmed(_encode(st), st)


def _trimmed(data: bytes, st: AccountState | statelegacy.StateV5) -> bytes:
    """An encoded state (this version's or version 5's: the same trailing fields) without the trailing
    fields at their defaults (encode_state)."""
    if st.score is not None:
        return data
    if st.leads is not None:
        drop = 1  # score (nil)
    elif st.history is not None:
        drop = 2  # and leads (nil)
    elif st.distinct is not None:
        drop = 3  # and history (nil)
    elif st.pace is not None:
        drop = 4  # and distinct (nil)
    elif st.erased_at:
        drop = 5  # and pace (nil)
    elif st.traits is not None:
        drop = 6  # and erased_at (0)
    else:
        drop = 8  # and traits_ts (0), traits (nil)
    return _HEAD_WITHOUT[drop] + data[_HEAD_LEN:-drop]


def _encode_v5(st: AccountState) -> bytes:
    """The state as version 5, which the release before version 6 reads: written during a rolling upgrade
    from it (UPSELL_STATE_WRITE_VERSION=5), when an account can move back to an old worker."""
    old = statelegacy.to_v5(st)
    return _trimmed(_encode(old), old)


def decode_state(data: bytes) -> AccountState:
    """This version's bytes, or an older version's (statelegacy.read); ValueError for others."""
    if data[:1] != b"[":  # versions 1-3 are JSON arrays
        try:
            return shared_strings(_decode(data))
        except msgspec.ValidationError:
            pass  # another MessagePack version
    return statelegacy.read(data)


# UPSELL_STATE_WRITE_VERSION -> encoder.
STATE_WRITERS: Final[dict[int, Callable[[AccountState], bytes]]] = {
    **statelegacy.WRITERS,
    statelegacy.V5: _encode_v5,
    STATE_VERSION: encode_state,
}
