"""Cross-entropy of logits against class labels or soft targets, mean over the batch.

    loss = -1/N sum_n sum_c t[n, c] log_softmax(z)[n, c]
    t = (1 - eps) * target + eps / C                 (label smoothing, as PyTorch)

The backward is fused with the log-softmax: d loss / dz = (softmax(z) * sum_c t - t) / N, which is
(softmax(z) - t) / N when the target rows sum to one.

This reference is the only version: one log-softmax and one product, nothing to gain from another.
"""
from __future__ import annotations

from typing import NamedTuple

from minicct.backend import get_array_module, to_numpy


class CrossEntropyCache(NamedTuple):
    p: object               # (N, C): softmax(logits)
    z: object               # (N, C): log_softmax(logits)
    t: object               # (N, C): the smoothed targets
    soft: bool              # the target was given as (N, C) probabilities (it then has a gradient)
    label_smoothing: float


def _targets(xp, target, N, C, dtype, label_smoothing):
    """Class indices (N,) or probabilities (N, C) -> the smoothed target matrix t: (N, C)."""
    if target.ndim == 1:
        if target.shape[0] != N:
            raise ValueError(f"cross_entropy: {N} rows of logits but {target.shape[0]} labels")
        if target.dtype.kind not in "iu":
            raise ValueError(f"cross_entropy: class-index targets must be integers, got {target.dtype}")
        lo, hi = (int(v) for v in to_numpy(xp.stack([target.min(), target.max()])))  # one GPU sync
        if lo < 0 or hi >= C:
            raise ValueError(f"cross_entropy: labels must be in [0, {C}), got min {lo}, max {hi}")
        t = xp.zeros((N, C), dtype=dtype)
        t[xp.arange(N), target] = 1.0
    elif target.ndim == 2:
        if tuple(target.shape) != (N, C):
            raise ValueError(f"cross_entropy: soft targets must have the logits' shape {(N, C)}, "
                             f"got {tuple(target.shape)}")
        t = target.astype(dtype, copy=True)
    else:
        raise ValueError(f"cross_entropy: target must be (N,) class indices or (N, C) probabilities, "
                         f"got shape {tuple(target.shape)}")
    if label_smoothing:
        t *= 1.0 - label_smoothing
        t += label_smoothing / C
    return t


def cross_entropy_forward(logits, target, label_smoothing=0.0):
    """logits: (N, C), target: (N,) int or (N, C) float -> loss: () array, cache."""
    xp = get_array_module(logits)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy: logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    N, C = logits.shape
    if N == 0:
        raise ValueError("cross_entropy: empty batch (N = 0)")
    t = _targets(xp, target, N, C, logits.dtype, label_smoothing)
    z = logits - logits.max(axis=1, keepdims=True)
    e = xp.exp(z)
    s = e.sum(axis=1, keepdims=True)
    z -= xp.log(s)                          # log_softmax
    loss = xp.asarray(-(t * z).sum() / N, dtype=logits.dtype)   # a 0-d array
    e /= s                                  # softmax, for backward
    return loss, CrossEntropyCache(e, z, t, target.ndim == 2, label_smoothing)


def cross_entropy_backward(gy, cache, need_gz=True, need_gt=False):
    """gy: () upstream gradient -> (g logits: (N, C) or None, g target: (N, C) or None).

    The target gets a gradient only when it is soft (N, C): -(1 - eps) log_softmax(z) / N.
    """
    p, z, t, soft, eps = cache
    N = p.shape[0]
    gz = gt = None
    if need_gz:
        gz = p * t.sum(axis=1, keepdims=True)
        gz -= t
        gz *= gy / N
    if need_gt and soft:
        gt = z * (-(1.0 - eps) * gy / N)
    return gz, gt
