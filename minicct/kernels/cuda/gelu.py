"""GELU on CuPy: one fused elementwise kernel each way (the reference: ``kernels/activation.py``).

The cache is the reference's (x and the form): backward recomputes erf or tanh in registers,
which costs less on a GPU than reading a saved derivative from memory.
"""
from __future__ import annotations

import functools

from minicct import backend
from minicct.kernels.activation import GeluCache, check_approximate


@functools.lru_cache(maxsize=None)
def _kernels():
    cp = backend.import_cupy()
    # T is float or double; erf() and tanh() are CUDA's own (within ~2 ulp), so the GPU needs no
    # polynomial erf.
    fwd = cp.ElementwiseKernel(
        "T x", "T y",
        "y = x * (T)0.5 * ((T)1 + erf(x * (T)0.70710678118654752440));",
        "minicct_gelu_fwd")
    bwd = cp.ElementwiseKernel(
        "T gy, T x", "T gx",
        """T cdf = (T)0.5 * ((T)1 + erf(x * (T)0.70710678118654752440));
           T pdf = exp((T)-0.5 * x * x) * (T)0.39894228040143267794;
           gx = gy * (cdf + x * pdf);""",
        "minicct_gelu_bwd")
    tanh_fwd = cp.ElementwiseKernel(
        "T x", "T y",
        """T g = (T)0.79788456080286535588 * (x + (T)0.044715 * x * x * x);
           y = (T)0.5 * x * ((T)1 + tanh(g));""",
        "minicct_gelu_tanh_fwd")
    tanh_bwd = cp.ElementwiseKernel(
        "T gy, T x", "T gx",
        """T g = (T)0.79788456080286535588 * (x + (T)0.044715 * x * x * x);
           T th = tanh(g);
           T dg = (T)0.79788456080286535588 * ((T)1 + (T)(3 * 0.044715) * x * x);
           gx = gy * (T)0.5 * ((T)1 + th + x * ((T)1 - th * th) * dg);""",
        "minicct_gelu_tanh_bwd")
    return {"none": (fwd, bwd), "tanh": (tanh_fwd, tanh_bwd)}


def gelu_forward(x, approximate="none"):
    """x: CuPy array, any shape -> y, cache (x and the form)."""
    check_approximate(approximate)
    fwd, _ = _kernels()[approximate]
    return fwd(x), GeluCache(x, approximate)


def gelu_backward(gy, cache):
    """gy: shape of x -> gx = gy * GELU'(x)."""
    x, approximate = cache
    _, bwd = _kernels()[approximate]
    return bwd(gy, x)
