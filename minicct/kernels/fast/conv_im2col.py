"""conv2d by im2col on a flat buffer: the fast version on NumPy (and what runs on CuPy in fast mode).

Computes what ``kernels/conv.py`` (the reference) computes, with the same signatures, and is tested
against it; ``kernels/dispatch.py`` picks it. Only the memory layout differs:

    y[n, o, oh, ow] = b[o] + sum_{c, i, j} w[o, c, i, j] * xpad[n, c, oh*sh + i, ow*sw + j]

Layout trick (why this is fast on a CPU). The padded input is stored channel-major and *flat*:
one row per channel holding the padded pixels in row-major order with the N images *innermost*
(position ``(h, w, n)`` at ``(h*Wq + w)*N + n``), ``buf: (C, T)``. In that row, moving the kernel
by (i, j) is moving by ``(i*Wq + j)*N`` elements, so the patch matrix
``cols[(c, i, j), (oh, ow, n)] = buf[c, ((oh*sh + i)*Wq + ow*sw + j)*N + n]`` is one strided *view*
of ``buf`` (``as_strided``, no arithmetic), and copying it out is ``C*KH*KW*OH`` runs of ``OW*N``
contiguous values (whole runs at stride 1). Neighbouring rows share their zero padding
(``Wq = W + pw``): a window that reaches past the right edge of a row reads the left padding of the
next one.

The GEMM gives the output channels-last, ``Y: (M, O)``, M = OH*OW*N in (oh, ow, n) order, and ``y``
is returned as an ``(N, O, OH, OW)`` *view* of it: no transpose copy. Every later op works on any
strides; in this order a row or column of pixels is a block of whole (N, O) slabs, which is what
max-pooling reads, and the token layout ``(N, H*W, C)`` is one copy away. Backward takes gy in the
same order, which is the order max-pooling's backward hands it on in, so the gradient is the
GEMM's operand without a copy.

(An earlier version ran stride-1 windows as one long run per channel, OH*Wq*N positions with the
``Wq - OW`` columns that straddle into the next row computed and thrown away. Its backward then
needed a zero-padded copy of gy; measured on CCT's first conv, 16 images, forward + backward with
the pool: 10.9 ms against 8.5 for this layout, and never faster at 1, 4, 64 or 128 images.)
"""
from __future__ import annotations

import math
from typing import NamedTuple

from minicct.backend import get_array_module
from minicct.kernels import dispatch
from minicct.kernels.conv import check_args, conv_output_size


class _Geometry:
    """Where everything sits in the flat padded buffer (all offsets in elements)."""

    def __init__(self, x_shape, KH, KW, stride, padding):
        N, C, H, W = x_shape
        sh, sw = stride
        ph, pw = padding
        OH, OW = conv_output_size(H, KH, sh, ph), conv_output_size(W, KW, sw, pw)
        # Rows: the padding above and below; columns: the pixels and the padding shared with the
        # next row (the right padding of a row is the left padding of the next).
        Hq, Wq = H + 2 * ph, W + pw
        grid_shape, grid_strides = (OH, OW, N), (sh * Wq * N, sw * N, 1)
        last = sum((n - 1) * s for n, s in zip(grid_shape, grid_strides))
        self.N, self.C, self.H, self.W, self.KH, self.KW = N, C, H, W, KH, KW
        self.sh, self.sw, self.ph, self.pw = sh, sw, ph, pw
        self.OH, self.OW, self.Hq, self.Wq = OH, OW, Hq, Wq
        self.grid_shape, self.grid_strides = grid_shape, grid_strides
        self.M = math.prod(grid_shape)                  # output positions: the GEMM's rows
        # The buffer's length: the padded images, or past the last window the grid reads if longer.
        self.T = max(Hq * Wq * N, last + ((KH - 1) * Wq + KW - 1) * N + 1)

    def images(self, buf):
        """(C, T) flat buffer -> (C, Hq, Wq, N) view of its padded-image part."""
        g = self
        return buf[:, :g.Hq * g.Wq * g.N].reshape(g.C, g.Hq, g.Wq, g.N)

    def interior(self, buf):
        """(C, T) flat buffer -> (N, C, H, W) view of the image pixels (padding left out)."""
        g = self
        return g.images(buf)[:, g.ph:g.ph + g.H, g.pw:g.pw + g.W].transpose(3, 0, 1, 2)

    def shifted(self, buf, i, j):
        """View (C, *grid) of buf at kernel offset (i, j): the entries ``cols[(c, i, j), :]``."""
        g = self
        xp = get_array_module(buf)
        s = buf.itemsize
        return xp.lib.stride_tricks.as_strided(
            buf[:, (i * g.Wq + j) * g.N:], shape=(g.C,) + g.grid_shape,
            strides=(g.T * s,) + tuple(k * s for k in g.grid_strides))

    def outputs(self, Y):
        """(M, O) GEMM result -> (N, O, OH, OW) view of it."""
        g = self
        return Y.reshape(g.OH, g.OW, g.N, Y.shape[1]).transpose(2, 3, 0, 1)

    def output_grads(self, gy):
        """gy (N, O, OH, OW) -> (M, O) laid out like the GEMM's Y (free when gy is a view of such
        memory, as max-pooling's backward and our own forward leave it)."""
        xp = get_array_module(gy)
        return xp.ascontiguousarray(gy.transpose(2, 3, 0, 1)).reshape(self.M, gy.shape[1])


class Im2colCache(NamedTuple):
    cols: object          # (C*KH*KW, M) patch matrix, M = positions of the flat grid
    w: object             # (O, C, KH, KW)
    has_bias: bool
    g: _Geometry


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """x: (N, C, H, W) any memory order, w: (O, C, KH, KW), b: (O,) or None; stride, padding: int
    or (h, w). Returns y: (N, O, OH, OW), a view of (OH, OW, N, O) memory, and the cache."""
    stride, padding = check_args(x, w, b, stride, padding)
    xp = get_array_module(x)
    O, C, KH, KW = w.shape
    g = _Geometry(x.shape, KH, KW, stride, padding)

    # Zero buffer with the images written in; everything not written is padding.
    buf = xp.zeros((C, g.T), dtype=x.dtype)
    g.interior(buf)[...] = x

    cols = xp.empty((C, KH, KW) + g.grid_shape, dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            cols[:, i, j] = g.shifted(buf, i, j)
    cols = cols.reshape(C * KH * KW, g.M)

    w2 = w.reshape(O, C * KH * KW)
    Y = dispatch.matmul(cols.T, w2.T)                  # (M, O): the one GEMM
    if b is not None:
        Y += b
    return g.outputs(Y), Im2colCache(cols, w, b is not None, g)


_GW_BLOCK = 8192   # columns of cols per partial product in _weight_grad


def _weight_grad(cols, gY, block):
    """cols: (K, M), gY: (M, O) -> cols @ gY: (K, O), summed over blocks of ``block`` columns of M
    (None: one product).

    One product with a tiny (K, O) result and a huge inner size M: OpenBLAS threads such a shape
    badly, and on a busy machine it can take 10-100x longer than its FLOPs say. Blocks of
    _GW_BLOCK give ordinary-sized products and the same speed on an idle machine. cuBLAS has no
    such trouble, so on a GPU (dispatch binds block=None) it is one product.
    """
    if block is None:
        return dispatch.matmul(cols, gY)
    xp = get_array_module(cols)
    K, M = cols.shape
    acc = xp.zeros((K, gY.shape[1]), dtype=gY.dtype)
    part = xp.empty_like(acc)
    for s in range(0, M, block):
        xp.matmul(cols[:, s:s + block], gY[s:s + block], out=part)
        acc += part
    return acc


def conv2d_backward(gy, cache, need_gx=True, need_gw=True, gw_block="default"):
    """gy: (N, O, OH, OW) -> (gx: (N, C, H, W) or None, gw: (O, C, KH, KW) or None, gb: (O,) or None).

    gw_block: columns per partial product of the weight gradient ("default": _GW_BLOCK, read now;
    None: one product, what a GPU gets).

    gw is a GEMM against the saved patch matrix (in blocks, see _weight_grad); gx is one GEMM to
    patch gradients, then col2im: each kernel offset adds its slab back into the flat buffer
    (KH*KW adds, no scatter). The cache keeps the patch matrix: C*KH*KW*M values.
    """
    cols, w, has_bias, g = cache
    xp = get_array_module(gy)
    O, C, KH, KW = w.shape

    gY = g.output_grads(gy)          # (M, O) like the GEMM's Y

    gb = gY.sum(axis=0) if has_bias else None
    block = _GW_BLOCK if gw_block == "default" else gw_block
    gw = _weight_grad(cols, gY, block).T.reshape(w.shape) if need_gw else None
    gx = None
    if need_gx:
        gcols = dispatch.matmul(w.reshape(O, -1).T, gY.T).reshape(C, KH, KW, *g.grid_shape)  # (C*KH*KW, M)
        gbuf = xp.zeros((C, g.T), dtype=gy.dtype)
        for i in range(KH):
            for j in range(KW):
                # One offset never hits the same element twice, so a plain += is exact here;
                # different offsets overlap, and they are added one after another.
                view = g.shifted(gbuf, i, j)
                view += gcols[:, i, j]
        gx = g.interior(gbuf)
    return gx, gw, gb
