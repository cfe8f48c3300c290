"""Layer norm on CuPy: one warp per row, each way (the reference: ``kernels/norm.py``).

Same arguments, checks and cache as the reference: the forward kernel writes xhat and rstd as the
reference keeps them; backward computes gx in one kernel and gw, gb as the reference does.
"""
from __future__ import annotations

import math

import numpy as np

from minicct import backend
from minicct.kernels._util import column_sums
from minicct.kernels.cuda._launch import THREADS, ctype, grid, module
from minicct.kernels.norm import LayerNormCache, check_layer_norm

_LN_SRC = r"""
typedef %(T)s T;

__device__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per row of D values: mean, then variance around it (two passes over registers/L1,
// numerically as the portable version), then normalise, scale, shift.
extern "C" __global__ void layernorm_fwd(
        const T* x, const T* w, const T* b, T* y, T* xhat, T* rstd, const long long R,
        const int D, const T eps, const int has_w, const int has_b) {
    long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (row >= R) return;                         // the whole warp leaves together
    const T* xr = x + row * D;
    T s = 0;
    for (int j = lane; j < D; j += 32) s += xr[j];
    T mu = warp_sum(s) / D;
    T v = 0;
    for (int j = lane; j < D; j += 32) { T d = xr[j] - mu; v += d * d; }
    T rs = rsqrt(warp_sum(v) / D + eps);
    for (int j = lane; j < D; j += 32) {
        T h = (xr[j] - mu) * rs;
        xhat[row * D + j] = h;
        T o = has_w ? h * w[j] : h;
        y[row * D + j] = has_b ? o + b[j] : o;
    }
    if (lane == 0) rstd[row] = rs;
}

// gx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = gy * w, one warp per row.
extern "C" __global__ void layernorm_bwd(
        const T* gy, const T* xhat, const T* rstd, const T* w, T* gx, const long long R,
        const int D, const int has_w) {
    long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (row >= R) return;
    long long base = row * D;
    T s1 = 0, s2 = 0;
    for (int j = lane; j < D; j += 32) {
        T g = has_w ? gy[base + j] * w[j] : gy[base + j];
        s1 += g;
        s2 += g * xhat[base + j];
    }
    T m1 = warp_sum(s1) / D, m2 = warp_sum(s2) / D, rs = rstd[row];
    for (int j = lane; j < D; j += 32) {
        T g = has_w ? gy[base + j] * w[j] : gy[base + j];
        gx[base + j] = rs * (g - m1 - xhat[base + j] * m2);
    }
}
"""


def layer_norm_forward(x, normalized_shape, w=None, b=None, eps=1e-5):
    """x: (..., *normalized_shape) CuPy array; w, b: normalized_shape or None -> y, cache."""
    D = math.prod(check_layer_norm(x, normalized_shape, w, b))
    cp = backend.import_cupy()
    x2 = cp.ascontiguousarray(x).reshape(-1, D)
    R = x2.shape[0]
    y, xhat = cp.empty_like(x2), cp.empty_like(x2)
    rstd = cp.empty((R, 1), dtype=x.dtype)
    wr = x2 if w is None else cp.ascontiguousarray(w, dtype=x.dtype).reshape(D)   # dummy when absent
    br = x2 if b is None else cp.ascontiguousarray(b, dtype=x.dtype).reshape(D)
    fn = module(_LN_SRC, ctype(x.dtype)).get_function("layernorm_fwd")
    fn(grid(R * 32), (THREADS,), (x2, wr, br, y, xhat, rstd, np.int64(R), np.int32(D),
                                  x.dtype.type(eps), np.int32(w is not None), np.int32(b is not None)))
    return y.reshape(x.shape), LayerNormCache(xhat, rstd, w, None if b is None else b.shape, x.shape)


def layer_norm_backward(gy, cache):
    """gy: shape of x -> (gx: shape of x, gw: w's shape or None, gb: or None)."""
    cp = backend.import_cupy()
    xhat, rstd, w, b_shape, x_shape = cache
    R, D = xhat.shape
    gy2 = gy.reshape(R, D)
    gw = column_sums(gy2 * xhat).reshape(w.shape) if w is not None else None
    gb = column_sums(gy2).reshape(b_shape) if b_shape is not None else None
    gy2 = cp.ascontiguousarray(gy2, dtype=xhat.dtype)
    gx = cp.empty_like(gy2)
    wr = gy2 if w is None else cp.ascontiguousarray(w, dtype=xhat.dtype).reshape(D)
    fn = module(_LN_SRC, ctype(xhat.dtype)).get_function("layernorm_bwd")
    fn(grid(R * 32), (THREADS,), (gy2, xhat, rstd, wr, gx, np.int64(R), np.int32(D),
                                  np.int32(w is not None)))
    return gx.reshape(x_shape), gw, gb
