"""The embedded runtime's input lines: read in chunks, the same lines as reading line by line."""

from __future__ import annotations

import asyncio
from pathlib import Path

from upsell_triggers.runtime.embedded import _lines


def read(path: Path) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [line async for line in _lines(str(path))]

    return asyncio.run(collect())


def test_lines_across_chunk_boundaries_are_whole(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    # lines longer than a chunk, empty lines, and a last line without its newline
    body = b"".join(b"x" * n + b"\n" for n in (0, 1, 70_000, 3, 65_535, 65_536, 0, 200_000, 7)) + b"end"
    path.write_bytes(body)
    with path.open("rb") as f:
        expected = f.readlines()
    assert read(path) == expected
    assert b"".join(read(path)) == body


def test_empty_input_has_no_lines(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert read(path) == []
