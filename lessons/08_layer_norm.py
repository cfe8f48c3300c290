"""Lesson 08 — layer normalisation.

What you will learn
    * layer norm rescales each token's feature vector to mean 0 and variance 1, then applies a
      learned per-feature scale (gamma) and shift (beta);
    * unlike batch norm it looks at one example at a time, so it behaves the same in training and
      in evaluation, and with a batch of one;
    * why the variance is computed as mean((x - mean)^2) and not mean(x^2) - mean^2 in float32;
    * its backward, derived once and checked three ways: against the tape (the same formula built
      from Tensor operations), against finite differences, and against the bug of lesson 04.

What it builds on
    Lesson 03 (the tape), lesson 04 (gradcheck and the dropped-term bug).

Run it:  python lessons/08_layer_norm.py
"""
import numpy as np

import minicct
from minicct import Function, Tensor, gradcheck

rng = np.random.default_rng(0)
EPS = 1e-5   # PyTorch's default, also used by CCT

# --------------------------------------------------------------------------------------------------
print("1. The forward")
# For each token x (D features):   mu = mean(x),  var = mean((x - mu)^2),
#   xhat = (x - mu) / sqrt(var + eps),   y = gamma * xhat + beta          gamma, beta: (D,)
def layer_norm(x, gamma, beta, eps=EPS):
    """x: (..., D) -> (..., D), normalised over the last axis."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    xhat = (x - mu) / np.sqrt(var + eps)
    return gamma * xhat + beta

N, T, D = 4, 17, 32                                   # images, tokens, features
x = 3.0 + 2.0 * rng.standard_normal((N, T, D))
gamma, beta = np.ones(D), np.zeros(D)
y = layer_norm(x, gamma, beta)
print(f"   x {x.shape}: token means ~{x.mean(-1).mean():.2f}, std ~{x.std(-1).mean():.2f} -> "
      f"after: means {abs(y.mean(-1)).max():.0e}, std {y.std(-1).mean():.4f}")
assert np.allclose(y.mean(-1), 0, atol=1e-12) and np.allclose(y.std(-1), 1, atol=1e-4)

# Each token is normalised on its own: changing another image leaves this one's output alone.
x2 = x.copy()
x2[1:] = 100 * rng.standard_normal(x2[1:].shape)
assert np.array_equal(layer_norm(x2, gamma, beta)[0], y[0])
print("   changing the other images does not change image 0's output (no batch statistics)")

# --------------------------------------------------------------------------------------------------
print("\n2. Computing the variance in float32")
# mean(x^2) - mean(x)^2 subtracts two big, nearly equal numbers; in float32 (7 digits) the
# difference can be lost entirely, even come out negative. Subtracting the mean first avoids it.
big = (1000.0 + 0.01 * rng.standard_normal((8, 64))).astype(np.float32)
one_pass = (big ** 2).mean(-1) - big.mean(-1) ** 2
two_pass = ((big - big.mean(-1, keepdims=True)) ** 2).mean(-1)
true = big.astype(np.float64).var(-1)
print(f"   true var ~{true.mean():.1e}; mean(x^2)-mean^2 gives values from {one_pass.min():.1e} to "
      f"{one_pass.max():.1e}; mean((x-mu)^2) gives {two_pass.mean():.1e}")
assert np.abs(one_pass - true).max() > 10 * true.max()
assert np.allclose(two_pass, true, rtol=1e-2)

# --------------------------------------------------------------------------------------------------
print("\n3. The backward, by hand")
# With g = gy * gamma (the gradient reaching xhat) and s = sqrt(var + eps):
#   dL/dbeta  = sum of gy over every axis but the last
#   dL/dgamma = sum of gy * xhat over every axis but the last
#   dL/dx     = (g - mean(g) - xhat * mean(g * xhat)) / s           (means over the last axis)
# The two subtracted means are what normalising does to a gradient: whatever moves all features
# together (the mean) or scales them together (the variance) is taken back out.
def layer_norm_backward(gy, x, gamma, eps=EPS):
    mu = x.mean(-1, keepdims=True)
    s = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mu) / s
    lead = tuple(range(x.ndim - 1))
    g = gy * gamma
    gx = (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)) / s
    return gx, (gy * xhat).sum(lead), gy.sum(lead)


class LayerNorm(Function):
    """Our layer norm as one Function: one node on the tape instead of about a dozen."""

    @staticmethod
    def forward(ctx, x, gamma, beta):
        ctx.save_for_backward(x, gamma)
        return layer_norm(x, gamma, beta)

    @staticmethod
    def backward(ctx, gy):
        x, gamma = ctx.saved_tensors
        return layer_norm_backward(gy, x, gamma)


gamma = 1 + 0.1 * rng.standard_normal(D)
beta = 0.1 * rng.standard_normal(D)
gy = rng.standard_normal((N, T, D))

# (a) the tape: the same formula written with Tensor operations, differentiated automatically.
xt, gt, bt = (Tensor(a, requires_grad=True, dtype="float64") for a in (x, gamma, beta))
mu = xt.mean(axis=-1, keepdims=True)
var = ((xt - mu) ** 2).mean(axis=-1, keepdims=True)
yt = gt * ((xt - mu) / (var + EPS).sqrt()) + bt
yt.backward(Tensor(gy, dtype="float64"))
hand = layer_norm_backward(gy, x, gamma)
for name, a, b in zip(["x", "gamma", "beta"], hand, (xt.grad, gt.grad, bt.grad)):
    assert np.allclose(a, b.numpy(), atol=1e-10), name
print("   hand-derived gradients equal the tape's for x, gamma and beta")

# (b) finite differences, with a random upstream weight (lesson 04).
small = [Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 8), (8,), (8,)]]
assert gradcheck(LayerNorm.apply, small, names=["x", "gamma", "beta"])
print("   gradcheck(LayerNorm) passes")

# (c) gradcheck catches the lesson-04 bug (dropping the xhat * mean(g * xhat) term).
class DroppedTerm(LayerNorm):
    @staticmethod
    def backward(ctx, gy):
        x, gamma = ctx.saved_tensors
        gx, gg, gb = layer_norm_backward(gy, x, gamma)
        mu = x.mean(-1, keepdims=True)
        s = np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + EPS)
        xhat = (x - mu) / s
        return gx + xhat * ((gy * gamma) * xhat).mean(-1, keepdims=True) / s, gg, gb

assert not gradcheck(DroppedTerm.apply, small, raise_exception=False)
print("   a backward without the xhat term fails gradcheck")

# --------------------------------------------------------------------------------------------------
print("\n4. Why one Function instead of the composed version")
# Both give the same numbers. The composed one records ~10 nodes and keeps their intermediate
# arrays alive until backward; the Function saves x and gamma only. A transformer applies layer
# norm twice per layer to every token, so this matters for memory.
def count_nodes(t):
    seen, stack = set(), [t]
    while stack:
        u = stack.pop()
        if id(u) in seen or u._ctx is None:   # _ctx: internal, read only to count the tape
            continue
        seen.add(id(u))
        stack.extend(p for p in u._ctx.parents if p is not None)
    return len(seen)

xt, gt, bt = (Tensor(a, requires_grad=True) for a in (x, gamma, beta))
mu = xt.mean(axis=-1, keepdims=True)
composed = gt * ((xt - mu) / (((xt - mu) ** 2).mean(axis=-1, keepdims=True) + EPS).sqrt()) + bt
fused = LayerNorm.apply(xt, gt, bt)
print(f"   nodes on the tape: composed {count_nodes(composed)}, one Function {count_nodes(fused)}")
assert count_nodes(fused) == 1 and count_nodes(composed) >= 8
assert np.allclose(composed.numpy(), fused.numpy(), atol=1e-5)


# --------------------------------------------------------------------------------------------------
print("\n5. minicct's layer norm")
# F.layer_norm(x, normalized_shape, weight, bias, eps) as PyTorch spells it.
import minicct.functional as F

a = [Tensor(v, requires_grad=True, dtype="float64") for v in (x, gamma, beta)]
y = F.layer_norm(a[0], (D,), a[1], a[2], eps=EPS)
assert np.allclose(y.numpy(), layer_norm(x, gamma, beta), atol=1e-10)
y.backward(Tensor(gy, dtype="float64"))
for name, ours, theirs in zip(["x", "gamma", "beta"], layer_norm_backward(gy, x, gamma), a):
    assert np.allclose(ours, theirs.grad.numpy(), atol=1e-10), name
print("   F.layer_norm equals ours, forward and backward (x, gamma, beta)")
assert gradcheck(lambda x, g, b: F.layer_norm(x, (8,), g, b), small)
print("\nAll claims of lesson 08 hold.")
