"""packed_states: evicted states compressed with a dictionary trained on the process's first states,
read back as the very bytes that were packed; plain bytes (Faust's recovery) read as they are."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from upsell_triggers.engine.engine import Engine
from upsell_triggers.engine.events import decode_event
from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.state import AccountState
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.engine.statelegacy import to_bytes_v3
from upsell_triggers.runtime.packed_states import MARK, Packer

RULES = Path(__file__).resolve().parents[2] / "rules"


@functools.cache
def _states() -> tuple[bytes, ...]:
    """20 accounts' states under the shipped rules: a plan, seats readings, API calls."""
    engine = Engine(load_ruleset(RULES))
    out = []
    for i in range(20):
        st = AccountState()
        t = 1_790_000_000_000 + i
        for n, fields in enumerate(
            (
                {"type": "plan_changed", "plan": "team"},
                {"type": "usage", "metric": "seats", "value": 8 + i % 3},
                {"type": "usage", "metric": "api_calls", "delta": 40_000 + i},
                {"type": "usage", "metric": "seats", "value": 10},
            )
        ):
            raw = b'{"event_id": "e%d-%d", "account_id": "a%d", "ts": %d, ' % (i, n, i, t + n * 60_000)
            raw += b", ".join(b'"%s": %s' % (k.encode(), _json(v)) for k, v in fields.items()) + b"}"
            ev = decode_event(raw)
            engine.process(ev, st)  # type: ignore[arg-type]
        out.append(encode_state(st))
    return tuple(out)


def _json(v: object) -> bytes:
    return b'"%s"' % str(v).encode() if isinstance(v, str) else str(v).encode()


@pytest.mark.parametrize("samples", [12, 2])  # the trainer takes 12 and refuses 2 (a raw dictionary)
def test_states_are_kept_plain_until_the_dictionary_is_complete_then_packed_smaller(samples: int) -> None:
    blobs = _states()
    p = Packer(samples=samples)
    assert [p.pack(b) for b in blobs[:samples]] == list(blobs[:samples]) and p.zdict is not None
    assert (p.zdict.dict_id() == 0) == (samples == 2)  # a raw-content dictionary has no id
    packed = [p.pack(b) for b in blobs[samples:]]
    assert all(x.startswith(MARK) and len(x) < len(b) for x, b in zip(packed, blobs[samples:], strict=True))
    assert sum(map(len, packed)) < sum(map(len, blobs[samples:])) / 2
    assert [p.unpack(x) for x in packed] == list(blobs[samples:])
    assert decode_state(p.unpack(packed[0])) == decode_state(blobs[samples])


def test_the_dictionary_is_fixed_once_taken() -> None:
    """A state packed early reads back after many more were packed: the dictionary never changes."""
    blobs = _states()
    p = Packer(samples=12)
    for b in blobs[:12]:
        p.pack(b)
    first = p.pack(blobs[12])
    later = [p.pack(b) for b in blobs * 5]
    assert p.unpack(first) == blobs[12]
    assert [p.unpack(x) for x in later] == list(blobs * 5)


def test_plain_bytes_of_every_version_read_as_they_are() -> None:
    p = Packer(samples=2)
    for b in _states()[:2]:
        p.pack(b)
    v3 = to_bytes_v3(AccountState(plan="team"))
    for raw in (v3, _states()[1]):
        assert p.unpack(raw) is raw


def test_a_state_compressing_does_not_shrink_stays_plain() -> None:
    p = Packer(samples=2)
    p.pack(b"\x91\xa1x")
    p.pack(b"\x91\xa1y")
    tiny = encode_state(AccountState())
    assert p.pack(tiny) == tiny and p.unpack(tiny) == tiny
