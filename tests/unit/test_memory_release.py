"""When a worker gives freed memory back to the OS: caught up after work, at most once per interval."""

import subprocess
import sys

import pytest

from upsell_triggers.runtime.memory_release import ReleasePolicy, malloc_trim, pin_mmap_threshold


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_releases_when_every_partition_is_caught_up_after_work() -> None:
    r = ReleasePolicy(10, Clock())
    assert not r.due()  # nothing handled yet
    r.on_lag("p0", 5_000)
    r.on_lag("p1", 0)
    assert not r.due()  # p0 behind
    r.on_lag("p0", 0)
    assert r.due()
    assert not r.due()  # nothing handled since


def test_at_most_once_per_interval_and_the_end_of_a_load_is_not_lost() -> None:
    clock = Clock()
    r = ReleasePolicy(10, clock)
    r.on_lag("p0", 0)
    assert r.due()
    clock.t += 4
    r.on_lag("p0", 0)  # the load's last batch, 4 s after the last release
    assert not r.due()
    clock.t += 6
    assert r.due()  # asked again by the timer once the interval has passed


def test_revoked_partition_no_longer_holds_it_back() -> None:
    r = ReleasePolicy(10, Clock())
    r.on_lag("p0", 0)
    r.on_lag("p1", 10)
    assert not r.due()
    r.forget("p1")
    assert r.due()


def test_a_restored_changelog_is_released_once_recovery_left_nothing_behind() -> None:
    r = ReleasePolicy(10, Clock())
    r.on_restored()  # a restart: records restored, no event handled yet
    assert r.due()
    assert not r.due()
    r.on_lag("p0", 3)  # events arrived during recovery, their partition is still behind
    r.on_restored()
    assert not r.due()


def test_zero_interval_never_releases() -> None:
    r = ReleasePolicy(0, Clock())
    r.on_lag("p0", 0)
    assert not r.due()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_malloc_trim_lowers_resident_memory_after_a_freed_heap() -> None:
    release = malloc_trim()
    assert release is not None  # the CI and the Docker image run on glibc

    def rss() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    # 4,000 blocks of 16 KiB (above pymalloc's 512 B, below glibc's mmap threshold: on the heap),
    # all freed but one allocated after them, which keeps glibc from trimming the heap by itself.
    blocks = [bytearray(16 * 1024) for _ in range(4_000)]
    keep = bytearray(16 * 1024)
    del blocks
    before = rss()
    release()
    after = rss()
    assert before - after > 32 * 1024 * 1024, (before, after)
    del keep


_FREED_BUFFERS = """
import sys
from upsell_triggers.runtime.memory_release import pin_mmap_threshold
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
if sys.argv[1] == "pin":
    assert pin_mmap_threshold()
b = bytearray(4 << 20); del b  # a freed fetch-sized block: glibc's dynamic threshold rises to 4 MiB
blocks, keep = [], []
for _ in range(200):
    blocks.append(bytearray(256 * 1024))  # 50 MiB of fetch-like buffers
    keep.append(bytearray(1024))  # long-lived, above pymalloc's 512 B: between them on the heap
before = rss()
del blocks
print((before - rss()) // (1 << 20))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
@pytest.mark.parametrize("mode, returned", [("pin", True), ("default", False)])
def test_pinned_mmap_threshold_returns_freed_buffers_without_a_trim(mode: str, returned: bool) -> None:
    """In a fresh process: glibc's own threshold puts buffers allocated after a larger one was freed on
    the heap, where memory allocated between them keeps them resident; pinned, each is unmapped."""
    out = subprocess.run(
        [sys.executable, "-c", _FREED_BUFFERS, mode], capture_output=True, text=True, check=True
    )
    freed_mib = int(out.stdout)
    assert (freed_mib >= 45) is returned, freed_mib


def test_a_threshold_set_in_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not pin_mmap_threshold()
