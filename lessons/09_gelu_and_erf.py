"""Lesson 09 — GELU, and an erf of our own.

What you will learn
    * GELU(x) = x * Phi(x): the input, weighted by how likely a standard normal variable is to be
      below it. A smooth ReLU, and the activation inside every transformer MLP (CCT's too);
    * Phi needs the error function erf, and NumPy has none (only Python's scalar `math.erf`), so we
      build a vectorised one from a classic rational approximation and measure its error;
    * the popular tanh approximation of GELU, and how far it is from the exact one;
    * GELU's derivative, Phi(x) + x * phi(x), checked with gradcheck.

What it builds on
    Lesson 03 (Functions), lesson 04 (gradcheck).

Run it:  python lessons/09_gelu_and_erf.py
"""
import math

import numpy as np

import minicct
from minicct import Function, Tensor, gradcheck

rng = np.random.default_rng(0)
reference_erf = np.vectorize(math.erf)   # exact to double precision, but one Python call per number

# --------------------------------------------------------------------------------------------------
print("1. An erf for whole arrays")
# Abramowitz & Stegun's formula 7.1.26: for x >= 0,
#   erf(x) ~ 1 - (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) e^{-x^2},   t = 1 / (1 + p x),
# with absolute error below 1.5e-7 — finer than float32's resolution near 1. erf is odd, so
# erf(-x) = -erf(x) covers the negative half.
A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
P = 0.3275911

def erf(x):
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + P * a)
    poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))))   # Horner's rule
    return s * (1.0 - poly * np.exp(-a * a))

xs = np.linspace(-6, 6, 100001)
err = np.abs(erf(xs) - reference_erf(xs))
print(f"   on [-6, 6]: largest |our erf - math.erf| = {err.max():.1e} (at x = {xs[err.argmax()]:+.3f})")
assert err.max() < 1.5e-7
assert erf(0.0) == 0.0 and np.allclose(erf(-xs), -erf(xs))

# --------------------------------------------------------------------------------------------------
print("\n2. GELU")
# Phi(x) = (1 + erf(x / sqrt 2)) / 2 is the standard normal CDF, so
#   GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
# Far right it is x (Phi ~ 1), far left 0 (Phi ~ 0), and in between a smooth bend that dips just
# below zero (its minimum is about -0.17 at x ~ -0.75).
def gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))

def gelu_exact(x):
    return 0.5 * x * (1.0 + reference_erf(x / math.sqrt(2.0)))

for v in (-3.0, -0.75, 0.0, 0.5, 3.0):
    print(f"   GELU({v:+.2f}) = {gelu(v):+.5f}    ReLU = {max(v, 0):.2f}")
assert np.abs(gelu(xs) - gelu_exact(xs)).max() < 1e-6
assert abs(gelu(-0.75) + 0.17) < 0.01 and abs(gelu(3.0) - 3.0) < 0.01

# --------------------------------------------------------------------------------------------------
print("\n3. The tanh approximation")
# GELU(x) ~ 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) was used where erf was slow. PyTorch's
# default (and CCT's) is the exact erf form; the two differ by up to ~5e-4 — small, but enough to
# make a model trained with one give slightly different numbers with the other.
def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

gap = np.abs(gelu_tanh(xs) - gelu_exact(xs)).max()
print(f"   largest |tanh form - exact| = {gap:.1e}; |our erf form - exact| = {np.abs(gelu(xs) - gelu_exact(xs)).max():.1e}")
assert 1e-4 < gap < 1e-3

# --------------------------------------------------------------------------------------------------
print("\n4. The derivative")
# d/dx [x Phi(x)] = Phi(x) + x phi(x), where phi(x) = e^{-x^2/2} / sqrt(2 pi) is the normal density.
# (erf'(x) = 2/sqrt(pi) e^{-x^2}, which gives the same thing through the chain rule.)
class GELU(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return gelu(x)

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return gy * (cdf + x * pdf)


xt = Tensor(rng.standard_normal((4, 5)) * 2, requires_grad=True)
assert gradcheck(GELU.apply, [xt])
print("   gradcheck(GELU) passes")
# Compare with slopes of the exact GELU measured in float64.
h = 1e-6
pts = np.array([-2.0, -0.75, 0.0, 0.3, 2.5])
slope = (gelu_exact(pts + h) - gelu_exact(pts - h)) / (2 * h)
pt = Tensor(pts, requires_grad=True, dtype="float64")
GELU.apply(pt).backward(Tensor(np.ones(5), dtype="float64"))
print(f"   GELU'({pts.tolist()}) = {np.round(pt.grad.numpy(), 5).tolist()}")
assert np.allclose(pt.grad.numpy(), slope, atol=1e-6)
# Near the minimum (x ~ -0.75) the slope is almost zero; at 0 it is Phi(0) = 1/2 exactly.
assert abs(pt.grad.numpy()[2] - 0.5) < 1e-12


# --------------------------------------------------------------------------------------------------
print("\n5. minicct's erf and GELU")
# minicct.kernels.erf is a hand-written vectorised erf too (NumPy has none), as accurate as ours;
# F.gelu(x) is the exact form, F.gelu(x, approximate="tanh") the tanh one, as in PyTorch.
import minicct.functional as F
from minicct import kernels

k_err = np.abs(kernels.erf(xs) - reference_erf(xs)).max()
print(f"   largest |kernels.erf - math.erf| = {k_err:.1e} (ours: {err.max():.1e})")
assert k_err < 1.5e-7
a = Tensor(xt.numpy(), requires_grad=True, dtype="float64")
c = Tensor(xt.numpy(), requires_grad=True, dtype="float64")
ours, theirs = GELU.apply(a), F.gelu(c)
assert np.allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
gy = Tensor(rng.standard_normal(ours.shape), dtype="float64")
ours.backward(gy)
theirs.backward(gy)
assert np.allclose(a.grad.numpy(), c.grad.numpy(), atol=1e-6)
assert np.allclose(F.gelu(Tensor(xs, dtype="float64"), approximate="tanh").numpy(), gelu_tanh(xs), atol=1e-12)
print("   F.gelu equals ours forward and backward; approximate='tanh' equals our tanh form")
assert gradcheck(F.gelu, [xt])
print("\nAll claims of lesson 09 hold.")
