"""Scaled dot-product attention, forward and ONE hand-written backward for the whole thing.

    S = q k^T * D**-0.5          (N, heads, L, S)
    P = softmax(S, last axis)
    A = dropout(P)               (training only: P * keep / (1 - p), keep ~ Bernoulli(1 - p))
    out = A v                    (N, heads, L, D)

With a key mask (N, S) of booleans (True = a real token, False = padding), the scores of the
padded keys are set to -inf before the softmax: their weights come out exactly 0, so no query
reads padding. The backward needs nothing more: every gradient through the softmax is multiplied
by P, which is 0 there, so padded keys get no gradient from the scores either.

The backward walks the same four steps in reverse; the softmax step is its Jacobian applied to
the incoming gradient, gS = P * (gP - sum(gP * P, last axis)), computed in place.

The (L, S) arrays are the largest of a transformer layer (each as big as the layer's activations
times L / D), and every elementwise pass over them costs, so the scalars are moved off them: the
score scale goes on q (D values per row instead of S), and dropout's 1 / (1 - p) goes into the
softmax's normalisation, so forward keeps P' = P / (1 - p) and the boolean ``keep``, and
A = P' * keep. In backward, with g = gA * keep, gS = P' * (g - (1 - p) sum(g * P')): the same
formula as above, the constant factors carried through.
"""
from __future__ import annotations

import math

import numpy as np

from minicct.backend import get_array_module
from minicct.kernels.dropout import keep_mask


_BLOCK = 1 << 18   # score values per block on NumPy: ~1 MB of float32, a block's passes stay in cache


def _blocks(q, S):
    """Slices of the first axis of q (the images) holding about _BLOCK score values each; a single
    slice on CuPy (one kernel per pass is what a GPU wants) or when everything fits."""
    if get_array_module(q) is not np or q.ndim < 3:
        return [slice(None)]
    per = math.prod(q.shape[1:-1]) * S    # scores per image: heads * L * S
    n = max(1, _BLOCK // per)
    return [slice(a, a + n) for a in range(0, q.shape[0], n)]


def sdpa_forward(q, k, v, dropout_p=0.0, training=True, generator=None, key_mask=None):
    """q: (..., L, D), k: (..., S, D), v: (..., S, Dv) -> out: (..., L, Dv), cache.

    The leading dims (e.g. N, heads) must match. key_mask: None, or booleans (N, S) with N =
    q.shape[0]: False keys (padding) get weight 0 for every query; each row needs a True. Saved for backward: q * scale, k, v, P' and keep.
    On NumPy the images go through in blocks (``_BLOCK``), so that the dozen passes over the
    (L, S) scores of a block read and write the cache rather than main memory (CCT-7: 1 MB of
    scores per image and layer); the arithmetic is the same.
    """
    xp = get_array_module(q)
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim or q.shape[:-2] != k.shape[:-2] \
            or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} do not fit q: (..., L, D), k: (..., S, D), v: (..., S, Dv)")
    if key_mask is not None:
        key_mask = _check_key_mask(key_mask, q, k)
    blocks = _blocks(q, k.shape[-2])
    if len(blocks) == 1:
        return _attend(q, k, v, dropout_p, training, generator, key_mask)
    out = xp.empty(q.shape[:-1] + v.shape[-1:], dtype=xp.result_type(q, v))
    caches = []
    for b in blocks:
        mb = None if key_mask is None else key_mask[b]
        out[b], cache = _attend(q[b], k[b], v[b], dropout_p, training, generator, mb)
        caches.append((b, cache))
    return out, ("blocks", caches, q.shape, k.shape, v.shape)


def sdpa_backward(gy, cache):
    """gy: (..., L, Dv) -> (gq, gk, gv), shapes of q, k, v."""
    if not isinstance(cache[0], str):       # one block: _attend's cache itself
        return _attend_backward(gy, cache)
    _, caches, q_shape, k_shape, v_shape = cache
    xp = get_array_module(gy)
    gq, gk, gv = (xp.empty(shape, dtype=gy.dtype) for shape in (q_shape, k_shape, v_shape))
    for b, c in caches:
        gq[b], gk[b], gv[b] = _attend_backward(gy[b], c)
    return gq, gk, gv


def _check_key_mask(key_mask, q, k):
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


def _attend(q, k, v, dropout_p, training, generator, key_mask=None):
    """The forward math on one block: out, and the cache for _attend_backward."""
    xp = get_array_module(q)
    scale = q.shape[-1] ** -0.5
    qs = q * scale
    P = qs @ xp.swapaxes(k, -1, -2)         # S
    if key_mask is not None:                 # padded keys: score -inf, so weight exactly 0
        bias = xp.where(key_mask, 0.0, -xp.inf).astype(P.dtype)
        P += bias.reshape(bias.shape[:1] + (1,) * (P.ndim - 2) + bias.shape[1:])   # (N, 1.., S)
    P -= P.max(axis=-1, keepdims=True)      # stable softmax, in place
    xp.exp(P, out=P)
    norm = xp.reciprocal(P.sum(axis=-1, keepdims=True))
    keep = None
    if training and dropout_p > 0.0:
        keep = keep_mask(P, dropout_p, generator)
        norm *= 1.0 / (1.0 - dropout_p) if dropout_p < 1.0 else 0.0   # p = 1: A = 0, no gradient
    P *= norm                               # P' (= P without dropout)
    A = P if keep is None else P * keep
    return A @ v, (qs, k, v, P, keep, dropout_p, scale)


def _attend_backward(gy, cache):
    """The backward math on one block: (gq, gk, gv)."""
    qs, k, v, P, keep, p, scale = cache
    xp = get_array_module(gy)
    A = P if keep is None else P * keep
    gv = xp.swapaxes(A, -1, -2) @ gy
    del A
    g = gy @ xp.swapaxes(v, -1, -2)          # gradient of A
    if keep is not None:
        g *= keep                            # g = gA * keep
    # Softmax Jacobian through P' = P / (1 - p): gS = P' * (g - (1 - p) sum(g * P')).
    s = xp.einsum("...ij,...ij->...i", g, P)[..., None]
    if keep is not None:
        s *= 1.0 - p
    g -= s
    g *= P
    gq = g @ k
    gq *= scale                              # S = (q * scale) k^T
    gk = xp.swapaxes(g, -1, -2) @ qs
    return gq, gk, gv
