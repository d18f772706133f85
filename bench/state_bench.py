"""Benchmark 4: memory per active account, and recovery time of a restarted worker.

    python bench/state_bench.py [--accounts 100000 1000000] [--stores memory rocksdb] [--runs 3]
                                [--rules shipped|examples] [--shape seats|small]

For each account count: produce the events of a shape per account, let one worker apply them all
(committed offsets at the end), and read its resident memory against the same worker idle on an
empty topic (per-account = difference / accounts), at rest after the load and at its peak (VmHWM).
Shapes: `seats`, 2 events per account (plan_changed + a seats reading); `small`, expansion_bench's
small shape (a plan, seats readings 31 days apart, ten API calls by eight people of three teams in a
week: 13 events). Rules: `shipped` (rules/), or `examples`, every new kind active (rules/examples/
expansion and rules/examples/pace, composed as expansion_bench does, in a temporary directory).
At rest: once the worker holds no account decoded (upsell_state_decoded_accounts is 0: states idle
for UPSELL_STATE_IDLE_S are held as bytes) and then gave freed memory back to the OS (within 10 s of
its last change, UPSELL_MEMORY_RELEASE_INTERVAL_S). Then stop it
cleanly and start a new one on the same data directory: recovery time = start until /readyz answers 200 (state
restored from the changelog, or from RocksDB files plus the changelog tail), and its memory per account
at rest after that (read at rest, not at /readyz, when the restore's fetches are not freed yet: ~570 B
at 100k accounts against ~400 B at rest). Then the same after a
SIGKILL, which adds the wait for the dead member's session timeout (UPSELL_SESSION_TIMEOUT_S).
Writes bench/results/state.json (shipped rules, seats), or state-variants.json (other rules, shapes, --set).
Targets: <= 1 KiB per account; recovery of 1M accounts <= 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from expansion_bench import examples_rule_files
from kafkabench import (
    RESULTS,
    bootstrap,
    create_topics,
    delete_created_topics_at_exit,
    hwm_kib,
    median,
    produce_fast,
    rss_kib,
    run_id,
    start_service,
    write_result,
)

from devkit.exactness import wait_committed
from devkit.kafka_io import event
from devkit.worker import Worker
from upsell_triggers.engine.timeutil import DAY, HOUR
from upsell_triggers.settings import Settings


def events(accounts: int) -> Iterator[tuple[bytes, bytes]]:
    ts = int(time.time() * 1000) - 3_600_000
    for i in range(accounts):
        a = f"acct-{i:07d}"
        yield event(a, f"p{i}", ts, type="plan_changed", plan="team")
        yield event(a, f"s{i}", ts + 1, type="usage", metric="seats", value=5 + i % 20)


def small_events(accounts: int) -> Iterator[tuple[bytes, bytes]]:
    """expansion_bench.small_accounts, keyed, its event time ending an hour ago."""
    t0 = int(time.time() * 1000) - 31 * DAY - HOUR
    for i in range(accounts):
        a = f"acct-{i:07d}"
        yield event(a, f"{a}-0", t0, type="plan_changed", plan="team")
        yield event(a, f"{a}-1", t0 + HOUR, type="usage", metric="seats", value=10)
        for k in range(10):
            user = k % 8
            yield event(
                a,
                f"{a}-{2 + k}",
                t0 + 25 * DAY + k * 12 * HOUR,
                type="usage",
                metric="api_calls",
                delta=10,
                user_id=f"u-{user}",
                attributes={"team_id": f"t-{user % 3}"},
            )
        yield event(a, f"{a}-12", t0 + 31 * DAY, type="usage", metric="seats", value=12)


SHAPES = {"seats": events, "small": small_events}
_DECODED = "upsell_state_decoded_accounts"


def rss_at_rest(w: Worker, timeout: float = 600) -> int:
    """RSS once the worker is at rest after the load: the accounts held decoded no longer falling
    (each is turned back into bytes once idle for UPSELL_STATE_IDLE_S, 30 s by default, within twice
    that; none are with it at 0) for the idle time, then freed memory given back to the OS, at most once per
    UPSELL_MEMORY_RELEASE_INTERVAL_S (10 s) after a change."""
    assert w.proc is not None
    deadline = time.monotonic() + timeout
    idle_s = float(w.env.get("UPSELL_STATE_IDLE_S", Settings.model_fields["state_idle_s"].default))
    last, since = w.metric(_DECODED), time.monotonic()
    while last > 0 and time.monotonic() < deadline and time.monotonic() - since < 2 * idle_s + 5:
        time.sleep(1)
        now = w.metric(_DECODED)
        if now < last:
            last, since = now, time.monotonic()
    time.sleep(12)
    return rss_kib(w.proc.pid)


def one(
    bs: str,
    tmp: Path,
    accounts: int,
    store: str,
    rid: str,
    shape: str,
    rules_dir: Path | None,
    settings: dict[str, str],
) -> dict[str, float]:
    topics = {k: f"st-{k}-{rid}" for k in ("events", "feedback", "prompts", "dlq")}
    asyncio.run(create_topics(bs, topics.values(), 4))
    app_id = f"st-{rid}"
    env = {
        "UPSELL_STORE": f"{store}://",
        "UPSELL_DATA_DIR": str(tmp / f"data-{rid}"),
        "UPSELL_COMMIT_INTERVAL_S": "0.5",
    }
    if rules_dir is not None:
        env["UPSELL_RULES_DIR"] = str(rules_dir)
    env.update(settings)
    w = start_service(bs, tmp, topics, app_id, env)
    try:
        w.wait_ready(300)
        time.sleep(3)
        assert w.proc is not None
        idle = rss_kib(w.proc.pid)
        asyncio.run(produce_fast(bs, topics["events"], SHAPES[shape](accounts), 4))
        asyncio.run(wait_committed(bs, app_id, topics["events"], timeout=1800))
        loaded = rss_at_rest(w)
        peak = hwm_kib(w.proc.pid)
        w.stop()  # clean stop: leaves the group
        t = time.monotonic()
        w2 = start_service(bs, tmp, topics, app_id, env)
        try:
            w2.wait_ready(900)
            recovery = time.monotonic() - t
            assert w2.proc is not None
            recovered = rss_at_rest(w2)
            w2.stop(kill=True)  # crash: the group waits out the session timeout before reassigning
            t = time.monotonic()
            w3 = start_service(bs, tmp, topics, app_id, env)
            try:
                w3.wait_ready(900)
                recovery_kill = time.monotonic() - t
            finally:
                w3.stop()
        finally:
            w2.stop()
    finally:
        w.stop()
    return {
        "rss_idle_mib": idle / 1024,
        "rss_loaded_mib": loaded / 1024,
        "bytes_per_account": (loaded - idle) * 1024 / accounts,
        "rss_peak_mib": peak / 1024,
        "peak_bytes_per_account": (peak - idle) * 1024 / accounts,
        "rss_after_recovery_mib": recovered / 1024,
        "bytes_per_account_after_recovery": (recovered - idle) * 1024 / accounts,
        "recovery_s": recovery,
        "recovery_after_sigkill_s": recovery_kill,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--stores", nargs="*", default=["memory", "rocksdb"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rules", choices=["shipped", "examples"], default="shipped")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="seats")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="UPSELL_NAME=VALUE",
        help="a worker setting for these runs (repeatable); named in the results' key",
    )
    a = ap.parse_args()
    settings = dict(kv.split("=", 1) for kv in a.set)
    # Results of the default (shipped rules, seats) are keyed store/accounts; others add rules-shape,
    # and the settings given.
    suffix = "" if (a.rules, a.shape) == ("shipped", "seats") else f"/{a.rules}-{a.shape}"
    suffix += "".join(f"/{k}={v}" for k, v in sorted(settings.items()))
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        rules_dir = None
        if a.rules == "examples":
            rules_dir = Path(d) / "rules"
            rules_dir.mkdir()
            for p in examples_rule_files():
                (rules_dir / p.name).write_text(p.read_text())
        for i in range(a.runs):
            for n in a.accounts:
                for store in a.stores:
                    r = one(bs, Path(d), n, store, f"{run_id()}-{n}-{store}", a.shape, rules_dir, settings)
                    runs.setdefault(f"{store}/{n}{suffix}", []).append(r)
                    print(
                        f"run {i + 1}: {store:8s} {n:>9,} accounts{suffix}: "
                        f"{r['bytes_per_account']:,.0f} B/acct"
                        f" (peak {r['peak_bytes_per_account']:,.0f}) "
                        f"(RSS {r['rss_idle_mib']:.0f} -> {r['rss_loaded_mib']:.0f} MiB), recovery "
                        f"{r['recovery_s']:.1f} s, after SIGKILL {r['recovery_after_sigkill_s']:.1f} s "
                        f"(then {r['bytes_per_account_after_recovery']:,.0f} B/acct at rest)",
                        flush=True,
                    )
    # Merge with earlier runs of other account counts/stores (e.g. 1M measured separately from 100k).
    # The shipped rules' seats shape goes to state.json (BENCHMARKS.md's rows); other rule sets, shapes
    # and settings to state-variants.json, keyed store/accounts/rules-shape[/setting=value].
    name = "state-variants" if suffix else "state"
    prev = RESULTS / f"{name}.json"
    if prev.exists():
        old = json.loads(prev.read_text()).get("runs", {})
        runs = {**{k: v for k, v in old.items() if k not in runs}, **runs}
    med = {k: {f: median([r[f] for r in rs]) for f in rs[0]} for k, rs in runs.items()}
    for k, m in med.items():
        print(f"median {k}: {m['bytes_per_account']:,.0f} B/account, recovery {m['recovery_s']:.1f} s")
    result = {
        "benchmark": "memory per account and recovery time",
        "median": med,
        "runs": runs,
        "runs_per_config": {k: len(v) for k, v in runs.items()},
        "targets": {"bytes_per_account": 1024, "recovery_s_1M": 60},
    }
    print("wrote", write_result(name, result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
