"""to_iso is integer arithmetic with a cached date: it must print what datetime.strftime prints."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers.engine.events import MAX_TS_MS, MIN_TS_MS
from upsell_triggers.engine.timeutil import to_iso


def reference(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=MIN_TS_MS, max_value=MAX_TS_MS + 90 * 86_400_000),  # + prompt expiry
        st.integers(min_value=0, max_value=4_000).map(lambda d: MIN_TS_MS + d * 86_400_000 - 1),
    )
)
def test_to_iso_matches_strftime(ms: int) -> None:
    assert to_iso(ms) == reference(ms)


def test_to_iso_examples() -> None:
    assert to_iso(1_793_495_478_000) == "2026-11-01T01:11:18Z"
    assert to_iso(1_793_495_478_267) == "2026-11-01T01:11:18.267Z"
    assert to_iso(951_782_400_000) == "2000-02-29T00:00:00Z"  # leap day
