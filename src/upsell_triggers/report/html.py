"""One self-contained HTML page (inline CSS and SVG, no scripts, nothing fetched): the funnel per rule,
the lift with its interval, the backtests' comparison and sweep curve. People look at these; the text
and CSV outputs carry the same numbers."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from upsell_triggers.report.analysis import FUNNEL, RuleReport, pp
from upsell_triggers.report.stats import Difference, Rate

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;
max-width:1000px;color:#1d2330;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;
padding-bottom:4px}.sub{color:#5b6577;margin:0 0 16px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
td,th{padding:3px 10px;white-space:nowrap;text-align:right;border-bottom:1px solid #eef1f5}th{color:#5b6577;font-weight:600}
td:first-child,th:first-child,td.l,th.l{text-align:left}
.verdict{margin:6px 0 0;padding:6px 10px;border-left:4px solid #8a94a6;background:#f6f8fb}
.good{border-color:#1f9d55}.bad{border-color:#d64545}.wait{border-color:#d69e2e}
svg text{font:12px system-ui,"DejaVu Sans",sans-serif;fill:#1d2330}svg .muted{fill:#5b6577}
.note{color:#5b6577;font-size:12px}.wide{overflow-x:auto}.accounts{font:12px ui-monospace,monospace;
word-break:break-word;margin:4px 0 12px}
"""
TREAT, HOLD, A_COL, B_COL = "#3867d6", "#8a94a6", "#8a94a6", "#3867d6"


def page(title: str, subtitle: str, body: Sequence[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{escape(title)}</h1><p class='sub'>{escape(subtitle)}</p>" + "".join(body) + "</body></html>\n"
    )


def write_page(path: str | Path, title: str, subtitle: str, body: Sequence[str]) -> None:
    Path(path).write_text(page(title, subtitle, body), encoding="utf-8")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    h = "".join(f"<th>{escape(x)}</th>" for x in head)
    b = "".join(
        "<tr>" + "".join(f"<td>{escape(x).replace(chr(10), '<br>')}</td>" for x in r) + "</tr>" for r in rows
    )  # a line break in a cell's text is a line break on the page
    return f"<div class='wide'><table><tr>{h}</tr>{b}</table></div>"


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


# ---- report ----------------------------------------------------------------------------------------


def funnel_svg(rep: RuleReport) -> str:
    """Bars per funnel step (share of the group's accounts) with their 95% intervals as whiskers;
    the holdout's upgrade rate beside the treatment's."""
    bars: list[tuple[str, Rate, str]] = []
    for row in rep.rows:
        c = row.cell
        tag = c.group if c.variant == "-" else f"{c.group} {c.variant}"
        for f in FUNNEL:
            r = row.rates.get(f)
            if r is not None and r.n:
                bars.append((f"{f} ({tag})", r, TREAT if c.group == "treatment" else HOLD))
    label_w, plot_w, bar_h, gap = 190, 520, 18, 8
    height = len(bars) * (bar_h + gap) + 30
    out = [f'<svg width="{label_w + plot_w + 120}" height="{height}" role="img">']
    for i, tick in enumerate((0, 0.25, 0.5, 0.75, 1.0)):
        x = label_w + tick * plot_w
        out.append(f'<line x1="{x}" y1="0" x2="{x}" y2="{height - 22}" stroke="#eef1f5"/>')
        out.append(
            f'<text x="{x}" y="{height - 6}" text-anchor="middle" class="muted">{int(tick * 100)}%</text>'
        )
        del i
    for i, (label, r, colour) in enumerate(bars):
        y = i * (bar_h + gap) + 4
        v = r.k / r.n
        out.append(f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end">{escape(label)}</text>')
        out.append(f'<rect x="{label_w}" y="{y}" width="{v * plot_w:.1f}" height="{bar_h}" fill="{colour}"/>')
        lo, hi = label_w + r.low * plot_w, label_w + r.high * plot_w
        mid = y + bar_h / 2
        out.append(
            f'<line x1="{lo:.1f}" y1="{mid}" x2="{hi:.1f}" y2="{mid}" stroke="#1d2330" stroke-width="1.5"/>'
        )
        for x in (lo, hi):
            out.append(f'<line x1="{x:.1f}" y1="{mid - 5}" x2="{x:.1f}" y2="{mid + 5}" stroke="#1d2330"/>')
        out.append(f'<text x="{label_w + plot_w + 8}" y="{y + 13}">{_pct(v)} of {r.n:,}</text>')
    out.append("</svg>")
    return "".join(out)


def lift_svg(reports: Sequence[RuleReport]) -> str:
    """Forest plot: each rule's (and variant's) lift in upgrade rate with its 95% interval, around 0."""
    items: list[tuple[str, Difference]] = [
        (lf.rule + ("" if lf.variant == "-" else f" ({lf.variant})"), lf.diff)
        for rep in reports
        for lf in rep.lifts
        if lf.diff is not None
    ]
    if not items:
        return "<p class='note'>No lift to draw: no rule has both prompted and held-out accounts.</p>"
    span = max([0.01, *(max(abs(d.low), abs(d.high)) for _, d in items)]) * 1.1
    label_w, plot_w, row_h = 190, 460, 26
    height = len(items) * row_h + 34

    def x(v: float) -> float:
        return label_w + (v + span) / (2 * span) * plot_w

    out = [f'<svg width="{label_w + plot_w + 250}" height="{height}" role="img">']
    out.append(
        f'<line x1="{x(0)}" y1="0" x2="{x(0)}" y2="{height - 22}" stroke="#8a94a6" stroke-dasharray="4 3"/>'
    )
    for t in (-span, -span / 2, 0.0, span / 2, span):
        out.append(
            f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="middle" class="muted">{t * 100:+.1f} pp</text>'
        )
    for i, (name, d) in enumerate(items):
        y = i * row_h + 14
        colour = "#1f9d55" if d.low > 0 else "#d64545" if d.high < 0 else "#d69e2e"
        out.append(f'<text x="{label_w - 8}" y="{y + 4}" text-anchor="end">{escape(name)}</text>')
        out.append(
            f'<line x1="{x(d.low):.1f}" y1="{y}" x2="{x(d.high):.1f}" y2="{y}" stroke="{colour}" stroke-width="3"/>'
        )
        out.append(f'<circle cx="{x(d.estimate):.1f}" cy="{y}" r="5" fill="{colour}"/>')
        out.append(
            f'<text x="{label_w + plot_w + 8}" y="{y + 4}">{pp(d.estimate)} [{pp(d.low)}, {pp(d.high)}]</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _verdict_class(text: str) -> str:
    if text.startswith("prompts raise"):
        return "good"
    if text.startswith("prompts lower"):
        return "bad"
    return "wait"


def report_body(reports: Sequence[RuleReport]) -> list[str]:
    body = ["<h2>Lift of upgrades, treatment minus holdout (95% interval)</h2>", lift_svg(reports)]
    for rep in reports:
        body.append(f"<h2>{escape(rep.rule)}</h2>")
        rows = []
        for row in rep.rows:
            c = row.cell
            cells = [c.group, c.variant, f"{c.accounts:,}"]
            for f in FUNNEL:
                r = row.rates.get(f)
                cells.append(
                    "-"
                    if r is None
                    else f"{r.k:,} ({_pct(r.k / r.n)})\n{_pct(r.low)} to {_pct(r.high)}"
                    if r.n
                    else "0"
                )
            rows.append(cells)
        body.append(_table(["group", "variant", "accounts", *FUNNEL], rows))
        body.append(funnel_svg(rep))
        for lf in rep.lifts:
            who = "" if lf.variant == "-" else f" ({escape(lf.variant)})"
            body.append(
                f"<p class='verdict {_verdict_class(lf.verdict)}'>Verdict{who}: {escape(lf.verdict)}</p>"
            )
        for vd in rep.variant_diffs:
            d = vd.diff
            body.append(
                f"<p class='verdict {'good' if d.low > 0 else 'bad' if d.high < 0 else 'wait'}'>"
                f"Upgrades, {escape(vd.variant)} minus {escape(vd.base)}: {pp(d.estimate)} "
                f"[{pp(d.low)}, {pp(d.high)}]</p>"
            )
    body.append(
        "<p class='note'>Rates are shares of the group's accounts with 95% Wilson intervals (the whiskers); "
        "lift is the treatment's upgrade rate minus the holdout's, with Newcombe's 95% interval.</p>"
    )
    return body


# ---- backtests -------------------------------------------------------------------------------------


def compare_svg(rows: Sequence[tuple[str, int, int]], label_a: str, label_b: str) -> str:
    """Prompts per rule in rule set A and B, as paired bars."""
    if not rows:
        return ""
    top = max(1, *(max(a, b) for _, a, b in rows))
    label_w, plot_w, bar_h = 190, 480, 12
    group_h = 2 * bar_h + 12
    height = len(rows) * group_h + 40
    out = [f'<svg width="{label_w + plot_w + 140}" height="{height}" role="img">']
    out.append(f'<rect x="{label_w}" y="4" width="12" height="12" fill="{A_COL}"/>')
    out.append(f'<text x="{label_w + 18}" y="15">{escape(label_a)}</text>')
    out.append(f'<rect x="{label_w + 260}" y="4" width="12" height="12" fill="{B_COL}"/>')
    out.append(f'<text x="{label_w + 278}" y="15">{escape(label_b)}</text>')
    for i, (rule, a, b) in enumerate(rows):
        y = 28 + i * group_h
        out.append(f'<text x="{label_w - 8}" y="{y + bar_h + 4}" text-anchor="end">{escape(rule)}</text>')
        for j, (v, colour) in enumerate(((a, A_COL), (b, B_COL))):
            yy = y + j * bar_h
            out.append(
                f'<rect x="{label_w}" y="{yy}" width="{v / top * plot_w:.1f}" height="{bar_h - 2}" fill="{colour}"/>'
            )
            out.append(
                f'<text x="{label_w + v / top * plot_w + 6:.1f}" y="{yy + bar_h - 3}" class="muted">{v:,}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def line_svg(xs: Sequence[float], ys: Sequence[float], x_label: str, y_label: str) -> str:
    """A line with points: the sweep curve (prompts per 1k accounts against the swept value)."""
    if not xs:
        return ""
    left, width, top, height = 70, 560, 20, 260
    x0, x1 = min(xs), max(xs)
    y1 = max(ys) * 1.1 if max(ys) > 0 else 1.0

    def px(v: float) -> float:
        return left + (0.5 if x1 == x0 else (v - x0) / (x1 - x0)) * width

    def py(v: float) -> float:
        return top + height - v / y1 * height

    out = [f'<svg width="{left + width + 40}" height="{top + height + 50}" role="img">']
    for k in range(5):
        v = y1 * k / 4
        out.append(
            f'<line x1="{left}" y1="{py(v):.1f}" x2="{left + width}" y2="{py(v):.1f}" stroke="#eef1f5"/>'
        )
        out.append(
            f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end" class="muted">{v:,.1f}</text>'
        )
    pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(xs, ys, strict=True))
    out.append(f'<polyline points="{pts}" fill="none" stroke="{TREAT}" stroke-width="2.5"/>')
    for a, b in zip(xs, ys, strict=True):
        out.append(f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="4.5" fill="{TREAT}"/>')
        out.append(f'<text x="{px(a):.1f}" y="{py(b) - 9:.1f}" text-anchor="middle">{b:,.1f}</text>')
        out.append(
            f'<text x="{px(a):.1f}" y="{top + height + 18}" text-anchor="middle" class="muted">{a:g}</text>'
        )
    out.append(
        f'<text x="{left + width / 2}" y="{top + height + 40}" text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text x="14" y="{top + height / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + height / 2})">{escape(y_label)}</text>'
    )
    out.append("</svg>")
    return "".join(out)


def table_html(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return _table(head, rows)


def accounts_html(title: str, accounts: Sequence[str], limit: int = 100) -> str:
    more = f" ... and {len(accounts) - limit:,} more" if len(accounts) > limit else ""
    return f"<h3>{escape(title)}</h3><p class='accounts'>{escape(' '.join(accounts[:limit]) + more)}</p>"
