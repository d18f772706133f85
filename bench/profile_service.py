"""py-spy profile of the service's hot path while it consumes a pre-produced topic.

    python bench/profile_service.py [--events 400000] [--accounts 40000] [--seconds 8] [--top 25]
                                    [--workload sim|typical|near-limits] [--native]

`--workload`: the simulator's plain mix (`sim`, the default), or one of bench/workloads.py's benchmark
mixes, which bench/throughput.py measures (`near-limits` emits about ten times the prompts of
`typical`, so it shows the per-prompt costs).

Prints the top frames by own samples and by inclusive samples, and writes the collapsed stacks to
bench/results/profile-<id>.txt (load into speedscope.app or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from kafkabench import (
    RESULTS,
    bootstrap,
    consumed,
    create_topics,
    delete_created_topics_at_exit,
    produce_fast,
    run_id,
    sim_records,
    start_service,
)
from workloads import WORKLOADS, records


def top_frames(collapsed: str, top: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    return own.most_common(top), incl.most_common(top), total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--accounts", type=int, default=40_000)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--workload", choices=("sim", *WORKLOADS), default="sim")
    ap.add_argument("--idle", action="store_true", help="sample idle threads too, per thread")
    ap.add_argument("--native", action="store_true", help="unwind compiled (C) frames too; slows the process")
    a = ap.parse_args()
    bs = bootstrap()
    delete_created_topics_at_exit(bs)
    rid = run_id()
    topic = f"prof-events-{rid}"
    asyncio.run(create_topics(bs, [topic], 4))
    if a.workload == "sim":
        recs: Iterable[tuple[bytes, bytes]] = sim_records(a.events, a.accounts)
    else:
        recs = records(a.workload, a.events, a.accounts)
    asyncio.run(produce_fast(bs, topic, recs, 4))
    topics = {
        "events": topic,
        "feedback": f"prof-fb-{rid}",
        "prompts": f"prof-p-{rid}",
        "dlq": f"prof-d-{rid}",
    }
    out = RESULTS / f"profile-{rid}.txt"
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        w = start_service(bs, Path(d), topics, f"prof-{rid}")
        try:
            while consumed(w) == 0:
                time.sleep(0.05)
            assert w.proc is not None
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "-p",
                    str(w.proc.pid),
                    "-d",
                    str(a.seconds),
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                    # --native shows the compiled modules' C functions; py-spy must pause the process
                    # to unwind them, so it cannot be combined with --nonblocking
                    *(["--native"] if a.native else ["--nonblocking"]),
                    "--threads",
                    *(["--idle"] if a.idle else []),
                ],
                check=True,
                capture_output=True,
            )
            print(f"consumed {consumed(w):,.0f} of {a.events:,}")
        finally:
            w.stop()
    own, incl, total = top_frames(out.read_text(), a.top)
    print(f"{total} samples; top frames by own time:")
    for f, n in own:
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("by inclusive time:")
    for f, n in incl:
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("stacks:", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
