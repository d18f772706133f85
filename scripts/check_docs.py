#!/usr/bin/env python3
"""Fails when a tracked file speaks of how the project was built instead of what it is.

    python scripts/check_docs.py [FILE ...]     (default: every file `git ls-files` lists)

Flags, as `file:line: message`:
- work-session numbers ("session" followed by a number, either case);
- references to a product contract outside this repository ("contract" followed by a section sign,
  or a path into a `shared` directory beside the checkout);
- commit hashes in prose: a token of 7-40 hex digits (with a letter and a digit) that names a commit of
  this repository, or that follows the word "commit".

Upgrade notes belong in CHANGELOG.md under a release; measurements in BENCHMARKS.md, RELIABILITY.md and
bench/ANALYSIS.md under a date. Exit status 1 when anything is flagged. `scripts/test.sh` runs it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_PREFIXES = ("bench/results/",)  # benchmark data files record the build they measured

RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[Ss]ession \d+"), "work-session number: describe the product as it is"),
    (re.compile(r"contract \u00a7"), "contract section reference: point to a page under docs/"),
    (re.compile(r"\.\./shared\b"), "path outside the repository: point to a page under docs/"),
    (re.compile(r"\bcommits? [0-9a-f]{7,40}\b"), "commit hash in prose: key it to a release or a date"),
)
HEX = re.compile(r"(?<![\w/.#:-])[0-9a-f]{7,40}(?![\w/-])")


def tracked_files(root: Path) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [root / p for p in out.decode().split("\0") if p]


def commits_among(tokens: Iterable[str], root: Path) -> set[str]:
    """The tokens that name a commit of the repository at `root` (one git call for all of them)."""
    tokens = sorted(set(tokens))
    if not tokens:
        return set()
    proc = subprocess.run(
        ["git", "cat-file", "--batch-check"],
        cwd=root,
        input="".join(f"{t}^{{commit}}\n" for t in tokens).encode(),
        capture_output=True,
    )
    if proc.returncode != 0:
        return set()
    answers = proc.stdout.decode().splitlines()
    return {t for t, a in zip(tokens, answers, strict=False) if not a.endswith(("missing", "ambiguous"))}


def _hex_candidates(line: str) -> list[str]:
    return [
        t for t in HEX.findall(line) if re.search(r"[a-f]", t) and re.search(r"\d", t) and not t.isdigit()
    ]


def scan(
    files: Iterable[Path], root: Path, is_commit: Callable[[Iterable[str]], set[str]] | None = None
) -> list[str]:
    """Problems as `path:line: message`, paths relative to `root` where possible."""
    problems: list[str] = []
    hex_at: list[tuple[str, int, str]] = []
    for path in files:
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = str(path)
        if rel.startswith(SKIP_PREFIXES) or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            for rx, message in RULES:
                m = rx.search(line)
                if m:
                    problems.append(f"{rel}:{n}: {message}: {m.group(0)!r}")
            hex_at += [(rel, n, t) for t in _hex_candidates(line)]
    found = (is_commit or (lambda ts: commits_among(ts, root)))(t for _, _, t in hex_at)
    problems += [f"{rel}:{n}: commit hash in prose: {t!r}" for rel, n, t in hex_at if t in found]
    return problems


def main(argv: list[str]) -> int:
    files = [Path(a).resolve() for a in argv] if argv else tracked_files(ROOT)
    problems = scan(files, ROOT)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} development-history reference(s) in tracked files", file=sys.stderr)
        return 1
    print(f"ok: {len(files)} files, no development-history references")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
