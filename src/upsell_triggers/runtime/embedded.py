"""The embedded runtime: the engine in-process, no Kafka. Events from a file, stdin or the simulator;
prompts as JSON lines (or readable lines, on a terminal) to stdout or a file, a summary on stderr when it
stops; dead letters as JSON lines to stderr or a file; the same
metrics, health endpoints and rule hot reload as the Kafka worker."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import IO, Any, Protocol, cast

import orjson

from upsell_triggers import native
from upsell_triggers.deadletter import DeadLetter
from upsell_triggers.engine.rulemodel import GAUGE_GROWTH, ROLLING_GROWTH
from upsell_triggers.engine.ruleset import RuleSet, load_ruleset
from upsell_triggers.engine.timeutil import DAY
from upsell_triggers.metrics import Metrics
from upsell_triggers.processor import MemoryStore, Processor
from upsell_triggers.runtime.console import LeadWriter, PromptWriter, RunSummary
from upsell_triggers.runtime.http import make_app, serve
from upsell_triggers.runtime.reload import try_reload, watch_rules
from upsell_triggers.settings import Settings
from upsell_triggers.simulate import Simulator

log = logging.getLogger("upsell_triggers.embedded")


class PromptSink(Protocol):
    """Also receives the run's prompts, and may feed events back (the delivery gateway's demo page:
    prompts to the browser, its feedback into the processor)."""

    def publish(self, prompt: dict[str, Any]) -> object: ...

    def bind(self, handle: Callable[[bytes], object]) -> None: ...


async def _lines(path: str) -> AsyncIterator[bytes]:
    """The lines of a file or of stdin, each with its newline (the last one may have none).

    Read in the executor (a pipe blocks until its writer writes) a chunk of what is there at a time,
    not a line at a time: a hop to the executor thread and back per line does not keep up with 10k
    events/s from a pipe on a loaded 2-core machine (p50 0.8-2.3 s behind; in chunks 0.5-8 ms,
    bench/latency.py --mode embedded)."""
    loop = asyncio.get_running_loop()
    stdin = cast(io.BufferedReader, sys.stdin.buffer)
    f = stdin if path == "-" else open(path, "rb")  # noqa: SIM115
    tail = b""
    try:
        while chunk := await loop.run_in_executor(None, f.read1, 1 << 16):
            *lines, tail = (tail + chunk).split(b"\n") if tail else chunk.split(b"\n")
            for line in lines:
                yield line + b"\n"
        if tail:
            yield tail
    finally:
        if f is not stdin:
            f.close()


def expansion_signals(rules: RuleSet) -> bool:
    """Whether the rules read what the simulator's expansion mode sends: distinct counts (people and
    teams on every event), forecasts (the burst, month-end, cleanup and top-up accounts) or growth."""
    return bool(
        rules.distinct
        or rules.forecast_metrics
        or any(c.kind in (GAUGE_GROWTH, ROLLING_GROWTH) for r in rules.rules for c in r.conds)
    )


async def _simulated(accounts: int, rate: float, limit: int | None, rules: RuleSet) -> AsyncIterator[bytes]:
    """The simulator's workload, in its expansion mode when the rules read expansion signals."""
    sim = Simulator(accounts=accounts, expansion=expansion_signals(rules), metrics=rules.metrics)
    batch = max(1, int(rate / 20))
    t0 = time.monotonic()
    for n, ev in enumerate(sim.events(limit), 1):
        yield orjson.dumps(ev)
        if n % batch == 0:
            await asyncio.sleep(max(0.0, t0 + n / rate - time.monotonic()))


async def _expire_idle(store: MemoryStore) -> None:
    """The store's TTL: a slice of the accounts checked each second (MemoryStore.expire_step)."""
    while True:
        await asyncio.sleep(1.0)
        store.expire_step()


async def run_embedded(
    settings: Settings,
    source: str | None,
    output: str | None,
    dlq: str | None,
    accounts: int = 300,
    rate: float = 500.0,
    limit: int | None = None,
    fmt: str = "json",
    sink: PromptSink | None = None,
    leads: str | None = None,
) -> int:
    """`fmt`: prompts as JSON lines (`json`) or one readable line each (`pretty`, for a terminal).
    `leads`: a file leads are appended to as JSON lines; without it a `pretty` run shows them among the
    prompts as readable lines, and a `json` run counts them in the summary (its output stays prompts)."""
    rules = load_ruleset(settings.rules_dir)
    metrics = Metrics(runtime="embedded")
    store = MemoryStore(
        settings.embedded_max_accounts,
        int(min(settings.embedded_account_ttl_days, settings.state_retention_days) * DAY),
        on_evict=metrics.count_evictions,
        hold_ms=int(settings.erasure_hold_days * DAY),
    )
    proc = Processor(rules, metrics, store)
    proc.engine.max_future_ms = settings.max_future_skew_s * 1000
    metrics.accounts.set_function(lambda: len(proc.store))  # read at scrape time: always current
    if sink is not None:
        sink.bind(lambda raw: proc.handle(raw, now_ms=int(time.time() * 1000) if source else None))
    out: IO[bytes] = open(output, "ab") if output else sys.stdout.buffer  # noqa: SIM115
    prompts = PromptWriter(out, fmt)
    lead_file: IO[bytes] | None = open(leads, "ab") if leads else None  # noqa: SIM115
    lead_writer = (
        LeadWriter(lead_file, "json") if lead_file is not None else LeadWriter(out, fmt, write_json=False)
    )
    summary = RunSummary()
    dlq_out: IO[bytes] = open(dlq, "ab") if dlq else sys.stderr.buffer  # noqa: SIM115
    ready = True
    runner = await serve(make_app(metrics.registry, lambda: ready), settings.http_host, settings.http_port)
    metrics.ready.set(1)
    log.info(
        "embedded runtime up",
        extra={
            "fields": {
                "metrics": f"http://{settings.http_host}:{settings.http_port}/metrics",
                "rules": len(rules.rules),
                "source": source or f"simulator ({accounts} accounts, {rate:g} events/s)",
            }
        },
    )
    native.log_mode(log)
    watcher = asyncio.create_task(
        watch_rules(
            settings.rules_dir, lambda: proc.rules, proc.swap_rules, metrics, settings.reload_debounce_ms
        )
        if settings.watch_rules
        else asyncio.sleep(0)
    )
    expiry = asyncio.create_task(_expire_idle(store))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP, lambda: try_reload(settings.rules_dir, proc.rules, proc.swap_rules, metrics)
    )
    events = _lines(source) if source else _simulated(accounts, rate, limit, rules)
    n = 0
    why = "stopped"
    try:
        async for raw in events:
            if stop.is_set():
                break
            n += 1
            t0 = time.perf_counter()
            res = proc.handle(raw.strip(), now_ms=int(time.time() * 1000) if source else None)
            if res.invalid is not None:
                summary.rejected += 1
                letter = DeadLetter.of(raw, res.invalid, {"source": source or "simulator", "line": n})
                dlq_out.write(orjson.dumps(letter.envelope()) + b"\n")
                dlq_out.flush()
                continue
            for d in res.decisions:
                if d.prompt is not None:
                    prompts.write(d.prompt)
                    if sink is not None:
                        sink.publish(d.prompt)
                    metrics.latency.observe(time.perf_counter() - t0)
                if d.lead is not None:
                    lead_writer.write(d.lead)
            if res.decisions:
                out.flush()
                if lead_file is not None:
                    lead_file.flush()
        summary.events = n
        if not stop.is_set():
            why = "end of input" if source is not None else "simulator finished"
        if source is not None and not stop.is_set():
            log.info("input finished; serving metrics until interrupted", extra={"fields": {"events": n}})
            sys.stderr.write(summary.text(prompts.by_rule, len(proc.store), why, lead_writer.by_rule) + "\n")
            why = ""
            await stop.wait()
    finally:
        summary.events = n
        if why:
            sys.stderr.write(summary.text(prompts.by_rule, len(proc.store), why, lead_writer.by_rule) + "\n")
        for task in (watcher, expiry):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
        if output:
            out.close()
        if dlq:
            dlq_out.close()
        if lead_file is not None:
            lead_file.close()
    return 0
