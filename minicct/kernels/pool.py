"""2-D max pooling over (possibly overlapping) windows: the reference.

    y[n, c, oh, ow] = max_{i, j} xpad[n, c, oh*sh + i, ow*sw + j]      (padding: -inf, never wins)

    x: (N, C, H, W)  ->  y: (N, C, OH, OW),  OH = (H + 2*ph - KH) // sh + 1

As for conv2d, a loop over the KH*KW kernel offsets, never over pixels: for one offset (i, j) the
window elements are one strided slice of the padded input. Ties go to the first maximum in
row-major window order, as in PyTorch: offsets are visited in that order and a later one takes over
only when *strictly* greater. The cache keeps that winning offset k = i*KW + j of each window;
backward sends each gy to it, adding (windows overlap when the stride is smaller than the kernel).

Portable (NumPy or CuPy) and plain, as lesson 07 builds it. ``kernels/fast/pool.py`` is the NumPy
fast version (keeps the input's memory order, no padded copy), tested against this one;
``kernels/dispatch.py`` picks which runs.
"""
from __future__ import annotations

from typing import NamedTuple

from minicct.backend import get_array_module
from minicct.kernels._util import pair, check_positive, check_nonnegative, check_ndim
from minicct.kernels.conv import conv_output_size


class PoolGeometry(NamedTuple):
    KH: int
    KW: int
    sh: int
    sw: int
    ph: int
    pw: int
    OH: int
    OW: int


def pool_geometry(x, kernel_size, stride=None, padding=0):
    """Check the arguments of max_pool2d (ValueError naming them) and work out the output size."""
    check_ndim(x, 4, "max_pool2d input x", "(N, C, H, W)")
    KH, KW = pair(kernel_size, "kernel_size")
    sh, sw = pair(kernel_size if stride is None else stride, "stride")
    ph, pw = pair(padding, "padding")
    check_positive((KH, KW), "max_pool2d kernel_size")
    check_positive((sh, sw), "max_pool2d stride")
    check_nonnegative((ph, pw), "max_pool2d padding")
    if 2 * ph > KH or 2 * pw > KW:
        # PyTorch's rule; it also guarantees that every window holds at least one real element.
        raise ValueError(f"max_pool2d: padding {(ph, pw)} must be at most half the kernel size {(KH, KW)}")
    N, C, H, W = x.shape
    if KH > H + 2 * ph or KW > W + 2 * pw:
        raise ValueError(f"max_pool2d: kernel {(KH, KW)} is larger than the padded input "
                         f"{(H + 2 * ph, W + 2 * pw)} (x shape {tuple(x.shape)}, padding {(ph, pw)})")
    return PoolGeometry(KH, KW, sh, sw, ph, pw, conv_output_size(H, KH, sh, ph),
                        conv_output_size(W, KW, sw, pw))


class PoolCache(NamedTuple):
    arg: object           # (N, C, OH, OW) winning offset k = i*KW + j of each window
    x_shape: tuple        # (N, C, H, W)
    g: PoolGeometry


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """x: (N, C, H, W); kernel_size, stride (default: kernel_size), padding: int or (h, w).
    Returns y: (N, C, OH, OW) and the cache for ``max_pool2d_backward``."""
    g = pool_geometry(x, kernel_size, stride, padding)
    KH, KW, sh, sw, ph, pw, OH, OW = g
    xp = get_array_module(x)
    N, C, H, W = x.shape
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-xp.inf)
    y = xp.full((N, C, OH, OW), -xp.inf, dtype=x.dtype)
    arg = xp.zeros((N, C, OH, OW), dtype=xp.int32)
    for i in range(KH):
        for j in range(KW):
            win = xpad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw]
            better = win > y                  # strict: an equal later element never takes over
            arg[better] = i * KW + j
            y = xp.maximum(y, win)            # (a NaN in a window comes out NaN, as in PyTorch)
    return y, PoolCache(arg, x.shape, g)


def max_pool2d_backward(gy, cache):
    """gy: (N, C, OH, OW) -> gx: (N, C, H, W); each gy goes to its window's (first) maximum."""
    arg, (N, C, H, W), (KH, KW, sh, sw, ph, pw, OH, OW) = cache
    xp = get_array_module(gy)
    gxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=gy.dtype)
    for i in range(KH):
        for j in range(KW):
            # One offset's slice has distinct elements; the slices of different offsets overlap.
            gxpad[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw] += xp.where(arg == i * KW + j, gy, 0)
    return gxpad[:, :, ph:ph + H, pw:pw + W]
