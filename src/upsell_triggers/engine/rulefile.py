"""The rule-file format growth PMs edit (docs/rules.md). These models are the JSON Schema's source.

One format for every file in rules/: a file may hold any of `metrics`, `traits`, `plans`, `policy`,
`scoring`, `groups`; the directory is merged (plans, policy and scoring may each be declared once).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from upsell_triggers.engine.timeutil import parse_duration

_QTY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|TiB|PiB|k|M|B)?\s*$")
_QTY_UNITS = {
    None: 1,
    "k": 1_000,
    "M": 1_000_000,
    "B": 1_000_000_000,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
    "PiB": 2**50,
}
ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
PLACEMENTS = ("banner", "modal", "toast", "inline")


def _quantity(v: Any) -> float | None:
    """12, 2.5, '2GiB', '1.5M', 'unlimited' (-> None)."""
    if v is None or v == "unlimited":
        return None
    if isinstance(v, bool):
        raise ValueError("expected a number, a size like '2GiB', or 'unlimited'")
    if isinstance(v, int | float):
        if v < 0 or v != v or v in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number ≥ 0")
        return float(v)
    if isinstance(v, str):
        m = _QTY.match(v)
        if m:
            return float(m.group(1)) * _QTY_UNITS[m.group(2)]
    raise ValueError(f"{str(v)[:40]!r} is not a quantity: use a number, a size like '2GiB', or 'unlimited'")


def _duration(v: Any) -> int:
    return parse_duration(v)


Quantity = Annotated[
    float | None,
    BeforeValidator(_quantity),
    Field(
        json_schema_extra={"anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}, {"type": "null"}]}
    ),
]
Duration = Annotated[
    int,
    BeforeValidator(_duration),
    Field(json_schema_extra={"type": ["string", "number"], "examples": ["7d", "24h", "30m"]}),
]
RuleId = Annotated[str, Field(pattern=ID_PATTERN)]
Action = Literal["prompt", "lead"]  # a rule's channels (docs/leads.md)
Text = Annotated[str, Field(max_length=2000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricDef(_Strict):
    """A metric. gauge: latest reading wins; period_counter: deltas summed per billing period;
    rolling_counter: deltas summed over a rolling event-time window of `bucket`-sized buckets;
    distinct: distinct values of an event field (`user_id` or an attribute) over a rolling window."""

    kind: Literal["gauge", "period_counter", "rolling_counter", "distinct"]
    unit: Literal["count", "bytes"] = "count"
    window: Duration | None = Field(
        default=None, description="rolling_counter, distinct: longest window rules may ask for (default 30d)"
    )
    bucket: Duration | None = Field(
        default=None, description="rolling_counter, distinct: bucket size (default 1h)"
    )
    field: RuleId | None = Field(
        default=None,
        description="distinct: the event field counted: user_id (default) or an attribute such as team_id",
    )
    description: Text = ""


class TraitDef(_Strict):
    """An account attribute `account_updated` events may set. string: text, optionally one of `values`;
    number; bool; time: a moment (RFC 3339 or epoch ms), read by conditions as an age."""

    type: Literal["string", "number", "bool", "time"]
    values: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, min_length=1, max_length=100, description="string: the allowed values"
    )
    description: Text = ""

    @model_validator(mode="after")
    def _values_for_strings(self) -> TraitDef:
        if self.values is not None and self.type != "string":
            raise ValueError("'values' only applies to string traits")
        return self


class PlanDef(_Strict):
    id: RuleId
    name: Text | None = Field(default=None, description="display name used in prompt copy")
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="metric -> limit; 'unlimited' or absent = no limit"
    )
    features: list[RuleId] = Field(default_factory=list, description="premium features this plan includes")


class FrequencyCap(_Strict):
    max_prompts: int = Field(default=1, ge=0, le=1000)
    per: Duration = Field(default=parse_duration("24h"))


class LeadCap(_Strict):
    """How many leads an account may send per period: a cap of its own, so that a lead never uses up
    the account's prompt budget, nor a prompt its lead budget."""

    max_leads: int = Field(default=1, ge=0, le=1000)
    per: Duration = Field(default=parse_duration("7d"))


class Holdout(_Strict):
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    salt: Annotated[str, Field(max_length=128)] = "upsell-holdout-v1"


class AudienceDef(_Strict):
    """Who a rule is for: plans and/or trait conditions (all must hold)."""

    plans: list[RuleId] | None = Field(default=None, description="plans the rule applies to (default: all)")
    traits: list[Condition] = Field(
        default_factory=list, max_length=8, description="trait conditions the account must meet"
    )


class PolicyDef(_Strict):
    default_plan: RuleId | None = Field(
        default=None, description="plan of accounts never seen in plan_changed (default: the first plan)"
    )
    frequency_cap: FrequencyCap = FrequencyCap()
    lead_cap: LeadCap = Field(
        default=LeadCap(), description="leads per account per period, apart from the prompts' frequency cap"
    )
    holdout: Holdout = Holdout()
    attribution_window: Duration = Field(default=parse_duration("14d"))
    prompt_expiry: Duration = Field(default=parse_duration("7d"))
    eligibility: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="conditions (traits, metrics) every rule requires unless it sets `eligibility: skip`",
    )


TraitValue = Annotated[str, Field(max_length=128)] | bool | float


class ScoreBound(_Strict):
    """A score condition's bound: the account's readiness score (0-100) at least this."""

    at_least: float = Field(ge=0, le=100)


class FitDef(_Strict):
    """Fit points: added to the readiness score while the account's trait meets the condition (`in`,
    `not_in`, `at_least` / `at_most`, `age_at_least` / `age_at_most`, as a trait condition)."""

    model_config = ConfigDict(populate_by_name=True)

    trait: RuleId
    in_: list[TraitValue] | None = Field(default=None, alias="in", min_length=1, max_length=100)
    not_in: list[TraitValue] | None = Field(default=None, min_length=1, max_length=100)
    at_least: Quantity = None
    at_most: Quantity = None
    age_at_least: Duration | None = None
    age_at_most: Duration | None = None
    points: float = Field(ge=-1000, le=1000, description="added while the condition holds (may be negative)")


Points = Annotated[float, Field(gt=0, le=1_000_000)]


class ScoringDef(_Strict):
    """The readiness score (docs/leads.md): points per rule or signal when a rule's condition becomes
    true, halving every `half_life` of event time; fit points from traits; the sum capped at `cap` and
    scaled to 0-100, then banded."""

    half_life: Duration = Field(default=parse_duration("14d"), description="points halve every this long")
    cap: float = Field(default=100.0, gt=0, le=1_000_000, description="points that score 100")
    rules: dict[RuleId, Points] = Field(
        default_factory=dict, description="rule id -> points when its condition becomes true"
    )
    signals: dict[RuleId, Points] = Field(
        default_factory=dict, description="signal -> points when a rule of the signal's becomes true"
    )
    fit: list[FitDef] = Field(default_factory=list, max_length=16, description="points from traits")
    bands: dict[RuleId, float] = Field(
        default_factory=lambda: {"cold": 0.0, "warm": 30.0, "hot": 60.0, "on_fire": 85.0},
        min_length=1,
        max_length=10,
        description="band -> the lowest score in it (one band starts at 0)",
    )


class Condition(_Strict):
    """One of: `metric` with `ratio` (of the plan limit) or `at_least` (absolute, over `window` for rolling
    counters, per `feature` for paywall_hits); `trait` with `in` (a list of values), `at_least` /
    `at_most` (number traits) or `age_at_least` / `age_at_most` (time traits); or `all:` a list of
    conditions, the first being primary (a metric)."""

    model_config = ConfigDict(populate_by_name=True)

    metric: RuleId | None = None
    ratio: float | None = Field(default=None, gt=0, le=100)
    at_least: Quantity = None
    window: Duration | None = None
    within: Duration | None = Field(
        default=None,
        description="forecast: fires when the metric is projected to reach `ratio` of the limit within this",
    )
    min_history: Duration | None = Field(
        default=None,
        description="forecast: days of history before it may fire (default 3d period counters, 7d gauges)",
    )
    feature: RuleId | Literal["*"] | None = Field(default=None, description="paywall_hits: a feature or '*'")
    trait: RuleId | None = Field(default=None, description="a trait of the trait catalog")
    in_: list[TraitValue] | None = Field(
        default=None, alias="in", min_length=1, max_length=100, description="trait: one of these values"
    )
    at_most: Quantity = Field(default=None, description="number trait: at most this")
    age_at_least: Duration | None = Field(default=None, description="time trait: at least this long ago")
    age_at_most: Duration | None = Field(default=None, description="time trait: at most this long ago")
    growth: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="the value now divided by its value `over` ago is at least this",
    )
    increase: Quantity = Field(
        default=None, description="the value now minus its value `over` ago is at least this"
    )
    over: Duration | None = Field(
        default=None, description="growth/increase: how long ago the value compared with is"
    )
    not_in: list[TraitValue] | None = Field(
        default=None, min_length=1, max_length=100, description="trait: unset, or none of these values"
    )
    all: list[Condition] | None = Field(default=None, min_length=1, max_length=8)
    score: ScoreBound | None = Field(
        default=None, description="the readiness score (0-100) at least this: {at_least: 60}"
    )

    @model_validator(mode="after")
    def _shape(self) -> Condition:
        if self.score is not None:
            if self.model_fields_set - {"score"}:
                raise ValueError("a score condition has only 'score' ({score: {at_least: 60}})")
            return self
        if self.all is not None:
            if any(
                v is not None
                for v in (
                    self.metric,
                    self.ratio,
                    self.at_least,
                    self.window,
                    self.within,
                    self.min_history,
                    self.feature,
                    self.trait,
                    self.in_,
                    self.at_most,
                    self.age_at_least,
                    self.age_at_most,
                    self.growth,
                    self.increase,
                    self.over,
                    self.not_in,
                )
            ):
                raise ValueError("'all' cannot be combined with other keys of a condition")
            if any(c.all is not None for c in self.all):
                raise ValueError("'all' cannot be nested")
            return self
        trait_keys = (self.in_, self.at_most, self.age_at_least, self.age_at_most, self.not_in)
        if self.trait is not None:
            if any(
                v is not None
                for v in (
                    self.metric,
                    self.ratio,
                    self.window,
                    self.within,
                    self.min_history,
                    self.feature,
                    self.growth,
                    self.increase,
                    self.over,
                )
            ):
                raise ValueError(
                    "a trait condition cannot have metric/ratio/window/within/feature/growth/increase/over"
                )
            if all(v is None for v in (*trait_keys, self.at_least)):
                raise ValueError(
                    "a trait condition needs 'in', 'not_in', 'at_least'/'at_most' or "
                    "'age_at_least'/'age_at_most'"
                )
            return self
        if any(v is not None for v in trait_keys):
            raise ValueError("in/not_in/at_most/age_at_least/age_at_most only apply to a 'trait' condition")
        if self.metric is None:
            raise ValueError("a condition needs 'metric', 'trait' (or 'all')")
        if sum(v is not None for v in (self.ratio, self.at_least, self.growth, self.increase)) != 1:
            raise ValueError(
                "a condition needs exactly one of 'ratio' (of the plan limit), 'at_least', 'growth' or "
                "'increase'"
            )
        if self.within is None and self.min_history is not None:
            raise ValueError("'min_history' applies to a forecast condition: one with 'within'")
        if self.within is not None and self.ratio is None:
            raise ValueError("a forecast ('within') projects a share of the limit: use 'ratio'")
        if (self.over is None) != (self.growth is None and self.increase is None):
            raise ValueError(
                "'growth' and 'increase' need 'over' (how long ago to compare with), and only they"
            )
        return self


class Cta(_Strict):
    label: Text
    url: Text


class PromptCopy(_Strict):
    title: Text
    body: Text = ""
    cta: Cta


class _RuleFields(_Strict):
    rearm: Quantity = Field(
        default=None,
        description="re-arm level: ratio for ratio rules, count otherwise (default: the threshold)",
    )
    cooldown: Duration | None = None
    audience: list[RuleId] | AudienceDef | None = Field(
        default=None, description="plans the rule applies to (default: all), or plans and trait conditions"
    )
    eligibility: Literal["required", "skip"] | None = Field(
        default=None, description="skip: the policy's eligibility gate does not apply (default: required)"
    )
    priority: int | None = Field(default=None, ge=0, le=1000)
    placement: Literal["banner", "modal", "toast", "inline"] | None = None
    bypass_cap: bool | None = None
    target_plan: RuleId | None = Field(default=None, description="'next' or a plan id")
    signal: RuleId | None = Field(
        default=None, description="default: usage_limit, paywall or usage_threshold"
    )
    prompt: PromptCopy | None = None
    action: Action | list[Action] | None = Field(
        default=None,
        description="what the rule sends: an in-app `prompt` (default), a `lead` for a team, or both",
    )
    team: RuleId | None = Field(default=None, description="lead rules: the team a lead is for (e.g. sales)")
    enabled: bool | None = None


class VariantDef(_Strict):
    """One copy variant of a rule: accounts the rule prompts are split between the variants by weight,
    each account always to the same one (docs/rules.md, "Copy variants")."""

    id: RuleId
    weight: float = Field(
        default=1.0, gt=0, le=1_000_000, description="share of the rule's accounts, relative to the others"
    )
    prompt: PromptCopy | None = Field(default=None, description="this variant's copy (default: the rule's)")


class RuleDef(_RuleFields):
    id: RuleId
    when: Condition
    description: Text = ""
    variants: list[VariantDef] | None = Field(
        default=None,
        min_length=2,
        max_length=20,
        description="copy variants: the prompt carries the variant's id; the holdout stays separate",
    )
    variant_salt: Text | None = Field(
        default=None,
        description="changing it reassigns every account's variant (default: none; the hash already "
        "includes the rule id)",
    )


class GroupDef(_Strict):
    id: RuleId
    description: Text = ""
    defaults: _RuleFields = _RuleFields()
    rules: list[RuleDef] = Field(min_length=1, max_length=500)


class RulesFile(_Strict):
    """A file in rules/. Every section is optional; the directory is merged."""

    version: Literal[1] = 1
    metrics: dict[RuleId, MetricDef] | None = None
    traits: dict[RuleId, TraitDef] | None = Field(
        default=None, max_length=32, description="the trait catalog: account attributes events may set"
    )
    plans: list[PlanDef] | None = Field(
        default=None, min_length=1, max_length=50, description="tiers in upgrade order, cheapest first"
    )
    policy: PolicyDef | None = None
    scoring: ScoringDef | None = Field(default=None, description="the readiness score (docs/leads.md)")
    groups: list[GroupDef] | None = None


def rules_json_schema() -> dict[str, Any]:
    schema = RulesFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://upsell-triggers.dev/schema/rules.schema.json"
    return schema
