"""The partition of a keyed output record (prompts, leads, dead letters): aiokafka's
DefaultPartitioner's choice, compiled.

Every prompt and lead record is partitioned by its key, through the producer's partitioner: send()
calls it, and so does compat.keyed_partitions for the runs that go through batch builders. aiokafka's
DefaultPartitioner hashes with a pure-Python murmur2 (~2.4 µs for an account id), about 2% of the
worker's samples on the near-limits mix. This module is the same function, compiled with the hot path
(native.NATIVE_MODULES), and the worker's producers use it through Faust's public
`producer_partitioner` setting (faust_app.py), which Faust hands to aiokafka's producers and
compat.transactional_producer copies: the same key goes to the same partition as with aiokafka's, so
the topics' layout does not change (tests/unit/test_partitioner.py holds it to aiokafka's).

Why the hash is written with i64 variables: mypyc holds an `int` as a tagged C integer but multiplies
two of them in C only when both are below 2**30 (CPyTagged_IsMultiplyOverflow is conservative), and
murmur2's constant M is above it, so every multiplication of an `int` version went through Python's
long arithmetic: 0.8 µs a key compiled, 1.3 µs with each product split so that it stays below 2**62.
A product of a 32-bit value and M is below 2**63, so with `i64` nothing overflows and every step is a
C operation (0.04 µs; bench/partitioner_bench.py). `i64` is imported for mypy only: in pure Python the
annotations are never evaluated (and an `i64` is an `int` anyway), so the package needs no
mypy_extensions at run time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from mypy_extensions import i64

SEED: Final = 0x9747B28C
M: Final = 0x5BD1E995
MASK: Final = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` (Java client's Utils.murmur2, as an unsigned 32-bit value): equal to
    aiokafka.partitioner.murmur2 for any bytes."""
    length: i64 = len(data)
    # Only the low 32 bits of h reach the result (each use multiplies and masks it first); masked here
    # so that h * M stays below 2**63.
    h: i64 = (SEED ^ length) & MASK
    end: i64 = length & ~3
    i: i64 = 0
    while i < end:
        k: i64 = data[i]
        b1: i64 = data[i + 1]
        b2: i64 = data[i + 2]
        b3: i64 = data[i + 3]
        k |= (b1 << 8) | (b2 << 16) | (b3 << 24)
        k = (k * M) & MASK
        k ^= k >> 24
        k = (k * M) & MASK
        h = ((h * M) & MASK) ^ k
        i += 4
    extra: i64 = length & 3
    if extra >= 3:
        t2: i64 = data[end + 2]
        h ^= t2 << 16
    if extra >= 2:
        t1: i64 = data[end + 1]
        h ^= t1 << 8
    if extra >= 1:
        t0: i64 = data[end]
        h ^= t0
        h = (h * M) & MASK
    h ^= h >> 13
    h = (h * M) & MASK
    h ^= h >> 15
    return h


def partition(
    key: bytes | bytearray | memoryview | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """aiokafka's partitioner interface (key, all partitions sorted by id, the available ones) and
    DefaultPartitioner's choice: a key's hash modulo the number of partitions, the same whether or not
    they are available; no key, a random one of the available partitions (of all if none is), by the
    same call to `random` as DefaultPartitioner's."""
    if key is None:
        if available:
            return random.choice(available)
        return random.choice(all_partitions)
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, (bytearray, memoryview)):  # its bytes, as aiokafka's murmur2 reads them
        data = bytes(memoryview(key).cast("B"))
    else:  # bytes(7) would be seven zero bytes: refuse what DefaultPartitioner refuses
        raise TypeError(f"a record key must be bytes, not {type(key).__name__}")
    return all_partitions[(murmur2(data) & 0x7FFFFFFF) % len(all_partitions)]
