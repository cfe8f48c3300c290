"""Layer normalisation over the last dimension(s), forward and backward.

    y = (x - mean) / sqrt(var + eps) * w + b       (mean, biased var over the normalised dims)
"""
from __future__ import annotations

import math

import numpy as np

from minicct.backend import get_array_module
from minicct.kernels._util import column_sums, row_means


def _check(x, normalized_shape, w, b):
    """normalized_shape as a tuple, after checking it against x, w and b (ValueError otherwise)."""
    normalized_shape = ((normalized_shape,) if isinstance(normalized_shape, int)
                        else tuple(int(d) for d in normalized_shape))
    k = len(normalized_shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != normalized_shape:
        raise ValueError(f"layer_norm: normalized_shape {normalized_shape} must be the trailing "
                         f"dimensions of the input, whose shape is {tuple(x.shape)}")
    for name, p in (("weight", w), ("bias", b)):
        if p is not None and tuple(p.shape) != normalized_shape:
            raise ValueError(f"layer_norm: {name} must have shape {normalized_shape}, got {tuple(p.shape)}")
    return normalized_shape


def layer_norm_forward(x, normalized_shape, w=None, b=None, eps=1e-5):
    """x: (..., *normalized_shape); w, b: normalized_shape or None -> y: shape of x, cache.

    On CuPy one fused kernel (``kernels.cuda``), else ``layer_norm_forward_xp``.
    """
    D = math.prod(_check(x, normalized_shape, w, b))
    if get_array_module(x) is not np:
        from minicct.kernels import cuda
        return cuda.layer_norm_forward(x, D, w, b, eps)
    return _forward_xp(x, D, w, b, eps)


def layer_norm_forward_xp(x, normalized_shape, w=None, b=None, eps=1e-5):
    """The portable layer norm (any array module)."""
    return _forward_xp(x, math.prod(_check(x, normalized_shape, w, b)), w, b, eps)


_BLOCK = 1 << 16   # values per block of rows on NumPy (256 KB of float32): a block stays in cache


def _row_blocks(a):
    """Slices of rows of a 2-D array with about _BLOCK values each (one slice off NumPy).

    Layer norm makes about ten passes over its rows; a block small enough for the cache lets all
    ten run there instead of in main memory (2-3x faster at CCT's sizes), with the same arithmetic.
    """
    R, D = a.shape
    n = R if get_array_module(a) is not np else max(1, _BLOCK // D)
    return [slice(r, r + n) for r in range(0, R, n)]


def _forward_xp(x, D, w, b, eps):
    xp = get_array_module(x)
    x2 = x.reshape(-1, D)                              # one row per normalised group
    xhat = xp.empty(x2.shape, x2.dtype)                # kept for backward
    rstd = xp.empty((x2.shape[0], 1), x2.dtype)
    y = xp.empty(x2.shape, x2.dtype)
    for r in _row_blocks(x2):
        _normalise(x2[r], w, b, eps, xhat[r], rstd[r], y[r])
    return y.reshape(x.shape), ("xp", xhat, rstd, w, b is not None, x.shape)


def _normalise(x2, w, b, eps, xhat, rstd, y):
    """Rows x2 (R, D) -> writes xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps), y = xhat * w + b."""
    xp = get_array_module(x2)
    D = x2.shape[1]
    xp.subtract(x2, row_means(x2), out=xhat)
    var = xp.einsum("ij,ij->i", xhat, xhat)[:, None]   # sum of squares, no temporary
    var /= D
    var += eps
    xp.sqrt(var, out=var)
    xp.reciprocal(var, out=rstd)
    xhat *= rstd
    if w is not None:
        xp.multiply(xhat, w.reshape(D), out=y)
    else:
        y[...] = xhat
    if b is not None:
        y += b.reshape(D)


def layer_norm_backward(gy, cache):
    """gy: shape of x -> (gx: shape of x, gw: w's shape or None, gb: or None).

    With g = gy * w:  gx = rstd * (g - mean(g) - xhat * mean(g * xhat))   (means over the row).
    """
    xp = get_array_module(gy)
    _, xhat, rstd, w, has_bias, x_shape = cache
    D = xhat.shape[1]
    gy2 = gy.reshape(-1, D)
    if cache[0] == "cuda":
        from minicct.kernels import cuda
        gw = column_sums(gy2 * xhat).reshape(w.shape) if w is not None else None
        gb = column_sums(gy2).reshape(w.shape if w is not None else (D,)) if has_bias else None
        return cuda.layer_norm_backward_gx(gy2, cache).reshape(x_shape), gw, gb
    gx = xp.empty(gy2.shape, gy2.dtype)
    gw = xp.zeros(D, gy2.dtype) if w is not None else None
    gb = xp.zeros(D, gy2.dtype) if has_bias else None
    for r in _row_blocks(gy2):
        g, gyr, xr = gx[r], gy2[r], xhat[r]
        if gw is not None:
            gw += column_sums(gyr * xr)
        if gb is not None:
            gb += column_sums(gyr)
        if w is not None:
            xp.multiply(gyr, w.reshape(D), out=g)
        else:
            g[...] = gyr
        mean_g = row_means(g)
        mean_gx = xp.einsum("ij,ij->i", g, xr)[:, None]
        mean_gx /= D
        g -= mean_g
        g -= xr * mean_gx
        g *= rstd[r]
    return (gx.reshape(x_shape), gw.reshape(w.shape) if gw is not None else None,
            gb.reshape(w.shape if w is not None else (D,)) if gb is not None else None)
