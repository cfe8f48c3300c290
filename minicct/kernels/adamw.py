"""The AdamW update on raw arrays: the reference (the math: ``minicct/optim/adamw.py``).

    p <- p (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

``kernels/cuda/adamw.py`` does the same in one CuPy kernel; ``kernels/dispatch.adamw_update``
picks, and ``optim.AdamW`` calls what it picks.
"""
from __future__ import annotations

import math

from minicct.backend import get_array_module, is_gpu_array


def in_dtype_of(s, p):
    """A scalar coefficient as it enters arithmetic with the array p. A Python float stays as it is
    (NumPy and CuPy round it to p's dtype and compute in that dtype); anything else (a NumPy scalar,
    a 0-d array: the lr or step count held in an array for a CUDA graph, ``AdamW.use_device_scalars``)
    is cast to p's dtype first, so the arithmetic, and the numbers, are the same either way."""
    return s if type(s) is float else get_array_module(s).asarray(s, dtype=p.dtype)


def adamw_update_(p, g, m, v, *, lr, weight_decay, beta1, beta2, eps, step):
    """One AdamW step, in place on ``p``, ``m`` and ``v`` (all the same shape; NumPy or CuPy).

    p: parameters, g: their gradient, m/v: first/second moment estimates, step: t >= 1.
    lr and step: Python numbers, or 0-d arrays (float64, int64) on p's device.
    """
    xp = get_array_module(p)
    bias1 = 1.0 - beta1 ** step
    bias2 = 1.0 - beta2 ** step
    # A step count on the GPU keeps its bias terms there (no copy to the host, none in a graph).
    root_bias2 = xp.sqrt(bias2) if is_gpu_array(bias2) else math.sqrt(bias2)
    if weight_decay:
        p *= in_dtype_of(1.0 - lr * weight_decay, p)
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    denom = xp.sqrt(v)
    denom *= in_dtype_of(1.0 / root_bias2, p)
    denom += eps
    p -= in_dtype_of(lr / bias1, p) * (m / denom)
