"""What-if backtests: several rule sets over the same events in one pass.

`replay --compare OTHER_RULES_DIR` runs --rules and the other directory; `replay --sweep
RULE.FIELD=START:STOP:STEP` runs one rule set per value of a rule's threshold. Each event is read and
decoded once and fed to one engine (with its own account states) per rule set, so N rule sets cost one
decode and N evaluations per event, not N replays.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import yaml

from upsell_triggers.engine.engine import EMITTED, SUPPRESSIONS, Engine
from upsell_triggers.engine.events import InvalidEvent, decode_event
from upsell_triggers.engine.retention import (
    DEFAULT_ERASURE_HOLD_DAYS,
    DEFAULT_ERASURE_HOLD_MS,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_RETENTION_MS,
)
from upsell_triggers.engine.ruleset import RulesError, RuleSet, compile_sources, load_ruleset
from upsell_triggers.engine.suggest import did_you_mean
from upsell_triggers.engine.timeutil import DAY
from upsell_triggers.engine.yamlload import line_for, load_yaml
from upsell_triggers.processor import MemoryStore
from upsell_triggers.replay import SWEEP_EVERY
from upsell_triggers.report.csvout import write_csv
from upsell_triggers.report.html import accounts_html, compare_svg, line_svg, table_html, write_page

SWEEPABLE = ("ratio", "at_least", "rearm")
PROGRESS_EVERY = 50_000
SHOWN_ACCOUNTS = 10


@dataclass(slots=True)
class Tally:
    """What one rule set did over the events: prompts, prompted accounts and suppressions per rule."""

    prompts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    accounts: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    suppressed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    invalid: int = 0

    @property
    def total_prompts(self) -> int:
        return sum(self.prompts.values())


@dataclass(slots=True)
class Pass:
    tallies: list[Tally]
    events: int
    invalid: int  # lines that are not events at all (the same for every rule set)
    accounts: int
    first_ts: int | None
    last_ts: int | None

    @property
    def days(self) -> float:
        if self.first_ts is None or self.last_ts is None:
            return 0.0
        return (self.last_ts - self.first_ts) / DAY


def run_pass(
    rulesets: Sequence[RuleSet],
    lines: Iterable[bytes],
    err: IO[str],
    total_bytes: int | None = None,
    retention_ms: int = DEFAULT_RETENTION_MS,
    hold_ms: int = DEFAULT_ERASURE_HOLD_MS,
) -> Pass:
    """One read of the events, every rule set's engine fed each decoded event. Each engine's store
    applies the retention and erasure hold as `replay` does."""
    engines = [Engine(rs) for rs in rulesets]
    stores = [MemoryStore(max_accounts=10_000_000, ttl_ms=retention_ms, hold_ms=hold_ms) for _ in rulesets]
    n_accounts = 0
    lanes = [(e.process, s.get, Tally()) for e, s in zip(engines, stores, strict=True)]
    suppressions = frozenset(SUPPRESSIONS)
    progress = total_bytes is not None and err.isatty()
    read = events = invalid = 0
    first: int | None = None
    last: int | None = None
    started = time.monotonic()
    for lineno, line in enumerate(lines, 1):
        if progress:
            read += len(line)
            if lineno % PROGRESS_EVERY == 0 and total_bytes:
                rate = lineno / max(time.monotonic() - started, 1e-9)
                err.write(f"\r{100 * read / total_bytes:5.1f}%  {lineno:,} events  {rate:,.0f}/s")
                err.flush()
        if line.isspace():
            continue
        events += 1
        ev = decode_event(line)
        if isinstance(ev, InvalidEvent):
            invalid += 1
            continue
        ts = ev.ts
        if first is None or ts < first:
            first = ts
        if last is None or ts > last:
            last = ts
        account = ev.account_id
        for process, get, tally in lanes:
            out = process(ev, get(account), None)
            if out.decisions:
                for d in out.decisions:
                    if d.outcome == EMITTED:
                        tally.prompts[d.rule_id] += 1
                        tally.accounts[d.rule_id].add(account)
                    elif d.outcome in suppressions:
                        tally.suppressed[d.rule_id] += 1
            elif out.invalid is not None:
                tally.invalid += 1
        if len(stores[0]) != n_accounts:  # retention, as replay applies it: per SWEEP_EVERY new accounts
            n_accounts = len(stores[0])
            if n_accounts % SWEEP_EVERY == 0:
                for store in stores:
                    store.expire_step()
    if progress:
        err.write("\r" + " " * 60 + "\r")
    return Pass([t for _, _, t in lanes], events, invalid, len(stores[0]), first, last)


# ---- sweep ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sweep:
    rule: str
    field: str
    values: tuple[float, ...]


def parse_sweep(spec: str) -> Sweep:
    """'seats-80.ratio=0.7:0.9:0.05' -> values 0.7, 0.75, ..., 0.9 (the stop included). Decimal steps,
    so 0.7 + 3 x 0.05 is 0.85 and not 0.8500000000000001."""
    usage = "--sweep wants RULE.FIELD=START:STOP:STEP, e.g. seats-80.ratio=0.7:0.9:0.05"
    target, _, rng = spec.partition("=")
    rule, _, fld = target.rpartition(".")
    parts = rng.split(":")
    if not rule or fld not in SWEEPABLE or len(parts) != 3:
        raise ValueError(f"{usage} (FIELD one of {', '.join(SWEEPABLE)}); got {spec!r}")
    try:
        start, stop, step = (Decimal(p) for p in parts)
    except InvalidOperation:
        raise ValueError(f"{usage}; {rng!r} has a part that is not a number") from None
    if step <= 0 or stop < start:
        raise ValueError(f"{usage}; STEP must be > 0 and STOP >= START")
    n = int((stop - start) / step) + 1
    if n > 50:
        raise ValueError(f"--sweep: {n} values; at most 50 in one pass")
    return Sweep(rule, fld, tuple(float(start + i * step) for i in range(n)))


def _rule_files(directory: str | Path) -> list[Path]:
    d = Path(directory)
    return sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def swept_ruleset(directory: str | Path, sweep: Sweep, value: float) -> RuleSet:
    """The rules of `directory` with one rule's field set to `value`, compiled (and so checked) as
    `rules check` would: a value the rule cannot take (a rearm above the threshold, a ratio on a count
    rule) is a RulesError naming the --sweep value and the rule's line in its file (the file is compiled
    as re-written with the value, whose lines are not the file's)."""
    sources: list[tuple[str, str]] = []
    found: tuple[Path, int | None] | None = None
    ids: list[str] = []
    at = f"--sweep {sweep.rule}.{sweep.field}={value:g}"
    for path in _rule_files(directory):
        text = path.read_text(encoding="utf-8")
        data, lines = load_yaml(text)
        for gi, g in enumerate((data or {}).get("groups") or []):
            for ri, r in enumerate(g.get("rules") or []):
                ids.append(str(r.get("id")))
                if r.get("id") != sweep.rule:
                    continue
                found = (path, line_for(lines, ("groups", gi, "rules", ri)))
                if sweep.field == "rearm":
                    r["rearm"] = value
                else:
                    when = r.get("when") or {}
                    cond = when["all"][0] if "all" in when else when
                    other = "at_least" if sweep.field == "ratio" else "ratio"
                    if other in cond:
                        raise RulesError(
                            [
                                _problem(
                                    path, f"{at}: rule {sweep.rule} uses {other}, not {sweep.field}", found[1]
                                )
                            ]
                        )
                    cond[sweep.field] = value
                text = yaml.safe_dump(data, sort_keys=False)
        sources.append((str(path), text))
    if found is None:
        hint = did_you_mean(sweep.rule, ids) or f"; rules: {', '.join(ids)}"
        raise RulesError([_problem(Path(directory), f"--sweep: no rule with id {sweep.rule!r}{hint}")])
    try:
        return compile_sources(sources)
    except RulesError as err:
        path, line = found
        raise RulesError(
            [
                _problem(path, f"{at}: {p.message}", line, p.rule)
                for p in err.problems
                if p.severity == "error"
            ]
        ) from None


def _problem(path: Path, msg: str, line: int | None = None, rule: str | None = None) -> Any:
    from upsell_triggers.engine.ruleset import Problem

    return Problem(str(path), line, msg, rule=rule)


# ---- output ----------------------------------------------------------------------------------------


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )


def _signed(n: float) -> str:
    return f"{n:+,}" if isinstance(n, int) else f"{n:+,.1f}"


def compare_table(
    p: Pass, label_a: str, label_b: str
) -> tuple[list[str], list[list[Any]], dict[str, tuple[list[str], list[str]]]]:
    a, b = p.tallies
    head = [
        "rule",
        "prompts_a",
        "prompts_b",
        "prompts_diff",
        "accounts_a",
        "accounts_b",
        "accounts_diff",
        "suppressed_a",
        "suppressed_b",
        "suppressed_diff",
        "newly_prompted",
        "no_longer_prompted",
    ]
    rows: list[list[Any]] = []
    changed: dict[str, tuple[list[str], list[str]]] = {}
    for rule in sorted(set(a.prompts) | set(b.prompts) | set(a.suppressed) | set(b.suppressed)):
        acc_a, acc_b = a.accounts.get(rule, set()), b.accounts.get(rule, set())
        new, lost = sorted(acc_b - acc_a), sorted(acc_a - acc_b)
        changed[rule] = (new, lost)
        rows.append(
            [
                rule,
                a.prompts.get(rule, 0),
                b.prompts.get(rule, 0),
                b.prompts.get(rule, 0) - a.prompts.get(rule, 0),
                len(acc_a),
                len(acc_b),
                len(acc_b) - len(acc_a),
                a.suppressed.get(rule, 0),
                b.suppressed.get(rule, 0),
                b.suppressed.get(rule, 0) - a.suppressed.get(rule, 0),
                len(new),
                len(lost),
            ]
        )
    del label_a, label_b
    return head, rows, changed


def sweep_table(p: Pass, sweep: Sweep) -> tuple[list[str], list[list[Any]]]:
    head = [
        "value",
        f"{sweep.rule}_prompts",
        f"{sweep.rule}_accounts",
        "all_prompts",
        "prompts_per_1k_accounts",
        "prompts_per_day",
    ]
    rows: list[list[Any]] = []
    for value, t in zip(sweep.values, p.tallies, strict=True):
        total = t.total_prompts
        rows.append(
            [
                value,
                t.prompts.get(sweep.rule, 0),
                len(t.accounts.get(sweep.rule, ())),
                total,
                round(total * 1000 / p.accounts, 2) if p.accounts else 0.0,
                round(total / p.days, 2) if p.days else 0.0,
            ]
        )
    return head, rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if not v.is_integer() or v > 10 else f"{v:g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _shown(head: list[str], rows: list[list[Any]]) -> list[list[str]]:
    """Table cells as text; differences with their sign."""
    diff = [h.endswith("_diff") for h in head]
    return [[_signed(v) if d else _fmt(v) for v, d in zip(r, diff, strict=True)] for r in rows]


def _footer(p: Pass) -> str:
    return (
        f"events: {p.events:,}  invalid: {p.invalid:,}  accounts: {p.accounts:,}  "
        f"days of event time: {p.days:,.1f}"
    )


# ---- command ---------------------------------------------------------------------------------------


def _open(path: str) -> tuple[Iterable[bytes], int | None, Any]:
    if path == "-":
        return sys.stdin.buffer, None, None
    f = open(path, "rb")  # noqa: SIM115
    return f, os.path.getsize(path), f


def run_backtest(
    rules: RuleSet,
    a: argparse.Namespace,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    hold_days: float = DEFAULT_ERASURE_HOLD_DAYS,
) -> int:
    """`replay --compare` / `--sweep`: tables on stdout (no prompts), progress on a terminal's stderr."""
    from upsell_triggers import gctune

    gctune.tune()
    if a.compare and a.sweep:
        print("replay: --compare and --sweep are separate runs; give one", file=sys.stderr)
        return 2
    try:
        if a.compare:
            other = load_ruleset(a.compare)
            rulesets = [rules, other]
        else:
            sweep = parse_sweep(a.sweep)
            rulesets = [swept_ruleset(a.rules, sweep, v) for v in sweep.values]
    except ValueError as err:
        print(f"replay: {err}", file=sys.stderr)
        return 2
    except RulesError as err:
        print(err, file=sys.stderr)
        # --compare: the other directory's rule files have errors (exit 1, as `rules check`); --sweep:
        # the rules loaded, so what fails is the swept value (a usage error)
        return 1 if a.compare else 2
    src, total, handle = _open(a.events)
    try:
        p = run_pass(rulesets, src, sys.stderr, total, int(retention_days * DAY), int(hold_days * DAY))
    finally:
        if handle is not None:
            handle.close()
    if a.compare:
        return _compare_output(p, a)
    return _sweep_output(p, sweep, a)


def _compare_output(p: Pass, a: argparse.Namespace) -> int:
    label_a, label_b = f"A = {a.rules}", f"B = {a.compare}"
    head, rows, changed = compare_table(p, label_a, label_b)
    out = [
        f"compare: {label_a}, {label_b} (diff = B - A)",
        _align([head, *_shown(head, rows)]),
    ]
    for rule, (new, lost) in changed.items():
        for what, accts in (("newly prompted", new), ("no longer prompted", lost)):
            if accts:
                more = f" ... and {len(accts) - SHOWN_ACCOUNTS:,} more" if len(accts) > SHOWN_ACCOUNTS else ""
                out.append(f"{rule}: {what} ({len(accts):,}): {' '.join(accts[:SHOWN_ACCOUNTS])}{more}")
    out.append(_footer(p))
    sys.stdout.write("\n".join(out) + "\n")
    if a.csv:
        write_csv(a.csv, head, rows)
    if a.html:
        body = [
            "<h2>Prompts per rule</h2>",
            compare_svg([(r[0], r[1], r[2]) for r in rows], label_a, label_b),
            "<h2>Per rule (diff = B - A)</h2>",
            table_html(head, _shown(head, rows)),
            "<h2>Accounts that newly get or lose a prompt</h2>",
        ]
        for rule, (new, lost) in changed.items():
            for what, accts in (("newly prompted", new), ("no longer prompted", lost)):
                if accts:
                    body.append(accounts_html(f"{rule}: {what} ({len(accts):,})", accts))
        write_page(a.html, "What-if: compare rule sets", _footer(p), body)
    return 0


def _sweep_output(p: Pass, sweep: Sweep, a: argparse.Namespace) -> int:
    head, rows = sweep_table(p, sweep)
    title = f"sweep: {sweep.rule}.{sweep.field} over {', '.join(f'{v:g}' for v in sweep.values)}"
    sys.stdout.write(
        "\n".join([title, _align([head, *([_fmt(v) for v in r] for r in rows)]), _footer(p)]) + "\n"
    )
    if a.csv:
        write_csv(a.csv, head, rows)
    if a.html:
        body = [
            f"<h2>Prompts per 1k accounts against {sweep.rule}.{sweep.field}</h2>",
            line_svg(
                [r[0] for r in rows],
                [r[4] for r in rows],
                f"{sweep.rule}.{sweep.field}",
                "prompts per 1k accounts",
            ),
            f"<h2>Prompts per day against {sweep.rule}.{sweep.field}</h2>",
            line_svg(
                [r[0] for r in rows], [r[5] for r in rows], f"{sweep.rule}.{sweep.field}", "prompts per day"
            ),
            table_html(head, [[_fmt(v) for v in r] for r in rows]),
        ]
        write_page(a.html, f"What-if: sweep {sweep.rule}.{sweep.field}", _footer(p), body)
    return 0
