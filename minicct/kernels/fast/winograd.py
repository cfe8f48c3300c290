"""3x3 convolution with stride 1 by Winograd's minimal filtering F(2x2, 3x3): 2.25x fewer multiplies.

The fast version that ``kernels/dispatch.py`` picks on NumPy for 3x3, stride-1 convolutions with
enough channels (CCT's second tokenizer conv); ``kernels/conv.py`` is the reference, with the same
signatures, and the tests check the two against each other and against loops. Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks" (2015), is the reference for the matrices below.

The idea, in one dimension first. Two outputs of a 3-tap filter g over four inputs d,

    y0 = d0 g0 + d1 g1 + d2 g2        y1 = d1 g0 + d2 g1 + d3 g2          (6 multiplies)

can be had from 4 multiplies of *transformed* inputs and filter, ``y = Aᵀ [(G g) ⊙ (Bᵀ d)]``:

    Bᵀ d = (d0 - d2,  d1 + d2,  d2 - d1,  d1 - d3)        (adds only)
    G g  = (g0,  (g0 + g1 + g2)/2,  (g0 - g1 + g2)/2,  g2)  (once per filter, not per pixel)
    y0 = m0 + m1 + m2,   y1 = m1 - m2 - m3                  (Aᵀ: adds only)

Nesting it along rows and columns turns each 4x4 input tile into a 2x2 output tile with 16
multiplies instead of 36. Over channels, each of the 16 products is a sum over C: for a fixed
position (a, b) of the 4x4 transformed tile, it is one matrix product

    M[a, b] (tiles, O) = V[a, b] (tiles, C) @ U[a, b] (C, O)

so a convolution becomes an input transform (adds), 16 GEMMs with 4/9 of the im2col GEMM's
FLOPs, and an output transform (adds). In float32 the transforms cost about 1e-6 relative error,
the same size as summing in another order.

Memory order. The padded input is kept as (Hp, Wp, N, C): a tile row or column is then a slice of
whole (N, C) blocks, so every transform step runs over long contiguous runs. The output comes
back in the same order, (OH, OW, N, O), as an (N, O, OH, OW) view; max-pooling keeps that order.
Backward is the same three steps transposed: output transform transposed, the GEMMs against U
(input gradient) and against V (weight gradient), input transform transposed (adds back into the
overlapping tiles).
"""
from __future__ import annotations

import numpy as np

from typing import NamedTuple

from minicct.backend import get_array_module
from minicct.kernels._util import column_sums, pair
from minicct.kernels.conv import check_args

# G (4, 3) transforms a 3-tap filter; kron(G, G) (16, 9) transforms a 3x3 one in one product:
# U[(a, b)] = sum_(i, j) G[a, i] G[b, j] w[i, j].
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_GG = np.kron(_G, _G)


def supported(w, stride):
    """True when this module computes the conv2d: a 3x3 kernel (w: (O, C, 3, 3)) and stride 1."""
    return w.ndim == 4 and tuple(w.shape[2:]) == (3, 3) and pair(stride, "stride") == (1, 1)


def _tiles(H, W, ph, pw):
    """Output size and number of 2x2 output tiles along each axis."""
    OH, OW = H + 2 * ph - 2, W + 2 * pw - 2
    return OH, OW, -(-OH // 2), -(-OW // 2)


def _input_transform(P, TH, TW, out):
    """Bᵀ d B for every 4x4 tile of the padded input P: (Hp, Wp, N, C) -> out: (4, 4, TH, TW, N, C).

    Tile (t, s) starts at row 2t, column 2s. Rows first: R[a] are the rows 2t + a of all tiles."""
    xp = get_array_module(P)
    R = [P[a:a + 2 * TH:2] for a in range(4)]                     # each (TH, Wp, N, C)
    u = xp.empty((4,) + R[0].shape, P.dtype)
    xp.subtract(R[0], R[2], out=u[0])
    xp.add(R[1], R[2], out=u[1])
    xp.subtract(R[2], R[1], out=u[2])
    xp.subtract(R[1], R[3], out=u[3])
    c = [u[:, :, b:b + 2 * TW:2] for b in range(4)]               # the same along columns
    xp.subtract(c[0], c[2], out=out[:, 0])
    xp.add(c[1], c[2], out=out[:, 1])
    xp.subtract(c[2], c[1], out=out[:, 2])
    xp.subtract(c[1], c[3], out=out[:, 3])
    return out


def _input_transform_backward(gV, TH, TW, gP):
    """The transpose of _input_transform: adds B gV Bᵀ of each tile into gP (Hp, Wp, N, C)
    (tiles overlap by two rows/columns, so the adds accumulate)."""
    xp = get_array_module(gV)
    Wp = gP.shape[1]
    gu = xp.zeros((4, TH, Wp) + gP.shape[2:], gV.dtype)
    c = [gu[:, :, b:b + 2 * TW:2] for b in range(4)]
    # out[:, 0] = c0 - c2, out[:, 1] = c1 + c2, out[:, 2] = c2 - c1, out[:, 3] = c1 - c3
    c[0] += gV[:, 0]
    c[2] -= gV[:, 0]
    c[1] += gV[:, 1]
    c[2] += gV[:, 1]
    c[2] += gV[:, 2]
    c[1] -= gV[:, 2]
    c[1] += gV[:, 3]
    c[3] -= gV[:, 3]
    R = [gP[a:a + 2 * TH:2] for a in range(4)]
    R[0] += gu[0]
    R[2] -= gu[0]
    R[1] += gu[1]
    R[2] += gu[1]
    R[2] += gu[2]
    R[1] -= gu[2]
    R[1] += gu[3]
    R[3] -= gu[3]
    return gP


def _output_transform(M, Y):
    """Aᵀ m A for every tile: M (4, 4, TH, TW, N, O) -> Y (TH, 2, TW, 2, N, O), written in place."""
    xp = get_array_module(M)
    S = xp.empty((2,) + M.shape[1:], M.dtype)                     # rows first: S[r, b]
    xp.add(M[0], M[1], out=S[0])
    S[0] += M[2]
    xp.subtract(M[1], M[2], out=S[1])
    S[1] -= M[3]
    Yc = Y.transpose(3, 1, 0, 2, 4, 5)                            # Yc[c, r] = output (2t + r, 2s + c)
    xp.add(S[:, 0], S[:, 1], out=Yc[0])
    Yc[0] += S[:, 2]
    xp.subtract(S[:, 1], S[:, 2], out=Yc[1])
    Yc[1] -= S[:, 3]
    return Y


def _output_transform_backward(gY):
    """The transpose of _output_transform: gY (TH, 2, TW, 2, N, O) -> gM (4, 4, TH, TW, N, O)."""
    xp = get_array_module(gY)
    g = gY.transpose(3, 1, 0, 2, 4, 5)                            # g[c, r]
    gS = xp.empty((2, 4) + g.shape[2:], gY.dtype)                 # gS[r, b]
    gS[:, 0] = g[0]
    xp.add(g[0], g[1], out=gS[:, 1])
    xp.subtract(g[0], g[1], out=gS[:, 2])
    xp.negative(g[1], out=gS[:, 3])
    gM = xp.empty((4,) + gS.shape[1:], gY.dtype)
    gM[0] = gS[0]
    xp.add(gS[0], gS[1], out=gM[1])
    xp.subtract(gS[0], gS[1], out=gM[2])
    xp.negative(gS[1], out=gM[3])
    return gM


class WinogradCache(NamedTuple):
    V: object             # (16, TH*TW*N, C) transformed input tiles
    U: object             # (16, C, O) transformed filters
    x_shape: tuple        # (N, C, H, W)
    padding: tuple        # (ph, pw)
    has_bias: bool


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """x: (N, C, H, W) any memory order, w: (O, C, 3, 3), b: (O,) or None, stride 1; padding: int
    or (h, w). Returns y: (N, O, OH, OW), a view of an (OH, OW, N, O) array, and the cache."""
    stride, padding = check_args(x, w, b, stride, padding)
    if not supported(w, stride):
        raise ValueError(f"conv2d (Winograd F(2x2, 3x3)): needs a 3x3 kernel and stride 1, got "
                         f"weight shape {tuple(w.shape)}, stride {stride}")
    xp = get_array_module(x)
    N, C, H, W = x.shape
    O = w.shape[0]
    ph, pw = padding
    OH, OW, TH, TW = _tiles(H, W, ph, pw)
    P = xp.zeros((2 * TH + 2, 2 * TW + 2, N, C), x.dtype)       # zero padding all round
    P[ph:ph + H, pw:pw + W] = x.transpose(2, 3, 0, 1)
    V = _input_transform(P, TH, TW, xp.empty((4, 4, TH, TW, N, C), x.dtype)).reshape(16, -1, C)
    GG = xp.asarray(_GG, dtype=w.dtype)
    U = (GG @ w.reshape(O * C, 9).T).reshape(16, O, C).transpose(0, 2, 1)   # (16, C, O)
    M = xp.matmul(V, U).reshape(4, 4, TH, TW, N, O)               # the 16 GEMMs
    Y = _output_transform(M, xp.empty((TH, 2, TW, 2, N, O), x.dtype))
    Y = Y.reshape(2 * TH, 2 * TW, N, O)[:OH, :OW]                  # an odd size drops the last row/col
    if b is not None:
        Y += b
    return Y.transpose(2, 3, 0, 1), WinogradCache(V, U, x.shape, (ph, pw), b is not None)


def conv2d_backward(gy, cache, need_gx=True, need_gw=True):
    """gy: (N, O, OH, OW) -> (gx (N, C, H, W) or None, gw (O, C, 3, 3) or None, gb (O,) or None)."""
    xp = get_array_module(gy)
    V, U, (N, C, H, W), (ph, pw), has_bias = cache
    O = U.shape[2]
    OH, OW, TH, TW = _tiles(H, W, ph, pw)
    g = gy.transpose(2, 3, 0, 1)                                  # (OH, OW, N, O)
    if (OH, OW) != (2 * TH, 2 * TW) or not g.flags.c_contiguous:
        full = xp.zeros((2 * TH, 2 * TW, N, O), gy.dtype)         # the dropped row/col get zeros
        full[:OH, :OW] = g
        g = full
    gb = column_sums(g.reshape(-1, O)) if has_bias else None
    gM = _output_transform_backward(g.reshape(TH, 2, TW, 2, N, O)).reshape(16, -1, O)
    gw = gx = None
    if need_gw:
        gU = xp.matmul(V.transpose(0, 2, 1), gM)                  # (16, C, O)
        GG = xp.asarray(_GG, dtype=gU.dtype)
        gw = (GG.T @ gU.transpose(0, 2, 1).reshape(16, O * C)).reshape(3, 3, O, C).transpose(2, 3, 0, 1)
        gw = xp.ascontiguousarray(gw)
    if need_gx:
        gV = xp.matmul(gM, U.transpose(0, 2, 1)).reshape(4, 4, TH, TW, N, C)
        gP = _input_transform_backward(gV, TH, TW, xp.zeros((2 * TH + 2, 2 * TW + 2, N, C), gy.dtype))
        gx = gP[ph:ph + H, pw:pw + W].transpose(2, 3, 0, 1)
    return gx, gw, gb
