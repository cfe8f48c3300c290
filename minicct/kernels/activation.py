"""Elementwise activations and the softmax family, forward and backward on raw arrays: the references.

relu, gelu (exact, through an erf written here: NumPy has none), softmax and log_softmax along
an axis (stable: the row maximum is subtracted first, so exp never overflows). Lesson 09 builds
erf and GELU; its backward computes the derivative from the saved input.

Fast GELUs beside it: ``kernels/fast/gelu.py`` (NumPy, cache-blocked, keeps the derivative from
the forward) and ``kernels/cuda/gelu.py`` (one fused CuPy kernel each way); ``kernels/dispatch.py``
picks.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minicct.backend import get_array_module

# Abramowitz & Stegun 7.1.26: erf(x) = 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1 / (1 + p x),
# for x >= 0, odd extension for x < 0. Max abs error 1.5e-7 (tests check <= 1e-6 vs math.erf).
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erfc_tail(a):
    """For a = |x| >= 0: (q, e) with q = erfc(a) = 1 - erf(a), and e = exp(-a^2) as a by-product."""
    xp = get_array_module(a)
    t = a * _P
    t += 1.0
    xp.reciprocal(t, out=t)
    q = t * _A[4]
    for c in _A[3::-1]:           # Horner: ((a5 t + a4) t + a3) t ...
        q += c
        q *= t
    e = a * a
    xp.negative(e, out=e)
    xp.exp(e, out=e)
    q *= e
    return q, e


def erf(x):
    """The error function, elementwise; x: any shape, float32 or float64 (|error| <= 1.5e-7)."""
    xp = get_array_module(x)
    q, _ = erfc_tail(xp.abs(x))
    xp.subtract(1.0, q, out=q)
    return xp.copysign(q, x, out=q)


# ---- relu ------------------------------------------------------------------------------------------
def relu_forward(x):
    """x: any shape -> y = max(x, 0); the cache is y (its sign is the mask)."""
    xp = get_array_module(x)
    y = xp.maximum(x, 0, dtype=x.dtype)
    return y, y


def relu_backward(gy, y):
    """gy, y: same shape -> gx = gy where y > 0, else 0."""
    return gy * (y > 0)


# ---- gelu ------------------------------------------------------------------------------------------
_K = math.sqrt(2.0 / math.pi)
_C = 0.044715


class GeluCache(NamedTuple):
    x: object               # the input: backward computes the derivative from it
    approximate: str        # 'none' (through erf) or 'tanh'


def check_approximate(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu_forward(x, approximate="none"):
    """x: any shape -> y = x * Phi(x), Phi the standard normal CDF = 0.5 (1 + erf(x / sqrt 2)).

    approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as PyTorch's option.
    """
    check_approximate(approximate)
    xp = get_array_module(x)
    if approximate == "tanh":
        y = 0.5 * x * (1.0 + xp.tanh(_K * (x + _C * x ** 3)))
    else:
        y = x * (0.5 * (1.0 + erf(x * _SQRT_HALF)))
    return y, GeluCache(x, approximate)


def gelu_backward(gy, cache):
    """gy: shape of x -> gx = gy * (Phi(x) + x phi(x)), phi the standard normal density
    (tanh form: the derivative of 0.5 x (1 + tanh(g)), g' = sqrt(2/pi) (1 + 3 * 0.044715 x^2))."""
    xp = get_array_module(gy)
    x, approximate = cache
    if approximate == "tanh":
        th = xp.tanh(_K * (x + _C * x ** 3))
        d = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * _K * (1.0 + 3 * _C * x * x)
    else:
        cdf = 0.5 * (1.0 + erf(x * _SQRT_HALF))
        pdf = xp.exp(-0.5 * x * x) * _INV_SQRT_2PI
        d = cdf + x * pdf
    return gy * d


# ---- softmax family ----------------------------------------------------------------------------------
def softmax_forward(x, axis=-1):
    """x: any shape -> y = exp(x) / sum(exp(x), axis); the cache is y."""
    xp = get_array_module(x)
    y = x - x.max(axis=axis, keepdims=True)   # largest entry becomes 0: exp cannot overflow
    xp.exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return y, y


def softmax_backward(gy, y, axis=-1):
    """gy: shape of y -> gx = y * (gy - sum(gy * y, axis)) (the softmax Jacobian, applied)."""
    gx = gy * y
    s = gx.sum(axis=axis, keepdims=True)
    gx -= y * s
    return gx


def log_softmax_forward(x, axis=-1):
    """x: any shape -> z = x - log(sum(exp(x), axis)); the cache is z."""
    xp = get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    s = xp.exp(z).sum(axis=axis, keepdims=True)
    z -= xp.log(s)
    return z, z


def log_softmax_backward(gy, z, axis=-1):
    """gy: shape of z -> gx = gy - softmax(x) * sum(gy, axis)."""
    xp = get_array_module(z)
    p = xp.exp(z)
    p *= gy.sum(axis=axis, keepdims=True)
    return xp.subtract(gy, p, out=p)
