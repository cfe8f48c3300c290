"""Scaled dot-product attention, fast: the scalars folded off the (L, S) arrays, images in blocks.

Same signatures and results as the reference ``kernels/attention.py`` (tests compare them, with
and without dropout, forward and backward). The math is the reference's; what differs:

  * The (L, S) arrays are the largest of a transformer layer, and every elementwise pass over
    them costs, so the scalars are moved off them: the score scale goes on q (D values per row
    instead of S), and dropout's 1 / (1 - p) goes into the softmax's normalisation, so forward
    keeps P' = P / (1 - p) and the boolean ``keep``, and A = P' * keep. In backward, with
    g = gA * keep, gS = P' * (g - (1 - p) sum(g * P')): the reference's softmax Jacobian with the
    constant factors carried through. Every step is in place.
  * The images go through in blocks of about ``BLOCK`` score values (``block``), so that the
    dozen passes over a block's scores read and write the cache rather than main memory (CCT-7:
    1 MB of scores per image and layer). The dropout mask is drawn whole, before the blocks (a
    byte a score, kept for backward anyway), so it does not depend on the blocking: a Philox
    draw takes whole blocks of four numbers, and blocks of an odd number of scores would each
    leave some unused. ``block=None``: one block (what
    ``dispatch`` asks for on a GPU, where one kernel per pass is best).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minicct.backend import get_array_module
from minicct.kernels import dispatch
from minicct.kernels.attention import check_key_mask, check_sdpa_shapes, mask_scores
from minicct.kernels.dropout import keep_mask_of

BLOCK = 1 << 18   # score values per block: ~1 MB of float32, a block's passes stay in cache


class BlockCache(NamedTuple):
    """One block's saved arrays."""
    qs: object          # q * scale
    k: object
    v: object
    P: object           # P' = softmax(S) / (1 - p)   (P itself without dropout)
    keep: object        # bool mask or None
    dropout_p: float
    scale: float


class BlockedSdpaCache(NamedTuple):
    blocks: list        # [(slice of the first axis, BlockCache), ...]
    q_shape: tuple
    k_shape: tuple
    v_shape: tuple


def _blocks(q, S, block):
    """Slices of the first axis of q (the images) holding about ``block`` score values each; a
    single slice when block is None, when q has no image axis, or when everything fits."""
    if block is None or q.ndim < 3:
        return [slice(None)]
    per = math.prod(q.shape[1:-1]) * S    # scores per image: heads * L * S
    n = max(1, block // per)
    return [slice(a, a + n) for a in range(0, q.shape[0], n)]


def sdpa_forward(q, k, v, dropout_p=0.0, training=True, generator=None, key_mask=None, block=BLOCK):
    """q: (..., L, D), k: (..., S, D), v: (..., S, Dv) -> out: (..., L, Dv), cache.
    key_mask: None or booleans (N, S), as the reference's."""
    check_sdpa_shapes(q, k, v)
    if key_mask is not None:
        key_mask = check_key_mask(key_mask, q, k)
    blocks = _blocks(q, k.shape[-2], block)
    shapes = (q.shape, k.shape, v.shape)
    xp = get_array_module(q)
    keep = None
    if training and dropout_p > 0.0:          # the whole mask at once (see the docstring)
        keep = keep_mask_of(xp, q.shape[:-1] + k.shape[-2:-1], xp.result_type(q, k), dropout_p, generator)
    if len(blocks) == 1:
        out, c = _attend(q, k, v, dropout_p, keep, key_mask)
        return out, BlockedSdpaCache([(slice(None), c)], *shapes)
    out = xp.empty(q.shape[:-1] + v.shape[-1:], dtype=xp.result_type(q, v))
    caches = []
    for b in blocks:
        out[b], c = _attend(q[b], k[b], v[b], dropout_p, None if keep is None else keep[b],
                            None if key_mask is None else key_mask[b])
        caches.append((b, c))
    return out, BlockedSdpaCache(caches, *shapes)


def sdpa_backward(gy, cache):
    """gy: (..., L, Dv) -> (gq, gk, gv), shapes of q, k, v."""
    if len(cache.blocks) == 1:
        return _attend_backward(gy, cache.blocks[0][1])
    xp = get_array_module(gy)
    gq, gk, gv = (xp.empty(shape, dtype=gy.dtype) for shape in (cache.q_shape, cache.k_shape, cache.v_shape))
    for b, c in cache.blocks:
        gq[b], gk[b], gv[b] = _attend_backward(gy[b], c)
    return gq, gk, gv


def _attend(q, k, v, dropout_p, keep, key_mask=None):
    """The forward math on one block: out, and the BlockCache for _attend_backward.
    keep: the block's dropout mask (bool, the shape of its scores), or None: no dropout."""
    xp = get_array_module(q)
    scale = q.shape[-1] ** -0.5
    qs = q * scale
    P = dispatch.matmul(qs, xp.swapaxes(k, -1, -2))   # S
    if key_mask is not None:                 # padded keys: score -inf, so weight exactly 0
        mask_scores(P, key_mask)
    P -= P.max(axis=-1, keepdims=True)      # stable softmax, in place
    xp.exp(P, out=P)
    norm = xp.reciprocal(P.sum(axis=-1, keepdims=True))
    if keep is not None:
        norm *= 1.0 / (1.0 - dropout_p) if dropout_p < 1.0 else 0.0   # p = 1: A = 0, no gradient
    P *= norm                               # P' (= P without dropout)
    A = P if keep is None else P * keep
    return dispatch.matmul(A, v), BlockCache(qs, k, v, P, keep, dropout_p, scale)


def _attend_backward(gy, cache):
    """The backward math on one block: (gq, gk, gv)."""
    qs, k, v, P, keep, p, scale = cache
    xp = get_array_module(gy)
    A = P if keep is None else P * keep
    gv = dispatch.matmul(xp.swapaxes(A, -1, -2), gy)
    del A
    g = dispatch.matmul(gy, xp.swapaxes(v, -1, -2))   # gradient of A
    if keep is not None:
        g *= keep                            # g = gA * keep
    # Softmax Jacobian through P' = P / (1 - p): gS = P' * (g - (1 - p) sum(g * P')).
    s = dispatch.row_dots(g, P)[..., None]
    if keep is not None:
        s *= 1.0 - p
    g -= s
    g *= P
    gq = dispatch.matmul(g, k)
    gq *= scale                              # S = (q * scale) k^T
    gk = dispatch.matmul(xp.swapaxes(g, -1, -2), qs)
    return gq, gk, gv
