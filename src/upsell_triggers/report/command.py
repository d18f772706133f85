"""`upsell-triggers report`: reads the outcome of a run from files or from the service's topics, and
writes the report as text (stdout), CSV and HTML."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from upsell_triggers.engine.ruleset import RuleSet
from upsell_triggers.engine.timeutil import to_iso
from upsell_triggers.report.analysis import analyse
from upsell_triggers.report.csvout import report_rows, write_csv
from upsell_triggers.report.holdout import holdout_by_replay
from upsell_triggers.report.html import report_body, write_page
from upsell_triggers.report.outcomes import Outcomes, parse_time
from upsell_triggers.report.text import render_text

MAX_SHOWN_ERRORS = 20


def _lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from f


def _time(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as err:
        from upsell_triggers.startup import USAGE, StartupError

        raise StartupError(
            f"report: {flag} {value!r}: {err} (use RFC 3339, e.g. 2026-11-22T00:00:00Z)", USAGE
        ) from None


def build(
    rules: RuleSet,
    prompts: Iterable[bytes],
    events: Iterable[bytes],
    holdout: Iterable[bytes] | None,
    replay_events: Iterable[bytes] | None,
    since: int | None,
    until: int | None,
    err: IO[str],
    names: tuple[str, str, str] = ("prompts", "events", "holdout"),
) -> Outcomes:
    """Reads everything into Outcomes; bad lines are reported on `err` (the first few) and skipped."""
    out = Outcomes(rules, since, until)
    errors = out.add_lines("prompts", prompts, names[0])
    errors += out.add_lines("events", events, names[1])
    if holdout is not None:
        errors += out.add_lines("holdout", holdout, names[2])
    elif replay_events is not None:
        for account, rule, ts in holdout_by_replay(rules, replay_events):
            out.add_holdout_decision(account, rule, ts)
    for e in errors[:MAX_SHOWN_ERRORS]:
        err.write(e + "\n")
    if len(errors) > MAX_SHOWN_ERRORS:
        err.write(f"... and {len(errors) - MAX_SHOWN_ERRORS} more bad lines\n")
    for why, n in sorted(out.skipped.items()):
        err.write(f"not counted: {n:,} {why}\n")
    return out


def run_report(a: argparse.Namespace, rules: RuleSet) -> int:
    since, until = _time(a.since, "--since"), _time(a.until, "--until")
    if a.kafka:
        from upsell_triggers.report.broker import read_topics

        topics = read_topics(sys.stderr)
        holdout_src = (
            "found by running the rules over the events topic"
            if rules.policy.holdout_fraction > 0
            else "none (policy.holdout.fraction is 0)"
        )
        out = build(
            rules,
            topics.prompts,
            topics.events,
            None,
            topics.usage if rules.policy.holdout_fraction > 0 else None,
            since,
            until,
            sys.stderr,
            names=(topics.names[0], topics.names[1], ""),
        )
    else:
        if not a.events or not a.prompts:
            print(
                "report: give the events file and --prompts FILE (what replay read and wrote), or --kafka",
                file=sys.stderr,
            )
            return 2
        for path in (a.events, a.prompts, a.holdout):
            if path and not Path(path).is_file():
                print(f"report: {path}: no such file", file=sys.stderr)
                return 2
        replay_src = None
        if a.holdout:
            holdout_src = a.holdout
        elif rules.policy.holdout_fraction > 0:
            holdout_src = f"found by running the rules over {a.events}"
            replay_src = _lines(a.events)
        else:
            holdout_src = "none (policy.holdout.fraction is 0)"
        out = build(
            rules,
            _lines(a.prompts),
            _lines(a.events),
            _lines(a.holdout) if a.holdout else None,
            replay_src,
            since,
            until,
            sys.stderr,
            names=(a.prompts, a.events, a.holdout or ""),
        )
    reports = analyse(out.cells(), a.min_lift)
    first, last = out.exposure_span() or (None, None)
    start = to_iso(since) if since else (to_iso(first) if first is not None else "start")
    # --until is exclusive; the last exposure counted is a time that was counted
    end = to_iso(until) if until else (to_iso(last) if last is not None else "end")
    span = f"{start} .. {end}"
    header = (
        f"report: exposures {span}; attribution window {rules.policy.attribution_ms // 86_400_000}d; "
        f"holdout: {holdout_src}"
    )
    sys.stdout.write(render_text(reports, header))
    if a.csv:
        write_csv(a.csv, *report_rows(reports))
    if a.html:
        write_page(a.html, "Upsell prompts: conversion report", header, report_body(reports))
    return 0
