"""Instructions per event of the engine under callgrind: a deterministic figure, where CPU time on a
shared machine moves by tens of percent between runs.

    python bench/instructions.py [--events 50000] [--accounts 5000] [--src DIR] [FILE ...]

Writes the near-limits and typical workloads (bench/workloads.py) to a temporary directory, or takes
event files, then runs one Python under valgrind's callgrind that sends every event of each file
through `Processor.handle` (the engine, its store and its metrics: what `replay` and the worker call per
record). Only that is counted: each file's loop runs inside one `functools.reduce` call, the one
function callgrind collects (`--toggle-collect`) and dumps a part after (`--dump-after`), so start-up,
imports and reading the file count nothing. Prints instructions per event per file, and writes them
to bench/results/instructions.json.

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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def child(files: list[str]) -> None:
    """Under callgrind: each file's events through one Processor, inside one reduce call each."""
    from upsell_triggers import gctune
    from upsell_triggers.engine.ruleset import load_ruleset
    from upsell_triggers.processor import MemoryStore, Processor

    rules = load_ruleset(ROOT / "rules")
    gctune.tune()
    for f in files:
        lines = Path(f).read_bytes().splitlines()
        handle = Processor(rules, store=MemoryStore(max_accounts=10_000_000)).handle
        reduce(lambda _, line: handle(line), lines, None)


def measure(src: Path, files: list[Path]) -> dict[str, int]:
    """Instructions per event of each file, counted in `src`'s code."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(src), "PYTHONHASHSEED": "0"}
        # Compile the sources first, so that no run counts writing .pyc files.
        subprocess.run([sys.executable, "-c", "import upsell_triggers.processor"], env=env, check=True)
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=functools_reduce",
                "--dump-after=functools_reduce",
                f"--callgrind-out-file={tmp}/cg.out",
                sys.executable,
                __file__,
                "--child",
                *map(str, files),
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        out = {}
        for i, f in enumerate(files, 1):
            text = Path(f"{tmp}/cg.out.{i}").read_text()
            total = next(int(line.split()[1]) for line in text.splitlines() if line.startswith("totals:"))
            events = sum(1 for line in f.read_bytes().splitlines() if line.strip())
            out[f.name] = round(total / events)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help="event files (default: both workloads, written)")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--accounts", type=int, default=5_000)
    ap.add_argument("--src", type=Path, default=ROOT / "src")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child([str(f) for f in a.files])
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        files = list(a.files)
        if not files:
            from workloads import encode, generate, write

            for w in ("near-limits", "typical"):
                path = Path(tmp) / f"{w}.jsonl"
                write(path, encode(generate(w, a.events, a.accounts)))
                files.append(path)
        per_event = measure(a.src.resolve(), files)
    for name, n in per_event.items():
        print(f"{name}: {n:,} instructions per event")
    result = {
        "benchmark": "Processor.handle per event under callgrind (instructions)",
        "instructions_per_event": per_event,
        "events": a.events if not a.files else None,
        "accounts": a.accounts if not a.files else None,
        "src": "src" if a.src.resolve() == (ROOT / "src").resolve() else str(a.src),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "command": " ".join(["python bench/instructions.py", *sys.argv[1:]]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "instructions.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
