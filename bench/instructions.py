"""Instructions per event of the engine under callgrind: a deterministic figure, where CPU time on a
shared machine moves by tens of percent between runs.

    python bench/instructions.py [--events 50000] [--accounts 5000] [--src DIR] [--name NAME]
                                 [--ts-formats] [--records N] [FILE ...]

Writes the near-limits and typical workloads (bench/workloads.py) to a temporary directory (with
`--ts-formats`, the typical events twice: every `ts` as epoch ms, then as RFC 3339), or takes event
files, then runs one Python under valgrind's callgrind that sends every event of each file
through `Processor.handle` (the engine, its store and its metrics: what `replay` calls per record).
With `--records N`, through `Processor.handle_records` instead, N records a call, as the Kafka
worker's batch path hands them (each line a record with its account id as the key, offsets in
order): what an event costs the worker, which builds no Result per record. Only that is counted:
each file's loop runs inside one `functools.reduce` call, the one function callgrind collects
(`--toggle-collect`) and dumps a part after (`--dump-after`), so start-up, imports and reading the
file count nothing. Prints instructions per event per file, and writes them
to bench/results/instructions.json (or NAME.json with `--name`, so that a measurement of other files
or other code does not replace the reference one).

`--src`: the source tree to measure (default this checkout's); for an A/B against older code,
`git worktree add --detach /tmp/old main` and `--src /tmp/old/src`, on the same files. PYTHONHASHSEED
is fixed, so a run repeats to the instruction. valgrind must be installed; a run of 50,000 events
takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from functools import reduce
from pathlib import Path
from typing import Any

from callgrind import collect, total

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def child(files: list[str], per_call: int) -> None:
    """Under callgrind: each file's events through one Processor, inside one reduce call each: one
    handle() per line, or with `per_call` one handle_records() per that many records."""
    from upsell_triggers import gctune
    from upsell_triggers.engine.ruleset import load_ruleset
    from upsell_triggers.processor import MemoryStore, Processor

    rules = load_ruleset(ROOT / "rules")
    gctune.tune()
    for f in files:
        lines = [line for line in Path(f).read_bytes().splitlines() if line.strip()]
        proc = Processor(rules, store=MemoryStore(max_accounts=10_000_000))
        if per_call:
            through_records(proc, lines, per_call)
        else:
            handle = proc.handle
            reduce(lambda _, line: handle(line), lines, None)


def through_records(proc: Any, lines: list[bytes], per_call: int) -> None:
    """The lines as Kafka records of the events topic (built before the counted call), per_call of them
    to each handle_records() call, its outputs taken and cleared as the worker's batch loop does."""
    import time
    from types import SimpleNamespace

    import orjson

    from upsell_triggers.processor import EVENTS

    now = int(time.time() * 1000)  # the records' timestamp: the clock handle() reads
    records = [
        SimpleNamespace(key=orjson.loads(v)["account_id"].encode(), value=v, offset=i, timestamp=now)
        for i, v in enumerate(lines)
    ]
    runs = [records[i : i + per_call] for i in range(0, len(records), per_call)]
    decided: list[Any] = []
    rejected: list[Any] = []
    handle_records = proc.handle_records

    def batch(_: None, run: list[SimpleNamespace]) -> None:
        handle_records(run, EVENTS, decided, rejected)
        decided.clear()
        rejected.clear()

    reduce(batch, runs, None)


def measure(src: Path, files: list[Path], per_call: int = 0) -> tuple[dict[str, int], str]:
    """Instructions per event of each file, counted in `src`'s code, and the code's mode."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
        # Compile the sources first, so that no run counts writing .pyc files; and say whether the code
        # runs compiled (mypyc) or as pure Python.
        code = subprocess.run(
            [sys.executable, "-c", "import upsell_triggers as u, upsell_triggers.processor; print(u.MODE)"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        args = ["--child", "--records", str(per_call), *map(str, files)]
        collect(__file__, args, Path(tmp) / "cg.out", env)
        out = {}
        for i, f in enumerate(files, 1):
            events = sum(1 for line in f.read_bytes().splitlines() if line.strip())
            out[f.name] = round(total(Path(tmp) / "cg.out", i) / events)
        return out, code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help="event files (default: both workloads, written)")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--accounts", type=int, default=5_000)
    ap.add_argument("--src", type=Path, default=ROOT / "src")
    ap.add_argument("--name", default="instructions", help="results file name (bench/results/NAME.json)")
    ap.add_argument(
        "--ts-formats",
        action="store_true",
        help="the same typical events with every ts as epoch ms and as RFC 3339 (what decoding each costs)",
    )
    ap.add_argument(
        "--records",
        type=int,
        default=0,
        metavar="N",
        help="through handle_records, N records a call (the worker's batch path); 0: handle() per event",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child([str(f) for f in a.files], a.records)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        files = list(a.files)
        if not files:
            from workloads import encode, generate, write

            if a.ts_formats:  # the typical events, every ts as epoch ms, then every ts as RFC 3339
                docs = generate("typical", a.events, a.accounts)
                for fmt in ("epoch-ms", "rfc3339"):
                    path = Path(tmp) / f"typical-{fmt}.jsonl"
                    write(path, encode(docs, fmt))
                    files.append(path)
            for w in () if a.ts_formats else ("near-limits", "typical"):
                path = Path(tmp) / f"{w}.jsonl"
                write(path, encode(generate(w, a.events, a.accounts)))
                files.append(path)
        per_event, code = measure(a.src.resolve(), files, a.records)
    for name, n in per_event.items():
        print(f"{name}: {n:,} instructions per event")
    result = {
        "benchmark": "Processor.handle per event under callgrind (instructions)"
        if not a.records
        else f"Processor.handle_records per event, {a.records} records a call, under callgrind "
        "(instructions)",
        "instructions_per_event": per_event,
        "events": a.events if not a.files else None,
        "accounts": a.accounts if not a.files else None,
        "src": "src" if a.src.resolve() == (ROOT / "src").resolve() else str(a.src),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "code": code,  # compiled (native) or pure Python: docs/architecture.md#compiled-modules
        "command": " ".join(["python bench/instructions.py", *sys.argv[1:]]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
