"""CuPy fast paths: one fused kernel where the portable code runs a chain of whole-array passes.

Each function here computes what its portable twin computes (``gelu_forward_xp``,
``max_pool2d_forward_xp``, ``layer_norm_forward_xp``; tests compare them on a GPU), in one launch.
The public kernels (``gelu_forward``...) pick these for CuPy arrays; the backward follows the tag
in the cache. CuPy is imported on first use only; nothing here runs on the CPU.
"""
from __future__ import annotations

import functools

import numpy as np

from minicct import backend

_THREADS = 256


def _ctype(dtype):
    if dtype == np.float32:
        return "float"
    if dtype == np.float64:
        return "double"
    raise TypeError(f"the CuPy kernels take float32 or float64 arrays, got {dtype}")


def _blocks(n):
    return ((int(n) + _THREADS - 1) // _THREADS,)


# ---- gelu --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _gelu_kernels():
    cp = backend._import_cupy()
    # T is float or double; erf() and tanh() are CUDA's own (within ~2 ulp), so the GPU needs no
    # polynomial erf.
    gelu_fwd = cp.ElementwiseKernel(
        "T x", "T y",
        "y = x * (T)0.5 * ((T)1 + erf(x * (T)0.70710678118654752440));",
        "minicct_gelu_fwd")
    gelu_bwd = cp.ElementwiseKernel(
        "T gy, T x", "T gx",
        """T cdf = (T)0.5 * ((T)1 + erf(x * (T)0.70710678118654752440));
           T pdf = exp((T)-0.5 * x * x) * (T)0.39894228040143267794;
           gx = gy * (cdf + x * pdf);""",
        "minicct_gelu_bwd")
    gelu_tanh_fwd = cp.ElementwiseKernel(
        "T x", "T y",
        """T g = (T)0.79788456080286535588 * (x + (T)0.044715 * x * x * x);
           y = (T)0.5 * x * ((T)1 + tanh(g));""",
        "minicct_gelu_tanh_fwd")
    gelu_tanh_bwd = cp.ElementwiseKernel(
        "T gy, T x", "T gx",
        """T g = (T)0.79788456080286535588 * (x + (T)0.044715 * x * x * x);
           T th = tanh(g);
           T dg = (T)0.79788456080286535588 * ((T)1 + (T)(3 * 0.044715) * x * x);
           gx = gy * (T)0.5 * ((T)1 + th + x * ((T)1 - th * th) * dg);""",
        "minicct_gelu_tanh_bwd")
    return {"none": (gelu_fwd, gelu_bwd), "tanh": (gelu_tanh_fwd, gelu_tanh_bwd)}


def gelu_forward(x, approximate="none"):
    """x: CuPy array, any shape -> y, cache (only x is kept: backward recomputes in registers)."""
    fwd, _ = _gelu_kernels()[approximate]
    return fwd(x), ("cuda", approximate, x)


def gelu_backward(gy, cache):
    _, approximate, x = cache
    _, bwd = _gelu_kernels()[approximate]
    return bwd(gy, x)


# ---- max pooling -------------------------------------------------------------------------------------
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


@functools.lru_cache(maxsize=None)
def _module(src, ctype):
    cp = backend._import_cupy()
    return cp.RawModule(code=src % {"T": ctype}, options=("--std=c++14",))


def max_pool2d_forward(x, g):
    """x: (N, C, H, W) CuPy array (any strides), g: pool.PoolGeometry -> y (contiguous), cache."""
    cp = backend._import_cupy()
    N, C, H, W = x.shape
    y = cp.empty((N, C, g.OH, g.OW), dtype=x.dtype)
    arg = cp.empty((N, C, g.OH, g.OW), dtype=np.int32)
    i32, i64 = np.int32, np.int64
    st = [i64(s // x.itemsize) for s in x.strides]
    fn = _module(_POOL_SRC, _ctype(x.dtype)).get_function("maxpool_fwd")
    fn(_blocks(y.size), (_THREADS,), (x, y, arg, *map(i32, (N, C, H, W, g.OH, g.OW, g.KH, g.KW,
                                                             g.sh, g.sw, g.ph, g.pw)), *st))
    return y, ("cuda", arg, x.shape, g)


def max_pool2d_backward(gy, cache):
    cp = backend._import_cupy()
    _, arg, (N, C, H, W), g = cache
    gy = cp.ascontiguousarray(gy)
    gx = cp.empty((N, C, H, W), dtype=gy.dtype)
    fn = _module(_POOL_SRC, _ctype(gy.dtype)).get_function("maxpool_bwd")
    fn(_blocks(gx.size), (_THREADS,), (gy, arg, gx, *map(np.int32, (N, C, H, W, g.OH, g.OW, g.KH, g.KW,
                                                                    g.sh, g.sw, g.ph, g.pw))))
    return gx


# ---- layer norm --------------------------------------------------------------------------------------
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


def layer_norm_forward(x, D, w, b, eps):
    """x: (..., D) CuPy array -> y, cache in the portable layout ("cuda", xhat, rstd, w, has_bias, shape)."""
    cp = backend._import_cupy()
    x2 = cp.ascontiguousarray(x).reshape(-1, D)
    R = x2.shape[0]
    y, xhat = cp.empty_like(x2), cp.empty_like(x2)
    rstd = cp.empty((R, 1), dtype=x.dtype)
    wr = x2 if w is None else cp.ascontiguousarray(w, dtype=x.dtype).reshape(D)   # dummy when absent
    br = x2 if b is None else cp.ascontiguousarray(b, dtype=x.dtype).reshape(D)
    fn = _module(_LN_SRC, _ctype(x.dtype)).get_function("layernorm_fwd")
    fn(_blocks(R * 32), (_THREADS,), (x2, wr, br, y, xhat, rstd, np.int64(R), np.int32(D),
                                      x.dtype.type(eps), np.int32(w is not None), np.int32(b is not None)))
    return y.reshape(x.shape), ("cuda", xhat, rstd, w, b is not None, x.shape)


def layer_norm_backward_gx(gy2, cache):
    """gy2: (R, D) -> gx: (R, D); gw and gb are column sums, done by the caller."""
    cp = backend._import_cupy()
    _, xhat, rstd, w, _, _ = cache
    R, D = xhat.shape
    gy2 = cp.ascontiguousarray(gy2, dtype=xhat.dtype)
    gx = cp.empty_like(gy2)
    wr = gy2 if w is None else cp.ascontiguousarray(w, dtype=xhat.dtype).reshape(D)
    fn = _module(_LN_SRC, _ctype(xhat.dtype)).get_function("layernorm_bwd")
    fn(_blocks(R * 32), (_THREADS,), (gy2, xhat, rstd, wr, gx, np.int64(R), np.int32(D),
                                      np.int32(w is not None)))
    return gx
