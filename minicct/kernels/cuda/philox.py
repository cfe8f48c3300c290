"""Philox4x32-10 on CuPy: one thread per block of 4 words, the round, the conversion and the keep
comparison in registers (one kernel, instead of the ~60 whole-array passes of the portable
version). Same functions, arguments and results as ``kernels/philox.py``; tested against it on a
GPU (``tests/test_philox.py``).

Block b of a draw is ``*base + offset + b``: the base is read from device memory (a 1-element
uint64 array; a host int is put there first, by a fill kernel), the offset is a plain argument. A
step captured as a CUDA graph passes its device counter as the base, which a kernel at the end of
the step advances, and each draw's place within the step as the offset, the same at every replay
(``minicct.random.GraphStreams``): every replay draws new numbers.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from minicct import backend
from minicct.kernels import philox as ref
from minicct.kernels.cuda._launch import THREADS, grid

SOURCE = r"""
typedef unsigned int u32;
typedef unsigned long long u64;

// Philox4x32-10 of the 128-bit counter (block j, stream id) under key (k0, k1): c <- 4 words.
__device__ __forceinline__ void philox(u32 c[4], u32 k0, u32 k1, u64 j, u64 stream) {
    c[0] = (u32)j; c[1] = (u32)(j >> 32); c[2] = (u32)stream; c[3] = (u32)(stream >> 32);
    #pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }      // the Weyl key schedule
        u64 p0 = (u64)0xD2511F53u * c[0];
        u64 p1 = (u64)0xCD9E8D57u * c[2];
        u32 n0 = (u32)(p1 >> 32) ^ c[1] ^ k0;
        u32 n2 = (u32)(p0 >> 32) ^ c[3] ^ k1;
        c[1] = (u32)p1; c[3] = (u32)p0; c[0] = n0; c[2] = n2;
    }
}

// One word a number: float32 = (w >> 8) * 2**-24; keep = (w >> 8) >= t.
extern "C" __global__ void philox_f32(const u64* base, u64 offset, u32 k0, u32 k1, u64 stream,
                                      long long n, float* out) {
    long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (4 * b >= n) return;
    u32 c[4];
    philox(c, k0, k1, *base + offset + (u64)b, stream);
    for (int i = 0; i < 4 && 4 * b + i < n; ++i) out[4 * b + i] = (float)(c[i] >> 8) * 5.9604644775390625e-08f;
}

extern "C" __global__ void philox_keep32(const u64* base, u64 offset, u32 k0, u32 k1, u64 stream,
                                      long long n, u32 t, bool* out) {
    long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (4 * b >= n) return;
    u32 c[4];
    philox(c, k0, k1, *base + offset + (u64)b, stream);
    for (int i = 0; i < 4 && 4 * b + i < n; ++i) out[4 * b + i] = (c[i] >> 8) >= t;
}

// Two words a number: m = (w[2i] << 32 | w[2i+1]) >> 11; float64 = m * 2**-53; keep = m >= t.
extern "C" __global__ void philox_f64(const u64* base, u64 offset, u32 k0, u32 k1, u64 stream,
                                      long long n, double* out) {
    long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (2 * b >= n) return;
    u32 c[4];
    philox(c, k0, k1, *base + offset + (u64)b, stream);
    for (int i = 0; i < 2 && 2 * b + i < n; ++i)
        out[2 * b + i] = (double)((((u64)c[2 * i] << 32) | c[2 * i + 1]) >> 11) * 1.1102230246251565e-16;
}

extern "C" __global__ void philox_keep64(const u64* base, u64 offset, u32 k0, u32 k1, u64 stream,
                                      long long n, u64 t, bool* out) {
    long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (2 * b >= n) return;
    u32 c[4];
    philox(c, k0, k1, *base + offset + (u64)b, stream);
    for (int i = 0; i < 2 && 2 * b + i < n; ++i)
        out[2 * b + i] = ((((u64)c[2 * i] << 32) | c[2 * i + 1]) >> 11) >= t;
}
"""


@functools.lru_cache(maxsize=None)
def _module():
    cp = backend.import_cupy()
    return cp.RawModule(code=SOURCE, options=("--std=c++14",))


def _base(cp, base):
    """The counter base as a 1-element uint64 device array (made from a host int by a fill kernel,
    not a copy)."""
    if isinstance(base, int):
        return cp.full((1,), base % 2**64, dtype=cp.uint64)
    return base.reshape(1).astype(cp.uint64, copy=False)


def _launch(name, xp, key, stream, base, offset, count, per_block, out, *extra):
    threads = -(-count // per_block)
    if threads:
        _module().get_function(name)(grid(threads), (THREADS,), (
            _base(xp, base), np.uint64(int(offset) % 2**64), np.uint32(int(key[0]) & ref.MASK32),
            np.uint32(int(key[1]) & ref.MASK32), np.uint64(int(stream) % 2**64), np.int64(count), *extra, out))
    return out


def uniform(xp, key, stream, base, shape, dtype, offset=0):
    """As ``ref.uniform``, on CuPy."""
    count = math.prod(shape)
    out = xp.empty(shape, dtype=dtype)
    if np.dtype(dtype) == np.float64:
        return _launch("philox_f64", xp, key, stream, base, offset, count, 2, out)
    return _launch("philox_f32", xp, key, stream, base, offset, count, 4, out)


def keep_mask(xp, key, stream, base, shape, p, dtype, offset=0):
    """As ``ref.keep_mask``, on CuPy."""
    count = math.prod(shape)
    out = xp.empty(shape, dtype=bool)
    t = ref.keep_threshold(p, dtype)
    if np.dtype(dtype) == np.float64:
        return _launch("philox_keep64", xp, key, stream, base, offset, count, 2, out, np.uint64(t))
    return _launch("philox_keep32", xp, key, stream, base, offset, count, 4, out, np.uint32(t))
