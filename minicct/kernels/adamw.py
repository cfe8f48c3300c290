"""The AdamW update on raw arrays: the reference (the math: ``minicct/optim/adamw.py``).

    p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

``kernels/cuda/adamw.py`` does the same in one CuPy kernel; ``kernels/dispatch.adamw_update``
picks, and ``optim.AdamW`` calls what it picks.
"""
from __future__ import annotations

import math

from minicct.backend import get_array_module


def adamw_update_(p, g, m, v, *, lr, weight_decay, beta1, beta2, eps, step):
    """One AdamW step, in place on ``p``, ``m`` and ``v`` (all the same shape; NumPy or CuPy).

    p: parameters, g: their gradient, m/v: first/second moment estimates, step: t >= 1.
    """
    bias1 = 1.0 - beta1 ** step
    bias2 = 1.0 - beta2 ** step
    if weight_decay:
        p *= 1.0 - lr * weight_decay
    xp = get_array_module(p)
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    denom = xp.sqrt(v)
    denom *= 1.0 / math.sqrt(bias2)
    denom += eps
    p -= (lr / bias1) * (m / denom)
