"""The fused pairs of ``kernels/fused.py``, fast on NumPy: the same values with fewer arrays.

    add_drop_path   y = branch * mask, then x added into it in place: one output array and no
                    temporary (x + drop_path(branch) makes the scaled branch, then the sum).
    linear_gelu     the GEMM's output is overwritten with its GELU (``fast/gelu.py``'s blocked
                    passes, which also give GELU'); backward multiplies gy into that derivative in
                    place, so neither direction allocates an array for the GELU's result
                    (measured on CCT-2's fc1, 1024 x 128 -> 128: forward + backward 0.70x and
                    0.88x of linear then the fast gelu in two runs, one thread, loaded machine);
                    in the whole CCT-2 training step, a quiet A/B of three alternating pairs of
                    10-step medians: 340 ms against 343 ms composed, faster in every pair by 2-6 ms, ~1%).

Same signatures and results as the references (tests compare them, forward and backward, and
gradcheck them in float64); ``kernels/dispatch.py`` picks.
"""
from __future__ import annotations

from minicct.kernels.dropout import drop_path_mask, drop_path_backward
from minicct.kernels.fast.gelu import GeluDerivative, gelu_reusing_input
from minicct.kernels.fused import LinearGeluCache, check_same_shape
from minicct.kernels.linear import linear_forward, linear_backward


def add_drop_path_forward(x, branch, p=0.0, training=True, generator=None):
    """x, branch: (N, ...) -> y = x + drop_path(branch), cache: the mask (None: nothing dropped).
    The mask is drawn as drop_path draws it, so the dropout stream advances the same way."""
    check_same_shape(x, branch)
    m = drop_path_mask(branch, p, training, generator)
    if m is None:
        return x + branch, None
    y = branch * m
    y += x
    return y, m


def add_drop_path_backward(gy, m):
    """gy: shape of x -> (gx, gbranch) = (gy, gy * mask)."""
    return gy, drop_path_backward(gy, m)


def linear_gelu_forward(x, w, b=None, approximate="none"):
    """x: (..., IN), w: (OUT, IN), b: (OUT,) or None -> y = gelu(x @ w.T + b): (..., OUT), cache."""
    h, linear_cache = linear_forward(x, w, b)     # a new array: the GELU may overwrite it
    y, d = gelu_reusing_input(h, approximate)
    return y, LinearGeluCache(linear_cache, GeluDerivative(d))


def linear_gelu_backward(gy, cache, need_gx=True, need_gw=True):
    """gy: (..., OUT) -> (gx, gw, gb). GELU' is read once, here: the product goes into it."""
    gh = cache.gelu.d
    gh *= gy
    return linear_backward(gh, cache.linear, need_gx=need_gx, need_gw=need_gw)
