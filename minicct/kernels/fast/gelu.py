"""GELU, fast on NumPy: the derivative comes out of the forward, and big arrays go block by block.

Same signatures and results as the reference ``kernels/activation.py`` (tests compare them,
forward and backward). Two differences, both for speed:

  * The cache is the derivative d = GELU'(x) itself, computed in the forward while its pieces
    (Phi(x), exp(-x^2/2), or tanh) are at hand: backward is one product, and one array is kept
    instead of x (the reference recomputes erf and exp from x in backward).
  * Each step is in place, and arrays larger than ``BLOCK`` go through in blocks, so the ~20
    elementwise passes read and write the L2 cache, not memory (memory sees about 4 passes: x in,
    y and d out); this roughly halves the time on a CPU. Blocking changes no value: each element
    goes through the same operations.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minicct.backend import get_array_module
from minicct.kernels.activation import check_approximate, erfc_tail

BLOCK = 1 << 15   # elements per block: a block's few temporaries stay in the L2 cache

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K = math.sqrt(2.0 / math.pi)
_C = 0.044715


class GeluDerivative(NamedTuple):
    d: object           # shape of x: GELU'(x)


def gelu_forward(x, approximate="none"):
    """x: any shape -> y = GELU(x) (exact or tanh form, as the reference), cache: GELU'(x)."""
    check_approximate(approximate)
    step = _gelu_tanh if approximate == "tanh" else _gelu_erf
    if x.size <= BLOCK:
        y, d = step(x)
        return y, GeluDerivative(d)
    xp = get_array_module(x)
    xf = xp.ascontiguousarray(x).reshape(-1)
    y, d = xp.empty(x.shape, x.dtype), xp.empty(x.shape, x.dtype)
    yf, df = y.reshape(-1), d.reshape(-1)
    for s in range(0, xf.size, BLOCK):
        b = slice(s, s + BLOCK)
        yf[b], df[b] = step(xf[b])
    return y, GeluDerivative(d)


def gelu_reusing_input(x, approximate="none"):
    """x: any shape, C-contiguous, an array the caller owns and needs no more -> (y, d): GELU(x)
    and GELU'(x). An array larger than ``BLOCK`` is overwritten block by block, so y *is* x and
    no array is allocated for it; a small one goes in one step, as ``gelu_forward`` does it."""
    check_approximate(approximate)
    step = _gelu_tanh if approximate == "tanh" else _gelu_erf
    if x.size <= BLOCK:
        return step(x)
    if not x.flags.c_contiguous:
        raise ValueError("gelu_reusing_input: x must be C-contiguous (written through a flat view)")
    xp = get_array_module(x)
    xf = x.reshape(-1)
    d = xp.empty(x.shape, x.dtype)
    df = d.reshape(-1)
    for s in range(0, xf.size, BLOCK):
        b = slice(s, s + BLOCK)
        xf[b], df[b] = step(xf[b])
    return x, d


def gelu_backward(gy, cache):
    """gy: shape of x -> gx = gy * GELU'(x), one pass."""
    return gy * cache.d


def _gelu_erf(x):
    """x * Phi(x) through erf on one block -> (y, d), d = Phi(x) + x phi(x)."""
    xp = get_array_module(x)
    u = xp.abs(x)
    u *= _SQRT_HALF
    q, e = erfc_tail(u)            # q = erfc(|x|/sqrt2), e = exp(-x^2/2)
    xp.subtract(0.5, q * 0.5, out=q)   # 0.5 - Phi(-|x|) = |Phi(x) - 0.5|
    cdf = xp.copysign(q, x, out=q)     # branch-free sign flip (where() is ~10x slower here)
    cdf += 0.5                         # Phi(x)
    y = x * cdf
    e *= x
    e *= _INV_SQRT_2PI             # x phi(x), with phi(x) = exp(-x^2/2) / sqrt(2 pi)
    e += cdf                       # d = Phi(x) + x phi(x)
    return y, e


def _gelu_tanh(x):
    """0.5 x (1 + tanh(g)) on one block, g = sqrt(2/pi) (x + 0.044715 x^3) -> (y, d),
    d = 0.5 (1 + tanh g) + 0.5 x (1 - tanh^2 g) g',  g' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    xp = get_array_module(x)
    inner = x * x
    inner *= _C * _K
    inner += _K
    inner *= x                     # g
    th = xp.tanh(inner, out=inner)
    y = th + 1.0
    y *= x
    y *= 0.5
    dg = x * x
    dg *= 3 * _C * _K
    dg += _K                       # g'
    d = x * (1.0 - th * th)
    d *= dg                        # x (1 - tanh^2 g) g'
    d += th
    d += 1.0
    d *= 0.5
    return y, d
