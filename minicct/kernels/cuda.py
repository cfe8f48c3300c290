"""CuPy fast paths: fused elementwise kernels that replace a chain of whole-array passes.

Each function here computes exactly what its portable twin in the other kernel files computes
(tests compare the two on a GPU), in one kernel launch: one read of x, one write of y. CuPy is
imported on first use only; nothing here runs on the CPU.
"""
from __future__ import annotations

import functools

from minicct import backend


@functools.lru_cache(maxsize=None)
def _kernels():
    cp = backend._import_cupy()
    # T is float or double; erf() and tanh() are CUDA's own (correctly rounded to ~1 ulp), so the
    # GPU needs no polynomial erf.
    gelu_fwd = cp.ElementwiseKernel(
        "T x", "T y",
        "y = x * (T)0.5 * ((T)1 + erf(x * (T)0.70710678118654752440));",
        "minicct_gelu_fwd")
    gelu_bwd = cp.ElementwiseKernel(
        "T gy, T x", "T gx",
        """T cdf = (T)0.5 * ((T)1 + erf(x * (T)0.70710678118654752440));
           T pdf = exp((T)-0.5 * x * x) * (T)0.39894228040143267794;
           gx = gy * (cdf + x * pdf);""",
        "minicct_gelu_bwd")
    gelu_tanh_fwd = cp.ElementwiseKernel(
        "T x", "T y",
        """T g = (T)0.79788456080286535588 * (x + (T)0.044715 * x * x * x);
           y = (T)0.5 * x * ((T)1 + tanh(g));""",
        "minicct_gelu_tanh_fwd")
    gelu_tanh_bwd = cp.ElementwiseKernel(
        "T gy, T x", "T gx",
        """T g = (T)0.79788456080286535588 * (x + (T)0.044715 * x * x * x);
           T th = tanh(g);
           T dg = (T)0.79788456080286535588 * ((T)1 + (T)(3 * 0.044715) * x * x);
           gx = gy * (T)0.5 * ((T)1 + th + x * ((T)1 - th * th) * dg);""",
        "minicct_gelu_tanh_bwd")
    return {"none": (gelu_fwd, gelu_bwd), "tanh": (gelu_tanh_fwd, gelu_tanh_bwd)}


def gelu_forward(x, approximate="none"):
    """x: CuPy array, any shape -> y, cache (only x is kept: backward recomputes in registers)."""
    fwd, _ = _kernels()[approximate]
    return fwd(x), ("cuda", approximate, x)


def gelu_backward(gy, cache):
    _, approximate, x = cache
    _, bwd = _kernels()[approximate]
    return bwd(gy, x)
