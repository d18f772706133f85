"""The report as aligned plain text, for a terminal."""

from __future__ import annotations

from upsell_triggers.report.analysis import FUNNEL, RuleReport, pp
from upsell_triggers.report.stats import Rate


def pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def rate_text(r: Rate | None) -> str:
    if r is None:
        return "-"
    if r.n == 0:
        return "0"
    return f"{r.k:,} {pct(r.k / r.n)} [{pct(r.low)}, {pct(r.high)}]"


def table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent
        + "  ".join(
            v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def render_text(reports: list[RuleReport], header: str = "") -> str:
    lines = [header] if header else []
    if not reports:
        lines.append("no prompts or holdout decisions in the range")
    for rep in reports:
        lines.append(f"{rep.rule}")
        rows = [["group", "variant", "accounts", *FUNNEL]]
        for row in rep.rows:
            c = row.cell
            rows.append(
                [c.group, c.variant, f"{c.accounts:,}", *(rate_text(row.rates.get(f)) for f in FUNNEL)]
            )
        lines += table(rows)
        for lift in rep.lifts:
            who = f" ({lift.variant})" if lift.variant != "-" else ""
            if lift.diff is not None:
                d = lift.diff
                lines.append(f"  lift of upgrades{who}: {pp(d.estimate)} [{pp(d.low)}, {pp(d.high)}]")
            lines.append(f"  verdict{who}: {lift.verdict}")
        for vd in rep.variant_diffs:
            d = vd.diff
            clear = " (clear)" if d.excludes_zero else " (interval includes zero)"
            span = f"[{pp(d.low)}, {pp(d.high)}]"
            lines.append(f"  upgrades, {vd.variant} minus {vd.base}: {pp(d.estimate)} {span}{clear}")
        lines.append("")
    lines.append(
        "rates are of the group's accounts, with 95% Wilson intervals; lift = treatment - holdout upgrade "
        "rate, 95% Newcombe interval"
    )
    return "\n".join(lines) + "\n"
