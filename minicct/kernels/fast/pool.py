"""max_pool2d that keeps the input's memory order: the fast version on NumPy.

Computes what ``kernels/pool.py`` (the reference) computes, with the same signatures, and is tested
against it; ``kernels/dispatch.py`` picks it.

    y[n, c, oh, ow] = max_{i, j} x[n, c, oh*sh + i - ph, ow*sw + j - pw]    (out-of-image: -inf)

What differs from the reference, and why it pays on NumPy:
* No padded copy of x: each offset works on the rectangle of windows where it is inside the image.
* The memory order of x is kept (y and gx come back in it; an NCHW x is made channels-last once):
  our convs hand on (OH, OW, N, C) memory, where a strided slice along H or W is long runs of
  whole (N, C) blocks; NCHW slices with stride 2 would be single values two apart.
* The winning offset is a uint8 and is updated by a branch-free maximum, not a masked store.

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

from minicct.backend import get_array_module, empty_in_order, memory_order
from minicct.kernels.pool import PoolGeometry, pool_geometry


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


class FastPoolCache(NamedTuple):
    arg: object           # (N, C, OH, OW) winning offset k = i*KW + j, in x's memory order
    x_shape: tuple        # (N, C, H, W)
    g: PoolGeometry


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """x: (N, C, H, W) any memory order; kernel_size, stride (default: kernel_size), padding: int
    or (h, w). Returns y: (N, C, OH, OW) in x's memory order, and the cache."""
    g = pool_geometry(x, kernel_size, stride, padding)
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
    return y, FastPoolCache(arg, x.shape, g)


def max_pool2d_backward(gy, cache):
    """gy: (N, C, OH, OW) any memory order -> gx: (N, C, H, W) in forward's x memory order."""
    arg, (N, C, H, W), (KH, KW, sh, sw, ph, pw, OH, OW) = cache
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
