"""The AdamW update on CuPy: the moment updates and the step as one kernel (one pass over memory
instead of ~10). Same arithmetic and signature as the reference ``kernels/adamw.py``."""
from __future__ import annotations

import functools
import math

from minicct import backend


@functools.lru_cache(maxsize=None)
def _kernel():
    cp = backend._import_cupy()
    return cp.ElementwiseKernel(
        "T g, float64 step_size, float64 inv_sqrt_bias2, float64 beta1, float64 beta2, float64 eps",
        "T p, T m, T v",
        """
        m = (T)beta1 * m + (T)(1.0 - beta1) * g;
        v = (T)beta2 * v + (T)(1.0 - beta2) * (g * g);
        p -= (T)step_size * (m / (sqrt(v) * (T)inv_sqrt_bias2 + (T)eps));
        """,
        "minicct_adamw")


def adamw_update_(p, g, m, v, *, lr, weight_decay, beta1, beta2, eps, step):
    """One AdamW step, in place on the CuPy arrays ``p``, ``m`` and ``v`` (all the same shape)."""
    bias1 = 1.0 - beta1 ** step
    bias2 = 1.0 - beta2 ** step
    if weight_decay:
        p *= 1.0 - lr * weight_decay
    _kernel()(g, lr / bias1, 1.0 / math.sqrt(bias2), beta1, beta2, eps, p, m, v)
