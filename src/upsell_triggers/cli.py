"""upsell-triggers command line (contract §6)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def _cmd_run(a: argparse.Namespace) -> int:
    from upsell_triggers import gctune
    from upsell_triggers.logs import setup_logging
    from upsell_triggers.settings import Settings

    overrides = {k: v for k, v in (("rules_dir", a.rules), ("http_port", a.port), ("http_host", a.host)) if v}
    s = Settings(**overrides)
    gctune.tune()
    if s.kafka_bootstrap_servers and not a.embedded:
        from upsell_triggers.runtime.faust_app import run_worker

        return run_worker(s)
    setup_logging(s.log_level, s.log_format)
    from upsell_triggers.runtime.embedded import run_embedded

    return asyncio.run(run_embedded(s, a.input, a.output, a.dlq, a.accounts, a.rate, a.limit))


def _cmd_check(a: argparse.Namespace) -> int:
    from upsell_triggers.engine.ruleset import RulesError, load_ruleset

    try:
        rs = load_ruleset(a.dir)
    except RulesError as err:
        for p in err.problems:
            print(p, file=sys.stderr)
        print(f"{len(err.problems)} error(s): rules rejected", file=sys.stderr)
        return 1
    for w in rs.warnings:
        print(w, file=sys.stderr)
    print(
        f"ok: {len(rs.rules)} rules, {len(rs.plans)} plans, {len(rs.metrics)} metrics "
        f"(version {rs.version}){f', {len(rs.warnings)} warning(s)' if rs.warnings else ''}"
    )
    return 0


def _cmd_test(a: argparse.Namespace) -> int:
    from upsell_triggers.rulestest import run_test_files

    files: list[str] = []
    for f in a.files:
        p = Path(f)
        files += sorted(str(x) for x in p.glob("*.y*ml")) if p.is_dir() else [f]
    return run_test_files(files, a.rules, sys.stdout)


def _cmd_schema(a: argparse.Namespace) -> int:
    from upsell_triggers.engine.rulefile import rules_json_schema

    text = json.dumps(rules_json_schema(), indent=2) + "\n"
    if a.output:
        Path(a.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_replay(a: argparse.Namespace) -> int:
    from upsell_triggers.engine.ruleset import RulesError, load_ruleset
    from upsell_triggers.replay import run_replay

    try:
        rs = load_ruleset(a.rules)
    except RulesError as err:
        print(err, file=sys.stderr)
        return 1
    return run_replay(rs, a.events, a.explain)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="upsell-triggers", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the service (Faust worker with a broker, embedded runtime without)")
    run.add_argument("--rules", help="rules directory (default: $UPSELL_RULES_DIR or ./rules)")
    run.add_argument("--host", help="HTTP bind address for /metrics, /healthz, /readyz")
    run.add_argument("--port", type=int, help="HTTP port (default 8080)")
    run.add_argument("--embedded", action="store_true", help="ignore any broker setting; run in-process")
    run.add_argument(
        "--input", help="embedded: read events (JSON lines) from FILE or - (stdin) instead of the simulator"
    )
    run.add_argument("--output", help="embedded: append prompts to FILE (default stdout)")
    run.add_argument("--dlq", help="embedded: append rejected events to FILE (default stderr)")
    run.add_argument("--accounts", type=int, default=300, help="simulator: accounts (default 300)")
    run.add_argument("--rate", type=float, default=500.0, help="simulator: events per second (default 500)")
    run.add_argument("--limit", type=int, help="simulator: stop after N events")
    run.set_defaults(fn=_cmd_run)

    rules = sub.add_parser("rules", help="check, test and describe rule files")
    rsub = rules.add_subparsers(dest="rules_cmd", required=True)
    chk = rsub.add_parser("check", help="validate rule files; file:line errors; exit 1 on error")
    chk.add_argument("dir", nargs="?", default="rules")
    chk.set_defaults(fn=_cmd_check)
    tst = rsub.add_parser("test", help="run rule unit tests (YAML)")
    tst.add_argument("files", nargs="+", help="test files or directories")
    tst.add_argument(
        "--rules", help="rules directory (default: the test file's `rules:` or its parent's parent)"
    )
    tst.set_defaults(fn=_cmd_test)
    sch = rsub.add_parser("schema", help="print the JSON Schema of rule files")
    sch.add_argument("-o", "--output")
    sch.set_defaults(fn=_cmd_schema)

    rep = sub.add_parser(
        "replay", help="backtest: prompts as JSON lines on stdout, per-rule summary on stderr"
    )
    rep.add_argument("events", help="events file (JSON lines) or - for stdin")
    rep.add_argument("--rules", default="rules")
    rep.add_argument("--explain", action="store_true", help="every decision with its reason, on stderr")
    rep.set_defaults(fn=_cmd_replay)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return int(a.fn(a))
