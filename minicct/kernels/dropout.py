"""Dropout (inverted: survivors are scaled by 1/(1-p) while training, identity at eval time) and
drop_path (stochastic depth: a whole sample's residual branch is dropped, survivors scaled 1/keep).

Randomness: without a ``generator`` the masks come from ``minicct.random``'s dropout stream (a
Philox stream seeded by ``minicct.manual_seed``): its numbers are made on the device of x, and are
the same on NumPy and CuPy, so one seed gives one mask on either (and nothing crosses the bus).
Pass a NumPy ``Generator`` to make one call reproducible on its own (drawn on the host, copied).
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
    return keep_mask_of(get_array_module(x), x.shape, x.dtype, p, generator)


def keep_mask_of(xp, shape, dtype, p, generator=None):
    """keep_mask for an array of that module, shape and dtype, before the array exists."""
    check_p(p, "dropout")
    return random.dropout_keep(xp, shape, p, np.float64 if dtype == np.float64 else np.float32, generator)


def dropout_forward(x, p=0.5, training=True, generator=None):
    """x: any shape -> y: shape of x, cache (the scaled mask, or None when nothing is dropped)."""
    check_p(p, "dropout")
    if not training or p == 0.0:
        return x, None
    xp = get_array_module(x)
    if p == 1.0:
        m = xp.zeros_like(x)
    else:
        m = random.dropout_keep(xp, x.shape, p, _draw_dtype(x), generator).astype(x.dtype)
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
    dtype = _draw_dtype(x)
    # keep as a scalar of the numbers' dtype: the comparison is then the same on NumPy and CuPy
    m = (random.dropout_uniform(xp, shape, dtype, generator) < np.dtype(dtype).type(keep)).astype(x.dtype)
    if keep > 0:
        m /= keep
    return m


def drop_path_forward(x, p=0.0, training=True, generator=None):
    """x: (N, ...) -> y: each sample x[n] kept (scaled by 1/(1-p)) or zeroed as a whole."""
    m = drop_path_mask(x, p, training, generator)
    return (x, None) if m is None else (x * m, m)


drop_path_backward = dropout_backward
