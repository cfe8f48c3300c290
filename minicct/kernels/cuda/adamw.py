"""The AdamW update on CuPy: the moment updates and the step as one kernel (one pass over memory
instead of ~10). Same arithmetic and signature as the reference ``kernels/adamw.py``.

With lr and step as 0-d CuPy arrays (``optim.AdamW.use_device_scalars``, for a CUDA graph) a second
kernel reads them from device memory when it runs, so a captured update replayed later uses the
learning rate and step count of that moment, not the ones seen at capture.
"""
from __future__ import annotations

import functools
import math

from minicct import backend


@functools.lru_cache(maxsize=None)
def _kernel():
    cp = backend.import_cupy()
    return cp.ElementwiseKernel(
        "T g, float64 step_size, float64 inv_sqrt_bias2, float64 beta1, float64 beta2, float64 eps",
        "T p, T m, T v",
        """
        m = (T)beta1 * m + (T)(1.0 - beta1) * g;
        v = (T)beta2 * v + (T)(1.0 - beta2) * (g * g);
        p -= (T)step_size * (m / (sqrt(v) * (T)inv_sqrt_bias2 + (T)eps));
        """,
        "minicct_adamw")


@functools.lru_cache(maxsize=None)
def _kernel_device_scalars():
    cp = backend.import_cupy()
    # The bias corrections are worked out per element from step[0]: two pow() per element cost
    # nothing beside the memory traffic, and no host value enters the launch.
    return cp.ElementwiseKernel(
        "T g, raw float64 lr, raw int64 step, float64 weight_decay, float64 beta1, float64 beta2, "
        "float64 eps",
        "T p, T m, T v",
        """
        const double t = (double)step[0];
        const double bias1 = 1.0 - pow(beta1, t), bias2 = 1.0 - pow(beta2, t);
        p *= (T)(1.0 - lr[0] * weight_decay);
        m = (T)beta1 * m + (T)(1.0 - beta1) * g;
        v = (T)beta2 * v + (T)(1.0 - beta2) * (g * g);
        p -= (T)(lr[0] / bias1) * (m / (sqrt(v) * (T)(1.0 / sqrt(bias2)) + (T)eps));
        """,
        "minicct_adamw_device_scalars")


def adamw_update_(p, g, m, v, *, lr, weight_decay, beta1, beta2, eps, step):
    """One AdamW step, in place on the CuPy arrays ``p``, ``m`` and ``v`` (all the same shape).
    lr, step: Python numbers, or 0-d CuPy arrays (float64, int64) read when the kernel runs."""
    if backend.is_gpu_array(lr) or backend.is_gpu_array(step):
        cp = backend.import_cupy()
        lr = cp.asarray(lr, dtype="float64").reshape(1)    # views: no copies of device scalars
        step = cp.asarray(step, dtype="int64").reshape(1)
        _kernel_device_scalars()(g, lr, step, weight_decay, beta1, beta2, eps, p, m, v)
        return
    bias1 = 1.0 - beta1 ** step
    bias2 = 1.0 - beta2 ** step
    if weight_decay:
        p *= 1.0 - lr * weight_decay
    _kernel()(g, lr / bias1, 1.0 / math.sqrt(bias2), beta1, beta2, eps, p, m, v)
