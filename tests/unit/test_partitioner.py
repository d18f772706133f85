"""The compiled partitioner chooses what aiokafka's DefaultPartitioner chooses, for any key and any
partitions, and it is the one the worker's producers (Faust's and the exactly-once transactional ones)
partition their records with. Each property is checked on the module as imported (compiled where a
build is up to date) and on its source run as pure Python, so a run of either kind checks both."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from aiokafka.producer import sender
from hypothesis import given, settings
from hypothesis import strategies as st

from upsell_triggers import native
from upsell_triggers.runtime.faust_app import create_app
from upsell_triggers.runtime.kafka import compat
from upsell_triggers.runtime.kafka import partitioner as imported
from upsell_triggers.runtime.kafka.partitioner import partition
from upsell_triggers.settings import Settings

RULES = Path(__file__).resolve().parents[2] / "rules"
DEFAULT = DefaultPartitioner()


def _pure_source() -> ModuleType:
    """The module's .py run by the interpreter, whatever was imported above."""
    path = native.source_of(imported.__name__)
    spec = importlib.util.spec_from_file_location("partitioner_as_pure_python", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


IMPLEMENTATIONS = pytest.mark.parametrize("impl", [imported, _pure_source()], ids=["imported", "pure"])


@st.composite
def partition_lists(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """(all partitions sorted by id, the available ones in any order), as aiokafka's metadata gives
    them; ids need not be contiguous."""
    ids = sorted(draw(st.sets(st.integers(0, 10_000), min_size=1, max_size=64)))
    available = draw(st.lists(st.sampled_from(ids), unique=True))
    return ids, available


@IMPLEMENTATIONS
@settings(max_examples=2_000, deadline=None)
@given(data=st.binary(min_size=0, max_size=100))
def test_murmur2_equals_aiokafkas_for_any_bytes(impl: ModuleType, data: bytes) -> None:
    assert impl.murmur2(data) == aiokafka_murmur2(data)


@IMPLEMENTATIONS
def test_murmur2_equals_aiokafkas_at_every_length_and_extreme_bytes(impl: ModuleType) -> None:
    """Each length 0..100 (every remainder modulo 4), with all-zero, all-0xff and random bytes."""
    rng = random.Random(7)
    for n in range(101):
        for data in (bytes(n), b"\xff" * n, rng.randbytes(n)):
            assert impl.murmur2(data) == aiokafka_murmur2(data), (n, data)


@IMPLEMENTATIONS
def test_murmur2_is_kafkas(impl: ModuleType) -> None:
    """The Java client's own test vectors (UtilsTest.testMurmur2, signed 32-bit there)."""
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, signed in vectors.items():
        assert impl.murmur2(data) == signed & 0xFFFFFFFF, data


@IMPLEMENTATIONS
@settings(max_examples=1_000, deadline=None)
@given(key=st.binary(min_size=0, max_size=100), partitions=partition_lists())
def test_a_keyed_record_goes_where_aiokafkas_default_partitioner_sends_it(
    impl: ModuleType, key: bytes, partitions: tuple[list[int], list[int]]
) -> None:
    all_partitions, available = partitions
    expected = DEFAULT(key, all_partitions, available)
    assert impl.partition(key, all_partitions, available) == expected
    assert impl.partition(bytearray(key), all_partitions, available) == expected
    assert impl.partition(memoryview(key), all_partitions, available) == expected
    assert impl.partition(key, tuple(all_partitions), ()) == expected  # availability does not move a key


@IMPLEMENTATIONS
def test_a_key_of_another_type_is_refused_not_hashed_as_something_else(impl: ModuleType) -> None:
    """bytes(7) is seven zero bytes and a memoryview of ints has more bytes than items: neither may pass
    for a key (aiokafka's partitioner refuses an int)."""
    with pytest.raises(TypeError):
        impl.partition(7, [0, 1, 2], [0, 1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        DEFAULT(7, [0, 1, 2], [0, 1, 2])
    words = memoryview(b"\1\0\0\0\2\0\0\0").cast("I")
    parts = list(range(12))
    assert impl.partition(words, parts, parts) == DEFAULT(bytes(words), parts, parts)


@IMPLEMENTATIONS
@settings(max_examples=300, deadline=None)
@given(partitions=partition_lists(), seed=st.integers(0, 2**32))
def test_without_a_key_the_same_random_draw_as_aiokafkas(
    impl: ModuleType, partitions: tuple[list[int], list[int]], seed: int
) -> None:
    """A random available partition (any partition when none is available), by the same call to the
    `random` module: with the same state, the same choice."""
    all_partitions, available = partitions
    state = random.getstate()
    try:
        random.seed(seed)
        expected = [DEFAULT(None, all_partitions, available) for _ in range(5)]
        random.seed(seed)
        got = [impl.partition(None, all_partitions, available) for _ in range(5)]
    finally:
        random.setstate(state)
    assert got == expected
    assert set(got) <= set(available or all_partitions)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_the_workers_producers_partition_with_it(
    monkeypatch: pytest.MonkeyPatch, guarantee: str
) -> None:
    """Faust's producer hands it to the aiokafka producer it starts (the one prompts, leads and dead
    letters are sent through, and whose partitioner compat.keyed_partitions calls for batched runs), and
    the worker's transactional producer of exactly_once gets it too."""
    monkeypatch.setenv("UPSELL_PROCESSING_GUARANTEE", guarantee)
    # exactly_once sets aiokafka's transaction retry wait, a module constant: restored afterwards.
    monkeypatch.setattr(sender, "BACKOFF_OVERRIDE", sender.BACKOFF_OVERRIDE)
    s = Settings(
        kafka_bootstrap_servers="127.0.0.1:9", rules_dir=str(RULES), app_id=f"partitioner-{guarantee}"
    )
    app = create_app(s).app
    assert app.conf.producer_partitioner is partition
    faust_producer = app.producer
    assert faust_producer.partitioner is partition
    aiokafka_producer = faust_producer._new_producer()  # what Faust's producer starts with
    transactional = compat.transactional_producer(app, f"{s.app_id}-eos-0", 10.0, lambda: (1, "m", None))
    try:
        assert aiokafka_producer._partitioner is partition
        assert transactional._partitioner is partition
    finally:
        for p in (aiokafka_producer, transactional):
            await p.stop()  # never started: only closes its client
