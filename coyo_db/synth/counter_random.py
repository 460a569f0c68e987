"""Counter-based randomness for the synthetic generator.

Every random value is a pure function of (seed, stream, key): a SplitMix64 finaliser over the
key. Any row can therefore be computed alone, in any batch and in any order, which is what makes
the generated data independent of batch size and lets a row copy another row's image or text
without generating that row. Also here: a keyed bijection of ``[0, n)`` (a Feistel network with
cycle walking) that shuffles the file order, and builders of fixed-width strings from numpy.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from coyo_db.id_lookup import mix64

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1
# The two hex digits of every byte value, as ASCII codes: shape (256, 2).
_HEX_PAIRS = np.frombuffer(b"".join(b"%02x" % i for i in range(256)), dtype=np.uint8).reshape(
    256, 2
)


def _mix_int(x: int) -> int:
    return int(mix64(np.array([x & _MASK64], dtype=np.uint64))[0])


class Streams:
    """Independent random streams of one seed, each addressed by a name and an integer key."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._salts: dict[tuple[str, int], np.uint64] = {}

    def salt(self, stream: str, sub: int = 0) -> np.uint64:
        cached = self._salts.get((stream, sub))
        if cached is None:
            name = zlib.crc32(stream.encode("utf-8"))
            value = _mix_int(_mix_int(self.seed) ^ (name << 20) ^ (sub << 52) ^ sub)
            cached = self._salts[(stream, sub)] = np.uint64(value)
        return cached

    def bits(self, stream: str, keys: np.ndarray, sub: int = 0) -> np.ndarray:
        """64 random bits per key."""
        return mix64(keys.astype(np.uint64, copy=False) * _GOLDEN + self.salt(stream, sub))

    def uniform(self, stream: str, keys: np.ndarray, sub: int = 0) -> np.ndarray:
        """Uniform floats in [0, 1) per key."""
        return (self.bits(stream, keys, sub) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def integers(self, stream: str, keys: np.ndarray, high: int, sub: int = 0) -> np.ndarray:
        """Integers in [0, high) per key (int64; the modulo bias is below 2**-40 here)."""
        return (self.bits(stream, keys, sub) % np.uint64(high)).astype(np.int64)

    def normal(self, stream: str, keys: np.ndarray, sub: int = 0) -> np.ndarray:
        """Standard normal floats per key (Box-Muller over two sub-streams)."""
        u1 = self.uniform(stream, keys, 2 * sub)
        u2 = self.uniform(stream, keys, 2 * sub + 1)
        return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)

    def choice(
        self, stream: str, keys: np.ndarray, weights: np.ndarray, sub: int = 0
    ) -> np.ndarray:
        """Indices into `weights` drawn with those (unnormalised) weights."""
        cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
        u = self.uniform(stream, keys, sub) * cdf[-1]
        return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)

    def permute(self, positions: np.ndarray, n: int) -> np.ndarray:
        """A keyed bijection of [0, n) applied to `positions` (4 Feistel rounds, cycle walking)."""
        bits = max(2, (n - 1).bit_length())
        bits += bits & 1
        half = np.uint64(bits // 2)
        mask = np.uint64((1 << (bits // 2)) - 1)
        salts = [self.salt("permute", r) for r in range(4)]

        def feistel(x: np.ndarray) -> np.ndarray:
            left, right = x >> half, x & mask
            for salt in salts:
                left, right = right, left ^ (mix64(right * _GOLDEN + salt) & mask)
            return (left << half) | right

        x = feistel(positions.astype(np.uint64))
        outside = np.flatnonzero(x >= np.uint64(n))
        while outside.size:
            x[outside] = feistel(x[outside])
            outside = outside[x[outside] >= np.uint64(n)]
        return x.astype(np.int64)


def fixed_width_strings(codes: np.ndarray) -> pa.StringArray:
    """A string array from an (n, width) uint8 array of ASCII codes, one row per string."""
    n, width = codes.shape
    data = np.ascontiguousarray(codes, dtype=np.uint8)
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def hex_strings(values: np.ndarray, digits: int = 16) -> pa.StringArray:
    """Lowercase hex of the low `digits` nibbles of uint64 `values`, zero-padded."""
    big_endian = np.ascontiguousarray(values, dtype=">u8").view(np.uint8).reshape(-1, 8)
    codes = _HEX_PAIRS[big_endian].reshape(-1, 16)
    return fixed_width_strings(codes[:, 16 - digits :])


def alphabet_strings(values: np.ndarray, alphabet: bytes, width: int) -> pa.StringArray:
    """`width` characters of `alphabet` per uint64 value (its base-len(alphabet) digits)."""
    table = np.frombuffer(alphabet, dtype=np.uint8)
    base = np.uint64(len(table))
    x = values.astype(np.uint64)
    codes = np.empty((len(x), width), dtype=np.uint8)
    for column in range(width):
        codes[:, column] = table[x % base]
        x = x // base
    return fixed_width_strings(codes)
