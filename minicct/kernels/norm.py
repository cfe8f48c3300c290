"""Layer normalisation over the last dimension(s), forward and backward: the reference.

    y = (x - mean) / sqrt(var + eps) * w + b       (mean, biased var over the normalised dims)

Lesson 08 builds it. ``kernels/cuda/norm.py`` is the fused CuPy version (one warp per row, the
same cache); ``kernels/dispatch.py`` picks.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minicct.backend import get_array_module
from minicct.kernels._util import column_sums, row_means


class LayerNormCache(NamedTuple):
    """What backward needs; R rows of D normalised values."""
    xhat: object        # (R, D): (x - mean) * rstd
    rstd: object        # (R, 1): 1 / sqrt(var + eps)
    w: object           # normalized_shape, or None
    b_shape: tuple      # the bias's shape, or None without a bias
    x_shape: tuple


def check_layer_norm(x, normalized_shape, w, b):
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
    """x: (..., *normalized_shape); w, b: normalized_shape or None -> y: shape of x, cache."""
    D = math.prod(check_layer_norm(x, normalized_shape, w, b))
    xp = get_array_module(x)
    x2 = x.reshape(-1, D)                              # one row per normalised group: (R, D)
    xhat = x2 - row_means(x2)
    var = xp.einsum("ij,ij->i", xhat, xhat)[:, None] / D   # sum of squares without a squared copy
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat *= rstd
    y = xhat * w.reshape(D) if w is not None else xhat.copy()
    if b is not None:
        y += b.reshape(D)
    return y.reshape(x.shape), LayerNormCache(xhat, rstd, w, None if b is None else b.shape, x.shape)


def layer_norm_backward(gy, cache):
    """gy: shape of x -> (gx: shape of x, gw: w's shape or None, gb: or None).

    With g = gy * w (the gradient of xhat):  gx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
    means over the row: the normalisation's Jacobian, applied without forming it.
    """
    xp = get_array_module(gy)
    xhat, rstd, w, b_shape, x_shape = cache
    D = xhat.shape[1]
    gy2 = gy.reshape(-1, D)
    gw = column_sums(gy2 * xhat).reshape(w.shape) if w is not None else None
    gb = column_sums(gy2).reshape(b_shape) if b_shape is not None else None
    g = gy2 * w.reshape(D) if w is not None else gy2
    mean_gxhat = xp.einsum("ij,ij->i", g, xhat)[:, None] / D
    gx = g - row_means(g)
    gx -= xhat * mean_gxhat
    gx *= rstd
    return gx.reshape(x_shape), gw, gb
