"""Lesson 06 — convolution: loops, then im2col, then strided views; and its backward.

What you will learn
    * what a 2-D convolution computes, written as plain loops (slow, but obviously right);
    * im2col: copy every KH x KW patch into a column, and the whole convolution becomes one
      matrix product — the trick every fast CPU/GPU convolution starts from;
    * the same patches as a *strided view* of the input: no copying at all, only new strides;
    * the backward: dL/dw and dL/db are matrix products and sums; dL/dx scatters each column back
      to where it came from (col2im), *adding* where windows overlap;
    * a gradient check catching a col2im that assigns instead of adding;
    * Winograd's trick: two outputs of a 3-tap filter from 4 multiplies instead of 6 — the fast
      path minicct takes for 3x3 convolutions on the CPU.

What it builds on
    Lesson 01 (strides and views), lesson 03 (Functions), lesson 04 (gradcheck).

Run it:  python lessons/06_convolution.py
"""
import time

import numpy as np
from numpy.lib.stride_tricks import as_strided

import minicct
from minicct import Function, GradcheckError, Tensor, gradcheck

rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. Convolution as loops")
# y[n, o, oh, ow] = b[o] + sum over c, i, j of w[o, c, i, j] * xpad[n, c, oh*s + i, ow*s + j]
# Each output pixel is a dot product between the kernel and one KH x KW patch of every channel.
# The output size along one axis: (H + 2 pad - KH) // stride + 1.
def out_size(h, k, stride, pad):
    return (h + 2 * pad - k) // stride + 1

def conv_loops(x, w, b, stride=1, pad=0):
    """x: (N, C, H, W), w: (O, C, KH, KW), b: (O,) -> (N, O, OH, OW)."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.zeros((N, O, OH, OW), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            for oh in range(OH):
                for ow in range(OW):
                    patch = xp[n, :, oh * stride:oh * stride + KH, ow * stride:ow * stride + KW]
                    y[n, o, oh, ow] = np.sum(patch * w[o]) + b[o]
    return y

x = rng.standard_normal((2, 3, 7, 7))                 # (N, C, H, W)
w = rng.standard_normal((4, 3, 3, 3))                 # (O, C, KH, KW)
b = rng.standard_normal(4)                            # (O,)
y_loop = conv_loops(x, w, b, stride=1, pad=1)
y_loop_s2 = conv_loops(x, w, b, stride=2, pad=1)
print(f"   x {x.shape} * w {w.shape}: stride 1 pad 1 -> {y_loop.shape}, stride 2 pad 1 -> {y_loop_s2.shape}")
assert y_loop.shape == (2, 4, 7, 7) and y_loop_s2.shape == (2, 4, 4, 4)
# A 1x1 kernel holding the identity just copies the channels: a sanity check on the loops.
eye = np.eye(3).reshape(3, 3, 1, 1)
assert np.allclose(conv_loops(x, eye, np.zeros(3)), x)

# --------------------------------------------------------------------------------------------------
print("\n2. im2col: patches as columns, the convolution as one matrix product")
# cols[n, c, i, j, oh, ow] = xpad[n, c, oh*s + i, ow*s + j]. There are only KH*KW values of (i, j),
# so we fill cols with KH*KW slice copies, each covering every output position at once.
def im2col(x, KH, KW, stride, pad):
    """(N, C, H, W) -> cols (N, C, KH, KW, OH, OW)."""
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    for i in range(KH):
        for j in range(KW):
            cols[:, :, i, j] = xp[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]
    return cols

def conv_im2col(x, w, b, stride=1, pad=0):
    O, C, KH, KW = w.shape
    cols = im2col(x, KH, KW, stride, pad)             # (N, C, KH, KW, OH, OW)
    N, OH, OW = x.shape[0], cols.shape[4], cols.shape[5]
    # (O, C*KH*KW) @ (N, C*KH*KW, OH*OW) -> (N, O, OH*OW)
    y = w.reshape(O, -1) @ cols.reshape(N, C * KH * KW, OH * OW)
    return y.reshape(N, O, OH, OW) + b.reshape(1, O, 1, 1)

for s in (1, 2):
    assert np.allclose(conv_im2col(x, w, b, s, 1), conv_loops(x, w, b, s, 1))
cols = im2col(x, 3, 3, 1, 1)
print(f"   cols {cols.shape}: {cols.size} numbers copied from {x.size} (each pixel used up to 9 times)")
print("   our im2col conv equals the loop conv (stride 1 and 2)")

# --------------------------------------------------------------------------------------------------
print("\n3. The same patches as a strided view: nothing copied")
# Lesson 01: an array is memory plus strides. Moving one output column moves the window by
# `stride` pixels; moving one kernel column moves it by one pixel. So the 6-D patch array is the
# padded input seen through new strides.
def windows(x, KH, KW, stride, pad):
    """(N, C, H, W) -> a read-only view (N, C, OH, OW, KH, KW) of the padded input."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    N, C, Hp, Wp = xp.shape
    OH, OW = (Hp - KH) // stride + 1, (Wp - KW) // stride + 1
    sN, sC, sH, sW = xp.strides
    return as_strided(xp, shape=(N, C, OH, OW, KH, KW),
                      strides=(sN, sC, stride * sH, stride * sW, sH, sW), writeable=False)

def conv_strided(x, w, b, stride=1, pad=0):
    win = windows(x, w.shape[2], w.shape[3], stride, pad)      # (N, C, OH, OW, KH, KW)
    # Contract over c, i, j: (N, C, OH, OW, KH, KW) x (O, C, KH, KW) -> (N, OH, OW, O)
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))
    return y.transpose(0, 3, 1, 2) + b.reshape(1, -1, 1, 1)

win = windows(x, 3, 3, 1, 1)
print(f"   windows {win.shape}, strides {win.strides}: a view of the padded input, "
      f"{win.base is not None and np.shares_memory(win, win.base)}")
for s in (1, 2):
    assert np.allclose(conv_strided(x, w, b, s, 1), conv_loops(x, w, b, s, 1))
print("   the strided-view conv equals the loop conv")
# NumPy ships the same idea, checked here against ours:
ref = np.lib.stride_tricks.sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
assert np.array_equal(ref, win)

# Speed on a CCT-sized input: a 32x32 image batch, 3 -> 64 channels.
xb = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
wb = rng.standard_normal((64, 3, 3, 3)).astype(np.float32)
bb = np.zeros(64, np.float32)
xs = xb[:1, :, :8, :8]                                 # the loops only get a small crop
t = time.perf_counter(); conv_loops(xs, wb[:8], bb[:8], 1, 1); t_loop = time.perf_counter() - t
per_mac = t_loop / (1 * 8 * 8 * 8 * 27)
t = time.perf_counter(); y1 = conv_im2col(xb, wb, bb, 1, 1); t_col = time.perf_counter() - t
t = time.perf_counter(); y2 = conv_strided(xb, wb, bb, 1, 1); t_str = time.perf_counter() - t
macs = 8 * 64 * 32 * 32 * 27
print(f"   (8, 3, 32, 32) -> (8, 64, 32, 32): loops would take ~{per_mac * macs:.1f} s, "
      f"im2col {t_col * 1e3:.1f} ms, strided view {t_str * 1e3:.1f} ms")
assert np.allclose(y1, y2, atol=1e-4)

# --------------------------------------------------------------------------------------------------
print("\n4. The backward")
# With gy = dL/dy (N, O, OH, OW) and cols (N, C*KH*KW, OH*OW) from the forward:
#   dL/db = gy summed over n, oh, ow                                           (O,)
#   dL/dw = sum over n of gy[n] @ cols[n]^T                                    (O, C*KH*KW)
#   dcols = W^T @ gy                  each patch's share of the gradient       (N, C*KH*KW, OH*OW)
#   dL/dx = col2im(dcols): every patch element goes back to the pixel it was copied from. A pixel
#           sits in up to KH*KW windows, so its gradient is the SUM of their contributions.
def col2im(dcols, x_shape, KH, KW, stride, pad, add=True):
    """cols-shaped gradient (N, C, KH, KW, OH, OW) -> (N, C, H, W). add=False is the bug."""
    N, C, H, W = x_shape
    OH, OW = dcols.shape[4], dcols.shape[5]
    gxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=dcols.dtype)
    for i in range(KH):
        for j in range(KW):
            region = (slice(None), slice(None), slice(i, i + stride * OH, stride), slice(j, j + stride * OW, stride))
            if add:
                gxp[region] += dcols[:, :, i, j]
            else:
                gxp[region] = dcols[:, :, i, j]        # overwrites what other windows put there
    return gxp[:, :, pad:pad + H, pad:pad + W]


class Conv2d(Function):
    """Our im2col convolution as a minicct Function (CPU only, for this lesson)."""

    @staticmethod
    def forward(ctx, x, w, b, stride=1, pad=0, add=True):
        O, C, KH, KW = w.shape
        cols = im2col(x, KH, KW, stride, pad)
        N, OH, OW = x.shape[0], cols.shape[4], cols.shape[5]
        ctx.save_for_backward(cols, w)
        ctx.args = (x.shape, stride, pad, add)
        y = w.reshape(O, -1) @ cols.reshape(N, C * KH * KW, OH * OW)
        return y.reshape(N, O, OH, OW) + b.reshape(1, O, 1, 1)

    @staticmethod
    def backward(ctx, gy):
        cols, w = ctx.saved_tensors
        x_shape, stride, pad, add = ctx.args
        N, O, OH, OW = gy.shape
        gy2 = gy.reshape(N, O, OH * OW)
        cols2 = cols.reshape(N, -1, OH * OW)
        gb = gy.sum(axis=(0, 2, 3))
        gw = np.einsum("nom,nkm->ok", gy2, cols2).reshape(w.shape)
        dcols = (w.reshape(O, -1).T @ gy2).reshape(cols.shape)
        gx = col2im(dcols, x_shape, w.shape[2], w.shape[3], stride, pad, add)
        return gx, gw, gb


xt = Tensor(rng.standard_normal((2, 2, 5, 5)), requires_grad=True)
wt = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
bt = Tensor(rng.standard_normal(3), requires_grad=True)
for stride, pad in [(1, 1), (2, 1), (1, 0)]:
    assert gradcheck(lambda x, w, b: Conv2d.apply(x, w, b, stride=stride, pad=pad), [xt, wt, bt],
                     names=["x", "w", "b"])
print("   gradcheck of our conv passes for x, w and b (stride 1 and 2, with and without padding)")
try:
    gradcheck(lambda x, w, b: Conv2d.apply(x, w, b, stride=1, pad=1, add=False), [xt, wt, bt],
              names=["x", "w", "b"])
    raise AssertionError("the overwriting col2im was not caught")
except GradcheckError as e:
    print(f"   a col2im that overwrites instead of adding is caught:\n     {e}")
# With stride 3 and a 3x3 kernel the windows do not overlap, so overwriting happens to be right:
# a bug that only shows on some settings. Test every setting you use.
assert gradcheck(lambda x, w, b: Conv2d.apply(x, w, b, stride=3, pad=0, add=False), [xt, wt, bt])
print("   (with stride 3 the windows never overlap and the same bug goes unseen)")


# --------------------------------------------------------------------------------------------------
print("\n5. minicct's convolution")
# minicct.kernels holds the same pair of plain array functions, conv2d_forward / conv2d_backward
# (with a faster memory layout, explained at the top of minicct/kernels/conv.py);
# minicct.functional.conv2d wraps them as a Function, with PyTorch's argument names.
import minicct.functional as F
from minicct import kernels

for stride, pad in [(1, 1), (2, 1), (1, 0)]:
    y_ours = conv_loops(x, w, b, stride, pad)
    y_k, cache = kernels.conv2d_forward(x, w, b, stride, pad)
    assert np.allclose(y_k, y_ours), (stride, pad)
    a = [Tensor(t.numpy(), requires_grad=True, dtype="float64") for t in (xt, wt, bt)]
    c = [Tensor(t.numpy(), requires_grad=True, dtype="float64") for t in (xt, wt, bt)]
    gy = Tensor(rng.standard_normal(Conv2d.apply(*a, stride=stride, pad=pad).shape), dtype="float64")
    Conv2d.apply(*a, stride=stride, pad=pad).backward(gy)
    F.conv2d(*c, stride=stride, padding=pad).backward(gy)
    assert all(np.allclose(u.grad.numpy(), v.grad.numpy(), atol=1e-10) for u, v in zip(a, c))
print("   kernels.conv2d_forward equals the loop conv; F.conv2d's gradients equal ours (3 settings)")
assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [xt, wt, bt])
print("   gradcheck(F.conv2d) passes")


# --------------------------------------------------------------------------------------------------
print("\n6. Fewer multiplies: Winograd's F(2, 3)")
# Two neighbouring outputs of a 3-tap filter g over 4 inputs d take 6 multiplies directly:
#     y0 = d0 g0 + d1 g1 + d2 g2,    y1 = d1 g0 + d2 g1 + d3 g2.
# Winograd (1980; Lavin & Gray 2015 for CNNs) needs 4, after transforms that are only additions:
#     m = (G g) * (Bt d)  elementwise, 4 products;   y = At m
# G g is computed once per filter, not once per pixel, so it costs nothing per output.
Bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
At = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)
d, g = rng.standard_normal(4), rng.standard_normal(3)
direct = np.array([d[0:3] @ g, d[1:4] @ g])
m = (G @ g) * (Bt @ d)                      # the only 4 multiplies that depend on the data
assert np.allclose(At @ m, direct)
print(f"   1-D: At((G g) * (Bt d)) = {At @ m} equals the direct {direct}: 4 multiplies, not 6")
# In 2-D the same matrices on both axes turn a 4x4 input tile into a 2x2 output tile with
# 16 multiplies instead of 36 (2.25x fewer). Over C channels each of the 16 becomes a matrix
# product, so a conv is: transform the tiles (adds), 16 GEMMs, transform back (adds).
d2, g2 = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
Y2 = At @ ((G @ g2 @ G.T) * (Bt @ d2 @ Bt.T)) @ At.T
direct2 = np.array([[np.sum(d2[i:i + 3, j:j + 3] * g2) for j in range(2)] for i in range(2)])
assert np.allclose(Y2, direct2)
print("   2-D: At [(G g Gt) * (Bt d B)] At.T equals the 2x2 outputs of the 3x3 filter: 16 multiplies, not 36")
# minicct.kernels.winograd does this for every tile at once; conv2d takes it on NumPy for 3x3,
# stride-1 convs with 16+ channels (CCT's 64 -> 128 conv: ~35% less time than im2col).
from minicct.kernels import winograd
for pad in (1, 0):
    y_w, cache = winograd.winograd_conv2d_forward(x, w, b, (pad, pad))
    assert np.allclose(y_w, conv_loops(x, w, b, 1, pad))
print("   kernels.winograd equals the loop conv (padding 1 and 0)")
print("\nAll claims of lesson 06 hold.")
