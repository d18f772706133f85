"""Service throughput A/B: the Kafka worker from two source trees, alternating, over the same topics.

    python bench/service_ab.py --name NAME --a-src DIR --b-src DIR
                               [--rules DIR|examples | --a-rules DIR --b-rules DIR]
                               [--a-label TEXT] [--b-label TEXT] [--pairs 4] [--events 300000]
                               [--accounts 30000] [--workloads typical near-limits]
                               [--a-set KEY=VALUE ...] [--b-set KEY=VALUE ...]

For a question like "does this change cost the service anything?": each side is a source tree (its
`src` directory, e.g. a `git worktree add --detach` of the code to compare) put first on the worker's
PYTHONPATH, and a rules directory. The interpreter and its dependencies are this one's for both sides,
so only the code under test differs (or, with `--a-set`/`--b-set`, a worker setting of the same tree:
`--b-set UPSELL_STATE_CACHE_ACCOUNTS=20000`); each side's `upsell_triggers.__file__`, printed by the same
interpreter with the same environment as its worker, is checked and recorded.

Each workload's topic (bench/workloads.py, 4 partitions) is produced once; every run then consumes it
all with a fresh app id, durable state and its own output topics, and is timed like bench/throughput.py
(kafkabench.wait_consumed: records consumed after the first count seen, until every changed state is
written). Pair i runs A then B when i is even and B then A when odd, so that a machine speeding up or
slowing down favours neither side; within a pair each workload's two runs follow each other (the
workloads' order alternates too). Before each run the CPU
pressure (/proc/pressure/cpu, `some` avg10: the share of time something waited for a core) and the load
average are recorded: on a shared machine they say how much of a difference the noise can explain.
Prints events/s per run, B / A per pair and the median per workload; writes bench/results/NAME.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from expansion_bench import examples_rule_files
from kafkabench import (
    ROOT,
    bootstrap,
    create_topics,
    delete_created_topics_at_exit,
    median,
    produce_fast,
    run_id,
    start_service,
    wait_consumed,
    write_result,
)
from workloads import WORKLOADS, records


def cpu_pressure() -> float | None:
    """`some` avg10 of /proc/pressure/cpu, in percent (None where the kernel does not report it)."""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some "):
                return float(dict(f.split("=") for f in line.split()[1:])["avg10"])
    except (OSError, KeyError, ValueError):
        pass
    return None


def side_env(src: Path, rules: Path) -> dict[str, str]:
    """The worker's environment for one side: its tree first on PYTHONPATH, its rules directory."""
    path = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "UPSELL_RULES_DIR": str(rules)}


def imported_from(env: dict[str, str]) -> str:
    """Where the worker's interpreter, in the worker's environment, imports upsell_triggers from."""
    out = subprocess.run(
        [sys.executable, "-c", "import upsell_triggers; print(upsell_triggers.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def run_service(
    bs: str, topic: str, n: int, tmp: Path, rid: str, env: dict[str, str]
) -> tuple[float, float, float, float]:
    """(events/s, prompts, seconds timed, records consumed before the timing began) of one worker
    consuming the whole topic with a fresh app id. The first batch is not timed (wait_consumed), so
    the topic must be several first batches long for a steady rate."""
    topics = {
        "events": topic,
        "feedback": f"bench-fb-{rid}",
        "prompts": f"bench-prompts-{rid}",
        "leads": f"bench-leads-{rid}",
        "dlq": f"bench-dlq-{rid}",
    }
    w = start_service(bs, tmp, topics, f"bench-ab-{rid}", env)
    try:
        first, done, at_first = wait_consumed([w], n, timeout=900)
        rate = (n - at_first) / (done - first)
        return rate, w.metric("upsell_prompts_emitted_total"), done - first, at_first
    finally:
        w.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="results file: bench/results/NAME.json")
    ap.add_argument("--a-src", type=Path, default=ROOT / "src", help="side A's src directory")
    ap.add_argument("--b-src", type=Path, default=ROOT / "src", help="side B's src directory")
    ap.add_argument(
        "--rules",
        type=Path,
        default=ROOT / "rules",
        help="rules directory of both sides; `examples`: the example expansion and pace rules (as "
        "bench/state_bench.py --rules examples composes them)",
    )
    ap.add_argument("--a-rules", type=Path, help="side A's rules directory (default --rules)")
    ap.add_argument("--b-rules", type=Path, help="side B's rules directory (default --rules)")
    ap.add_argument("--a-label", default="A")
    ap.add_argument("--b-label", default="B")
    ap.add_argument("--a-set", action="append", default=[], metavar="KEY=VALUE", help="a setting of side A")
    ap.add_argument("--b-set", action="append", default=[], metavar="KEY=VALUE", help="a setting of side B")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=30_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    a = ap.parse_args()
    if str(a.rules) == "examples":
        a.rules = Path(tempfile.mkdtemp(prefix="examples-rules-"))
        for p in examples_rule_files():
            (a.rules / p.name).write_text(p.read_text())

    sides: dict[str, dict[str, Any]] = {}
    for s, src, rules, label, settings in (
        ("A", a.a_src, a.a_rules or a.rules, a.a_label, a.a_set),
        ("B", a.b_src, a.b_rules or a.rules, a.b_label, a.b_set),
    ):
        src, rules = src.resolve(), rules.resolve()
        env = side_env(src, rules) | dict(kv.split("=", 1) for kv in settings)
        imported = imported_from(env)
        if not Path(imported).resolve().is_relative_to(src):
            sys.exit(f"side {s}: upsell_triggers imports from {imported}, not from {src}")
        sides[s] = {"label": label, "src": str(src), "rules": str(rules), "imported": imported, "env": env}
        sides[s]["settings"] = settings
        print(f"side {s} ({label}): upsell_triggers from {imported}; rules {rules}; {settings=}", flush=True)

    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    rid = run_id()
    topics = {w: f"bench-ab-events-{w}-{rid}" for w in a.workloads}
    asyncio.run(create_topics(bs, topics.values(), a.partitions))
    for w, topic in topics.items():
        got = asyncio.run(produce_fast(bs, topic, records(w, a.events, a.accounts), a.partitions))
        assert got == a.events, (got, a.events)
        print(f"produced {got:,} {w} events over {a.accounts:,} accounts to {topic}", flush=True)

    runs: list[dict[str, Any]] = []
    pairs: dict[str, list[dict[str, Any]]] = {w: [] for w in a.workloads}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for i in range(a.pairs):
            order = ("A", "B") if i % 2 == 0 else ("B", "A")
            got: dict[str, dict[str, float]] = {w: {} for w in a.workloads}
            for w in a.workloads if i % 2 == 0 else list(reversed(a.workloads)):
                for s in order:
                    psi, load = cpu_pressure(), os.getloadavg()[0]
                    t0 = time.time()
                    rate, prompts, timed, untimed = run_service(
                        bs, topics[w], a.events, tmp, f"{rid}-{i}-{s}-{w}", sides[s]["env"]
                    )
                    got[w][s] = rate
                    runs.append(
                        {
                            "pair": i + 1,
                            "side": s,
                            "label": sides[s]["label"],
                            "workload": w,
                            "events_per_s": rate,
                            "prompts": prompts,
                            "seconds_timed": timed,
                            "records_before_timing": untimed,
                            "cpu_pressure_avg10": psi,
                            "loadavg_1m": load,
                            "started": time.strftime("%H:%M:%S", time.gmtime(t0)),
                        }
                    )
                    print(
                        f"pair {i + 1} {s} ({sides[s]['label']}) {w:<12} {rate:>9,.0f} events/s "
                        f"over {timed:.1f} s ({prompts:,.0f} prompts; CPU pressure {psi}, load {load:.1f})",
                        flush=True,
                    )
            for w in a.workloads:
                ratio = got[w]["B"] / got[w]["A"]
                pairs[w].append({"pair": i + 1, "order": "".join(order), **got[w], "b_over_a": ratio})
                print(f"pair {i + 1} {w:<12} B / A {ratio:.3f}", flush=True)

    summary: dict[str, dict[str, Any]] = {}
    for w in a.workloads:
        ratios = [p["b_over_a"] for p in pairs[w]]
        summary[w] = {
            "median_b_over_a": median(ratios),
            "min_b_over_a": min(ratios),
            "max_b_over_a": max(ratios),
            "median_a": median([p["A"] for p in pairs[w]]),
            "median_b": median([p["B"] for p in pairs[w]]),
        }
        print(
            f"{w:<12} B / A per pair {', '.join(f'{r:.3f}' for r in ratios)}; median "
            f"{summary[w]['median_b_over_a']:.3f} ({summary[w]['median_b']:,.0f} vs "
            f"{summary[w]['median_a']:,.0f} events/s)"
        )
    pressures = [r["cpu_pressure_avg10"] for r in runs if r["cpu_pressure_avg10"] is not None]
    result = {
        "benchmark": "service throughput A/B: one Kafka worker from two source trees, alternating pairs",
        "events": a.events,
        "accounts": a.accounts,
        "partitions": a.partitions,
        "sides": {s: {k: v for k, v in side.items() if k != "env"} for s, side in sides.items()},
        "summary": summary,
        "pairs": pairs,
        "runs": runs,
        "cpu_pressure_avg10_range": [min(pressures), max(pressures)] if pressures else None,
    }
    print("wrote", write_result(a.name, result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
