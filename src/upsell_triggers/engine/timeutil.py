"""Event-time arithmetic in integer epoch milliseconds, which keeps state compact and comparisons cheap."""

from __future__ import annotations

import calendar
import functools
import re
from datetime import UTC, date, datetime, timedelta
from typing import Final, NamedTuple

MS: Final = 1
SECOND: Final = 1000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS: Final = {"ms": MS, "s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}


def parse_duration(text: str | int | float) -> int:
    """'7d', '24h', '30m', '500ms' or a number of seconds -> milliseconds."""
    if isinstance(text, bool):
        raise ValueError("a duration is a string like '7d' or '24h', not a boolean")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        if text != text or text == float("inf"):  # NaN or .inf: no number of milliseconds
            raise ValueError(f"a duration must be finite, not {text}")
        return int(text * SECOND)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"invalid duration {text!r}: use a number and a unit (ms, s, m, h, d, w), e.g. '7d'")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def format_duration(ms: int) -> str:
    for unit, size in (("w", 7 * DAY), ("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def to_iso(ms: int) -> str:
    """RFC 3339 UTC with a 'Z', second precision unless milliseconds are present.

    Integer arithmetic, the date, hour and minute kept per minute and the digits looked up: every
    prompt formats one of these, and the strftime version cost 2.3 us each (a fifth of building a
    prompt); an int's `:02d` format costs as many instructions as the rest of the function."""
    minute, rem = divmod(ms, MINUTE)
    head = _MINUTES.get(minute)
    if head is None:
        head = _minute_head(minute)
    secs, milli = divmod(rem, SECOND)
    if milli:
        return f"{head}{_D2[secs]}.{_D3[milli]}Z"
    return f"{head}{_D2[secs]}Z"


def _minute_head(minute: int) -> str:
    """to_iso() up to the seconds (`2026-11-01T09:30:`) of a minute counted from the epoch, kept."""
    days, rem = divmod(minute, 24 * 60)
    hours, minutes = divmod(rem, 60)
    head = f"{iso_date(days)}T{_D2[hours]}:{_D2[minutes]}:"
    if len(_MINUTES) >= _MAX_MINUTES:
        _MINUTES.clear()
    _MINUTES[minute] = head
    return head


# Minute -> to_iso()'s text up to the seconds: prompts of one stretch of event time share a few.
_MINUTES: Final[dict[int, str]] = {}
_MAX_MINUTES: Final = 4096  # a bound, not an expected size

_D2: Final = tuple(f"{i:02d}" for i in range(60))  # hours, minutes, seconds
_D3: Final = tuple(f"{i:03d}" for i in range(1000))  # milliseconds


@functools.lru_cache(maxsize=4096)
def iso_date(days_since_epoch: int) -> str:
    """The date of a day counted from the epoch, as to_iso() begins (`2026-11-01`)."""
    return (_EPOCH + timedelta(days=days_since_epoch)).isoformat()


_EPOCH: Final = date(1970, 1, 1)


def datetime_to_ms(dt: datetime) -> int:
    """Epoch milliseconds, truncating sub-millisecond digits in integer arithmetic (a float product of
    timestamp() reads some times such as .123 as .122)."""
    if dt.tzinfo is None:
        raise ValueError("timestamp needs a UTC offset (RFC 3339), e.g. 2026-11-22T10:00:00Z")
    return (dt - _EPOCH_UTC) // _ONE_MS


_EPOCH_UTC: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


def _add_months(anchor: datetime, months: int) -> datetime:
    total = anchor.month - 1 + months
    year, month = anchor.year + total // 12, total % 12 + 1
    _, days_in_month = calendar.monthrange(year, month)
    day = min(anchor.day, days_in_month)
    return anchor.replace(year=year, month=month, day=day)


class PeriodBounds(NamedTuple):
    """A billing period's [start, end) in epoch ms."""

    start: int
    end: int


def billing_period(ts_ms: int, anchor_ms: int | None) -> PeriodBounds:
    """The monthly billing period [start, end) holding ts_ms.

    Anchored at anchor_ms (the day of month is kept, clamped to short months: an anchor on the 31st
    renews on Feb 28/29); calendar month UTC when there is no anchor.
    """
    ts = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if anchor_ms is None:
        anchor = datetime(1970, 1, 1, tzinfo=UTC)
    else:
        anchor = datetime.fromtimestamp(anchor_ms / 1000, tz=UTC)
    months = (ts.year - anchor.year) * 12 + (ts.month - anchor.month)
    start = _add_months(anchor, months)
    if start > ts:
        months -= 1
        start = _add_months(anchor, months)
    end = _add_months(anchor, months + 1)
    return PeriodBounds(datetime_to_ms(start), datetime_to_ms(end))
