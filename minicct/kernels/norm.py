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


def _forward_xp(x, D, w, b, eps):
    xp = get_array_module(x)
    x2 = x.reshape(-1, D)                              # one row per normalised group
    xhat = x2 - row_means(x2)
    var = xp.einsum("ij,ij->i", xhat, xhat)[:, None]   # sum of squares, no temporary
    var /= D
    var += eps
    rstd = xp.sqrt(var, out=var)
    xp.reciprocal(rstd, out=rstd)
    xhat *= rstd
    y = xhat * w.reshape(D) if w is not None else xhat.copy()   # xhat itself is kept for backward
    if b is not None:
        y += b.reshape(D)
    return y.reshape(x.shape), ("xp", xhat, rstd, w, b is not None, x.shape)


def layer_norm_backward(gy, cache):
    """gy: shape of x -> (gx: shape of x, gw: w's shape or None, gb: or None).

    With g = gy * w:  gx = rstd * (g - mean(g) - xhat * mean(g * xhat))   (means over the row).
    """
    xp = get_array_module(gy)
    _, xhat, rstd, w, has_bias, x_shape = cache
    D = xhat.shape[1]
    gy2 = gy.reshape(-1, D)
    gw = column_sums(gy2 * xhat).reshape(w.shape) if w is not None else None
    gb = column_sums(gy2).reshape(w.shape if w is not None else (D,)) if has_bias else None
    if cache[0] == "cuda":
        from minicct.kernels import cuda
        return cuda.layer_norm_backward_gx(gy2, cache).reshape(x_shape), gw, gb
    g = gy2 * w.reshape(D) if w is not None else gy2.copy()
    mean_g = row_means(g)
    mean_gx = xp.einsum("ij,ij->i", g, xhat)[:, None]
    mean_gx /= D
    g -= mean_g
    g -= xhat * mean_gx
    g *= rstd
    return g.reshape(x_shape), gw, gb
