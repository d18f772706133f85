"""The readiness score (docs/leads.md, "Readiness score"): how ready an account is for an expansion
conversation, 0-100 and banded (cold, warm, hot, on fire), from the rule files' `scoring` section.

A rule (and the signal it names) adds points when its condition becomes true for the account: once per
episode, whatever decision follows (emitted, cooldown, holdout, capped...). Each source keeps one value
per account, as of the event time it last scored, and halves every `half_life` of event time after it.
Fit points come from the account's traits when the score is read, so they need no state.

Pure and deterministic: the decay is computed from event-time differences only, the same float
operations in the same order under replay, in a rule test and in the Kafka worker, so the value stored
in the state (and recovered from the changelog) is the same to the bit. Bounded: at most MAX_SOURCES
parts per account (one per scoring source), each dropped EXPIRY_HALF_LIVES half-lives after it last
scored; an account that never scored keeps nothing (AccountState.score stays None, and its bytes are
those of a rule set without scoring).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from upsell_triggers.engine.rulemodel import Rule, TraitCond
from upsell_triggers.engine.state import AccountState

MAX_SOURCES: Final = 32  # rules and signals a scoring section may give points to
# A part that last scored this many half-lives ago is worth under 1/65536 of its points: it is dropped.
EXPIRY_HALF_LIVES: Final = 16
DEFAULT_BANDS: Final[tuple[tuple[str, float], ...]] = (
    ("on_fire", 85.0),
    ("hot", 60.0),
    ("warm", 30.0),
    ("cold", 0.0),
)

# An account's parts, flat: source, value, ts, source, value, ts... (`rule:<id>` or `signal:<name>`;
# the value as of event time ts). Source names are the only strings, so list.index finds a source.
Parts = list[Any]


@dataclass(frozen=True, slots=True)
class Fit:
    """Fit points: added to the score while the account's trait meets the condition."""

    source: str  # trait:<name>
    cond: TraitCond
    points: float


@dataclass(frozen=True, slots=True)
class Scoring:
    """A compiled `scoring` section."""

    half_life_ms: int
    cap: float
    # rule id -> the sources its edge adds points to, with their points (its own and its signal's).
    sources: dict[str, tuple[tuple[str, float], ...]]
    fit: tuple[Fit, ...] = ()
    bands: tuple[tuple[str, float], ...] = DEFAULT_BANDS  # highest lower bound first; the last is 0
    keys: frozenset[str] = field(init=False)  # every source a part may name
    expiry_ms: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", frozenset(k for src in self.sources.values() for k, _ in src))
        object.__setattr__(self, "expiry_ms", EXPIRY_HALF_LIVES * self.half_life_ms)


@dataclass(frozen=True, slots=True)
class Score:
    """An account's score at an event time, and what makes it up."""

    score: float  # 0-100, one decimal
    band: str
    contributions: list[dict[str, Any]]  # {source, points}, largest first


def decayed(value: float, age_ms: int, half_life_ms: int) -> float:
    """value after age_ms of event time (an age of 0 or less: value itself)."""
    if age_ms <= 0:
        return value
    return float(value * 0.5 ** (age_ms / half_life_ms))


def add_edges(state: AccountState, scoring: Scoring, rules: Iterable[Rule], ts: int) -> None:
    """Adds the points of rules whose condition became true for the account at ts (engine._decide passes
    the triggered rules starting an episode). A rule with a trait condition of its `when` that fails
    has not met its condition, and a rule with a score condition adds nothing (its points would count
    towards themselves). Parts of sources the section no longer names, and expired parts, are dropped."""
    sources = scoring.sources
    traits = state.traits
    adds: list[tuple[str, float]] = []
    for rule in rules:
        src = sources.get(rule.id)
        if src is None or rule.min_score is not None:
            continue
        if any(tc.failure(traits, ts) is not None for tc in rule.when_traits):
            continue
        adds += src
    if not adds:
        return
    parts: Parts = state.score or []
    half_life, expiry, keys = scoring.half_life_ms, scoring.expiry_ms, scoring.keys
    for key, points in adds:
        try:
            i = parts.index(key)
        except ValueError:
            parts += (key, float(points), ts)
            continue
        value, t0 = parts[i + 1], parts[i + 2]
        if ts >= t0:
            parts[i + 1] = (0.0 if ts - t0 >= expiry else decayed(value, ts - t0, half_life)) + points
            parts[i + 2] = ts
        else:  # a late event: its points as of the part's time
            parts[i + 1] = value + decayed(points, t0 - ts, half_life)
    kept: Parts = []
    for i in range(0, len(parts), 3):
        key, t0 = parts[i], parts[i + 2]
        if key in keys and ts - t0 < expiry:
            kept += parts[i : i + 3]
    state.score = kept or None


def read(state: AccountState, scoring: Scoring, ts: int) -> Score:
    """The account's score at event time ts: its parts decayed to ts, plus the fit points of traits that
    hold, clamped to [0, cap] and scaled to 0-100 (one decimal); its band; and each contribution
    (points rounded to 2 decimals), largest first."""
    half_life, expiry = scoring.half_life_ms, scoring.expiry_ms
    by_source: dict[str, float] = {}
    parts: Parts = state.score or []
    for i in range(0, len(parts), 3):
        key, value, t0 = parts[i], parts[i + 1], parts[i + 2]
        if key in scoring.keys and ts - t0 < expiry:
            by_source[key] = decayed(value, ts - t0, half_life)
    traits = state.traits
    for f in scoring.fit:
        if f.cond.failure(traits, ts) is None:
            by_source[f.source] = by_source.get(f.source, 0.0) + f.points
    total = math.fsum(by_source.values())  # exactly rounded: the parts' order does not matter
    score = round(min(max(total, 0.0), scoring.cap) / scoring.cap * 100, 1)
    return Score(score, band_of(scoring, score), contributions(by_source))


def band_of(scoring: Scoring, score: float) -> str:
    """The highest band whose lower bound the score reaches."""
    for name, low in scoring.bands:
        if score >= low:
            return name
    return scoring.bands[-1][0]


def contributions(by_source: dict[str, float]) -> list[dict[str, Any]]:
    shown = [(k, round(v, 2)) for k, v in by_source.items()]
    return [
        {"source": k, "points": int(v) if v.is_integer() else v}
        for k, v in sorted(shown, key=lambda kv: (-kv[1], kv[0]))
        if v != 0
    ]
