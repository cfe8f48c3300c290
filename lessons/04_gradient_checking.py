"""Lesson 04 — gradient checking with finite differences, and why summing the output hides bugs.

What you will learn
    * the slope of f at x can be *measured* by nudging x: (f(x+h) - f(x-h)) / 2h;
    * why the central difference beats the one-sided one, why h cannot be too small, and why the
      check runs in float64;
    * the trap: checking `sum(f(x))` sends the same upstream gradient (all ones) to every output, and
      some wrong backwards give exactly the right answer for all-ones. Softmax and layer norm are
      the classic victims. Checking `sum(w * f(x))` for a random `w` catches them;
    * `minicct.gradcheck`, which does the careful version for any function of tensors.

What it builds on
    Lesson 02 (we compared backprop with nudging) and lesson 03 (writing a `Function`).

Run it:  python lessons/04_gradient_checking.py
"""
import numpy as np

import minicct
from minicct import Function, GradcheckError, Tensor, gradcheck

rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. Measuring a slope: one-sided and central differences")
# f(x) = sin(x), f'(x) = cos(x). The one-sided difference (f(x+h) - f(x)) / h is off by about
# h/2 * f''(x); the central one by about h^2/6 * f'''(x). But each f is rounded to the float's
# precision, and dividing by a tiny h magnifies that rounding: too small an h is worse, not better.
x0 = 1.0
print("        h    one-sided err   central err (float64)   central err (float32)")
errs = {}
for h in [1e-1, 1e-2, 1e-4, 1e-6, 1e-8, 1e-10]:
    one = abs((np.sin(x0 + h) - np.sin(x0)) / h - np.cos(x0))
    cen = abs((np.sin(x0 + h) - np.sin(x0 - h)) / (2 * h) - np.cos(x0))
    x32, h32 = np.float32(x0), np.float32(h)
    cen32 = abs(float((np.sin(x32 + h32) - np.sin(x32 - h32)) / (2 * h32)) - np.cos(x0))
    errs[h] = (one, cen, cen32)
    print(f"   {h:7.0e}   {one:12.2e}   {cen:18.2e}   {cen32:21.2e}")
assert errs[1e-4][1] < errs[1e-4][0] / 100          # central is far better at the same h
assert errs[1e-6][1] < 1e-9                          # float64, h = 1e-6: about 10 good digits
assert errs[1e-10][1] > errs[1e-6][1]                # too small an h: rounding wins
assert errs[1e-6][2] > 1e-3                          # float32 at h = 1e-6 is useless
print("   => central differences, h ~ 1e-6, float64.")

# --------------------------------------------------------------------------------------------------
print("\n2. A checker for whole arrays: nudge every element, compare with backprop of sum(w * f(x))")
# For f: array -> array we check the scalar L = sum(w * f(x)). Its gradient with respect to f(x)
# is w, so backprop starts from gy = w. Numerically, nudge every element of x in turn.
def numeric_grad(f, x, w, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = np.sum(w * f(x))
        x[i] = old - h
        down = np.sum(w * f(x))
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def check(f, f_backward, x, w):
    """True when the hand-written backward agrees with the measured gradient of sum(w * f(x))."""
    return np.allclose(f_backward(x, w), numeric_grad(f, x.copy(), w), atol=1e-6, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
print("\n3. Softmax, and a backward that returns zeros")
# softmax over the last axis: y_i = e^{x_i} / sum_j e^{x_j}. Its backward:
#   gx = y * (gy - sum(gy * y))          (sum over the same axis)
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))   # subtracting the max changes nothing but overflow
    return e / e.sum(axis=-1, keepdims=True)

def softmax_backward(x, gy):
    y = softmax(x)
    return y * (gy - (gy * y).sum(axis=-1, keepdims=True))

def softmax_backward_broken(x, gy):
    return np.zeros_like(x)                          # "forgot to write it"

x = rng.standard_normal((3, 5))
ones, w = np.ones((3, 5)), rng.standard_normal((3, 5))
results = {(name, up): check(softmax, bw, x, gy)
           for name, bw in [("right", softmax_backward), ("zeros", softmax_backward_broken)]
           for up, gy in [("sum", ones), ("random w", w)]}
for (name, up), ok in results.items():
    print(f"   {name:5} backward, checked with {up:8}: {'passes' if ok else 'FAILS'}")
# Each row of softmax sums to 1 whatever x is, so sum(softmax(x)) is constant and its true
# gradient is zero — exactly what the broken backward returns.
assert results[("right", "sum")] and results[("right", "random w")]
assert results[("zeros", "sum")], "the plain sum should be fooled"
assert not results[("zeros", "random w")], "the random weight must catch it"

# --------------------------------------------------------------------------------------------------
print("\n4. Layer normalisation, and a backward missing one term")
# y = (x - mean) / std over the last axis (lesson 08 derives it). The right backward, with
# xh = (x - mean) / std:   gx = (gy - mean(gy) - xh * mean(gy * xh)) / std.
# A real-looking mistake is to drop the last term. With gy = 1, mean(gy) = 1 and mean(xh) = 0,
# so both versions give 0 — the plain sum cannot tell them apart.
def layernorm(x, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)

def layernorm_backward(x, gy, eps=1e-5, broken=False):
    std = np.sqrt(x.var(-1, keepdims=True) + eps)
    xh = (x - x.mean(-1, keepdims=True)) / std
    gx = gy - gy.mean(-1, keepdims=True)
    if not broken:
        gx = gx - xh * (gy * xh).mean(-1, keepdims=True)
    return gx / std

x = rng.standard_normal((4, 6))
ones, w = np.ones_like(x), rng.standard_normal(x.shape)
bad = lambda x, gy: layernorm_backward(x, gy, broken=True)
print(f"   right  backward: sum {check(layernorm, layernorm_backward, x, ones)}, "
      f"random w {check(layernorm, layernorm_backward, x, w)}")
print(f"   broken backward: sum {check(layernorm, bad, x, ones)}, random w {check(layernorm, bad, x, w)}")
assert check(layernorm, layernorm_backward, x, w) and check(layernorm, bad, x, ones)
assert not check(layernorm, bad, x, w)

# --------------------------------------------------------------------------------------------------
print("\n5. minicct.gradcheck")
# gradcheck(fn, inputs) copies float inputs to float64, backpropagates a fixed random weight,
# nudges every element of every input that requires grad, and raises GradcheckError naming the
# worst element when they disagree. Here are the two softmaxes as minicct Functions.


class Softmax(Function):
    @staticmethod
    def forward(ctx, x):                            # x: (..., K)
        xp = minicct.get_array_module(x)
        e = xp.exp(x - x.max(axis=-1, keepdims=True))
        y = e / e.sum(axis=-1, keepdims=True)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved_tensors
        return y * (gy - (gy * y).sum(axis=-1, keepdims=True))


class BrokenSoftmax(Softmax):
    @staticmethod
    def backward(ctx, gy):
        return gy * 0


xt = Tensor(rng.standard_normal((3, 5)), requires_grad=True)
assert gradcheck(Softmax.apply, [xt])
print("   gradcheck(Softmax)       passes")
try:
    gradcheck(BrokenSoftmax.apply, [xt])
    raise AssertionError("gradcheck missed the broken softmax")
except GradcheckError as e:
    print(f"   gradcheck(BrokenSoftmax) raises: {e}")
# And the same Function checked through a plain sum slips through, as in section 3:
assert gradcheck(lambda t: BrokenSoftmax.apply(t).sum(), [xt])
print("   ...while gradcheck of BrokenSoftmax(x).sum() passes: a scalar output hides the bug")

# Our NumPy softmax and the Function agree, forward and backward.
gy = rng.standard_normal((3, 5))
yt = Softmax.apply(xt)
yt.backward(Tensor(gy))
assert np.allclose(yt.numpy(), softmax(xt.numpy()), atol=1e-6)
assert np.allclose(xt.grad.numpy(), softmax_backward(xt.numpy().astype(np.float64), gy), atol=1e-6)

# gradcheck works for any function of several tensors, e.g. a tiny linear layer with a bias.
a = Tensor(rng.standard_normal((4, 3)), requires_grad=True)
W = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
bias = Tensor(rng.standard_normal(2), requires_grad=True)
assert gradcheck(lambda a, W, bias: Softmax.apply(a @ W + bias), [a, W, bias], names=["a", "W", "bias"])
print("   gradcheck(softmax(a @ W + bias)) passes for a, W and bias")

print("\nAll claims of lesson 04 hold.")
