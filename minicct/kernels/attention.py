"""Scaled dot-product attention, forward and ONE hand-written backward for the whole thing: the reference.

    S = q k^T * D**-0.5          (N, heads, L, S)
    P = softmax(S, last axis)
    A = dropout(P)               (training only: P * keep / (1 - p), keep ~ Bernoulli(1 - p))
    out = A v                    (N, heads, L, Dv)

With a key mask (N, S) of booleans (True = a real token, False = padding), the scores of the
padded keys are set to -inf before the softmax: their weights come out exactly 0, so no query
reads padding. The backward needs nothing more: every gradient through the softmax is multiplied
by P, which is 0 there, so padded keys get no gradient from the scores either.

The backward walks the same four steps in reverse; the softmax step is its Jacobian applied to
the incoming gradient, gS = P * (gP - sum(gP * P, last axis)).

Lesson 10 builds it. ``kernels/fast/attention.py`` computes the same with the scalars folded off
the (L, S) arrays, image block by image block on NumPy; ``kernels/dispatch.py`` picks.
"""
from __future__ import annotations

from typing import NamedTuple

from minicct.backend import get_array_module
from minicct.kernels.activation import softmax_forward, softmax_backward
from minicct.kernels.dropout import keep_mask


class SdpaCache(NamedTuple):
    q: object           # (..., L, D)
    k: object           # (..., S, D)
    v: object           # (..., S, Dv)
    P: object           # (..., L, S): the attention weights before dropout
    keep: object        # (..., L, S) bool dropout mask, or None (no dropout)
    dropout_p: float
    scale: float        # D**-0.5


def check_sdpa_shapes(q, k, v):
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim or q.shape[:-2] != k.shape[:-2] \
            or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} do not fit q: (..., L, D), k: (..., S, D), v: (..., S, Dv)")


def check_key_mask(key_mask, q, k):
    """key_mask as a boolean array (N, S), checked against q (N, ..., L, D) and k (N, ..., S, D)."""
    xp = get_array_module(q)
    key_mask = xp.asarray(key_mask)
    if key_mask.shape != (q.shape[0], k.shape[-2]) or q.ndim < 3:
        raise ValueError(f"scaled_dot_product_attention: key_mask must be (N, S) = "
                         f"{(q.shape[0], k.shape[-2])} for q (N, ..., L, D) {tuple(q.shape)}, "
                         f"got {tuple(key_mask.shape)}")
    key_mask = key_mask.astype(bool, copy=False)
    if not bool(key_mask.any(axis=1).all()):
        raise ValueError("scaled_dot_product_attention: a sample's key_mask is all False: a query "
                         "needs at least one real key to attend to")
    return key_mask


def mask_scores(S, key_mask):
    """In place: the scores S (N, ..., L, S) of padded keys (key_mask (N, S) False) become -inf."""
    xp = get_array_module(S)
    bias = xp.where(key_mask, 0.0, -xp.inf).astype(S.dtype)
    S += bias.reshape(bias.shape[:1] + (1,) * (S.ndim - 2) + bias.shape[1:])     # (N, 1.., S)
    return S


def _dropped(P, keep, p):
    """A = P * keep / (1 - p); at p = 1 everything is dropped (A = 0, no gradient)."""
    return P * keep * (1.0 / (1.0 - p) if p < 1.0 else 0.0)


def sdpa_forward(q, k, v, dropout_p=0.0, training=True, generator=None, key_mask=None):
    """q: (..., L, D), k: (..., S, D), v: (..., S, Dv) -> out: (..., L, Dv), cache.

    The leading dims (e.g. N, heads) must match. key_mask: None, or booleans (N, S) with
    N = q.shape[0]: False keys (padding) get weight 0 for every query; each row needs a True.
    """
    check_sdpa_shapes(q, k, v)
    xp = get_array_module(q)
    scale = q.shape[-1] ** -0.5
    S = (q @ xp.swapaxes(k, -1, -2)) * scale
    if key_mask is not None:
        mask_scores(S, check_key_mask(key_mask, q, k))
    P, _ = softmax_forward(S)
    keep = None
    A = P
    if training and dropout_p > 0.0:
        keep = keep_mask(P, dropout_p, generator)
        A = _dropped(P, keep, dropout_p)
    return A @ v, SdpaCache(q, k, v, P, keep, dropout_p, scale)


def sdpa_backward(gy, cache):
    """gy: (..., L, Dv) -> (gq, gk, gv), shapes of q, k, v."""
    q, k, v, P, keep, p, scale = cache
    xp = get_array_module(gy)
    A = P if keep is None else _dropped(P, keep, p)
    gv = xp.swapaxes(A, -1, -2) @ gy                       # out = A v
    gP = gy @ xp.swapaxes(v, -1, -2)
    if keep is not None:
        gP = _dropped(gP, keep, p)                         # A = P * keep / (1 - p)
    gS = softmax_backward(gP, P)                           # P = softmax(S)
    gq = (gS @ k) * scale                                  # S = q k^T * scale
    gk = (xp.swapaxes(gS, -1, -2) @ q) * scale
    return gq, gk, gv
