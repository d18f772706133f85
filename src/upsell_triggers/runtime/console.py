"""What the embedded runtime shows a person at a terminal: one readable line per prompt, and a short
summary when it stops. Piped output stays JSON lines (the prompt schema), for programs."""

from __future__ import annotations

import time
from collections import Counter
from typing import IO, Any

import orjson

_TITLE_WIDTH = 60


def pretty_line(p: dict[str, Any]) -> str:
    """`2026-11-02 05:13  acct-00042  seats-80  banner  free -> team  You're using 4 of 5 seats`"""
    when = str(p.get("created_at", ""))[:16].replace("T", " ")
    title = str(p.get("title", ""))
    if len(title) > _TITLE_WIDTH:
        title = title[: _TITLE_WIDTH - 1] + "…"
    upgrade = f"{p.get('plan', '')} -> {p.get('target_plan', '')}"
    return (
        f"{when}  {p.get('account_id', '')!s:<12}  {p.get('rule_id', '')!s:<20}  "
        f"{p.get('placement', '')!s:<6}  {upgrade:<22}  {title}"
    )


class PromptWriter:
    """Writes prompts as JSON lines (`json`) or readable lines (`pretty`), and counts them by rule."""

    def __init__(self, out: IO[bytes], fmt: str) -> None:
        self.out = out
        self.pretty = fmt == "pretty"
        self.by_rule: Counter[str] = Counter()

    def write(self, prompt: dict[str, Any]) -> None:
        self.by_rule[prompt["rule_id"]] += 1
        if self.pretty:
            self.out.write(pretty_line(prompt).encode() + b"\n")
        else:
            self.out.write(orjson.dumps(prompt) + b"\n")


def pretty_lead_line(lead: dict[str, Any]) -> str:
    """`2026-11-02 05:13  acct-00042  seats-80-lead  LEAD sales  team -> business  seats 20 of 25`"""
    when = str(lead.get("created_at", ""))[:16].replace("T", " ")
    ev = (lead.get("evidence") or [{}])[0]
    limit = ev.get("limit")
    reading = f"{ev.get('metric', '')} {ev.get('value', '')}" + (f" of {limit}" if limit is not None else "")
    score = f"  score {lead['score']:g} {lead['band']}" if lead.get("score") is not None else ""
    upgrade = f"{lead.get('plan', '')} -> {lead.get('suggested_plan', '')}"
    return (
        f"{when}  {lead.get('account_id', '')!s:<12}  {lead.get('rule_id', '')!s:<20}  "
        f"LEAD {lead.get('team', '')!s:<10}  {upgrade:<22}  {reading}{score}"
    )


class LeadWriter:
    """Leads as JSON lines (`json`, to a leads file) or readable lines (`pretty`, among the prompts on a
    terminal); counted by rule either way. Leads for a `json` run's prompt output are not written there
    (it is prompt records only): `write_json` is False then."""

    def __init__(self, out: IO[bytes], fmt: str, write_json: bool = True) -> None:
        self.out = out
        self.pretty = fmt == "pretty"
        self.write_json = write_json
        self.by_rule: Counter[str] = Counter()

    def write(self, lead: dict[str, Any]) -> None:
        self.by_rule[lead["rule_id"]] += 1
        if self.pretty:
            self.out.write(pretty_lead_line(lead).encode() + b"\n")
        elif self.write_json:
            self.out.write(orjson.dumps(lead) + b"\n")


class RunSummary:
    """The summary printed when the embedded run ends (end of input, --limit, Ctrl-C)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.events = 0
        self.rejected = 0

    def text(self, prompts: Counter[str], accounts: int, why: str, leads: Counter[str] | None = None) -> str:
        secs = max(time.monotonic() - self.t0, 1e-9)
        total = sum(prompts.values())
        top = ", ".join(f"{rule} {n:,}" for rule, n in prompts.most_common(5))
        more = f", +{len(prompts) - 5} more rules" if len(prompts) > 5 else ""
        return (
            f"{why}: {self.events:,} events in {secs:.1f}s ({self.events / secs:,.0f}/s), "
            f"{self.rejected:,} rejected, {accounts:,} accounts in memory; "
            f"{total:,} prompts" + (f" ({top}{more})" if total else "")
        ) + (f"; {sum(leads.values()):,} leads" if leads else "")
