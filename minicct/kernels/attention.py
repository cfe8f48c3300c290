"""Scaled dot-product attention, forward and ONE hand-written backward for the whole thing.

    S = q k^T * D**-0.5          (N, heads, L, S)
    P = softmax(S, last axis)
    A = dropout(P)               (training only)
    out = A v                    (N, heads, L, D)

The backward walks the same four steps in reverse; the softmax step is its Jacobian applied to
the incoming gradient, gS = P * (gP - sum(gP * P, last axis)), computed in place.
"""
from __future__ import annotations

from minicct.backend import get_array_module
from minicct.kernels.dropout import dropout_forward


def sdpa_forward(q, k, v, dropout_p=0.0, training=True, generator=None):
    """q: (..., L, D), k: (..., S, D), v: (..., S, Dv) -> out: (..., L, Dv), cache.

    The leading dims (e.g. N, heads) must match. The attention weights P are saved for backward.
    """
    xp = get_array_module(q)
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim or q.shape[:-2] != k.shape[:-2] \
            or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} do not fit q: (..., L, D), k: (..., S, D), v: (..., S, Dv)")
    scale = q.shape[-1] ** -0.5
    P = q @ xp.swapaxes(k, -1, -2)
    P *= scale
    P -= P.max(axis=-1, keepdims=True)      # stable softmax, in place
    xp.exp(P, out=P)
    P /= P.sum(axis=-1, keepdims=True)
    A, mask = dropout_forward(P, dropout_p, training, generator)
    # Saved for backward: P and, with dropout, which weights were kept as 1-byte booleans. A and
    # the float mask (two more arrays of P's size, the largest in the layer) are not kept:
    # backward rebuilds A = P * keep / (1 - p) in one pass.
    keep = None if mask is None else mask != 0
    return A @ v, (q, k, v, P, keep, dropout_p, scale)


def _kept(a, keep, p):
    """a * keep / (1 - p): dropout's scaling, in place on a (the same float32 products as forward)."""
    a *= keep
    a *= 1.0 / (1.0 - p) if p < 1.0 else 0.0
    return a


def sdpa_backward(gy, cache):
    """gy: (..., L, Dv) -> (gq, gk, gv), shapes of q, k, v."""
    q, k, v, P, keep, p, scale = cache
    xp = get_array_module(gy)
    A = P if keep is None else _kept(P.copy(), keep, p)
    gv = xp.swapaxes(A, -1, -2) @ gy
    del A
    g = gy @ xp.swapaxes(v, -1, -2)          # gradient of A
    if keep is not None:
        _kept(g, keep, p)                    # through dropout: gP = gA * mask
    # Softmax Jacobian: gS = P * (gP - sum(gP * P)); then the scale of S.
    s = xp.einsum("...ij,...ij->...i", g, P)[..., None]
    g -= s
    g *= P
    g *= scale
    gq = g @ k
    gk = xp.swapaxes(g, -1, -2) @ q
    return gq, gk, gv
