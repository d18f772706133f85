"""Benchmark 4: memory per active account, and recovery time of a restarted worker.

    python bench/state_bench.py [--accounts 100000 1000000] [--stores memory rocksdb] [--runs 3]

For each account count: produce 2 events per account (plan_changed + a seats reading), let one worker
apply them all (committed offsets at the end), and read its resident memory against the same worker
idle on an empty topic (per-account = difference / accounts), at rest after the load (the worker
gives freed memory back to the OS within 10 s of catching up) and at its peak (VmHWM). Then stop it
cleanly and start a new one on the same data directory: recovery time = start until /readyz answers 200 (state
restored from the changelog, or from RocksDB files plus the changelog tail), and its memory per account
at rest after that (read at rest, not at /readyz, when the restore's fetches are not freed yet: ~570 B
at 100k accounts against ~400 B at rest). Then the same after a
SIGKILL, which adds the wait for the dead member's session timeout (UPSELL_SESSION_TIMEOUT_S).
Writes bench/results/state.json.
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


def events(accounts: int) -> Iterator[tuple[bytes, bytes]]:
    ts = int(time.time() * 1000) - 3_600_000
    for i in range(accounts):
        a = f"acct-{i:07d}"
        yield event(a, f"p{i}", ts, type="plan_changed", plan="team")
        yield event(a, f"s{i}", ts + 1, type="usage", metric="seats", value=5 + i % 20)


def rss_at_rest(pid: int) -> int:
    """RSS once the worker is at rest after the load: it gives freed memory back to the OS at most
    once per UPSELL_MEMORY_RELEASE_INTERVAL_S (10 s) when caught up, so the last release comes at the
    latest ~10 s after the load ended."""
    time.sleep(12)
    return rss_kib(pid)


def one(bs: str, tmp: Path, accounts: int, store: str, rid: str) -> dict[str, float]:
    topics = {k: f"st-{k}-{rid}" for k in ("events", "feedback", "prompts", "dlq")}
    asyncio.run(create_topics(bs, topics.values(), 4))
    app_id = f"st-{rid}"
    env = {
        "UPSELL_STORE": f"{store}://",
        "UPSELL_DATA_DIR": str(tmp / f"data-{rid}"),
        "UPSELL_COMMIT_INTERVAL_S": "0.5",
    }
    w = start_service(bs, tmp, topics, app_id, env)
    try:
        w.wait_ready(300)
        time.sleep(3)
        assert w.proc is not None
        idle = rss_kib(w.proc.pid)
        asyncio.run(produce_fast(bs, topics["events"], events(accounts), 4))
        asyncio.run(wait_committed(bs, app_id, topics["events"], timeout=1800))
        loaded = rss_at_rest(w.proc.pid)
        peak = hwm_kib(w.proc.pid)
        w.stop()  # clean stop: leaves the group
        t = time.monotonic()
        w2 = start_service(bs, tmp, topics, app_id, env)
        try:
            w2.wait_ready(900)
            recovery = time.monotonic() - t
            assert w2.proc is not None
            recovered = rss_at_rest(w2.proc.pid)
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
    a = ap.parse_args()
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.runs):
            for n in a.accounts:
                for store in a.stores:
                    r = one(bs, Path(d), n, store, f"{run_id()}-{n}-{store}")
                    runs.setdefault(f"{store}/{n}", []).append(r)
                    print(
                        f"run {i + 1}: {store:8s} {n:>9,} accounts: {r['bytes_per_account']:,.0f} B/acct"
                        f" (peak {r['peak_bytes_per_account']:,.0f}) "
                        f"(RSS {r['rss_idle_mib']:.0f} -> {r['rss_loaded_mib']:.0f} MiB), recovery "
                        f"{r['recovery_s']:.1f} s, after SIGKILL {r['recovery_after_sigkill_s']:.1f} s "
                        f"(then {r['bytes_per_account_after_recovery']:,.0f} B/acct at rest)",
                        flush=True,
                    )
    # Merge with earlier runs of other account counts/stores (e.g. 1M measured separately from 100k).
    prev = RESULTS / "state.json"
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
    print("wrote", write_result("state", result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
