"""2-D convolution (cross-correlation, as PyTorch's conv2d) as one matrix product: the reference.

    y[n, o, oh, ow] = b[o] + sum_{c, i, j} w[o, c, i, j] * xpad[n, c, oh*sh + i, ow*sw + j]

    x: (N, C, H, W), w: (O, C, KH, KW), b: (O,)  ->  y: (N, O, OH, OW),  OH = (H + 2*ph - KH) // sh + 1

im2col: for one kernel offset (i, j), the pixels it meets in every window are one strided slice of
the padded input, (N, C, OH, OW). Stacking the KH*KW slices gives the patch matrix
``cols: (N*OH*OW, C*KH*KW)``, one row per output pixel, and the convolution is one GEMM with the
weight seen as ``(O, C*KH*KW)``. Backward is two GEMMs (gw against cols, the patch gradients
against w) and col2im: each offset adds its slice of patch gradients back into a zero padded
gradient; windows overlap when the stride is smaller than the kernel, so these are adds, never
assignments.

Portable (NumPy or CuPy) and plain, as lesson 06 builds it. Faster versions with the same
signatures live in ``kernels/fast/`` (a flat-buffer im2col, Winograd for 3x3) and are tested
against this one; ``kernels/dispatch.py`` picks which runs.
"""
from __future__ import annotations

from typing import NamedTuple

from minicct.backend import get_array_module
from minicct.kernels._util import pair, check_positive, check_nonnegative, check_ndim


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution or pooling along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def check_args(x, w, b, stride, padding):
    """ValueError naming the problem, else (stride, padding) as pairs. Every conv2d version calls it."""
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    check_ndim(x, 4, "conv2d input x", "(N, C, H, W)")
    check_ndim(w, 4, "conv2d weight", "(O, C, KH, KW)")
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: input has {x.shape[1]} channels (x shape {tuple(x.shape)}) but the "
                         f"weight expects {w.shape[1]} (weight shape {tuple(w.shape)})")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    check_positive(stride, "conv2d stride")
    check_nonnegative(padding, "conv2d padding")
    for name, n, k, p in (("height", x.shape[2], w.shape[2], padding[0]),
                          ("width", x.shape[3], w.shape[3], padding[1])):
        if k > n + 2 * p:
            raise ValueError(f"conv2d: kernel {name} {k} is larger than the padded input {name} "
                             f"{n} + 2*{p} (x shape {tuple(x.shape)}, weight shape {tuple(w.shape)})")
    return stride, padding


class ConvCache(NamedTuple):
    cols: object          # (N*OH*OW, C*KH*KW) patch matrix
    w: object             # (O, C, KH, KW)
    x_shape: tuple        # (N, C, H, W)
    stride: tuple         # (sh, sw)
    padding: tuple        # (ph, pw)
    has_bias: bool


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """x: (N, C, H, W), w: (O, C, KH, KW), b: (O,) or None; stride, padding: int or (h, w).
    Returns y: (N, O, OH, OW) and the cache for ``conv2d_backward``."""
    stride, padding = check_args(x, w, b, stride, padding)
    (sh, sw), (ph, pw) = stride, padding
    xp = get_array_module(x)
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, sh, ph), conv_output_size(W, KW, sw, pw)
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = xp.empty((N, OH, OW, C, KH, KW), dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            # cols[n, oh, ow, c, i, j] = xpad[n, c, oh*sh + i, ow*sw + j]
            cols[..., i, j] = xpad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw].transpose(0, 2, 3, 1)
    cols = cols.reshape(N * OH * OW, C * KH * KW)
    y = cols @ w.reshape(O, -1).T                    # (N*OH*OW, O): the one GEMM
    if b is not None:
        y += b
    y = y.reshape(N, OH, OW, O).transpose(0, 3, 1, 2)
    return y, ConvCache(cols, w, x.shape, stride, padding, b is not None)


def conv2d_backward(gy, cache, need_gx=True, need_gw=True):
    """gy: (N, O, OH, OW) -> (gx: (N, C, H, W) or None, gw: (O, C, KH, KW) or None, gb: (O,) or None)."""
    cols, w, (N, C, H, W), (sh, sw), (ph, pw), has_bias = cache
    xp = get_array_module(gy)
    O, _, KH, KW = w.shape
    OH, OW = gy.shape[2:]
    gy2 = gy.transpose(0, 2, 3, 1).reshape(N * OH * OW, O)     # rows in the order of cols
    gb = gy2.sum(axis=0) if has_bias else None
    gw = (gy2.T @ cols).reshape(w.shape) if need_gw else None
    gx = None
    if need_gx:
        gcols = (gy2 @ w.reshape(O, -1)).reshape(N, OH, OW, C, KH, KW)
        gxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=gy.dtype)
        for i in range(KH):
            for j in range(KW):
                # col2im: one offset's slice has distinct elements; offsets overlap, so add.
                gxpad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw] += gcols[..., i, j].transpose(0, 3, 1, 2)
        gx = gxpad[:, :, ph:ph + H, pw:pw + W]
    return gx, gw, gb
