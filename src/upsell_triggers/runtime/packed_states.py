"""The memory store's evicted account states, compressed: an example-rules state to a fifth.

An evicted state is held as bytes until its account's next event, and with the example rules those
bytes are most of what an account costs at rest (601 of ~850 resident bytes, bench/state_bench.py).
Compressed with Zstandard and a dictionary trained on this process's first SAMPLES packed states, they
are about 114 bytes: accounts' states share their layout, rule ids, metric and plan names, which the
dictionary holds once. The dictionary is taken once and never changed, so every packed state can be
read back by the process that packed it; packed states never leave it (the changelog and Faust's
recovery carry the state's own bytes, which stay plain). Before the dictionary exists, and when
compressing does not make a state smaller, the plain bytes are kept.

Why Zstandard (the `zstandard` package: python-zstandard, the bindings most of the ecosystem uses)
and not zlib's preset dictionary, which needs nothing installed: deflate sets its dictionary up again
for every state, and that was most of its cost. On the example rules' small accounts (one core, best
of 5; `python bench/pack_bench.py`) packing took ~11.7 us against ~1.3 us, reading back ~2.3 us
against ~0.7 us, for 129 against 114 bytes. That is what an eviction and an evicted account's next event pay,
so it decides what holding accounts as bytes costs (UPSELL_STATE_CACHE_ACCOUNTS, UPSELL_STATE_IDLE_S).
The frames leave out the magic number, checksum and dictionary id (the process knows its one
dictionary; a leading MARK says the bytes are packed) and keep the content size, so reading back is
one call into a reused context (a fresh context per call, as `backports.zstd`'s `decompress` makes,
took ~11 us).
"""

from __future__ import annotations

import zstandard

SAMPLES = 64  # states the dictionary is trained on (zstd's trainer refuses fewer than about 8)
DICT_BYTES = 2048  # more did not compress the example rules' states smaller
LEVEL = 1  # the fastest: the dictionary does most of the work

# The first byte of a packed state: every state version's bytes start a JSON or MessagePack array
# ("[", 0x90-0x9f, 0xdc, 0xdd), never a zero. A bytes subclass as the mark cost 16 bytes more each
# (the garbage collector tracks instances of a subclass).
MARK = b"\x00"
_FORMAT = zstandard.FORMAT_ZSTD1_MAGICLESS


class Packer:
    def __init__(self, samples: int = SAMPLES) -> None:
        self.samples = samples
        self._pending: list[bytes | bytearray | memoryview] = []  # what train_dictionary takes
        self.zdict: zstandard.ZstdCompressionDict | None = None
        self._compress = _unset
        self._decompress = _unset

    def pack(self, data: bytes) -> bytes:
        """data compressed after MARK, or data itself until the dictionary exists or when compressing
        does not make it smaller."""
        if self.zdict is None:
            self._pending.append(data)
            if len(self._pending) >= self.samples:
                self._set_dictionary(self._pending)
                self._pending = []
            return data
        packed = MARK + self._compress(data)
        return packed if len(packed) < len(data) else data

    def unpack(self, raw: bytes) -> bytes:
        """A state's own bytes, from what pack() returned or from plain bytes."""
        if raw[:1] != MARK:
            return raw
        return self._decompress(raw[1:])

    def _set_dictionary(self, samples: list[bytes | bytearray | memoryview]) -> None:
        """A trained dictionary; where the trainer refuses the samples (too few, or too alike), their
        own bytes as a raw-content dictionary, which compresses about as small and ~4x slower."""
        try:
            zdict = zstandard.train_dictionary(DICT_BYTES, samples, level=LEVEL)
        except zstandard.ZstdError:
            zdict = zstandard.ZstdCompressionDict(b"".join(samples), dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        zdict.precompute_compress(level=LEVEL)
        params = zstandard.ZstdCompressionParameters.from_level(
            LEVEL, format=_FORMAT, write_content_size=True, write_checksum=False, write_dict_id=False
        )
        self._compress = zstandard.ZstdCompressor(dict_data=zdict, compression_params=params).compress
        self._decompress = zstandard.ZstdDecompressor(dict_data=zdict, format=_FORMAT).decompress
        self.zdict = zdict


def _unset(data: bytes) -> bytes:
    raise RuntimeError("no state was packed yet")
