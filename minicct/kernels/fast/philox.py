"""Philox4x32-10 on NumPy, fast: the same words as ``kernels/philox.py``, made in place, in chunks.

Same functions, arguments and results as the reference (the tests compare them word for word and
mask for mask); ``kernels/dispatch.py`` picks this one on NumPy in fast mode. What differs:

  * Layout. The two words a round multiplies, (c0, c2), live as the low halves of one (2, n)
    uint64 array A whose high halves stay 0, so ``A * (M0, M1)`` is one ufunc call that gives
    both 64-bit products at once, and the products' high and low 32-bit halves are read as
    uint32 views of that product array, with no shift, mask or cast. The other two words (c1, c3)
    are a (2, n) uint32 array B. The round is then three calls:
        P = A * M;   A.low = P.high[::-1] ^ B;   B = P.low[::-1] ^ k_next
    (the ``[::-1]`` is the round's word swap; the next round's key is folded into B when B is
    written, instead of a pass of its own).
  * Chunks of ``CHUNK`` blocks (~0.5 MB of buffers), so the thirty passes over a chunk read and
    write the cache, not main memory.
  * The keep mask compares the words with ceil(float32(p) * 2**24) * 2**8 as uint32: no float
    array at all, the same booleans as (number >= p).
"""
from __future__ import annotations

import math

import numpy as np

from minicct.kernels import philox as ref

CHUNK = 1 << 13        # blocks per chunk: A, P (2 x 8 KiB x 8 bytes each) and B fit in L2
_M = np.array([[ref.M0], [ref.M1]], np.uint64)
if not np.little_endian:    # pragma: no cover - the uint32 views of uint64 below assume it
    raise ImportError("kernels.fast.philox reads uint64 halves as uint32 views: little-endian only")


def _round_keys(key):
    """(ROUNDS, 2, 1) uint32: the key each round xors in (the Weyl schedule)."""
    k0, k1 = int(key[0]) & ref.MASK32, int(key[1]) & ref.MASK32
    keys = []
    for _ in range(ref.ROUNDS):
        keys.append((k0, k1))
        k0, k1 = (k0 + ref.W0) & ref.MASK32, (k1 + ref.W1) & ref.MASK32
    return np.array(keys, np.uint32).reshape(ref.ROUNDS, 2, 1)


def _chunks(key, stream, base, blocks):
    """Yield (first block, c0, c1, c2, c3) for the blocks base, ..., base + blocks - 1, a chunk at
    a time: c*: (n,) uint32 views, valid until the next chunk is made. base: a host int or a NumPy
    1-element array (a captured graph's counter, on NumPy in its stand-in)."""
    base = ref.host_int(base)
    K = _round_keys(key)
    n = min(CHUNK, blocks)
    A = np.zeros((2, n), np.uint64)           # low halves: c0, c2; high halves stay 0
    A32 = A.view(np.uint32).reshape(2, n, 2)  # [..., 0] low, [..., 1] high (little-endian)
    B = np.empty((2, n), np.uint32)           # c1, c3
    P = np.empty((2, n), np.uint64)
    P32 = P.view(np.uint32).reshape(2, n, 2)
    j = np.empty(n, np.uint64)
    for first in range(0, blocks, n):
        m = min(n, blocks - first)
        a, a32, b, p, p32 = A[:, :m], A32[:, :m], B[:, :m], P[:, :m], P32[:, :m]
        np.add(np.arange(m, dtype=np.uint64), np.uint64((base + first) % 2**64), out=j[:m])
        a32[0, :, 0] = j[:m]                  # block number, low word (astype truncates)
        b[0] = j[:m] >> np.uint64(32)         # block number, high word
        a32[1, :, 0] = stream & ref.MASK32    # stream id
        b[1] = (stream >> 32) & ref.MASK32
        b ^= K[0]
        for r in range(ref.ROUNDS):
            np.multiply(a, _M, out=p)
            np.bitwise_xor(p32[::-1, :, 1], b, out=a32[:, :, 0])
            if r + 1 < ref.ROUNDS:
                np.bitwise_xor(p32[::-1, :, 0], K[r + 1], out=b)
            else:
                b[...] = p32[::-1, :, 0]
        yield first, a32[0, :, 0], b[0], a32[1, :, 0], b[1]


def words(xp, key, stream, base, count, offset=0):
    """As ``ref.words``: the first ``count`` uint32 words of the blocks base + offset, ..."""
    blocks = -(-count // 4)
    out = np.empty((blocks, 4), np.uint32)
    for first, *c in _chunks(key, stream, ref.host_int(base) + int(offset), blocks):
        for i in range(4):
            out[first:first + len(c[0]), i] = c[i]
    return out.reshape(-1)[:count]


def uniform(xp, key, stream, base, shape, dtype, offset=0):
    """As ``ref.uniform`` (NumPy only)."""
    count = math.prod(shape)
    base = ref.host_int(base) + int(offset)
    if np.dtype(dtype) == np.float64:
        return ref.to_float64(words(xp, key, stream, base, 2 * count)).reshape(shape)
    blocks = -(-count // 4)
    out = np.empty((blocks, 4), np.float32)
    for first, *c in _chunks(key, stream, base, blocks):
        for i in range(4):
            o = out[first:first + len(c[0]), i]
            np.right_shift(c[i], np.uint32(8), out=c[i])
            np.multiply(c[i], np.float32(2.0 ** -24), out=o)    # exact: 24-bit integers in float32
    return out.reshape(-1)[:count].reshape(shape)


def keep_mask(xp, key, stream, base, shape, p, dtype, offset=0):
    """As ``ref.keep_mask`` (NumPy only): True where the number drawn is >= p."""
    count = math.prod(shape)
    base = ref.host_int(base) + int(offset)
    if np.dtype(dtype) == np.float64:        # gradient checks only: the reference is fast enough
        w = words(xp, key, stream, base, 2 * count).reshape(-1, 2).astype(np.uint64)
        bits = ((w[:, 0] << np.uint64(32)) | w[:, 1]) >> np.uint64(11)
        return (bits >= ref.keep_threshold(p, dtype)).reshape(shape)
    # (w >> 8) >= t  <=>  w >= t * 2**8; t = 2**24 (p rounds to 1) keeps nothing
    t = ref.keep_threshold(p, dtype) << 8
    blocks = -(-count // 4)
    out = np.empty((blocks, 4), bool)
    if t > ref.MASK32:
        out[...] = False
    else:
        t = np.uint32(t)
        for first, *c in _chunks(key, stream, base, blocks):
            for i in range(4):
                np.greater_equal(c[i], t, out=out[first:first + len(c[0]), i])
    return out.reshape(-1)[:count].reshape(shape)
