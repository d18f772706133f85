"""Instructions counted by valgrind's callgrind inside `functools.reduce` calls only: the benchmarks
that want a deterministic figure (bench/instructions.py, bench/partitioner_bench.py) put the code to
count in one reduce call per part, so that start-up, imports and set-up count nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def collect(script: str, args: list[str], out: Path, env: dict[str, str]) -> None:
    """Runs `python script args` under callgrind, collecting only inside reduce calls; a part is
    dumped after each call, to `out`.1, `out`.2, ... valgrind must be installed."""
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=functools_reduce",
            "--dump-after=functools_reduce",
            f"--callgrind-out-file={out}",
            sys.executable,
            script,
            *args,
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def total(out: Path, part: int) -> int:
    """The instructions of part `part` (1-based) of a collect() run."""
    text = Path(f"{out}.{part}").read_text()
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("totals:"))
