"""The report and the backtests as CSV, one row per line of the tables, for spreadsheets."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from upsell_triggers.report.analysis import FUNNEL, RuleReport


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def report_rows(reports: list[RuleReport]) -> tuple[list[str], list[list[Any]]]:
    """One row per rule x variant x group; a rate's columns are count, rate, low, high (empty where
    a group has no such step: the holdout saw no prompt)."""
    header = ["rule", "variant", "group", "accounts"]
    for f in FUNNEL:
        header += [f, f"{f}_rate", f"{f}_low", f"{f}_high"]
    header += ["lift", "lift_low", "lift_high", "verdict"]
    rows: list[list[Any]] = []
    for rep in reports:
        lifts = {lf.variant: lf for lf in rep.lifts}
        for row in rep.rows:
            c = row.cell
            out: list[Any] = [c.rule, c.variant, c.group, c.accounts]
            for f in FUNNEL:
                r = row.rates.get(f)
                if r is None or r.n == 0:
                    out += ["", "", "", ""] if r is None else [0, "", "", ""]
                else:
                    out += [r.k, round(r.k / r.n, 6), round(r.low, 6), round(r.high, 6)]
            lf = lifts.get(c.variant) if c.group == "treatment" else None
            if lf is not None and lf.diff is not None:
                out += [round(lf.diff.estimate, 6), round(lf.diff.low, 6), round(lf.diff.high, 6), lf.verdict]
            else:
                out += ["", "", "", lf.verdict if lf is not None else ""]
            rows.append(out)
    return header, rows
