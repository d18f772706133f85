"""`replay`: backtest rules over an events file with the same engine; event time is the clock."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import IO, Any

import orjson

from upsell_triggers.engine.engine import EMITTED, SUPPRESSIONS, Decision
from upsell_triggers.engine.ruleset import RuleSet
from upsell_triggers.processor import MemoryStore, Processor


class Summary:
    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.events = self.invalid = self.duplicates = self.accounts = 0

    def add(self, decisions: Sequence[Decision]) -> None:
        for d in decisions:
            self.counts[d.rule_id][d.outcome] += 1

    def table(self, accounts: int) -> str:
        cols = [EMITTED, *SUPPRESSIONS]
        head = ["rule", "fired", *SUPPRESSIONS, "conversion", "per_1k_accounts"]
        rows = [head]
        for rule in sorted(self.counts):
            c = self.counts[rule]
            per_k = c[EMITTED] * 1000 / accounts if accounts else 0.0
            rows.append([rule, *(str(c[k]) for k in cols), str(c["conversion"]), f"{per_k:.1f}"])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        ]
        lines.append(
            f"events: {self.events}  invalid: {self.invalid}  duplicates: {self.duplicates}  "
            f"accounts: {accounts}"
        )
        return "\n".join(lines)


def replay(
    rules: RuleSet,
    src: IO[bytes],
    out: IO[bytes],
    err: IO[str],
    explain: bool = False,
    total_bytes: int | None = None,
) -> Summary:
    proc = Processor(rules, store=MemoryStore(max_accounts=10_000_000))
    summary = Summary()
    progress = total_bytes is not None and err.isatty()
    read = blank = 0
    write = out.write
    handle = proc.handle
    lineno = 0
    # The loop does per line only what a line needs (a million lines: every attribute access shows);
    # counts come from the processor's metrics at the end.
    for lineno, line in enumerate(src, 1):
        if progress:
            read += len(line)
            if lineno % 50_000 == 0 and total_bytes:
                err.write(f"\r{100 * read / total_bytes:5.1f}%  {lineno:,} events")
                err.flush()
        if line.isspace():
            blank += 1
            continue
        res = handle(line)
        if res.invalid is not None:
            err.write(f"line {lineno}: {res.invalid.reason}: {res.invalid.message}\n")
            continue
        if res.decisions:
            summary.add(res.decisions)
            for d in res.decisions:
                if d.prompt is not None:
                    write(orjson.dumps(d.prompt) + b"\n")
                if explain:
                    err.write(orjson.dumps({"line": lineno, **d.explain()}).decode() + "\n")
    if progress:
        err.write("\r" + " " * 40 + "\r")
    summary.events = lineno - blank
    summary.invalid = sum(proc.metrics.invalid.values.values())
    summary.duplicates = sum(proc.metrics.duplicates.values.values())
    summary.accounts = len(proc.store)
    return summary


def run_replay(rules: RuleSet, path: str, explain: bool) -> int:
    import os

    from upsell_triggers import gctune

    gctune.tune()

    if path == "-":
        src: Any = sys.stdin.buffer
        total = None
    else:
        src = open(path, "rb")  # noqa: SIM115
        total = os.path.getsize(path)
    try:
        s = replay(rules, src, sys.stdout.buffer, sys.stderr, explain, total)
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    sys.stdout.flush()
    sys.stderr.write(s.table(s.accounts) + "\n")
    return 0
