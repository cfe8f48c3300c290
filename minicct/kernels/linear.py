"""Fully connected layer with PyTorch's weight layout: y = x @ w.T + b.

    x: (..., IN), w: (OUT, IN), b: (OUT,)  ->  y: (..., OUT)
    gx = gy @ w,   gw = gyᵀ @ x,   gb = sum of gy over all leading dimensions

Leading dimensions of x are folded into one, so forward and backward are each one 2-D GEMM
(NumPy's matmul on a 3-D x would loop over the batch with many small products). This is the
only version: it is already three GEMMs, which BLAS (or cuBLAS) runs as fast as they go.
"""
from __future__ import annotations

from typing import NamedTuple

from minicct.kernels import dispatch
from minicct.kernels._util import column_sums


class LinearCache(NamedTuple):
    x2: object            # (R, IN), x with its leading dimensions folded into R rows
    w: object             # (OUT, IN)
    has_bias: bool
    x_shape: tuple        # (..., IN)


def linear_forward(x, w, b=None):
    """x: (..., IN), w: (OUT, IN), b: (OUT,) or None -> y: (..., OUT), cache."""
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"linear: input of shape {tuple(x.shape)} does not match weight of shape "
                         f"{tuple(w.shape)} (need x: (..., IN), weight: (OUT, IN))")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"linear: bias must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    x2 = x.reshape(-1, w.shape[1])
    y = dispatch.matmul(x2, w.T)
    if b is not None:
        y += b
    return y.reshape(x.shape[:-1] + (w.shape[0],)), LinearCache(x2, w, b is not None, x.shape)


def linear_backward(gy, cache, need_gx=True, need_gw=True):
    """gy: (..., OUT) -> (gx: (..., IN) or None, gw: (OUT, IN) or None, gb: (OUT,) or None)."""
    x2, w, has_bias, x_shape = cache
    gy2 = gy.reshape(-1, w.shape[0])
    gx = dispatch.matmul(gy2, w).reshape(x_shape) if need_gx else None
    gw = dispatch.matmul(gy2.T, x2) if need_gw else None
    gb = column_sums(gy2) if has_bias else None
    return gx, gw, gb
