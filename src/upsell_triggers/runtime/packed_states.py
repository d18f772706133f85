"""The memory store's evicted account states, deflated: a third or less of their bytes.

An evicted state is held as bytes until its account's next event, and with the example rules those
bytes are most of what an account costs at rest (601 of ~850 resident bytes, bench/state_bench.py).
Deflated with a dictionary (zlib's preset dictionary, standard library), they are about 126 bytes:
accounts' states share their layout, rule ids, metric and plan names, which the dictionary holds once.
The dictionary is the first SAMPLES states this process packs, concatenated, taken once and never
changed, so every packed state can be read back by the process that packed it; packed states never
leave it (the changelog and Faust's recovery carry the state's own bytes, which stay plain). Before
the dictionary is complete, and when deflating does not make a state smaller, the plain bytes are kept.

Costs (bench/expansion_bench.py's small shape, one core): packing ~10-20 us, done once per eviction
(idle or over the bound), off the event's path; reading back ~5 us more than decoding plain bytes, once
per account that comes back after being evicted.
"""

from __future__ import annotations

import zlib

SAMPLES = 4  # states in the dictionary
LEVEL = 1  # zlib's fastest: the dictionary does most of the work


# The first byte of a packed state: every state version's bytes start a JSON or MessagePack array
# ("[", 0x90-0x9f, 0xdc, 0xdd), never a zero. A bytes subclass as the mark cost 16 bytes more each
# (the garbage collector tracks instances of a subclass).
MARK = b"\x00"


class Packer:
    def __init__(self, samples: int = SAMPLES) -> None:
        self.samples = samples
        self._pending: list[bytes] = []
        self.zdict: bytes | None = None

    def pack(self, data: bytes) -> bytes:
        """data deflated after MARK, or data itself until the dictionary is complete or when deflating
        does not make it smaller."""
        zdict = self.zdict
        if zdict is None:
            self._pending.append(data)
            if len(self._pending) >= self.samples:
                self.zdict = b"".join(self._pending)[-32_768:]  # zlib's window
                self._pending = []
            return data
        c = zlib.compressobj(LEVEL, zdict=zdict)
        packed = b"".join((MARK, c.compress(data), c.flush()))
        return packed if len(packed) < len(data) else data

    def unpack(self, raw: bytes) -> bytes:
        """A state's own bytes, from what pack() returned or from plain bytes."""
        if raw[:1] != MARK:
            return raw
        assert self.zdict is not None  # packed only once it is set
        d = zlib.decompressobj(zdict=self.zdict)
        return d.decompress(memoryview(raw)[1:]) + d.flush()
