"""What holding an account as bytes costs: packing an evicted state and reading it back.

    python bench/pack_bench.py [--accounts 2000] [--repeats 5]

The states are expansion_bench's small accounts (a plan, seats readings, ten API calls by eight people
of three teams) under the example rules (every new kind) and under the shipped rules. For each, the
worker's packer (runtime/packed_states.py: Zstandard, a dictionary trained on the first states) against
zlib with a preset dictionary of the first four states (the packer before it, kept here as the
reference): mean packed bytes, and per state the time to pack it and to read it back (best of
--repeats passes over every state, one core), and the msgspec decode that follows a read, for scale.
An eviction pays encode + pack; an evicted account's next event pays unpack + decode. Writes
bench/results/pack.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from expansion_bench import examples_ruleset, replay, small_accounts
from kafkabench import write_result

from upsell_triggers.engine.ruleset import load_ruleset
from upsell_triggers.engine.statecodec import decode_state, encode_state
from upsell_triggers.runtime.packed_states import Packer

ROOT = Path(__file__).resolve().parent.parent


class ZlibPacker:
    """The previous packer: deflate (level 1) with a preset dictionary of the first four states."""

    def __init__(self, samples: int = 4) -> None:
        self.samples, self._pending, self.zdict = samples, [], b""

    def pack(self, data: bytes) -> bytes:
        if not self.zdict:
            self._pending.append(data)
            if len(self._pending) >= self.samples:
                self.zdict = b"".join(self._pending)[-32_768:]
            return data
        c = zlib.compressobj(1, zdict=self.zdict)
        packed = b"".join((b"\x00", c.compress(data), c.flush()))
        return packed if len(packed) < len(data) else data

    def unpack(self, raw: bytes) -> bytes:
        if raw[:1] != b"\x00":
            return raw
        d = zlib.decompressobj(zdict=self.zdict)
        return d.decompress(memoryview(raw)[1:]) + d.flush()


def best_us(f: Callable[[bytes], object], items: list[bytes], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in items:
            f(x)
        best = min(best, (time.perf_counter() - t0) / len(items))
    return best * 1e6


def measure(blobs: list[bytes], repeats: int) -> dict[str, object]:
    out: dict[str, object] = {
        "state_bytes_mean": round(sum(map(len, blobs)) / len(blobs), 1),
        "decode_us": round(best_us(decode_state, blobs, repeats), 2),
    }
    for name, packer in (("zstd", Packer()), ("zlib", ZlibPacker())):
        for b in blobs[:100]:  # the dictionary's samples
            packer.pack(b)
        rest = blobs[100:]
        packed = [packer.pack(b) for b in rest]
        assert [packer.unpack(p) for p in packed] == rest
        out[name] = {
            "packed_bytes_mean": round(sum(map(len, packed)) / len(packed), 1),
            "pack_us": round(best_us(packer.pack, rest, repeats), 2),
            "unpack_us": round(best_us(packer.unpack, packed, repeats), 2),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    lines = small_accounts(a.accounts)
    result: dict[str, object] = {"accounts": a.accounts, "repeats": a.repeats}
    for name, rules in (("examples", examples_ruleset()), ("shipped", load_ruleset(ROOT / "rules"))):
        states, _, _ = replay(rules, lines)
        r = result[name] = measure([encode_state(s) for s in states.values()], a.repeats)
        for packer in ("zstd", "zlib"):
            p = r[packer]  # type: ignore[index]
            print(
                f"{name} rules: {r['state_bytes_mean']:.0f} B state -> {packer} "
                f"{p['packed_bytes_mean']:.0f} B; pack {p['pack_us']:.2f} us, "
                f"unpack {p['unpack_us']:.2f} us (decode {r['decode_us']:.2f} us)"
            )
    print("wrote", write_result("pack", result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
