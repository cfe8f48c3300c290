"""2-D max pooling over (possibly overlapping) windows, forward and backward.

    y[n, c, oh, ow] = max_{i, j} x[n, c, oh*sh + i - ph, ow*sw + j - pw]    (out-of-image: -inf)

Both directions loop over the KH*KW kernel offsets (9 for 3x3), never over pixels: for one offset
(i, j), the window elements form one strided slice of x, so each step is a whole-array op. With
padding, an offset reaches outside the image for the first/last few windows only; each offset
works on the rectangle of windows where it is inside, so no padded copy of x is ever made (the
-inf padding is implicit: it never wins).

Ties go to the first maximum in row-major window order, as in PyTorch: offsets are visited in that
order and a later one takes over only when *strictly* greater. The backward sends each gy to that
one position; where windows overlap, the slices of the different offsets are added one by one.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minicct.backend import get_array_module, empty_in_order, memory_order
from minicct.kernels._util import pair, check_positive, check_nonnegative, check_ndim
from minicct.kernels.conv import conv_output_size


def empty_like_layout(xp, x, shape, dtype):
    """An empty array of this shape with the memory order of x (an (N, C, H, W) x that is
    channels-last gives a channels-last array, and so on).

    Our convs return channels-last data; keeping that order downstream means strided slices read
    long contiguous runs (all C channels of a pixel, or of a pixel in every image), and the tokens
    (N, H*W, C) are a free view.
    """
    return empty_in_order(xp, shape, dtype, memory_order(x))


def _channels_inner(a):
    """True when the channel axis (1) of an (N, C, H, W) array has the smallest stride."""
    return memory_order(a)[-1] == 1


def _inside(k, size, stride, pad, out):
    """For kernel offset k along one axis: (output slice, input slice) of the windows whose
    element at offset k lies inside the image, i.e. 0 <= o*stride + k - pad < size."""
    lo = max(0, -(-(pad - k) // stride))               # ceil((pad - k) / stride), at least 0
    hi = min(out - 1, (size - 1 + pad - k) // stride)  # last o inside
    if hi < lo:
        return None, None
    first = lo * stride + k - pad
    return slice(lo, hi + 1), slice(first, first + (hi - lo) * stride + 1, stride)


def _offsets(KH, KW, H, W, sh, sw, ph, pw, OH, OW):
    """Yield (k, output index, input index) for each kernel offset k = i*KW + j, row-major."""
    for i in range(KH):
        oi, xi = _inside(i, H, sh, ph, OH)
        for j in range(KW):
            oj, xj = _inside(j, W, sw, pw, OW)
            if oi is not None and oj is not None:
                yield i * KW + j, (Ellipsis, oi, oj), (Ellipsis, xi, xj)


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


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """x: (N, C, H, W); kernel_size, stride (default: kernel_size), padding: int or (h, w).

    Returns y: (N, C, OH, OW) and the cache for ``max_pool2d_backward`` (the winning offset of
    each window). On CuPy this is one fused kernel (``kernels.cuda``), else ``max_pool2d_forward_xp``.
    """
    g = pool_geometry(x, kernel_size, stride, padding)
    if get_array_module(x) is not np:
        from minicct.kernels import cuda
        return cuda.max_pool2d_forward(x, g)
    return _forward_xp(x, g)


def max_pool2d_forward_xp(x, kernel_size, stride=None, padding=0):
    """The portable max_pool2d (any array module): KH*KW whole-array steps."""
    return _forward_xp(x, pool_geometry(x, kernel_size, stride, padding))


def _forward_xp(x, g):
    xp = get_array_module(x)
    KH, KW, sh, sw, ph, pw, OH, OW = g
    N, C, H, W = x.shape
    if not _channels_inner(x):
        # Work channels-last: a slice with stride sw along W is then runs of C contiguous values
        # (NumPy's inner loops are fast on those), instead of single values sw apart.
        x = xp.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    idx_dtype = xp.uint8 if KH * KW <= 256 else xp.int32
    y = empty_like_layout(xp, x, (N, C, OH, OW), x.dtype)
    y.fill(-xp.inf)
    arg = empty_like_layout(xp, x, (N, C, OH, OW), idx_dtype)   # winning offset k = i*KW + j
    arg.fill(0)
    for k, o, i in _offsets(KH, KW, H, W, sh, sw, ph, pw, OH, OW):
        win, ys = x[i], y[o]
        better = win > ys                # strict: an equal later element never takes over
        # k grows along the loop, so "k where better, else keep" is a maximum (no branches).
        xp.maximum(arg[o], xp.multiply(better, k, dtype=idx_dtype), out=arg[o])
        xp.maximum(ys, win, out=ys)
    return y, ("xp", arg, x.shape, g)


def max_pool2d_backward(gy, cache):
    """gy: (N, C, OH, OW) -> gx: (N, C, H, W); each gy goes to its window's (first) maximum."""
    if cache[0] == "cuda":
        from minicct.kernels import cuda
        return cuda.max_pool2d_backward(gy, cache)
    _, arg, (N, C, H, W), (KH, KW, sh, sw, ph, pw, OH, OW) = cache
    xp = get_array_module(gy)
    if memory_order(gy) != memory_order(arg):
        # One copy into arg's memory order, instead of KH*KW passes over mismatched strides.
        gy_ = empty_like_layout(xp, arg, gy.shape, gy.dtype)
        gy_[...] = gy
        gy = gy_
    gx = empty_like_layout(xp, arg, (N, C, H, W), gy.dtype)       # the memory order of forward's x
    gx.fill(0)
    for k, o, i in _offsets(KH, KW, H, W, sh, sw, ph, pw, OH, OW):
        # The elements of one offset's slice are distinct, so += is exact; overlaps between
        # offsets accumulate across iterations. (A multiply by the mask, not where(): NumPy's
        # where() branches per element and is ~7x slower on a random mask.)
        gx[i] += gy[o] * (arg[o] == k)
    return gx
