"""Account states written by the release that writes version 5 (0.1.0): read by this one, and written
back identically for a rolling upgrade (UPSELL_STATE_WRITE_VERSION=5).

The fixtures in fixtures/state are bytes that release's encoder wrote (v5-*.msgpack) and its decoded
state as JSON (v5-*.json): v5-all-fields has every field set, forecast histories, distinct counts and
growth history of the example rules included, and rolling series of each kind (paywall series of ints
in order, a usage counter of floats, one with a bucket opened behind the newest, one mixing ints and
floats); v5-shipped is an account of the shipped rules after 40 simulated days; v5-pace-lists is
v5-all-fields with its forecast histories as they were stored before histories were packed (a map of
metric to a list of numbers).
"""

from __future__ import annotations

from array import array
from pathlib import Path

import msgspec
import pytest

from upsell_triggers.engine import windows
from upsell_triggers.engine.state import STATE_VERSION
from upsell_triggers.engine.statecodec import STATE_WRITERS, decode_state, encode_state
from upsell_triggers.engine.statelegacy import to_v5
from upsell_triggers.engine.stateops import blob_of

FIXTURES = Path(__file__).parent / "fixtures" / "state"


def as_released_json(st: object) -> bytes:
    return msgspec.json.format(msgspec.json.encode(msgspec.to_builtins(st, str_keys=True)), indent=1) + b"\n"


@pytest.mark.parametrize("name", ["v5-all-fields", "v5-shipped"])
def test_a_version_5_state_reads_as_that_release_decoded_it(name: str) -> None:
    data = (FIXTURES / f"{name}.msgpack").read_bytes()
    st = decode_state(data)
    assert st.version == STATE_VERSION
    assert as_released_json(to_v5(st)) == (FIXTURES / f"{name}.json").read_bytes()
    assert STATE_WRITERS[5](st) == data  # written back for an old worker: the same bytes
    assert decode_state(encode_state(st)) == st
    assert len(encode_state(st)) < len(data)  # packed series are smaller on the wire too
    # One copy of each name, shared by every account: two decodes hold the same objects.
    again = decode_state(data)
    for field in ("rolling", "rules"):
        assert all(a is b for a, b in zip(getattr(st, field) or (), getattr(again, field) or (), strict=True))
    assert all(a is b for a, b in zip((st.periods or [])[::2], (again.periods or [])[::2], strict=True))
    # A prompt's time, held in several places, is one object (as the engine builds it), and a recent
    # prompt's rule one entry shared by every account.
    assert st.sent is not None and st.attribution is not None and st.recent_prompts is not None
    assert (
        st.attribution.ts is st.sent[-1]
        and st.attribution.prompt_id == st.recent_prompts.prompts()[-1].prompt_id
    )
    assert st.recent_prompts.entries == again.recent_prompts.entries  # type: ignore[union-attr]
    assert all(a is b for a, b in zip(st.recent_prompts.entries, again.recent_prompts.entries, strict=True))  # type: ignore[union-attr]
    fired = [r.last_fired for r in (st.rules or {}).values() if r.last_fired in st.sent]
    assert fired and all(any(t is s for s in st.sent) for t in fired)


def test_each_rolling_series_takes_the_packed_form_where_it_is_exact() -> None:
    st = decode_state((FIXTURES / "v5-all-fields.msgpack").read_bytes())
    assert st.rolling is not None
    forms = {k: s[:1] if isinstance(s, bytes) else dict for k, s in st.rolling.items()}
    assert forms == {
        "api_requests": b"d",  # a usage counter: float sums
        "paywall_hits\x1faudit_log": b"i",  # paywall hits: int sums
        "paywall_hits\x1fscim": b"i",
        "paywall_hits\x1fsso": dict,  # written newest first: its float order would not be ascending
        "api_calls": dict,  # int and float sums
    }


def test_a_forecast_history_stored_as_lists_reads_as_packed_doubles() -> None:
    packed = decode_state((FIXTURES / "v5-all-fields.msgpack").read_bytes())
    lists = decode_state((FIXTURES / "v5-pace-lists.msgpack").read_bytes())
    assert lists == packed
    raw = msgspec.msgpack.decode((FIXTURES / "v5-pace-lists.msgpack").read_bytes())
    pace = raw[1 + list(type(packed).__struct_fields__).index("pace")]
    assert isinstance(pace, dict) and pace
    for metric, numbers in pace.items():
        blob = blob_of(lists.pace, metric)
        assert blob is not None and array("d", blob).tolist() == numbers


def test_a_version_6_state_keeps_its_series_packed_through_the_codec() -> None:
    st = decode_state((FIXTURES / "v5-all-fields.msgpack").read_bytes())
    back = decode_state(encode_state(st))
    assert back.rolling == st.rolling
    assert back.rolling is not None and isinstance(back.rolling["api_requests"], bytes)
    assert windows.buckets(back.rolling["paywall_hits\x1fsso"]) == windows.buckets(
        (st.rolling or {})["paywall_hits\x1fsso"]
    )
