"""Dropout (inverted: survivors are scaled by 1/(1-p) while training, identity at eval time) and
drop_path (stochastic depth: a whole sample's residual branch is dropped, survivors scaled 1/keep).

Randomness: pass a NumPy ``Generator`` to make one call reproducible; without one the masks come
from ``minicct.random`` (its dropout stream on the CPU, ``cupy.random`` on the GPU, both seeded by
``minicct.manual_seed``), so on CuPy nothing crosses the bus.
"""
from __future__ import annotations

import numpy as np

from minicct import random
from minicct.backend import get_array_module


def _draw_dtype(x):
    return np.float64 if x.dtype == np.float64 else np.float32


def check_p(p, name):
    """ValueError unless 0 <= p <= 1 (name: the op, for the message)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}: probability p must be in [0, 1], got {p}")


def keep_mask(x, p, generator=None):
    """Boolean (shape of x): True with probability 1 - p, drawn as dropout draws (for kernels
    that fold the 1 / (1 - p) scaling in elsewhere, e.g. attention's softmax)."""
    check_p(p, "dropout")
    xp = get_array_module(x)
    return random.dropout_uniform(xp, x.shape, _draw_dtype(x), generator) >= p


def dropout_forward(x, p=0.5, training=True, generator=None):
    """x: any shape -> y: shape of x, cache (the scaled mask, or None when nothing is dropped)."""
    check_p(p, "dropout")
    if not training or p == 0.0:
        return x, None
    xp = get_array_module(x)
    if p == 1.0:
        m = xp.zeros_like(x)
    else:
        m = random.dropout_uniform(xp, x.shape, _draw_dtype(x), generator) >= p    # keep with probability 1 - p
        m = m.astype(x.dtype)
        m *= 1.0 / (1.0 - p)
    return x * m, m


def dropout_backward(gy, m):
    """gy: shape of x -> gx = gy * mask (the same scaled mask as forward)."""
    return gy if m is None else gy * m


def drop_path_mask(x, p=0.0, training=True, generator=None):
    """x: (N, ...) -> the scaled per-sample mask (N, 1, ..., 1): 0 or 1/(1-p); None when nothing is
    dropped (eval mode or p = 0). One draw per sample from the dropout stream (or ``generator``)."""
    check_p(p, "drop_path")
    if not training or p == 0.0:
        return None
    xp = get_array_module(x)
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    m = (random.dropout_uniform(xp, shape, _draw_dtype(x), generator) < keep).astype(x.dtype)
    if keep > 0:
        m /= keep
    return m


def drop_path_forward(x, p=0.0, training=True, generator=None):
    """x: (N, ...) -> y: each sample x[n] kept (scaled by 1/(1-p)) or zeroed as a whole."""
    m = drop_path_mask(x, p, training, generator)
    return (x, None) if m is None else (x * m, m)


drop_path_backward = dropout_backward
