"""What choosing a keyed record's partition costs per key: aiokafka's DefaultPartitioner (pure-Python
murmur2) against runtime/kafka/partitioner.py, compiled and as pure Python, and against a bounded
key -> partition cache in front of aiokafka's (the alternative to compiling).

    python bench/partitioner_bench.py [--keys 2000] [--repeats 9] [--callgrind]

Keys are account ids as the simulator writes them (`acct-00042`, 10 bytes: what prompts and leads are
keyed by in the benchmark mixes) and 36-byte UUIDs. Each figure is the best of `--repeats` timeit runs
over all keys (the least disturbed run on a shared machine), per key, including the loop's own cost,
which is printed as `loop` (a call of the builtin len). The
cache figure is its best case: every key a hit.
`--callgrind`: instructions per key under valgrind's callgrind instead (each variant's loop inside one
functools.reduce call, the only one collected), a figure that repeats where time does not.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import timeit
import uuid
from collections.abc import Callable, Sequence
from functools import reduce
from pathlib import Path
from types import ModuleType
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from callgrind import collect, total

from upsell_triggers import native
from upsell_triggers.runtime.kafka import partitioner as imported

PARTITIONS = list(range(12))


def pure_source() -> ModuleType:
    """runtime/kafka/partitioner.py run by the interpreter, whatever the package imported."""
    spec = importlib.util.spec_from_file_location("partitioner_pure", native.source_of(imported.__name__))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cached(inner: Callable[[Any, Sequence[int], Sequence[int]], int], bound: int = 100_000) -> Any:
    """A key -> partition cache of at most `bound` keys (cleared when full) in front of `inner`, per
    partition count: what a cache saves at best, every key a hit."""
    cache: dict[tuple[bytes, int], int] = {}

    def partition(key: Any, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return inner(key, all_partitions, available)
        k = (key, len(all_partitions))
        p = cache.get(k)
        if p is None:
            if len(cache) >= bound:
                cache.clear()
            p = cache[k] = inner(key, all_partitions, available)
        return p

    return partition


def variants() -> dict[str, Callable[[bytes], object]]:
    pure = pure_source()
    default = DefaultPartitioner()
    cache = cached(default)
    ours, ours_pure = imported.partition, pure.partition
    parts = PARTITIONS
    return {
        "loop": len,
        "murmur2 aiokafka": aiokafka_murmur2,
        f"murmur2 ours ({native.mode()})": imported.murmur2,
        "murmur2 ours (pure)": pure.murmur2,
        "partitioner aiokafka": lambda k: default(k, parts, parts),
        f"partitioner ours ({native.mode()})": lambda k: ours(k, parts, parts),
        "partitioner ours (pure)": lambda k: ours_pure(k, parts, parts),
        "partitioner aiokafka + cache (hits)": lambda k: cache(k, parts, parts),
    }


def key_sets(n: int) -> dict[str, list[bytes]]:
    return {
        "account ids (10 B)": [f"acct-{i:05d}".encode() for i in range(n)],
        "uuids (36 B)": [str(uuid.UUID(int=i * 7919 + 1)).encode() for i in range(n)],
    }


def timed(n: int, repeats: int) -> None:
    for label, keys in key_sets(n).items():
        print(f"{label}, ns per key, best of {repeats}:")
        for name, f in variants().items():
            for k in keys:  # warm: the cache's keys, the pure module's code
                f(k)
            best = min(timeit.repeat(lambda f=f, keys=keys: [f(k) for k in keys], number=20, repeat=repeats))
            print(f"  {name:40s} {best / (20 * len(keys)) * 1e9:9.1f}")


def child(n: int) -> None:
    """Under callgrind: each variant's loop over each key set inside one reduce call."""
    for keys in key_sets(n).values():
        for f in variants().values():
            for k in keys:
                f(k)
            reduce(lambda _, k, f=f: f(k), keys, None)


def callgrind(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        collect(__file__, ["--child", "--keys", str(n)], Path(tmp) / "cg.out", env)
        i = 0
        for label in key_sets(n):
            print(f"{label}, instructions per key:")
            for name in variants():
                i += 1
                print(f"  {name:40s} {total(Path(tmp) / 'cg.out', i) / n:9.0f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=2_000)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.keys)
    elif a.callgrind:
        print(f"code: {native.mode()}")
        callgrind(a.keys)
    else:
        print(f"code: {native.mode()}")
        timed(a.keys, a.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
