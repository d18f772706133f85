"""Command-line arguments of `report` and of `replay`'s what-if options, kept apart from the code that
runs them so that building the parser imports nothing heavy."""

from __future__ import annotations

import argparse


def add_replay_whatif(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--holdout",
        metavar="FILE",
        help="also write the holdout decisions (accounts held out, per rule) as JSON lines: "
        "`report --holdout` reads them",
    )
    p.add_argument(
        "--compare",
        metavar="OTHER_RULES_DIR",
        help="what-if: run these rules beside --rules over the same events in one pass; per rule the "
        "prompts, accounts and suppressions of each and the difference, and the accounts that newly "
        "get or lose a prompt (no prompts on stdout)",
    )
    p.add_argument(
        "--sweep",
        metavar="RULE.FIELD=START:STOP:STEP",
        help="what-if: run the rules once per value of a rule's ratio, at_least or rearm (e.g. "
        "seats-80.ratio=0.7:0.9:0.05; STOP included) in one pass; prompts per 1k accounts and per day "
        "for each value (no prompts on stdout)",
    )
    p.add_argument("--csv", metavar="FILE", help="with --compare/--sweep: the table as CSV")
    p.add_argument("--html", metavar="FILE", help="with --compare/--sweep: a self-contained HTML page")


def add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "events", nargs="?", help="the events file of the run (JSON lines; plan changes and feedback count)"
    )
    p.add_argument("--prompts", metavar="FILE", help="the prompts of the run (replay's stdout, JSON lines)")
    p.add_argument(
        "--holdout",
        metavar="FILE",
        help="the holdout decisions (replay --holdout FILE); without it they are found by running "
        "--rules over the events again, when the policy holds accounts out",
    )
    p.add_argument(
        "--kafka",
        action="store_true",
        help="read the service's topics at $KAFKA_BOOTSTRAP_SERVERS (prompts, feedback, events) "
        "instead of files",
    )
    p.add_argument("--rules", default="rules", help="the rules of the run (plans, policy; default ./rules)")
    p.add_argument(
        "--since", help="count prompts and holdout decisions from this time (RFC 3339 or epoch ms)"
    )
    p.add_argument("--until", help="... up to, not including, this time")
    p.add_argument(
        "--min-lift",
        type=_lift,
        default=0.01,
        help="the smallest lift worth finding, as a fraction (default 0.01: one percentage point); the "
        "verdict sizes the groups for it when the data shows no larger lift",
    )
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page")


def _lift(text: str) -> float:
    """A difference of two rates, so between 0 and 1: `1` would ask for 100 percentage points (a
    percentage written as a number, as `ratio: 90` in a rule file)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        hint = f"; did you mean {value / 100:g} ({value:g} percentage points)?" if 1 <= value < 100 else ""
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1 (0.02 = 2 points){hint}")
    return value
