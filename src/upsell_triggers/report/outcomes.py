"""What happened to the accounts a rule reached: the exposures (prompts, and the decisions of accounts
held out), the feedback on the prompts, and the upgrades that followed, counted per rule x variant x
group as distinct accounts.

The same records come from files (`replay`'s prompts and `--holdout` output, the events file) or from
the service's topics (report/broker.py); this module only counts.

Attribution is the engine's: an upgrade (a `plan_changed` to a higher tier) within the attribution
window of the account's latest exposure, in event time, counts for that exposure's rule, variant and
group. Exposures count when they fall in [since, until); plan changes and feedback are read whole, so
an account's plan before the range is known and feedback on a prompt of the range counts whenever it
arrives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from upsell_triggers.engine.engine import FEEDBACK_ACTIONS, HOLDOUT, TREATMENT
from upsell_triggers.engine.events import Feedback, InvalidEvent, PlanChanged, decode_event
from upsell_triggers.engine.ruleset import RuleSet
from upsell_triggers.engine.timeutil import datetime_to_ms

NO_VARIANT = "-"
ACTIONS = ("shown", "clicked", "dismissed")


class PromptRecord(msgspec.Struct):
    """The fields of a prompt event the report reads (the rest is ignored when decoding)."""

    prompt_id: str
    account_id: str
    rule_id: str
    created_at: str
    variant: str | None = None


class HoldoutRecord(msgspec.Struct):
    """One line of `replay --holdout`: schemas/holdout.schema.json."""

    account_id: str
    rule_id: str
    ts: str | int
    variant: str | None = None


_decode_prompt = msgspec.json.Decoder(PromptRecord).decode
_decode_holdout = msgspec.json.Decoder(HoldoutRecord).decode


def parse_time(value: str | int) -> int:
    """RFC 3339 with an offset, or epoch milliseconds, to epoch milliseconds."""
    if isinstance(value, int):
        return value
    if value.isdigit():
        return int(value)
    return datetime_to_ms(datetime.fromisoformat(value))


@dataclass(frozen=True, slots=True)
class Cell:
    """Distinct accounts of one rule x variant x group. A holdout cell has no shown/clicked/dismissed:
    those accounts saw nothing."""

    rule: str
    variant: str
    group: str
    accounts: int
    shown: int
    clicked: int
    dismissed: int
    upgraded: int


class BadRecord(ValueError):
    """A line that is not the record it should be; `report` counts and names these, and goes on."""


class Outcomes:
    """Feed it prompts, holdout decisions and events in any order; `cells()` counts at the end.

    Memory is per exposure and per plan change (a 1M-event report holds them all); the report is a
    batch job over a bounded range, not part of the service.
    """

    def __init__(self, rules: RuleSet, since: int | None = None, until: int | None = None) -> None:
        self.tier = {p.id: p.tier for p in rules.plans}
        self.default_tier = self.tier[rules.policy.default_plan]
        self.window_ms = rules.policy.attribution_ms
        self.since, self.until = since, until
        # account -> [(ts, 1, rule, variant, group)] exposures and [(ts, 0, tier)] plan changes; the
        # 0/1 sorts a plan change before an exposure of the same instant (the engine re-evaluates the
        # rules on a plan change, so an exposure at that instant came after it).
        self._timeline: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        self._prompts: dict[str, tuple[str, str, str]] = {}  # prompt_id -> (rule, variant, account)
        self._feedback: list[tuple[str, str]] = []  # (prompt_id, action)
        self.skipped: dict[str, int] = defaultdict(int)  # what was not counted, and why

    def exposure_span(self) -> tuple[int, int] | None:
        """The first and last exposure counted (prompt or holdout decision), None without any: what
        the report covers when no --since/--until bounds it."""
        times = [e[0] for timeline in self._timeline.values() for e in timeline if e[1] == 1]
        return (min(times), max(times)) if times else None

    def _in_range(self, ts: int) -> bool:
        return (self.since is None or ts >= self.since) and (self.until is None or ts < self.until)

    # ---- input -------------------------------------------------------------------------------------

    def add_prompt(self, raw: bytes | str) -> None:
        try:
            p = _decode_prompt(raw)
            ts = parse_time(p.created_at)
        except (msgspec.DecodeError, ValueError) as err:
            raise BadRecord(f"not a prompt event: {err}") from None
        if not self._in_range(ts):
            self.skipped["prompt outside the time range"] += 1
            return
        variant = p.variant or NO_VARIANT
        self._prompts[p.prompt_id] = (p.rule_id, variant, p.account_id)
        self._timeline[p.account_id].append((ts, 1, p.rule_id, variant, TREATMENT))

    def add_holdout(self, raw: bytes | str) -> None:
        try:
            h = _decode_holdout(raw)
            ts = parse_time(h.ts)
        except (msgspec.DecodeError, ValueError) as err:
            raise BadRecord(f"not a holdout decision: {err}") from None
        self.add_holdout_decision(h.account_id, h.rule_id, ts)

    def add_holdout_decision(self, account_id: str, rule_id: str, ts: int) -> None:
        if not self._in_range(ts):
            self.skipped["holdout decision outside the time range"] += 1
            return
        self._timeline[account_id].append((ts, 1, rule_id, NO_VARIANT, HOLDOUT))

    def add_event(self, raw: bytes) -> None:
        """An event of the usage/feedback log: plan changes and feedback count, the rest is skipped."""
        if b"plan_changed" not in raw and b"prompt_" not in raw:
            return  # usage and paywall events: most of a log, and nothing for the report
        ev = decode_event(raw)
        if isinstance(ev, InvalidEvent):
            raise BadRecord(f"{ev.reason}: {ev.message}")
        if type(ev) is PlanChanged:
            tier = self.tier.get(ev.plan)
            if tier is None:
                self.skipped[f"plan_changed to a plan the rules do not know ({ev.plan[:32]})"] += 1
                return
            self._timeline[ev.account_id].append((ev.ts, 0, tier))
        elif isinstance(ev, Feedback):
            self._feedback.append((ev.prompt_id, FEEDBACK_ACTIONS[ev.type]))

    def add_lines(self, kind: str, lines: Iterable[bytes], where: str) -> list[str]:
        """Feeds every non-blank line to the reader for `kind`; returns `where:line: message` for each
        bad line (counted, not fatal: one broken line must not hide a week of data)."""
        add = {"prompts": self.add_prompt, "holdout": self.add_holdout, "events": self.add_event}[kind]
        errors: list[str] = []
        for lineno, line in enumerate(lines, 1):
            if line.isspace() or not line:
                continue
            try:
                add(line)
            except BadRecord as err:
                errors.append(f"{where}:{lineno}: {err}")
        return errors

    # ---- counting ----------------------------------------------------------------------------------

    def cells(self) -> list[Cell]:
        accounts: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        upgraded: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        window = self.window_ms
        for account, items in self._timeline.items():
            items.sort(key=lambda x: (x[0], x[1]))
            tier, tier_ts = self.default_tier, -1
            latest: tuple[Any, ...] | None = None
            for item in items:
                if item[1]:
                    accounts[item[2:5]].add(account)
                    latest = item
                    continue
                ts, new_tier = item[0], item[2]
                if ts < tier_ts:
                    continue  # a stale plan change: the engine ignores it too
                if new_tier > tier and latest is not None:
                    if ts <= latest[0] + window:
                        upgraded[latest[2:5]].add(account)
                    latest = None
                tier, tier_ts = new_tier, ts
        acted: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
        prompts = self._prompts
        for pid, action in self._feedback:
            hit = prompts.get(pid)
            if hit is None:
                self.skipped["feedback on a prompt not in the report"] += 1
                continue
            rule, variant, account = hit
            acted[(rule, variant, TREATMENT, action)].add(account)
        out = []
        for key in sorted(accounts, key=lambda k: (k[0], k[2] != TREATMENT, k[1])):
            rule, variant, group = key
            shown, clicked, dismissed = (len(acted.get((*key, a), ())) for a in ACTIONS)
            out.append(
                Cell(
                    rule,
                    variant,
                    group,
                    len(accounts[key]),
                    shown,
                    clicked,
                    dismissed,
                    len(upgraded.get(key, ())),
                )
            )
        return out
