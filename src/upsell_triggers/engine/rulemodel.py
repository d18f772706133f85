"""The compiled rule model: what rule files mean once checked, as the engine reads them, or the
problems (file, line, message) that kept them from compiling.

Plain frozen slots dataclasses, built by rulecompiler.py from the parsed files (rulefile.py) and
indexed for the hot path by ruleindex.py. Nothing here parses or validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from upsell_triggers.engine.timeutil import DAY, HOUR

# Metric kinds: how a metric's events update the state, and what a condition on it reads.
GAUGE: Final = "gauge"
PERIOD: Final = "period_counter"
ROLLING: Final = "rolling_counter"
FORECAST: Final = "forecast"  # Cond.kind of a forecast condition: a projected level (forecast.py)
DISTINCT: Final = "distinct"  # distinct values of an event field over a rolling window (distinct.py)
# Kinds of a growth condition (growth.py), which compares a metric now with its value a while ago.
GAUGE_GROWTH: Final = "gauge_growth"
ROLLING_GROWTH: Final = "rolling_growth"
PAYWALL_METRIC: Final = "paywall_hits"
BUILTIN_METRICS: Final[dict[str, tuple[str, str]]] = {
    "seats": (GAUGE, "count"),
    "storage_bytes": (GAUGE, "bytes"),
    "api_calls": (PERIOD, "count"),
    PAYWALL_METRIC: (ROLLING, "count"),
}
DEFAULT_ROLLING_WINDOW: Final = 30 * DAY
DEFAULT_BUCKET: Final = HOUR
MAX_BUCKETS: Final = 24 * 31  # per series: window / bucket must stay under this


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of the rule compiler, at a file and line, and the rule it is about (if one):
    `rules/usage-limits.yaml:14: error: rule seats-80: when.ratio: ...`."""

    file: str
    line: int | None
    message: str
    severity: str = "error"
    rule: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        about = f"rule {self.rule}: " if self.rule else ""
        return f"{where}: {self.severity}: {about}{self.message}"


class RulesError(Exception):
    """Rule files that do not compile: every problem found, so one run of `rules check` shows them all."""

    def __init__(self, problems: list[Problem], warnings: list[Problem] | None = None) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
        self.warnings = warnings or []  # found alongside: shown by `rules check`, never a reason to reject


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: str
    unit: str
    window_ms: int
    bucket_ms: int
    event_field: str | None = None  # distinct: the event field counted (user_id or an attribute)
    # Gauges read by a growth condition keep a history of readings (growth.py) at this resolution, for
    # this long; 0 for every other metric, which then records nothing more.
    history_bucket_ms: int = 0
    history_keep_ms: int = 0
    derived: bool = field(init=False)  # computed from other events, never sent in a usage event

    def __post_init__(self) -> None:
        object.__setattr__(self, "derived", self.name == PAYWALL_METRIC or self.kind == DISTINCT)


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str
    tier: int
    limits: dict[str, float | None]
    features: frozenset[str]

    def limit(self, metric: str) -> float | None:
        return self.limits.get(metric)


@dataclass(frozen=True, slots=True)
class Cond:
    """One condition of a rule: a level (levels.py) compared with a threshold."""

    metric: str
    ratio: float | None
    at_least: float | None
    window_ms: int
    feature: str | None  # paywall_hits: a feature, '*' for any, None otherwise
    kind: str  # the metric's kind (FORECAST or a growth kind for those conditions), copied for the hot path
    # A forecast condition (`within`): the horizon, the full days of history it needs before it may
    # fire, and the metric's own kind (gauge or period counter), which decides the projection.
    within_ms: int = 0
    min_history_days: int = 0
    source_kind: str = ""
    # A growth condition (kind GAUGE_GROWTH or ROLLING_GROWTH): the value now against its value
    # `over_ms` ago, as a ratio (`growth`) or a difference (`increase`).
    growth: float | None = None
    increase: float | None = None
    over_ms: int = 0
    bucket_ms: int = 0  # distinct, and growth of a rolling counter: the metric's bucket
    threshold: float = field(init=False)  # the ratio, count, growth or increase the condition sets

    def __post_init__(self) -> None:
        threshold = next(
            (t for t in (self.ratio, self.at_least, self.growth, self.increase) if t is not None), None
        )
        if threshold is None:
            raise ValueError(f"condition on {self.metric!r} has no threshold")
        object.__setattr__(self, "threshold", threshold)


STRING: Final = "string"  # trait types
NUMBER: Final = "number"
BOOL: Final = "bool"
TIME: Final = "time"
TraitValue = str | bool | float | int  # as AccountState.traits holds it (a time trait: epoch ms)


@dataclass(frozen=True, slots=True)
class TraitSpec:
    """A trait of the catalog: its type, and for a string trait the allowed values (None: any)."""

    name: str
    type: str
    values: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class TraitCond:
    """A condition on an account trait: one of `values`, within [at_least, at_most] for a number, or an
    age (event time minus the trait's time) within [age_at_least, age_at_most]. An unset trait fails."""

    trait: str
    type: str
    values: frozenset[TraitValue] | None = None
    at_least: float | None = None
    at_most: float | None = None
    age_at_least_ms: int | None = None
    age_at_most_ms: int | None = None
    # `not_in`: the value must not be one of these. Holds for an unset trait when it is the condition's
    # only test (a segment nobody set is not the excluded segment).
    excluded: frozenset[TraitValue] | None = None

    def failure(self, traits: dict[str, TraitValue] | None, ts: int) -> str | None:
        """Why the condition does not hold for an account with these traits at event time ts (None:
        it holds). The reason is what `ineligible` and `audience` decisions say."""
        v = traits.get(self.trait) if traits else None
        excluded = self.excluded
        if excluded is not None:
            if v is None:
                return None if self._only_not_in() else f"trait '{self.trait}' is not set"
            if v in excluded:
                shown = ", ".join(sorted(map(_show, excluded)))
                return f"trait '{self.trait}' is {_show(v)}, one of the excluded {shown}"
        if v is None:
            return f"trait '{self.trait}' is not set"
        if not trait_fits(self.type, v):  # set under an older catalog that typed it otherwise
            return f"trait '{self.trait}' holds {_show(v)}, not a {self.type}"
        if self.values is not None and v not in self.values:
            shown = ", ".join(sorted(map(_show, self.values)))
            return f"trait '{self.trait}' is {_show(v)}, not one of {shown}"
        if isinstance(v, (str, bool)):
            return None  # a string or bool trait is checked by its values only
        if self.type == TIME:
            age = ts - v
            if self.age_at_least_ms is not None and age < self.age_at_least_ms:
                return f"trait '{self.trait}' is {_age(age)} old, under {_age(self.age_at_least_ms)}"
            if self.age_at_most_ms is not None and age > self.age_at_most_ms:
                return f"trait '{self.trait}' is {_age(age)} old, over {_age(self.age_at_most_ms)}"
        if self.at_least is not None and v < self.at_least:
            return f"trait '{self.trait}' is {_show(v)}, under {self.at_least:g}"
        if self.at_most is not None and v > self.at_most:
            return f"trait '{self.trait}' is {_show(v)}, over {self.at_most:g}"
        return None

    def _only_not_in(self) -> bool:
        return (
            self.values is None
            and self.at_least is None
            and self.at_most is None
            and (self.age_at_least_ms is None and self.age_at_most_ms is None)
        )


def trait_fits(type_: str, v: object) -> bool:
    """Whether a stored or sent value has the trait type's Python type (a time: epoch ms as a number)."""
    if type_ == STRING:
        return type(v) is str
    if type_ == BOOL:
        return type(v) is bool
    return type(v) is float or type(v) is int


def _show(v: TraitValue) -> str:
    if type(v) is bool:
        return "true" if v else "false"
    if type(v) is str:
        return repr(v)
    return f"{v:g}"


def _age(ms: float) -> str:
    if ms % DAY == 0 or abs(ms) >= DAY:
        return f"{ms / DAY:g}d"
    return f"{ms / HOUR:g}h"


@dataclass(frozen=True, slots=True)
class Variant:
    """A rule's copy variant, with its copy resolved (a variant without its own copy has the rule's)."""

    id: str
    weight: float
    title: str
    body: str
    cta_label: str
    cta_url: str


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    group: str
    conds: tuple[Cond, ...]
    rearm: float  # ratio level for ratio rules, count level otherwise
    cooldown_ms: int
    audience: frozenset[str] | None
    priority: int
    placement: str
    bypass_cap: bool
    target_plan: str
    signal: str
    title: str
    body: str
    cta_label: str
    cta_url: str
    source: str
    variants: tuple[Variant, ...] = ()  # empty: one copy, and prompts carry no variant
    variant_salt: str = ""
    # Compiled to () for a rule that uses no trait condition and no eligibility gate: the engine then
    # checks nothing more than before (engine._decide reads `checks` once per triggered rule).
    when_traits: tuple[TraitCond, ...] = ()  # trait conditions of `when.all`
    audience_traits: tuple[TraitCond, ...] = ()
    gate: tuple[Cond | TraitCond, ...] = ()  # the policy's eligibility, unless the rule skips it
    # Channels (docs/leads.md): an in-app prompt (the default), a lead for `team`, or both.
    prompts: bool = True
    leads: bool = False
    team: str = ""
    # A `score: {at_least: N}` condition of `when.all` (score.py): the readiness score it needs.
    min_score: float | None = None
    # Derived from conds, stored because the engine reads them for every event.
    primary: Cond = field(init=False)
    secondary: tuple[Cond, ...] = field(init=False)  # the rest of an `all:`
    threshold: float = field(init=False)
    threshold_text: str = field(init=False)  # f"{threshold:g}", as every emitted decision's reason says it
    checks: bool = field(init=False)  # any of when_traits, audience_traits, gate, min_score

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "checks",
            bool(self.when_traits or self.audience_traits or self.gate or self.min_score is not None),
        )
        object.__setattr__(self, "primary", self.conds[0])
        object.__setattr__(self, "secondary", self.conds[1:])
        object.__setattr__(self, "threshold", self.conds[0].threshold)
        object.__setattr__(self, "threshold_text", f"{self.conds[0].threshold:g}")

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(c.metric for c in self.conds)


@dataclass(frozen=True, slots=True)
class Policy:
    default_plan: str
    cap_max: int
    cap_window_ms: int
    holdout_fraction: float
    holdout_salt: str
    attribution_ms: int
    expiry_ms: int
    eligibility: tuple[Cond | TraitCond, ...] = ()
    lead_cap_max: int = 1  # leads per account per lead_cap_window_ms, apart from the prompts' cap
    lead_cap_window_ms: int = 7 * DAY
