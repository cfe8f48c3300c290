"""Scaled dot-product attention, forward and ONE hand-written backward for the whole thing.

    S = q k^T * D**-0.5          (N, heads, L, S)
    P = softmax(S, last axis)
    A = dropout(P)               (training only: P * keep / (1 - p), keep ~ Bernoulli(1 - p))
    out = A v                    (N, heads, L, D)

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

from minicct.backend import get_array_module
from minicct.kernels.dropout import keep_mask


def sdpa_forward(q, k, v, dropout_p=0.0, training=True, generator=None):
    """q: (..., L, D), k: (..., S, D), v: (..., S, Dv) -> out: (..., L, Dv), cache.

    The leading dims (e.g. N, heads) must match. Saved for backward: q * scale, k, v, P' and keep.
    """
    xp = get_array_module(q)
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim or q.shape[:-2] != k.shape[:-2] \
            or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)} do not fit q: (..., L, D), k: (..., S, D), v: (..., S, Dv)")
    scale = q.shape[-1] ** -0.5
    qs = q * scale
    P = qs @ xp.swapaxes(k, -1, -2)         # S
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


def sdpa_backward(gy, cache):
    """gy: (..., L, Dv) -> (gq, gk, gv), shapes of q, k, v."""
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
