"""Lesson 02 — a scalar autograd in about fifty lines.

What you will learn
    * the chain rule, applied mechanically: every operation records its inputs and how to send a
      gradient back to them;
    * why the backward pass visits nodes in *reverse topological order* (each node only after
      everything that used it has handed it a gradient), and why gradients *add up* when a value
      is used twice;
    * how to walk the graph without recursion, so a deep network cannot hit Python's limit.

What it builds on
    Lesson 01 (shapes; "a value used many times gets the sum of its gradients").

At the end we check our tiny engine against minicct's Tensor, which does the same with arrays.

Run it:  python lessons/02_scalar_autograd.py
"""
import math

import numpy as np

import minicct

# --------------------------------------------------------------------------------------------------
print("1. The engine")


class Value:
    """One number that remembers how it was made.

    data: the number. grad: d(output)/d(this), filled in by backward().
    _parents: the Values it was computed from. _back: sends self.grad to the parents.
    """

    def __init__(self, data, parents=()):
        self.data, self.grad = float(data), 0.0
        self._parents, self._back = parents, lambda: None

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other))
        def back():                       # d(a+b)/da = 1, d(a+b)/db = 1
            self.grad += out.grad
            other.grad += out.grad
        out._back = back
        return out

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other))
        def back():                       # d(ab)/da = b, d(ab)/db = a
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._back = back
        return out

    def exp(self):
        out = Value(math.exp(self.data), (self,))
        def back():                       # d(e^a)/da = e^a, which we already computed
            self.grad += out.data * out.grad
        out._back = back
        return out

    def __pow__(self, p):                 # p is a plain number
        out = Value(self.data ** p, (self,))
        def back():
            self.grad += p * self.data ** (p - 1) * out.grad
        out._back = back
        return out

    __radd__, __rmul__ = __add__, __mul__
    def __neg__(self): return self * -1
    def __sub__(self, other): return self + (-other)
    def __truediv__(self, other): return self * other ** -1

    def backward(self):
        # Topological order without recursion: a node is appended after all its parents are.
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            v, parents_done = stack.pop()
            if parents_done:
                order.append(v)
            elif id(v) not in seen:
                seen.add(id(v))
                stack.append((v, True))
                stack.extend((p, False) for p in v._parents if id(p) not in seen)
        self.grad = 1.0                   # d(self)/d(self)
        for v in reversed(order):         # output first, leaves last
            v._back()


print("   Value: +, *, -, /, **, exp and an iterative backward()")

# --------------------------------------------------------------------------------------------------
print("\n2. A first derivative, checked by hand")
# f(a, b) = a*b + a.  df/da = b + 1,  df/db = a.  Note that `a` is used twice: its two
# contributions must add, which is why every back() writes `+=`.
a, b = Value(3.0), Value(-2.0)
f = a * b + a
f.backward()
print(f"   f = {f.data}, df/da = {a.grad} (expect b+1 = -1), df/db = {b.grad} (expect a = 3)")
assert (f.data, a.grad, b.grad) == (-3.0, -1.0, 3.0)

# --------------------------------------------------------------------------------------------------
print("\n3. A neuron with a sigmoid, checked by nudging the inputs")
# sigmoid(z) = 1 / (1 + e^-z). Built from our pieces, so we never wrote its derivative.
def sigmoid(z):
    return (1 + (-z).exp()) ** -1

def neuron(x1, x2, w1, w2, b):
    return sigmoid(x1 * w1 + x2 * w2 + b)

args = [0.5, -1.5, 2.0, 0.7, 0.1]
vals = [Value(v) for v in args]
y = neuron(*vals)
y.backward()
# Finite differences: nudge each input by ±eps and measure the slope (lesson 04 says more).
eps = 1e-6
for i, name in enumerate(["x1", "x2", "w1", "w2", "b"]):
    up, down = list(args), list(args)
    up[i] += eps
    down[i] -= eps
    slope = (neuron(*map(Value, up)).data - neuron(*map(Value, down)).data) / (2 * eps)
    print(f"   dy/d{name}: backprop {vals[i].grad:+.6f}   nudging {slope:+.6f}")
    assert abs(vals[i].grad - slope) < 1e-6
# The textbook result: sigmoid'(z) = s(1 - s), so dy/db = y(1 - y).
assert abs(vals[4].grad - y.data * (1 - y.data)) < 1e-12

# --------------------------------------------------------------------------------------------------
print("\n4. A deep chain: no recursion limit")
# 5000 nodes in a row. A recursive topological sort would exceed Python's default limit (1000).
x = Value(1.0)
z = x
for _ in range(5000):
    z = z * 1.0001
z.backward()
print(f"   d(x * 1.0001^5000)/dx = {x.grad:.6f} (expect {1.0001 ** 5000:.6f})")
assert abs(x.grad - 1.0001 ** 5000) < 1e-9

# --------------------------------------------------------------------------------------------------
print("\n5. Learning: fit y = 2x - 1 with gradient descent")
w, b = Value(0.0), Value(0.0)
xs = [-1.0, -0.5, 0.0, 0.5, 1.0]
for step in range(100):
    loss = sum(((w * x + b) - (2 * x - 1)) ** 2 for x in xs) / len(xs)
    w.grad = b.grad = 0.0                 # gradients add up, so clear them before each backward
    loss.backward()
    w.data -= 0.3 * w.grad
    b.data -= 0.3 * b.grad
print(f"   after 100 steps: w = {w.data:.4f}, b = {b.data:.4f}, loss = {loss.data:.2e}")
assert abs(w.data - 2) < 1e-3 and abs(b.data + 1) < 1e-3

# --------------------------------------------------------------------------------------------------
print("\n6. The same neuron in minicct")
# minicct's Tensor is this idea with arrays instead of single numbers: every operation records
# its inputs, and backward() walks the graph in reverse topological order. Lesson 03 looks inside.
ts = [minicct.Tensor(v, requires_grad=True, dtype="float64") for v in args]
x1, x2, w1, w2, bb = ts
yt = 1 / (1 + (-(x1 * w1 + x2 * w2 + bb)).exp())
yt.backward()
ours = np.array([v.grad for v in vals])
theirs = np.array([t.grad.item() for t in ts])
print(f"   our grads     {np.round(ours, 6)}\n   minicct grads {np.round(theirs, 6)}")
assert np.allclose(ours, theirs, atol=1e-12) and abs(yt.item() - y.data) < 1e-12

print("\nAll claims of lesson 02 hold.")
