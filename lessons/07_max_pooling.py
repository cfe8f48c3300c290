"""Lesson 07 — max-pooling and its backward.

What you will learn
    * max-pooling keeps the largest value of each window: a cheap way to halve the image size;
    * why padding for a max must be -infinity, not zero;
    * the backward: each window's gradient goes to the one pixel that won it, and a pixel that wins
      several overlapping windows collects the sum;
    * the pooling CCT uses (3x3 windows, stride 2, padding 1) and the sequence length it gives.

What it builds on
    Lesson 06 (windows as strided views, output sizes, col2im adding where windows overlap).

Run it:  python lessons/07_max_pooling.py
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import minicct
from minicct import Function, GradcheckError, Tensor, gradcheck

rng = np.random.default_rng(0)

def out_size(h, k, stride, pad):
    return (h + 2 * pad - k) // stride + 1

# --------------------------------------------------------------------------------------------------
print("1. Max-pooling as loops")
def maxpool_loops(x, k, stride, pad):
    """x: (N, C, H, W) -> (N, C, OH, OW), the max of each k x k window."""
    N, C, H, W = x.shape
    OH, OW = out_size(H, k, stride, pad), out_size(W, k, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for oh in range(OH):
        for ow in range(OW):
            y[:, :, oh, ow] = xp[:, :, oh * stride:oh * stride + k, ow * stride:ow * stride + k].max(axis=(2, 3))
    return y

x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
print("   x =\n" + "\n".join("     " + " ".join(f"{v:4.0f}" for v in row) for row in x[0, 0]))
y = maxpool_loops(x, 2, 2, 0)
print(f"   2x2 windows, stride 2 -> {y[0, 0].tolist()}")
assert y[0, 0].tolist() == [[5, 7], [13, 15]]

# Why -inf padding: on an all-negative image, zero padding would invent a maximum of 0 at the border.
neg = -1 - rng.random((1, 1, 4, 4))
assert (maxpool_loops(neg, 3, 2, 1) < 0).all()
zero_padded = sliding_window_view(np.pad(neg, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(4, 5))
print(f"   all-negative input: -inf padding keeps the max negative; zero padding gives {zero_padded.max():.0f}")
assert zero_padded.max() == 0

# --------------------------------------------------------------------------------------------------
print("\n2. As a strided view")
def maxpool_view(x, k, stride, pad):
    """Same result; also returns where each max came from, for the backward."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]  # (N, C, OH, OW, k, k)
    flat = win.reshape(win.shape[:4] + (k * k,))                                  # a copy, (.., k*k)
    arg = flat.argmax(axis=-1)                                                   # (N, C, OH, OW)
    return np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0], arg

x = rng.standard_normal((2, 3, 9, 9))
for k, s, p in [(2, 2, 0), (3, 2, 1), (3, 1, 1)]:
    assert np.array_equal(maxpool_view(x, k, s, p)[0], maxpool_loops(x, k, s, p))
print("   the strided-view pool equals the loop pool for (k, stride, pad) = (2,2,0), (3,2,1), (3,1,1)")

# --------------------------------------------------------------------------------------------------
print("\n3. The pooling in CCT")
# CCT's tokenizer: conv 3x3 (stride 1, pad 1) keeps 32x32; max-pool 3x3, stride 2, pad 1 halves it.
# Each remaining pixel becomes one token, so a 32x32 image gives 16*16 = 256 tokens.
h = out_size(32, 3, 1, 1)
h = out_size(h, 3, 2, 1)
print(f"   32 -> conv -> {out_size(32, 3, 1, 1)} -> pool -> {h}: {h * h} tokens")
assert h * h == 256

# --------------------------------------------------------------------------------------------------
print("\n4. The backward: the winner takes the gradient")
# y = max of a window, so dy/dx = 1 for the winning pixel and 0 for the others. With overlapping
# windows (3x3, stride 2) one pixel can win two or four windows; its gradient is the sum.
def maxpool_backward(gy, arg, x_shape, k, stride, pad):
    N, C, H, W = x_shape
    OH, OW = gy.shape[2:]
    gxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    # Winner position in the padded image: window origin + offset inside the window.
    rows = np.arange(OH)[:, None] * stride + arg // k                             # (N, C, OH, OW)
    cols = np.arange(OW)[None, :] * stride + arg % k
    n, c = np.arange(N)[:, None, None, None], np.arange(C)[None, :, None, None]   # broadcast
    np.add.at(gxp, (n, c, rows, cols), gy)                                         # repeated winners add up
    return gxp[:, :, pad:pad + H, pad:pad + W]


class MaxPool(Function):
    @staticmethod
    def forward(ctx, x, k, stride, pad, spread=False):
        y, arg = maxpool_view(x, k, stride, pad)
        ctx.save_for_backward(arg)
        ctx.args = (x.shape, k, stride, pad, spread)
        return y

    @staticmethod
    def backward(ctx, gy):
        (arg,) = ctx.saved_tensors
        x_shape, k, stride, pad, spread = ctx.args
        if spread:   # a wrong idea: share the gradient equally over the window (that is avg-pool's)
            g = np.repeat(np.repeat(gy, k, axis=2), k, axis=3) / (k * k)
            return np.pad(g, ((0, 0), (0, 0), (0, x_shape[2] - g.shape[2]), (0, x_shape[3] - g.shape[3])))
        return maxpool_backward(gy, arg, x_shape, k, stride, pad)


xt = Tensor(rng.standard_normal((2, 2, 7, 7)), requires_grad=True)
for k, s, p in [(2, 2, 0), (3, 2, 1)]:
    assert gradcheck(lambda x: MaxPool.apply(x, k=k, stride=s, pad=p), [xt])
print("   gradcheck passes for our pool (2x2/2 and the overlapping 3x3/2/1)")
# How many windows did each pixel win? With overlapping windows some pixels win more than one.
img = Tensor(rng.standard_normal((1, 1, 7, 7)), requires_grad=True)
MaxPool.apply(img, k=3, stride=2, pad=1).sum().backward()
print(f"   wins per pixel with 3x3/2/1 windows (max {img.grad.numpy().max():.0f}):\n" +
      "\n".join("     " + " ".join(f"{v:.0f}" for v in row) for row in img.grad.numpy()[0, 0]))
assert img.grad.numpy().sum() == 16 and img.grad.numpy().max() >= 2   # 4x4 windows, one winner each
try:
    gradcheck(lambda x: MaxPool.apply(x, k=2, stride=2, pad=0, spread=True), [xt])
    raise AssertionError("the spread-out backward was not caught")
except GradcheckError:
    print("   a backward that spreads the gradient over the window is caught by gradcheck")

# Ties: when two pixels share the maximum, the max is not differentiable there, and finite
# differences see a kink. Random inputs almost never tie; images with flat regions do, which is why
# pooling tests use random inputs. (Our argmax gives the whole gradient to the first winner.)


# --------------------------------------------------------------------------------------------------
print("\n5. minicct's max-pooling")
import minicct.functional as F

for k, s, p in [(2, 2, 0), (3, 2, 1)]:
    a = Tensor(xt.numpy(), requires_grad=True, dtype="float64")
    c = Tensor(xt.numpy(), requires_grad=True, dtype="float64")
    ours, theirs = MaxPool.apply(a, k=k, stride=s, pad=p), F.max_pool2d(c, k, s, p)
    assert np.array_equal(ours.numpy(), theirs.numpy())
    gy = Tensor(rng.standard_normal(ours.shape), dtype="float64")
    ours.backward(gy)
    theirs.backward(gy)
    assert np.allclose(a.grad.numpy(), c.grad.numpy())
print("   F.max_pool2d equals ours, forward and backward, for 2x2/2 and 3x3/2/1")
assert gradcheck(lambda x: F.max_pool2d(x, 3, 2, 1), [xt])
print("\nAll claims of lesson 07 hold.")
