"""Matrix products on CuPy by a hand-written kernel: what a CUDA graph can capture.

CuPy refuses cuBLAS calls while a stream is being captured, so ``cupy.matmul`` cannot go into a
CUDA graph. This kernel does ``a @ b`` with NumPy's rules (batched, a 2-D operand broadcast over
the batch, 1-D operands as a row / a column) in float32 or float64. ``dispatch.matmul`` picks it
inside graph mode only (``backend.graph_mode``); cuBLAS stays the product everywhere else.

    a: (..., M, K), b: (..., K, N) -> (..., M, N)

Each operand is read through its strides, so a transposed view costs nothing: ``a @ b.T``,
``a.T @ b`` (what linear's and attention's backward need) are the same kernel with two strides
swapped. The tiling: a block of 256 threads computes a 64 x 64 tile of C; step by step it loads a
64 x 16 slice of A and a 16 x 64 slice of B into shared memory (each value read once from global
memory for 64 multiply-adds instead of once per multiply-add) and each thread accumulates a 4 x 4
block of C in registers. Tiles that stick out over an edge read zeros and write nothing, so any
M, N, K work. A product with few tiles and a long K (a weight gradient) is cut along K into pieces
computed side by side and then summed ("split-K"), so that it still fills the GPU.
"""
from __future__ import annotations

import numpy as np

from minicct import backend
from minicct.kernels.cuda._launch import ctype, module

BM, BN, BK = 64, 64, 16      # the tile of C a block computes, and the depth of one shared-memory step
THREADS = 256                # 16 x 16 threads, each a 4 x 4 block of the tile
MAX_GRID_Z = 65535           # CUDA's limit on gridDim.z: longer batches go in several launches

_GEMM_SRC = r"""
typedef %(T)s T;
#define BM 64
#define BN 64
#define BK 16

// C[b] = A[b] @ B[b] for b = b0 + blockIdx.z. A[b][m][k] is A[b * sab + m * sam + k * sak] (any
// strides: a transposed view or a broadcast operand, stride 0, needs no copy); C is contiguous
// (batch, M, N). Thread (ty, tx) of the 16 x 16 block owns rows ty + 16 i and columns tx + 16 j
// (i, j < 4) of the tile, so neighbouring threads write neighbouring columns.
extern "C" __global__ void gemm(const T* A, const T* B, T* C, const int M, const int N, const int K,
        const long long sab, const long long sam, const long long sak,
        const long long sbb, const long long sbk, const long long sbn, const long long b0) {
    __shared__ T As[BK][BM + 1];      // +1: threads reading a column do not hit one bank
    __shared__ T Bs[BK][BN + 1];
    const int tx = threadIdx.x %% 16, ty = threadIdx.x / 16;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const long long b = b0 + blockIdx.z;
    A += b * sab;
    B += b * sbb;
    C += b * (long long)M * N;
    T acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = (T)0;
    // Loads walk the operand's unit-stride axis with consecutive threads (coalesced reads).
    const bool a_rows = sam == 1, b_rows = sbk == 1;
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int e = threadIdx.x; e < BM * BK; e += blockDim.x) {
            int r = a_rows ? e %% BM : e / BK, c = a_rows ? e / BM : e %% BK;   // r: row m, c: k
            int m = m0 + r, k = k0 + c;
            As[c][r] = (m < M && k < K) ? A[m * sam + k * sak] : (T)0;
        }
        for (int e = threadIdx.x; e < BK * BN; e += blockDim.x) {
            int r = b_rows ? e %% BK : e / BN, c = b_rows ? e / BK : e %% BN;   // r: k, c: column n
            int k = k0 + r, n = n0 + c;
            Bs[r][c] = (k < K && n < N) ? B[k * sbk + n * sbn] : (T)0;
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            T a[4], bv[4];
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
            for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * bv[j];
        }
        __syncthreads();              // the next step overwrites the tiles
    }
    for (int i = 0; i < 4; ++i) {
        int m = m0 + ty + 16 * i;
        if (m >= M) break;
        for (int j = 0; j < 4; ++j) {
            int n = n0 + tx + 16 * j;
            if (n < N) C[(long long)m * N + n] = acc[i][j];
        }
    }
}
"""


def _batch_stride(a, batch):
    """a: (..., R, S) broadcast to ``batch`` + (R, S) -> (an array with the same values whose batch
    axes one element stride walks, that stride). Broadcast axes have stride 0; only a layout no
    single stride describes is copied."""
    cp = backend.import_cupy()
    a = cp.broadcast_to(a, batch + a.shape[-2:])
    axes = [(n, s // a.itemsize) for n, s in zip(batch, a.strides[:-2]) if n > 1]
    if not axes:
        return a, 0
    for (_, outer), (n, inner) in zip(axes, axes[1:]):
        if outer != inner * n:        # not one arithmetic walk: copy into a plain layout
            a = cp.ascontiguousarray(a)
            return a, a.shape[-2] * a.shape[-1]
    return a, axes[-1][1]


def _cdiv(a, b):
    return -(-a // b)


def split_k(M, N, K, nb):
    """How many pieces to cut K into: 1, unless the product has too few tiles to fill the GPU and
    a long K (a weight gradient: (OUT, IN) summed over N*L = 8,192 tokens is 4 tiles of 64 x 64,
    each walking all of K alone on 4 of ~130 multiprocessors). Each piece is at least SPLIT_MIN_K deep."""
    tiles = _cdiv(M, BM) * _cdiv(N, BN) * nb
    if tiles >= TARGET_TILES or K < 2 * SPLIT_MIN_K:
        return 1
    return max(1, min(_cdiv(TARGET_TILES, tiles), K // SPLIT_MIN_K))


TARGET_TILES = 256       # enough blocks for every multiprocessor of an H100/H200 (132) twice over
SPLIT_MIN_K = 256


def _launch(a, b, out, M, N, K, sab, sbb, nb):
    """out[i] = a[i] @ b[i] for i < nb, a[i] starting sab elements after a[i - 1] (b likewise)."""
    fn = module(_GEMM_SRC, ctype(out.dtype)).get_function("gemm")
    i64 = np.int64
    strides = [i64(s // a.itemsize) for s in (*a.strides[-2:], *b.strides[-2:])]
    for b0 in range(0, nb, MAX_GRID_Z):
        grid = (_cdiv(N, BN), _cdiv(M, BM), min(MAX_GRID_Z, nb - b0))
        fn(grid, (THREADS,), (a, b, out, np.int32(M), np.int32(N), np.int32(K), i64(sab), strides[0],
                              strides[1], i64(sbb), strides[2], strides[3], i64(b0)))


def matmul(a, b):
    """a: (..., M, K) or (K,), b: (..., K, N) or (K,) CuPy arrays -> a @ b, as ``cupy.matmul``
    (batch axes broadcast; a 1-D a is a row, a 1-D b a column, and their axis is dropped again)."""
    cp = backend.import_cupy()
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs arrays of at least 1 dimension, got shapes {a.shape} and {b.shape}")
    dtype = np.result_type(a.dtype, b.dtype)
    ctype(dtype)                                       # float32 / float64 only
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    (M, K), (K2, N) = a2.shape[-2:], b2.shape[-2:]
    if K != K2:
        raise ValueError(f"matmul shapes {a.shape} @ {b.shape} do not match: {K} != {K2}")
    batch = tuple(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]))
    a2, b2 = a2.astype(dtype, copy=False), b2.astype(dtype, copy=False)
    a2, sab = _batch_stride(a2, batch)
    b2, sbb = _batch_stride(b2, batch)
    nb = int(np.prod(batch, dtype=np.int64))
    pieces = split_k(M, N, K, nb) if nb == 1 else 1
    if M * N * nb == 0 or K == 0:
        out = cp.zeros(batch + (M, N), dtype=dtype)
    elif pieces == 1:
        out = cp.empty(batch + (M, N), dtype=dtype)
        _launch(a2, b2, out, M, N, K, sab, sbb, nb)
    else:
        # Split K: the full pieces of kc as a batch of products (batch strides kc columns of a, kc
        # rows of b), summed; what is left of K as one more product.
        kc = _cdiv(_cdiv(K, pieces), BK) * BK
        full = K // kc
        a2, b2 = a2.reshape(M, K), b2.reshape(K, N)
        parts = cp.empty((full, M, N), dtype=dtype)
        _launch(a2, b2, parts, M, N, kc, kc * (a2.strides[1] // a2.itemsize),
                kc * (b2.strides[0] // b2.itemsize), full)
        out = parts.sum(axis=0)
        if full * kc < K:
            rest = cp.empty((M, N), dtype=dtype)
            _launch(a2[:, full * kc:], b2[full * kc:], rest, M, N, K - full * kc, 0, 0, 1)
            out += rest
        out = out.reshape(batch + (M, N))
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out
