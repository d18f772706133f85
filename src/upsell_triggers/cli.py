"""upsell-triggers: usage events in, upgrade prompts out. Run the service, check and test rule files,
backtest rules over recorded events, print the JSON Schemas of what the service reads and writes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from upsell_triggers.engine.timeutil import DAY
from upsell_triggers.report import arguments as whatif
from upsell_triggers.startup import StartupError

if TYPE_CHECKING:
    from upsell_triggers.engine.ruleset import Problem


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("upsell-triggers")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def _cmd_run(a: argparse.Namespace) -> int:
    from upsell_triggers import gctune, startup
    from upsell_triggers.logs import setup_logging

    s = startup.load_settings(
        {"rules_dir": ("--rules", a.rules), "http_port": ("--port", a.port), "http_host": ("--host", a.host)}
    )
    startup.load_rules(s.rules_dir, startup.RUN_RULES)
    startup.port_free(s.http_host, s.http_port)
    gctune.tune()
    if s.kafka_bootstrap_servers and not a.embedded:
        startup.broker_reachable(s)
        from upsell_triggers.runtime.faust_app import run_worker

        return run_worker(s)
    startup.readable_file(a.input, "events file")
    startup.writable_file(a.output, "prompts file")
    startup.writable_file(a.dlq, "dead-letter file")
    startup.writable_file(a.leads, "leads file")
    fmt = a.format or ("pretty" if a.output is None and sys.stdout.isatty() else "json")
    # Readable prompts come with readable logs, unless UPSELL_LOG_FORMAT says otherwise.
    log_format = "text" if fmt == "pretty" and "log_format" not in s.model_fields_set else s.log_format
    setup_logging(s.log_level, log_format)
    from upsell_triggers.runtime.embedded import run_embedded

    if not a.demo:
        return asyncio.run(
            run_embedded(s, a.input, a.output, a.dlq, a.accounts, a.rate, a.limit, fmt, leads=a.leads)
        )
    from upsell_triggers.gateway.run import run_embedded_with_demo
    from upsell_triggers.gateway.settings import GatewaySettings

    g = startup.validated_settings(GatewaySettings)
    startup.port_free(g.host, g.port, flags=False, env="UPSELL_GATEWAY_")  # --port is the service's
    return asyncio.run(
        run_embedded_with_demo(g, run_embedded, s, a.input, a.output, a.dlq, a.accounts, a.rate, a.limit, fmt)
    )


def _cmd_gateway(a: argparse.Namespace) -> int:
    from upsell_triggers import gctune, startup
    from upsell_triggers.gateway.run import run_gateway
    from upsell_triggers.gateway.settings import GatewaySettings
    from upsell_triggers.logs import setup_logging

    s = startup.load_settings({})
    gctune.tune()  # many long-lived stream objects: young collections must not rescan them
    g = startup.validated_settings(GatewaySettings, {"host": ("--host", a.host), "port": ("--port", a.port)})
    if s.kafka_bootstrap_servers:  # without, run_gateway says what to set
        from upsell_triggers.gateway.kafka import client_options

        startup.port_free(g.host, g.port, env="UPSELL_GATEWAY_")
        startup.broker_answers(s, client_options(s))
    setup_logging(s.log_level, s.log_format)
    return asyncio.run(run_gateway(s, g))


def _cmd_check(a: argparse.Namespace) -> int:
    from upsell_triggers import startup
    from upsell_triggers.engine.ruleset import RulesError, load_ruleset

    d = startup.rules_dir(a.dir, "give another: upsell-triggers rules check DIR")
    try:
        rs = load_ruleset(d)
    except RulesError as err:
        for p in sorted([*err.problems, *err.warnings], key=_where):
            print(p, file=sys.stderr)
        warned = f", {len(err.warnings)} warning(s)" if err.warnings else ""
        print(f"{len(err.problems)} error(s){warned}: rules rejected", file=sys.stderr)
        return 1
    for w in sorted(rs.warnings, key=_where):
        print(w, file=sys.stderr)
    print(
        f"ok: {len(rs.rules)} rules, {len(rs.plans)} plans, {len(rs.metrics)} metrics "
        f"(version {rs.version}){f', {len(rs.warnings)} warning(s)' if rs.warnings else ''}"
    )
    if rs.warnings and a.strict:
        print("warnings fail the check (--strict)", file=sys.stderr)
        return 1
    return 0


def _where(p: Problem) -> tuple[str, int]:
    return (p.file, p.line or 0)


def _cmd_test(a: argparse.Namespace) -> int:
    from upsell_triggers.rulestest import run_test_files

    files: list[str] = []
    for f in a.files:
        p = Path(f)
        if not p.exists():
            raise StartupError(f"test file or directory {p.resolve()} does not exist")
        files += sorted(str(x) for x in p.glob("*.y*ml")) if p.is_dir() else [f]
    if a.rules is not None:
        from upsell_triggers import startup

        startup.rules_dir(a.rules)
    return run_test_files(files, a.rules, sys.stdout)


def _cmd_schema(a: argparse.Namespace) -> int:
    from upsell_triggers import schemas

    if a.name == "all":
        if not a.output:
            raise StartupError("schema all writes files: give a directory with -o (e.g. -o schemas)")
        for path in schemas.write_all(a.output):
            print(path)
        return 0
    text = schemas.render(a.name)
    if a.output:
        Path(a.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_rules_schema(a: argparse.Namespace) -> int:
    a.name = "rules"
    return _cmd_schema(a)


def _cmd_replay(a: argparse.Namespace) -> int:
    from upsell_triggers import startup
    from upsell_triggers.engine.suggest import close_match
    from upsell_triggers.replay import run_replay

    startup.readable_file(a.events, "events file")
    settings = startup.load_settings({})  # the retention and erasure hold the workers apply
    rs = startup.load_rules(a.rules)
    known = [r.id for r in rs.rules]
    for rid in a.rule:
        if rid not in known:
            close = close_match(rid, known)
            hint = f"did you mean {close!r}? " if close else ""
            raise StartupError(f"--rule {rid!r}: no such rule in {a.rules}; {hint}rules: {', '.join(known)}")
    if (a.csv or a.html) and not (a.compare or a.sweep):
        raise StartupError("--csv and --html write the table of --compare or --sweep: give one of them")
    if a.compare or a.sweep:
        from upsell_triggers.backtest import run_backtest

        return run_backtest(rs, a, settings.state_retention_days, settings.erasure_hold_days)
    startup.writable_file(a.leads, "leads file")
    return run_replay(
        rs,
        a.events,
        a.explain,
        a.rule,
        a.account,
        holdout=a.holdout,
        retention_ms=int(settings.state_retention_days * DAY),
        hold_ms=int(settings.erasure_hold_days * DAY),
        leads=a.leads,
    )


def _cmd_erase(a: argparse.Namespace) -> int:
    from upsell_triggers import startup
    from upsell_triggers.erase import run_erase

    return run_erase(startup.load_settings({}), a.account_id, a.at, a.event_id, a.print)


def _cmd_report(a: argparse.Namespace) -> int:
    from upsell_triggers import startup
    from upsell_triggers.report.command import run_report

    rs = startup.load_rules(a.rules)
    return run_report(a, rs)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks."""


def _sub(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str, example: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=help, description=help, epilog="example:\n" + example, formatter_class=_Help
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="upsell-triggers",
        description=__doc__,
        formatter_class=_Help,
        epilog="examples:\n  upsell-triggers run --embedded        # simulated workload, no Kafka\n"
        "  upsell-triggers rules check rules\n  upsell-triggers replay events.jsonl\n\n"
        "`upsell-triggers COMMAND --help` shows each command's options.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", help="what to do")

    run = _sub(
        sub,
        "run",
        "run the service: the Kafka worker when KAFKA_BOOTSTRAP_SERVERS is set, else the embedded runtime",
        "  upsell-triggers run --embedded --rate 2000\n"
        "  upsell-triggers run --embedded --input events.jsonl --format json > prompts.jsonl\n"
        "  KAFKA_BOOTSTRAP_SERVERS=localhost:9092 upsell-triggers run",
    )
    run.add_argument("--rules", metavar="DIR", help="rules directory (default: $UPSELL_RULES_DIR or ./rules)")
    run.add_argument("--host", help="HTTP bind address for /metrics, /healthz, /readyz (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="HTTP port for /metrics, /healthz, /readyz (default 8080)")
    run.add_argument(
        "--embedded", action="store_true", help="run in-process without Kafka, even if a broker is configured"
    )
    run.add_argument(
        "--input",
        metavar="FILE",
        help="embedded: read events (JSON lines) from FILE or - (stdin) instead of the simulator",
    )
    run.add_argument("--output", metavar="FILE", help="embedded: append prompts to FILE (default stdout)")
    run.add_argument(
        "--format",
        choices=("json", "pretty"),
        help="embedded: prompts as JSON lines, or one readable line each (default: pretty on a terminal, "
        "json otherwise)",
    )
    run.add_argument(
        "--dlq", metavar="FILE", help="embedded: append rejected events to FILE (default stderr)"
    )
    run.add_argument(
        "--leads",
        metavar="FILE",
        help="embedded: append leads to FILE as JSON lines (default: one readable line each on a "
        "terminal, otherwise counted in the summary only)",
    )
    run.add_argument(
        "--accounts", type=int, default=300, help="simulator: number of simulated accounts (default 300)"
    )
    run.add_argument("--rate", type=float, default=500.0, help="simulator: events per second (default 500)")
    run.add_argument("--limit", type=int, metavar="N", help="simulator: stop after N events (default: never)")
    run.add_argument(
        "--demo",
        action="store_true",
        help="embedded: also serve the delivery gateway's demo page (prompts in a browser) on "
        "$UPSELL_GATEWAY_PORT (default 8090)",
    )
    run.set_defaults(fn=_cmd_run)

    gw = _sub(
        sub,
        "gateway",
        "the delivery gateway: prompts from the prompts topic to browsers (SSE), feedback back to its topic",
        "  UPSELL_GATEWAY_SECRET=... KAFKA_BOOTSTRAP_SERVERS=localhost:9092 upsell-triggers gateway",
    )
    gw.add_argument("--host", help="bind address (default $UPSELL_GATEWAY_HOST or 127.0.0.1)")
    gw.add_argument("--port", type=int, help="port (default $UPSELL_GATEWAY_PORT or 8090)")
    gw.set_defaults(fn=_cmd_gateway)

    rules = _sub(
        sub,
        "rules",
        "check and test rule files, print their JSON Schema",
        "  upsell-triggers rules check rules\n  upsell-triggers rules test rules/tests",
    )
    rsub = rules.add_subparsers(
        dest="rules_cmd", required=True, metavar="SUBCOMMAND", help="check, test or schema"
    )
    chk = _sub(
        rsub,
        "check",
        "validate a rules directory: every error as file:line, exit 1 if any",
        "  upsell-triggers rules check rules\n  upsell-triggers rules check --strict rules   # in CI",
    )
    chk.add_argument("dir", nargs="?", default="rules", help="rules directory (default ./rules)")
    chk.add_argument(
        "--strict", action="store_true", help="exit 1 on warnings too (rules that can never fire, ...)"
    )
    chk.set_defaults(fn=_cmd_check)
    tst = _sub(
        rsub,
        "test",
        "run rule unit tests (YAML files of events and expected prompts/decisions)",
        "  upsell-triggers rules test rules/tests\n  upsell-triggers rules test my-test.yaml --rules rules",
    )
    tst.add_argument("files", nargs="+", help="test files, or directories of *.yaml test files")
    tst.add_argument(
        "--rules",
        metavar="DIR",
        help="rules directory (default: the test file's `rules:` or its parent's parent)",
    )
    tst.set_defaults(fn=_cmd_test)
    rsch = _sub(
        rsub,
        "schema",
        "print the JSON Schema of rule files (same as `upsell-triggers schema rules`)",
        "  upsell-triggers rules schema -o rules/rules.schema.json",
    )
    rsch.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    rsch.set_defaults(fn=_cmd_rules_schema)

    rep = _sub(
        sub,
        "replay",
        "backtest rules over an events file: prompts as JSON lines on stdout, per-rule summary on stderr",
        "  upsell-triggers replay events.jsonl --rules rules > prompts.jsonl\n"
        "  upsell-triggers replay events.jsonl --explain 2> decisions.log\n"
        "  upsell-triggers replay events.jsonl --rule seats-80 --account acme > /dev/null",
    )
    rep.add_argument("events", help="events file (JSON lines, one event each) or - for stdin")
    rep.add_argument("--rules", metavar="DIR", default="rules", help="rules directory (default ./rules)")
    rep.add_argument(
        "--explain",
        action="store_true",
        help="also write every decision (event time, rule, account, outcome, reason) to stderr as JSON lines",
    )
    rep.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="ID",
        help="--explain only this rule's decisions (repeatable; implies --explain)",
    )
    rep.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="ID",
        help="--explain only this account's decisions (repeatable; implies --explain)",
    )
    rep.add_argument(
        "--leads",
        metavar="FILE",
        help="write the leads (rules with action: lead) to FILE as JSON lines (default: counted in the "
        "summary only)",
    )
    whatif.add_replay_whatif(rep)
    rep.set_defaults(fn=_cmd_replay)

    sch = _sub(
        sub,
        "schema",
        "print the JSON Schema (draft 2020-12) of input events, feedback events, prompts, leads, "
        "dead letters, holdout records or rule files",
        "  upsell-triggers schema prompts\n  upsell-triggers schema all -o schemas",
    )
    sch.add_argument(
        "name",
        choices=("events", "feedback", "prompts", "leads", "dead-letters", "holdout", "rules", "all"),
        help="which schema; `all` writes every one into the -o directory",
    )
    sch.add_argument(
        "-o", "--output", metavar="PATH", help="write to PATH (a directory for `all`) instead of stdout"
    )
    sch.set_defaults(fn=_cmd_schema)

    rpt = _sub(
        sub,
        "report",
        "conversion report: per rule, variant and group, rates with intervals, lift over the holdout",
        "  upsell-triggers report events.jsonl --prompts prompts.jsonl --holdout holdout.jsonl\n"
        "  upsell-triggers report --kafka --since 2026-12-01T00:00:00Z --html report.html",
    )
    whatif.add_report(rpt)
    rpt.set_defaults(fn=_cmd_report)

    era = _sub(
        sub,
        "erase",
        "erase an account: produce an account_deleted event to the events topic (docs/erasure.md); its "
        "state is removed and its events up to the deletion's time are dropped",
        "  upsell-triggers erase acme\n"
        "  upsell-triggers erase acme --at 2026-12-01T09:30:00Z\n"
        "  upsell-triggers erase acme --print >> events.jsonl",
    )
    era.add_argument("account_id", metavar="ACCOUNT_ID", help="the account to erase (the record key)")
    era.add_argument(
        "--at", metavar="TIME", help="the deletion's event time, RFC 3339 or epoch ms (default: now)"
    )
    era.add_argument(
        "--event-id", metavar="ID", help="the event's id (default: derived from the deletion's time)"
    )
    era.add_argument(
        "--print",
        action="store_true",
        help="write the event to stdout as a JSON line instead of producing it",
    )
    era.set_defaults(fn=_cmd_erase)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return int(a.fn(a))
    except StartupError as err:
        print(f"upsell-triggers: error: {err.message}", file=sys.stderr)
        for line in err.detail:
            print(line, file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`... | head`): what it wanted was written. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again, and exit as `head`'s peers do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
