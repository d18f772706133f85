"""`replay`: backtest rules over an events file with the same engine; event time is the clock."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import IO, Any

import orjson

from upsell_triggers.engine.engine import EMITTED, HOLDOUT, INELIGIBLE, SUPPRESSIONS, Decision
from upsell_triggers.engine.retention import DEFAULT_ERASURE_HOLD_MS, DEFAULT_RETENTION_MS
from upsell_triggers.engine.ruleset import RuleSet
from upsell_triggers.engine.timeutil import to_iso
from upsell_triggers.processor import MemoryStore, Processor
from upsell_triggers.report.holdout import holdout_line

# Feedback naming a prompt this replay did not make (made before the file starts) has no rule.
UNATTRIBUTED = "unknown"
FEEDBACK = ("shown", "clicked", "dismissed")
PROGRESS_EVERY = 50_000  # lines between progress updates on a terminal
SWEEP_EVERY = 1_000  # new accounts between retention steps (MemoryStore.expire_step)


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


class Summary:
    """Per-rule counts of a replay: decisions, feedback, conversions, accounts prompted."""

    def __init__(self, rule_ids: Sequence[str] = ()) -> None:
        self.rule_ids = list(rule_ids)
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.prompted: dict[str, set[str]] = defaultdict(set)
        # Leads (docs/leads.md): per (rule, team, band) emitted; the band is "" (no score).
        self.leads: dict[tuple[str, str, str], int] = defaultdict(int)
        self.leads_written = True  # False: leads were made but no --leads file took them
        self.events = self.invalid = self.duplicates = self.accounts = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def add(self, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            c = self.counts[d.rule_id]
            if d.outcome == "feedback":
                c[d.action or ""] += 1
            elif d.channel == "lead" and d.outcome == "conversion":
                c["lead_conversion"] += 1
            else:
                c[d.outcome] += 1
                if d.outcome == EMITTED:
                    self.prompted[d.rule_id].add(d.account_id)
                    if d.lead is not None:
                        c["lead"] += 1
                        self.leads[(d.rule_id, d.team or "", d.band or "")] += 1

    def rows(self) -> list[list[str]]:
        # `ineligible` has a column only when the eligibility gate held a rule back (a rule set without
        # one keeps the table it always had).
        supp = [k for k in SUPPRESSIONS if k != INELIGIBLE or any(c.get(k) for c in self.counts.values())]
        head = ["rule", "fired", *supp, "accounts", *FEEDBACK, "ctr", "dismiss_rate"]
        head += ["conversions", "per_1k_accounts"]
        # Lead columns only when the rule set sent leads (a rule set without lead rules keeps its table).
        lead_cols = ["lead", "lead_conversion"] if self.leads else []
        head += ["leads", "lead_conversions"] if lead_cols else []
        rows = [head]
        known = set(self.rule_ids)
        extra = sorted(r for r in self.counts if r not in known and r != UNATTRIBUTED)
        for rule in [*self.rule_ids, *extra]:
            c = self.counts.get(rule, {})
            fired = c.get(EMITTED, 0)
            shown = c.get("shown", 0)
            per_k = fired * 1000 / self.accounts if self.accounts else 0.0
            rows.append(
                [
                    rule,
                    str(fired),
                    *(str(c.get(k, 0)) for k in supp),
                    str(len(self.prompted.get(rule, ()))),
                    *(str(c.get(k, 0)) for k in FEEDBACK),
                    _rate(c.get("clicked", 0), shown),
                    _rate(c.get("dismissed", 0), shown),
                    str(c.get("conversion", 0)),
                    f"{per_k:.1f}",
                    *(str(c.get(k, 0)) for k in lead_cols),
                ]
            )
        return rows

    def table(self, accounts: int | None = None) -> str:
        if accounts is not None:
            self.accounts = accounts
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        prompted = set().union(*self.prompted.values()) if self.prompted else set()
        span = (
            f"{to_iso(self.first_ts)} .. {to_iso(self.last_ts)}"
            if self.first_ts is not None and self.last_ts is not None
            else "-"
        )
        lines.append(
            f"events: {self.events}  invalid: {self.invalid}  duplicates: {self.duplicates}  "
            f"accounts: {self.accounts}  accounts prompted: {len(prompted)}  event time: {span}"
        )
        lost = self.counts.get(UNATTRIBUTED, {})
        if any(lost.values()):
            lines.append(
                "feedback on prompts not made in this replay (made before the file's first event): "
                + ", ".join(f"{lost.get(k, 0)} {k}" for k in FEEDBACK)
            )
        if self.leads:
            lines.append("leads by rule, team and band: " + self.lead_bands())
            if not self.leads_written:
                lines.append("leads are counted, not written: replay --leads FILE writes them as JSON lines")
        lines.append(
            "ctr = clicked / shown, dismiss_rate = dismissed / shown; accounts = distinct accounts "
            "prompted by the rule; per_1k_accounts = prompts per 1,000 accounts in the file"
        )
        return "\n".join(lines)

    def lead_bands(self) -> str:
        """`seats-lead (sales): hot 3, warm 1`: a band of "" (no score) is written `-`."""
        per_rule: dict[tuple[str, str], list[str]] = defaultdict(list)
        for (rule, team, band), n in sorted(self.leads.items()):
            per_rule[(rule, team)].append(f"{band or '-'} {n}")
        return "; ".join(f"{rule} ({team}): {', '.join(v)}" for (rule, team), v in per_rule.items())


class ExplainFilter:
    """Which decisions --explain prints: all, or those of some rules and/or accounts."""

    def __init__(self, rules: Sequence[str] = (), accounts: Sequence[str] = ()) -> None:
        self.rules = frozenset(rules)
        self.accounts = frozenset(accounts)

    def __call__(self, d: Decision) -> bool:
        return (not self.rules or d.rule_id in self.rules) and (
            not self.accounts or d.account_id in self.accounts
        )


class _Progress:
    """`\\r 42.0%  420,000 events  310,000/s  ETA 0:02` on a terminal, ended with a newline."""

    def __init__(self, err: IO[str], total_bytes: int | None) -> None:
        self.err = err
        self.total = total_bytes
        self.t0 = time.monotonic()
        self.shown = False

    def update(self, lines: int, read: int) -> None:
        secs = max(time.monotonic() - self.t0, 1e-9)
        rate = lines / secs
        text = f"{lines:,} events  {rate:,.0f}/s"
        if self.total:
            done = read / self.total
            eta = secs * (1 - done) / done if done else 0.0
            text = f"{100 * done:5.1f}%  {text}  ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        self.err.write("\r" + text + "\x1b[K")
        self.err.flush()
        self.shown = True

    def end(self, lines: int) -> None:
        if self.shown:
            secs = max(time.monotonic() - self.t0, 1e-9)
            self.err.write(f"\rread {lines:,} events in {secs:.1f}s ({lines / secs:,.0f}/s)\x1b[K\n")
            self.err.flush()


def replay(
    rules: RuleSet,
    src: IO[bytes],
    out: IO[bytes],
    err: IO[str],
    explain: bool | ExplainFilter = False,
    total_bytes: int | None = None,
    holdout: IO[bytes] | None = None,
    retention_ms: int = DEFAULT_RETENTION_MS,
    hold_ms: int = DEFAULT_ERASURE_HOLD_MS,
    leads: IO[bytes] | None = None,
) -> Summary:
    """Prompts to `out` as JSON lines; rejected lines and (with `explain`) decisions to `err`.
    Progress is shown when `err` is a terminal. `holdout`: where to write the holdout decisions as JSON
    lines, for `report` (report/holdout.py). `retention_ms`, `hold_ms`: the worker's retention and
    erasure hold (UPSELL_STATE_RETENTION_DAYS, UPSELL_ERASURE_HOLD_DAYS), applied the same way. `leads`:
    where to write leads as JSON lines (without it they are counted in the summary only, so stdout stays
    one record type: prompts)."""
    store = MemoryStore(max_accounts=10_000_000, ttl_ms=retention_ms, hold_ms=hold_ms)
    proc = Processor(rules, store=store)
    summary = Summary([r.id for r in rules.rules])
    wanted = explain if isinstance(explain, ExplainFilter) else ExplainFilter() if explain else None
    progress = _Progress(err, total_bytes) if err.isatty() else None
    read = blank = 0
    write = out.write
    handle = proc.handle
    states = store.states
    n_accounts = 0
    first_ts: int | None = None
    lineno = 0
    # The loop does per line only what a line needs (a million lines: every attribute access shows);
    # counts come from the processor's metrics at the end.
    for lineno, line in enumerate(src, 1):
        if progress is not None:
            read += len(line)
            if lineno % PROGRESS_EVERY == 0:
                progress.update(lineno, read)
        if line.isspace():
            blank += 1
            continue
        res = handle(line)
        if len(states) != n_accounts:
            # A new account: its state (the newest in the dict) holds its first event's time, the
            # earliest of its events when each account's events are in time order.
            ts = next(reversed(states.values())).last_seen
            if ts and (first_ts is None or ts < first_ts):
                first_ts = ts
            if len(states) % SWEEP_EVERY == 0:  # retention: the store grows only with new accounts
                store.expire_step()
            n_accounts = len(states)
        if res.invalid is not None:
            err.write(f"line {lineno}: {res.invalid.reason}: {res.invalid.message}\n")
            continue
        if res.decisions:
            summary.add(res.decisions)
            for d in res.decisions:
                if d.prompt is not None:
                    write(orjson.dumps(d.prompt) + b"\n")
                elif holdout is not None and d.outcome == HOLDOUT:
                    holdout.write(holdout_line(d))
                if d.lead is not None and leads is not None:
                    leads.write(orjson.dumps(d.lead) + b"\n")
                if wanted is not None and wanted(d):
                    err.write(
                        orjson.dumps({"line": lineno, "ts": to_iso(d.ts), **d.explain()}).decode() + "\n"
                    )
    if progress is not None:
        progress.end(lineno - blank)
    summary.events = lineno - blank
    summary.leads_written = leads is not None
    summary.invalid = sum(proc.metrics.invalid.values.values())
    summary.duplicates = sum(proc.metrics.duplicates.values.values())
    summary.accounts = len(store)
    summary.first_ts = first_ts
    summary.last_ts = max((s.last_seen for s in states.values()), default=None) or None
    return summary


def run_replay(
    rules: RuleSet,
    path: str,
    explain: bool,
    only_rules: Sequence[str] = (),
    only_accounts: Sequence[str] = (),
    holdout: str | None = None,
    retention_ms: int = DEFAULT_RETENTION_MS,
    hold_ms: int = DEFAULT_ERASURE_HOLD_MS,
    leads: str | None = None,
) -> int:
    import os

    from upsell_triggers import gctune

    gctune.tune()

    explain_arg: bool | ExplainFilter = (
        ExplainFilter(only_rules, only_accounts) if explain or only_rules or only_accounts else False
    )
    if path == "-":
        src: Any = sys.stdin.buffer
        total = None
    else:
        src = open(path, "rb")  # noqa: SIM115
        total = os.path.getsize(path)
    hold = open(holdout, "wb") if holdout else None  # noqa: SIM115
    lead_out = open(leads, "wb") if leads else None  # noqa: SIM115
    try:
        s = replay(
            rules,
            src,
            sys.stdout.buffer,
            sys.stderr,
            explain_arg,
            total,
            hold,
            retention_ms,
            hold_ms,
            leads=lead_out,
        )
    finally:
        if src is not sys.stdin.buffer:
            src.close()
        if hold is not None:
            hold.close()
        if lead_out is not None:
            lead_out.close()
    sys.stdout.flush()
    sys.stderr.write(s.table() + "\n")
    return 0
