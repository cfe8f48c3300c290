"""Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3",
SC'11; the Random123 library): a counter-based random generator, on NumPy or CuPy alike.

A counter-based generator is a function, not a state machine: block = philox4x32(counter, key)
turns a 128-bit counter (4 uint32 words) and a 64-bit key (2 words) into 4 random words. Block j
of a stream is philox(j, key), so any block can be made without the ones before it, in any order,
on any device, by any number of threads at once: that is what lets the CPU and the GPU draw the
same dropout mask, and a captured GPU graph draw new masks each replay by bumping one counter.

One round: two 32 x 32 -> 64-bit products split into high and low halves, mixed with the other
two words and the key:

    hi0, lo0 = mulhilo(M0, c0)             M0 = 0xD2511F53
    hi1, lo1 = mulhilo(M1, c2)             M1 = 0xCD9E8D57
    c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)

and between rounds the key takes a Weyl step, k += (0x9E3779B9, 0xBB67AE85) mod 2**32. Ten rounds.
Here the products go through uint64 arrays (exact on both devices), so the code is portable ``xp``.

The streams of ``minicct.random`` lay the counter out as: words 0-1 a 64-bit block number (the
stream's position, advanced by every draw), words 2-3 a 64-bit stream id (pieces of a step run in
threads or processes get their own). Numbers from the words, the same on every device:

    float32   (w >> 8) * 2**-24                            one word each: 24 bits, exact
    float64   ((w[2i] << 32 | w[2i+1]) >> 11) * 2**-53     two words each: 53 bits, exact
    keep      (w >> 8) >= ceil(float32(p) * 2**24)         = (float32 number >= p), as integers

``kernels/fast/philox.py`` computes the same words in place and in cache-sized chunks on NumPy;
``kernels/dispatch.py`` picks. A draw's first block is an argument, base + offset: the base a host
int or a device scalar (a captured graph keeps its counter in device memory), the offset a host int
(the draw's place within a captured step), so nothing here reads or moves a counter.
"""
from __future__ import annotations

import math

import numpy as np

from minicct.backend import get_array_module

M0, M1 = 0xD2511F53, 0xCD9E8D57          # the round multipliers
W0, W1 = 0x9E3779B9, 0xBB67AE85          # the Weyl key increments (golden ratio, sqrt(3) - 1)
ROUNDS = 10
MASK32 = 0xFFFFFFFF


def _mulhilo(xp, a, m):
    """a: uint32 array, m: a 32-bit constant -> (high, low) uint32 halves of the 64-bit a * m."""
    p = a.astype(xp.uint64) * xp.uint64(m)
    return (p >> xp.uint64(32)).astype(xp.uint32), p.astype(xp.uint32)   # astype keeps the low 32 bits


def philox4x32(ctr, key, rounds=ROUNDS):
    """ctr: (n, 4) uint32 counters, key: 2 ints (< 2**32) -> (n, 4) uint32 random words."""
    xp = get_array_module(ctr)
    c0, c1, c2, c3 = (ctr[:, i].astype(xp.uint32) for i in range(4))
    k0, k1 = int(key[0]) & MASK32, int(key[1]) & MASK32
    for r in range(rounds):
        if r:                                     # the key schedule: a Weyl step between rounds
            k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
        hi0, lo0 = _mulhilo(xp, c0, M0)
        hi1, lo1 = _mulhilo(xp, c2, M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ xp.uint32(k0), lo1, hi0 ^ c3 ^ xp.uint32(k1), lo0
    return xp.stack([c0, c1, c2, c3], axis=1)


def words_per_number(dtype):
    """32-bit words one uniform number takes: 1 for float32, 2 for float64."""
    return 2 if np.dtype(dtype) == np.float64 else 1


def blocks_for(count, dtype):
    """Philox blocks (4 words each) a draw of ``count`` numbers of ``dtype`` uses."""
    return -(-count * words_per_number(dtype) // 4)


def as_uint64(xp, v):
    """A block number as a 0-d uint64 array of xp: from a host int (mod 2**64), or a 0-d or
    1-element uint64 array already on the device (what a captured graph passes)."""
    if isinstance(v, (int, np.integer)):
        return xp.asarray(int(v) % 2**64, dtype=xp.uint64)
    return v.reshape(()).astype(xp.uint64, copy=False)


def host_int(v) -> int:
    """A block number as a Python int: a host int, or a NumPy 0-d / 1-element array."""
    return int(v) % 2**64 if isinstance(v, (int, np.integer)) else int(np.asarray(v).reshape(()))


def counters(xp, blocks, base, stream, offset=0):
    """(blocks, 4) uint32 counters: block numbers base + offset, base + offset + 1, ... in words
    0-1, the stream id in words 2-3. base: a host int or a uint64 device scalar (a captured graph
    passes its device counter: ``minicct.random.GraphStreams``), offset: a host int."""
    j = xp.arange(blocks, dtype=xp.uint64)
    j += as_uint64(xp, base)                                   # wraps mod 2**64
    j += xp.uint64(int(offset) % 2**64)
    ctr = xp.empty((blocks, 4), dtype=xp.uint32)
    ctr[:, 0] = j.astype(xp.uint32)
    ctr[:, 1] = (j >> xp.uint64(32)).astype(xp.uint32)
    ctr[:, 2] = stream & MASK32
    ctr[:, 3] = (stream >> 32) & MASK32
    return ctr


def words(xp, key, stream, base, count, offset=0):
    """The first ``count`` uint32 words of the blocks base + offset, ... of (key, stream)."""
    return philox4x32(counters(xp, -(-count // 4), base, stream, offset), key).reshape(-1)[:count]


def to_float32(w):
    """uint32 words -> float32 in [0, 1): the top 24 bits, times 2**-24 (exact)."""
    xp = get_array_module(w)
    return (w >> xp.uint32(8)).astype(xp.float32) * xp.float32(2.0 ** -24)


def to_float64(w):
    """2n uint32 words -> n float64 in [0, 1): the top 53 bits of each pair (first word high)."""
    xp = get_array_module(w)
    pairs = w.reshape(-1, 2).astype(xp.uint64)
    m = ((pairs[:, 0] << xp.uint64(32)) | pairs[:, 1]) >> xp.uint64(11)
    return m.astype(xp.float64) * 2.0 ** -53


def uniform(xp, key, stream, base, shape, dtype, offset=0):
    """Uniform [0, 1) numbers of ``shape`` and dtype (float32 or float64) from blocks base + offset, ..."""
    count = math.prod(shape)
    w = words(xp, key, stream, base, count * words_per_number(dtype), offset)
    return (to_float64(w) if np.dtype(dtype) == np.float64 else to_float32(w)).reshape(shape)


def keep_threshold(p, dtype):
    """The integer t with (number >= p) == (bits >= t), bits being the 24 (float32) or 53
    (float64) bits a number is made of. A float32 number is compared with float32(p), as NumPy
    compares a float32 array with a Python float."""
    if np.dtype(dtype) == np.float64:
        return math.ceil(float(p) * 2.0 ** 53)           # exact: scaling by a power of two
    return math.ceil(float(np.float32(p)) * 2.0 ** 24)


def keep_mask(xp, key, stream, base, shape, p, dtype, offset=0):
    """Booleans of ``shape``: True where uniform(...) >= p (probability 1 - p), compared as integers
    so that no float array is made. Uses the same blocks as uniform(xp, ..., shape, dtype)."""
    count = math.prod(shape)
    t = keep_threshold(p, dtype)
    if np.dtype(dtype) == np.float64:
        w = words(xp, key, stream, base, 2 * count, offset).reshape(-1, 2).astype(xp.uint64)
        bits = ((w[:, 0] << xp.uint64(32)) | w[:, 1]) >> xp.uint64(11)
    else:
        bits = words(xp, key, stream, base, count, offset) >> xp.uint32(8)
    return (bits >= t).reshape(shape)
