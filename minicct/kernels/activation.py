"""Elementwise activations and the softmax family, forward and backward on raw arrays.

relu, gelu (exact, through an erf written here: NumPy has none), softmax and log_softmax along
an axis (stable: the row maximum is subtracted first, so exp never overflows).
"""
from __future__ import annotations

import math

import numpy as np

from minicct.backend import get_array_module

# Abramowitz & Stegun 7.1.26: erf(x) = 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1 / (1 + p x),
# for x >= 0, odd extension for x < 0. Max abs error 1.5e-7 (tests check <= 1e-6 vs math.erf).
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erfc_tail(a):
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
    q, _ = _erfc_tail(xp.abs(x))
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
def gelu_forward(x, approximate="none"):
    """x: any shape -> y = x * Phi(x), Phi the standard normal CDF = 0.5 (1 + erf(x / sqrt 2)).

    approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as PyTorch's option.
    On CuPy this runs as one fused kernel (``kernels.cuda``); elsewhere ``gelu_forward_xp``.
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    if get_array_module(x) is not np:
        from minicct.kernels import cuda
        return cuda.gelu_forward(x, approximate)
    return gelu_forward_xp(x, approximate)


def gelu_backward(gy, cache):
    """gy: shape of x -> gx = gy * (Phi(x) + x phi(x)), phi the standard normal density."""
    if cache[0] == "cuda":
        from minicct.kernels import cuda
        return cuda.gelu_backward(gy, cache)
    return gelu_backward_xp(gy, cache)


_BLOCK = 1 << 15   # elements per block: a block's few temporaries stay in the L2 cache


def gelu_forward_xp(x, approximate="none"):
    """The portable GELU (any array module): about 20 elementwise steps, each in place.

    On NumPy the steps run block by block, so the ~20 passes read and write the cache, not memory
    (memory sees about 4 passes: x in, y, cdf and e out); this roughly halves the time.
    """
    xp = get_array_module(x)
    if approximate == "tanh":
        return _gelu_tanh_forward(x)
    if xp is not np or x.size <= _BLOCK:
        return _gelu_erf(x)
    xf = np.ascontiguousarray(x).reshape(-1)
    y, d = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    yf, df = y.reshape(-1), d.reshape(-1)
    for s in range(0, xf.size, _BLOCK):
        b = slice(s, s + _BLOCK)
        yf[b], (_, df[b]) = _gelu_erf(xf[b])
    return y, ("none", d)


def _gelu_erf(x):
    """x * Phi(x) through erf, on one array (or block); returns y and the cache for backward.

    The cache is the derivative d = Phi(x) + x phi(x) itself, computed here while its pieces are
    at hand (in the cache, on NumPy): backward is then one product, and one array is kept instead
    of x, Phi(x) and exp(-x^2/2) (an MLP's widest activation, three times over).
    """
    xp = get_array_module(x)
    u = xp.abs(x)
    u *= _SQRT_HALF
    q, e = _erfc_tail(u)           # q = erfc(|x|/sqrt2), e = exp(-x^2/2)
    xp.subtract(0.5, q * 0.5, out=q)  # 0.5 - Phi(-|x|) = |Phi(x) - 0.5|
    cdf = xp.copysign(q, x, out=q)     # branch-free sign flip (where() is ~10x slower here)
    cdf += 0.5                         # Phi(x)
    y = x * cdf
    e *= x
    e *= _INV_SQRT_2PI             # x phi(x), with phi(x) = exp(-x^2/2) / sqrt(2 pi)
    e += cdf                       # d = Phi(x) + x phi(x)
    return y, ("none", e)


def gelu_backward_xp(gy, cache):
    """The portable GELU backward, from what gelu_forward_xp saved: gx = gy * d, one pass."""
    if cache[0] == "tanh":
        return _gelu_tanh_backward(gy, cache)
    return gy * cache[1]


_K = math.sqrt(2.0 / math.pi)


def _gelu_tanh_forward(x):
    xp = get_array_module(x)
    inner = x * x
    inner *= 0.044715 * _K
    inner += _K
    inner *= x                     # sqrt(2/pi) (x + 0.044715 x^3)
    th = xp.tanh(inner, out=inner)
    y = th + 1.0
    y *= x
    y *= 0.5
    return y, ("tanh", x, th)


def _gelu_tanh_backward(gy, cache):
    # d/dx 0.5 x (1 + tanh(g)) = 0.5 (1 + tanh g) + 0.5 x (1 - tanh^2 g) g',  g' = K (1 + 3 c x^2)
    _, x, th = cache
    dg = x * x
    dg *= 3 * 0.044715 * _K
    dg += _K
    sech2 = 1.0 - th * th
    d = x * sech2
    d *= dg
    d += th
    d += 1.0
    d *= 0.5
    d *= gy
    return d


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
