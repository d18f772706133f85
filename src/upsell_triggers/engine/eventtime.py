"""An event's `ts` read as epoch milliseconds: the one reading both ways of decoding use (events.py).

A string is read by whenever's parser (Rust): epoch ms in one parse and one conversion, with no
Python-level slicing or caching, a fraction of what `datetime.fromisoformat` and datetime arithmetic
cost. It reads every RFC 3339 string, the lowercase 'z' and the leap second (":60", read as second 59
plus its fraction, as epoch time has no leap seconds) included, and truncates digits past the
millisecond. A bracketed zone name after the offset ("...Z[Europe/Paris]", RFC 9557), which it would
accept and ignore, is not RFC 3339: such strings, and the other ISO 8601 spellings it rejects (week
dates, ten or more fractional digits, ...), are read by `fromisoformat`, as they always were. Both
ways of decoding read strings with these functions, so they agree by construction;
tests/unit/test_fast_decode.py checks it, and that every string `fromisoformat` accepts reads as it
reads it.

A module of its own so that it is compiled (native.py): msgspec calls a struct's `__post_init__` as a
plain function of the struct, so the event structs (which stay interpreted) take `read_ts` and
`read_usage` as theirs, and reading a string `ts` runs no Python frame.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import whenever

from upsell_triggers.engine.timeutil import datetime_to_ms

# Event time outside these bounds is a producer bug (seconds instead of ms, year 0, ...).
MIN_TS_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS: Final = 7_258_118_400_000  # 2200-01-01T00:00:00Z

_instant: Final = whenever.Instant.parse_iso


def rfc3339_ms(text: str) -> int | None:
    """whenever's reading of an RFC 3339 string as epoch ms, or None (not range-checked)."""
    if text[-1:] == "]":
        return None
    try:
        ms: int = _instant(text).timestamp(unit="millisecond")
    except ValueError:
        return None
    return ms


def ts_ms(text: str) -> int:
    """A string read exactly as the long way reads it (events._parse_ts), for the fast paths: epoch ms,
    or a bare ValueError (the long way then words the error)."""
    if text and text[-1] != "]":
        try:
            ms: int = _instant(text).timestamp(unit="millisecond")
        except ValueError:
            pass
        else:
            if MIN_TS_MS <= ms < MAX_TS_MS:
                return ms
    return parse_ts_ms(text)


def parse_ts_ms(text: str) -> int:
    """`ts_ms` for the strings whenever does not read, or that lie outside the accepted range."""
    ms = rfc3339_ms(text)
    if ms is None:
        ms = datetime_to_ms(datetime.fromisoformat(text))
    if MIN_TS_MS <= ms < MAX_TS_MS:
        return ms
    raise ValueError("ts outside the accepted range")


def read_ts(ev: Any) -> None:
    """`__post_init__` of the event structs: a string `ts` becomes epoch ms (msgspec has range-checked
    an integer one). Any: the structs are events.py's, which imports this module."""
    ts = ev.ts
    if type(ts) is str:
        ev.ts = ts_ms(ts)


def read_usage(ev: Any) -> None:
    """`__post_init__` of a usage event: exactly one of value and delta, then `read_ts`."""
    if (ev.value is None) == (ev.delta is None):
        raise ValueError("exactly one of value/delta")  # the models word it for the DLQ
    ts = ev.ts
    if type(ts) is str:
        ev.ts = ts_ms(ts)
