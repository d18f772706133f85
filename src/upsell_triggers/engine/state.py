"""Per-account state: its layout (the accessors the engine reads and writes it through are stateops.py's).

The layout is this version's (AccountState, one MessagePack array on the wire); its bytes are
statecodec.py's, and older versions are read, and written during rolling upgrades, by statelegacy.py.
Bounds, per account: one reading per gauge, one open period per period counter, at most MAX_SERIES
rolling series (paywall features + rolling metrics, windows.py) of at most window/bucket buckets each,
one rule state per (rule, feature), DEDUP_HORIZON recent event ids, RECENT_PROMPTS prompt ids for
feedback (recentprompts.py), CAP_HISTORY prompt times for the frequency cap.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from msgspec import Struct

from upsell_triggers.engine.leadstate import LeadState
from upsell_triggers.engine.outcomes import Group
from upsell_triggers.engine.recentprompts import RecentPrompts
from upsell_triggers.engine.windows import Series

DEDUP_HORIZON = 16  # producer retries repeat recent ids; Kafka redelivery is caught by offset
CAP_HISTORY = 8
MAX_SERIES = 32
# 6: rolling series (windows.py) and recent prompts (recentprompts.py) packed, billing periods as one flat
# list. 5: gauges as one flat list, the dedup ring as bytes, the two source offsets as fields (a decoded
# state takes 480 bytes, 730 in version 4's layout). Older versions: statelegacy.py.
STATE_VERSION = 6
Num = int | float  # kept apart on decode: event times stay ints, readings stay floats
pack_hash = struct.Struct("<II").pack  # an event-id hash: CRC-32, Adler-32
UNUSED: Mapping[str, Any] = MappingProxyType({})  # what an account's unused container reads as


class Attribution(Struct, array_like=True, gc=False, frozen=True):
    """The account's last prompt decision (or holdout assignment), which an upgrade within the policy's
    attribution window converts. A MessagePack array on the wire; gc=False, as AccountState: it holds
    only strings and an int, so the collector need not track it."""

    prompt_id: str  # "holdout:<rule id>" for a holdout account
    rule_id: str
    rule_group: str
    group: Group
    ts: int


class BillingPeriod(Struct, array_like=True, gc=False):
    """A period counter's open billing period: [start, end) in event time and the total counted in it.
    A MessagePack array of three on the wire, as a list would be; gc=False (numbers only), and mutable:
    the engine adds each increment in place."""

    start: int
    end: int
    total: Num


# Open billing periods, flat: metric, its period, metric, its period... (a list of two takes 72 bytes, a
# dict of one 184). Read and written through period_of() and set_period() only; names are the only
# strings, as in Gauges.
Periods = list[str | BillingPeriod]


# Gauge readings, flat: metric, ts, value, metric, ts, value... (a list of three-item tuples cost three
# times the memory). Read and written through gauge_value(), record_gauge() and gauge_readings() only.
Gauges = list[Any]


# Per-metric packed structures, flat: name, bytes, name, bytes... Names are the only strings, so
# list.index finds a name and never a structure. (Any: msgspec takes no union of str and bytes; MessagePack
# keeps them apart as str and bin.)
Blobs = list[Any]


class RuleState(Struct, array_like=True, gc=False):
    """Edge-trigger memory of one (rule, feature). Absent = armed and never fired."""

    armed: bool = True
    last_fired: int | None = None
    fired_period: int | None = None
    capped: bool = False  # a frequency_cap decision was already recorded this episode

    def to_list(self) -> list[Any]:
        return [int(self.armed), self.last_fired, self.fired_period, int(self.capped)]


class AccountState(Struct, array_like=True, gc=False, tag=STATE_VERSION):
    """msgspec encodes and decodes it in C as a MessagePack array (fields in this order): a typical
    account is 84 bytes, encoded in 0.14 us and decoded in 0.3 us, against 148 bytes, 0.23 and 0.35 us
    as a JSON array (version 3), and 2.3 and 3.3 us for orjson plus building the objects in Python
    (version 2). The bytes come out exact-size (orjson's 4 KiB buffers had to be copied).
    gc=False: a state never references itself, so the collector need not track it (its containers are
    still tracked).

    The decoded state is what a worker holds per active account (100k by default), so its layout is
    chosen for memory: containers are None until the account uses them (a typical account uses one or
    two of the seven; each empty dict or list costs 56-64 bytes), gauge readings are one flat list
    instead of a dict of tuples (a one-reading dict and its tuple take 240 bytes, the list 80), the
    dedup ring is one bytes object, and the source offsets are two fields instead of a list
    (bench/ANALYSIS.md, "memory per account")."""

    # The version is the struct's tag: encoded first (the same bytes as a leading version field) and
    # checked on decode, without 8 bytes per decoded state.
    plan: str | None = None  # None: the policy's default plan
    plan_ts: int = 0
    period_anchor: int | None = None
    limits: dict[str, Num | None] | None = None  # per-account overrides from plan_changed
    gauges: Gauges | None = None  # metric, ts, value, ... (see Gauges)
    periods: Periods | None = None  # metric, its open billing period, ... (see Periods)
    rolling: dict[str, Series] | None = None  # series -> its buckets, packed (windows.py)
    rules: dict[str, RuleState] | None = None  # feature_key(rule id, feature or None) -> state
    # Replaced when a prompt is decided (rare): a tuple, where a list costs 16-40 bytes more (a MessagePack
    # array either way), and the recent prompts packed (recentprompts.py).
    sent: tuple[int, ...] | None = None  # times of recent prompts counted by the frequency cap
    attribution: Attribution | None = None
    recent_prompts: RecentPrompts | None = None
    # Ring of event-id hashes (8 bytes each, newest last), packed: as a list of 16 int objects
    # scattered on the heap, checking an event against it was the engine's costliest line (cache
    # misses over 100k accounts). Immutable bytes, replaced per event (see seen()).
    dedup: bytes = b""
    last_seen: int = 0  # newest event time applied
    # Per source topic: the newest Kafka offset applied to this account. An account lives on one
    # partition of each, so a redelivered record is one at or below it.
    events_offset: int = -1
    feedback_offset: int = -1
    # Account traits (account_updated): name -> value (a time trait as epoch ms), at most MAX_TRAITS, and
    # the event time they were last set at. Trailing and left out of the bytes of an account that never
    # had traits (statecodec.encode_state), so such a state is byte for byte what it is without the
    # feature; a state written without them decodes with these defaults.
    traits: dict[str, str | bool | Num] | None = None
    traits_ts: int = 0
    # Erasure (engine/erasure.py): the event time of the account's deletion, 0 if it was never deleted. A
    # deleted account's state is a marker: this, last_seen and the source offsets, nothing else. Trailing
    # and left out of the bytes while 0, as the traits are; a worker that does not know the field reads a
    # marker as an empty state.
    erased_at: int = 0
    # Daily history of the metrics forecast rules read (forecast.py): metric, its packed doubles, ... (a
    # gauge's first day and samples, or a period counter's period start, first day and increments; at
    # most 15 numbers each), read through forecast.history(). Left out of the bytes while None, as the
    # traits are.
    pace: Blobs | None = None
    # Distinct counts (engine/distinct.py: metric, its packed structure, ...; at most distinct.MAX_BYTES
    # each) and growth history (engine/growth.py: gauge, its packed change points, ...): flat lists read
    # through blob_of() and set_blob() (a list of four takes 88 bytes, a dict of two 184). Trailing and
    # left out of the bytes of an account that uses neither (statecodec.encode_state), as traits are.
    distinct: Blobs | None = None
    history: Blobs | None = None
    # Lead bookkeeping (leadstate.py): last, and left out of the bytes of an account that never had a
    # lead, as the traits are.
    leads: LeadState | None = None
    # Readiness score (score.py): source, value, ts, ... one part per scoring source the account scored
    # from (at most score.MAX_SOURCES). Last, and left out of the bytes of an account that never scored.
    score: list[Any] | None = None

    @property
    def version(self) -> int:
        return STATE_VERSION
