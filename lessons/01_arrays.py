"""Lesson 01 — arrays, shapes and broadcasting.

What you will learn
    * an array is a block of numbers plus a shape, a dtype and strides;
    * how NumPy lines up two shapes when you combine them (broadcasting);
    * reductions (`sum`, `mean`, `max`) along an axis, with and without `keepdims`;
    * batched matrix products with `@`;
    * the one trick the autograd engine needs from this lesson: *undoing* a broadcast
      by summing a gradient back to the shape of the input.

What it builds on
    You have used NumPy before. Nothing else.

Run it:  python lessons/01_arrays.py
"""
import numpy as np

from minicct.autograd import unbroadcast

rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. An array is numbers + shape + dtype + strides")
# An image batch in the layout minicct uses everywhere: N images, C channels, H rows, W columns.
x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)     # (N, C, H, W)
print(f"   shape {x.shape}, dtype {x.dtype}, {x.size} numbers, {x.nbytes} bytes")
# Strides are how many bytes to step to move one place along each axis. The last axis is
# contiguous (4 bytes, one float32); moving one image forward skips 3*4*5 floats.
print(f"   strides {x.strides}")
assert x.strides == (3 * 4 * 5 * 4, 4 * 5 * 4, 5 * 4, 4)

# A transpose changes only the strides, not the numbers: it is a *view* of the same memory.
xt = x.transpose(0, 2, 3, 1)                                  # (N, H, W, C)
print(f"   transposed to {xt.shape}, strides {xt.strides}, shares memory: {np.shares_memory(x, xt)}")
assert np.shares_memory(x, xt) and xt[1, 2, 3, 0] == x[1, 0, 2, 3]
# Writing through a view writes into the original. Copies (`.copy()`, most arithmetic) do not.
xt[0, 0, 0, 0] = 42.0
assert x[0, 0, 0, 0] == 42.0

# --------------------------------------------------------------------------------------------------
print("\n2. Broadcasting: how two shapes are lined up")
# Rule: align the shapes on the right; each pair of sizes must be equal or one of them 1;
# a missing axis on the left counts as 1. Size-1 axes are stretched (without copying).
def broadcast_shape(a, b):
    """The shape NumPy gives a + b, worked out by hand."""
    a, b = (1,) * (len(b) - len(a)) + tuple(a), (1,) * (len(a) - len(b)) + tuple(b)
    out = []
    for m, n in zip(a, b):
        if m != n and 1 not in (m, n):
            raise ValueError(f"sizes {m} and {n} cannot be broadcast")
        out.append(max(m, n))
    return tuple(out)

for a, b in [((2, 3, 4, 5), (3, 1, 1)),    # a per-channel bias on an image batch
             ((8, 17, 64), (64,)),          # a bias on every token of every sequence
             ((8, 17, 1), (8, 1, 17)),      # an outer "every token with every token" grid
             ((5, 1), (1, 4))]:
    ours = broadcast_shape(a, b)
    print(f"   {str(a):>14} with {str(b):<12} -> {ours}")
    assert ours == np.broadcast_shapes(a, b)

try:
    broadcast_shape((8, 17, 64), (17,))
except ValueError as e:
    print(f"   (8, 17, 64) with (17,) fails: {e} — the sizes are aligned on the right")

# Normalising each channel of an image batch: the statistic has shape (1, C, 1, 1), so it
# broadcasts against (N, C, H, W) with no loop.
x = rng.uniform(0, 255, size=(16, 3, 8, 8)).astype(np.float32)
mean = x.mean(axis=(0, 2, 3), keepdims=True)                  # (1, C, 1, 1)
std = x.std(axis=(0, 2, 3), keepdims=True)                    # (1, C, 1, 1)
z = (x - mean) / std                                          # (N, C, H, W)
print(f"   per-channel mean {mean.shape} -> normalised means {np.round(z.mean(axis=(0, 2, 3)), 6) + 0.0}")
assert np.allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5) and np.allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-5)

# --------------------------------------------------------------------------------------------------
print("\n3. Reductions and keepdims")
# keepdims=True leaves the reduced axis as size 1, so the result still broadcasts back.
s = rng.standard_normal((4, 10))                              # (N, classes)
m = s.max(axis=1, keepdims=True)                              # (N, 1)
print(f"   s {s.shape}, s.max(axis=1) {s.max(axis=1).shape}, with keepdims {m.shape}")
shifted = s - m                                               # (N, 10): the row max becomes 0
assert np.allclose(shifted.max(axis=1), 0)

# --------------------------------------------------------------------------------------------------
print("\n4. Batched matrix products")
# `@` multiplies the last two axes and broadcasts every axis before them. A transformer layer
# applies one weight matrix to every token of every image with a single `@`.
tokens = rng.standard_normal((8, 17, 64))                     # (N, T, D)
W = rng.standard_normal((64, 128))                            # (D, D_out)
out = tokens @ W                                              # (N, T, D_out)
loop = np.stack([np.stack([tokens[n, t] @ W for t in range(17)]) for n in range(8)])
print(f"   {tokens.shape} @ {W.shape} -> {out.shape}")
assert np.allclose(out, loop)
# Attention compares every token with every other: (N, T, D) @ (N, D, T) -> (N, T, T).
scores = tokens @ tokens.transpose(0, 2, 1)
print(f"   tokens @ tokens^T -> {scores.shape}")
assert scores.shape == (8, 17, 17) and np.allclose(scores, scores.transpose(0, 2, 1))

# --------------------------------------------------------------------------------------------------
print("\n5. Undoing a broadcast (what backprop will need)")
# Say y = x + b with x (N, D) and b (D,). Every one of the N rows used b. If the gradient of the
# loss with respect to y is gy (N, D), each use of b contributes, so the gradient for b is the
# sum of gy over the axis broadcasting added: gb = gy.sum(axis=0), shape (D,).
# The rule in general: sum over the leading axes that broadcasting added, then over every axis
# where the input had size 1 (keeping it).
def our_unbroadcast(g, shape):
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))         # leading axes that were added
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True)                    # axes that were stretched from 1

gy = rng.standard_normal((2, 3, 4, 5))
for shape in [(5,), (3, 1, 1), (1, 3, 4, 1), (2, 3, 4, 5), ()]:
    ours = our_unbroadcast(gy, shape)
    theirs = unbroadcast(gy, shape)                           # minicct's one helper for this
    print(f"   gradient {gy.shape} back to {str(shape):>14}: {ours.shape}")
    assert ours.shape == shape and np.allclose(ours, theirs)

# Check the rule with a number: nudge b a little and see how sum(w * (x + b)) changes.
x, b = rng.standard_normal((6, 3)), rng.standard_normal(3)
w = rng.standard_normal((6, 3))                              # a random "upstream gradient"
f = lambda b: np.sum(w * (x + b))
eps = 1e-6
numeric = np.array([(f(b + eps * e) - f(b - eps * e)) / (2 * eps) for e in np.eye(3)])
print(f"   d/db sum(w*(x+b)) by nudging: {np.round(numeric, 4)}, by unbroadcast: {np.round(unbroadcast(w, b.shape), 4)}")
assert np.allclose(numeric, unbroadcast(w, b.shape), atol=1e-6)

# --------------------------------------------------------------------------------------------------
print("\n6. float32 and float64")
# minicct trains in float32 (half the memory, fast on GPUs) but checks gradients in float64,
# because float32 keeps only ~7 significant digits.
print(f"   float32 machine epsilon {np.finfo(np.float32).eps:.1e}, float64 {np.finfo(np.float64).eps:.1e}")
assert np.float32(1.0) + np.float32(1e-8) == np.float32(1.0)   # the 1e-8 is lost entirely
assert np.float64(1.0) + np.float64(1e-8) != np.float64(1.0)

print("\nAll claims of lesson 01 hold.")
