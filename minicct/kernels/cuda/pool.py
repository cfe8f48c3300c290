"""2-D max pooling on CuPy: one kernel each way (the reference: ``kernels/pool.py``).

Forward: one thread per output scans its window in row-major order, a later element winning only
when strictly greater (PyTorch's tie rule, as the reference). Backward: one thread per input
pixel gathers gy from every window that chose it, so no atomics and a deterministic sum.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minicct import backend
from minicct.kernels.cuda._launch import THREADS, ctype, grid, module
from minicct.kernels.pool import PoolGeometry, pool_geometry

_POOL_SRC = r"""
typedef %(T)s T;

// One thread per output: scan the window in row-major order; a later element wins only when
// strictly greater (PyTorch's tie rule); out-of-image cells are skipped (the implicit -inf).
extern "C" __global__ void maxpool_fwd(
        const T* x, T* y, int* arg, const int N, const int C, const int H, const int W,
        const int OH, const int OW, const int KH, const int KW, const int sh, const int sw,
        const int ph, const int pw, const long long sn, const long long sc, const long long sy,
        const long long sx) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)N * C * OH * OW) return;
    int ow = i %% OW; long long t = i / OW;
    int oh = t %% OH; t /= OH;
    int c = t %% C; int n = t / C;
    const T* xc = x + n * sn + c * sc;
    T best = -(T)__int_as_float(0x7f800000);
    int besti = 0;
    for (int a = 0; a < KH; ++a) {
        int h = oh * sh - ph + a;
        if (h < 0 || h >= H) continue;
        for (int b = 0; b < KW; ++b) {
            int w = ow * sw - pw + b;
            if (w < 0 || w >= W) continue;
            T v = xc[h * sy + w * sx];
            if (v > best) { best = v; besti = a * KW + b; }
            else if (v != v) best = v;           // NaN propagates, as np.maximum does
        }
    }
    y[i] = best;
    arg[i] = besti;
}

// One thread per input pixel: gather gy from every window that contains it and chose it
// (no atomics, so the result is deterministic).
extern "C" __global__ void maxpool_bwd(
        const T* gy, const int* arg, T* gx, const int N, const int C, const int H, const int W,
        const int OH, const int OW, const int KH, const int KW, const int sh, const int sw,
        const int ph, const int pw) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)N * C * H * W) return;
    int w = i %% W; long long t = i / W;
    int h = t %% H; long long nc = t / H;
    int lo_h = h + ph - KH + 1, lo_w = w + pw - KW + 1;
    int oh0 = lo_h <= 0 ? 0 : (lo_h + sh - 1) / sh, oh1 = min(OH - 1, (h + ph) / sh);
    int ow0 = lo_w <= 0 ? 0 : (lo_w + sw - 1) / sw, ow1 = min(OW - 1, (w + pw) / sw);
    T acc = 0;
    for (int oh = oh0; oh <= oh1; ++oh) {
        int a = h + ph - oh * sh;
        for (int ow = ow0; ow <= ow1; ++ow) {
            long long o = (nc * OH + oh) * OW + ow;
            if (arg[o] == a * KW + (w + pw - ow * sw)) acc += gy[o];
        }
    }
    gx[i] = acc;
}
"""


class CudaPoolCache(NamedTuple):
    arg: object             # (N, C, OH, OW) int32: the winning offset i * KW + j of each window
    x_shape: tuple
    g: PoolGeometry


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """x: (N, C, H, W) CuPy array (any strides) -> y: (N, C, OH, OW) (contiguous), cache."""
    g = pool_geometry(x, kernel_size, stride, padding)
    cp = backend.import_cupy()
    N, C, H, W = x.shape
    y = cp.empty((N, C, g.OH, g.OW), dtype=x.dtype)
    arg = cp.empty((N, C, g.OH, g.OW), dtype=np.int32)
    i32, i64 = np.int32, np.int64
    st = [i64(s // x.itemsize) for s in x.strides]
    fn = module(_POOL_SRC, ctype(x.dtype)).get_function("maxpool_fwd")
    fn(grid(y.size), (THREADS,), (x, y, arg, *map(i32, (N, C, H, W, g.OH, g.OW, g.KH, g.KW,
                                                        g.sh, g.sw, g.ph, g.pw)), *st))
    return y, CudaPoolCache(arg, x.shape, g)


def max_pool2d_backward(gy, cache):
    """gy: (N, C, OH, OW) -> gx: (N, C, H, W); each gy goes to its window's (first) maximum."""
    cp = backend.import_cupy()
    arg, (N, C, H, W), g = cache
    gy = cp.ascontiguousarray(gy)
    gx = cp.empty((N, C, H, W), dtype=gy.dtype)
    fn = module(_POOL_SRC, ctype(gy.dtype)).get_function("maxpool_bwd")
    fn(grid(gx.size), (THREADS,), (gy, arg, gx, *map(np.int32, (N, C, H, W, g.OH, g.OW, g.KH, g.KW,
                                                               g.sh, g.sw, g.ph, g.pw))))
    return gx
