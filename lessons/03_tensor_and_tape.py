"""Lesson 03 — the minicct Tensor and its tape.

What you will learn
    * `minicct.Tensor`: an array (NumPy on the CPU, CuPy on a GPU) plus `requires_grad` and `grad`;
    * the "tape": every operation on tensors that need gradients records a node — which Function
      ran, its inputs, and what its forward saved for the backward;
    * `backward()` walks that graph once and then frees it; gradients *accumulate* in `.grad`;
    * broadcasting is undone for you (lesson 01, section 5), and `no_grad()` turns recording off;
    * how to add an operation of your own: a `Function` with `forward(ctx, ...)` and
      `backward(ctx, gy)` on raw arrays.

What it builds on
    Lesson 01 (broadcasting, unbroadcast) and lesson 02 (a graph of Values and its backward).
    The difference from lesson 02: a node now holds a whole array, and an operation's backward
    works on whole arrays too, so one node can be a matrix product over a batch.

Run it:  python lessons/03_tensor_and_tape.py
"""
import numpy as np

import minicct
from minicct import Function, Tensor

rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. Making tensors")
x = Tensor([[1.0, 2.0, 3.0]])
labels = Tensor(np.array([2, 0, 1]))
print(f"   {x}\n   {labels}")
# The dtype policy: float data becomes float32 (the training precision), integers stay integers.
assert x.dtype == np.float32 and labels.dtype.kind == "i"
# Only float tensors can carry gradients: a class label has no meaningful derivative.
try:
    Tensor([1, 2, 3], requires_grad=True)
    raise AssertionError("an integer tensor accepted requires_grad")
except TypeError as e:
    print(f"   integer tensors cannot require grad: {e}")
# float64 when you ask for it (gradient checks, lesson 04).
assert Tensor([1.0], dtype="float64").dtype == np.float64
# .numpy() hands back a copy on the host; .data is the live array underneath.
assert isinstance(x.numpy(), np.ndarray) and x.numpy() is not x.data

# --------------------------------------------------------------------------------------------------
print("\n2. The tape: each result remembers the Function that made it")
w = Tensor(rng.standard_normal((3, 2)), requires_grad=True)   # (D, K)
b = Tensor(np.zeros(2), requires_grad=True)                   # (K,)
y = x @ w + b                                                 # (1, K)
loss = (y * y).sum()                                          # ()
# Walk the graph by hand from the loss back to the leaves. `_ctx` is internal: we only read it
# here to see the tape; your code never needs it.
def inner_parent(t):
    """The first input of t's node that was itself computed (not a leaf), or None."""
    return next((p for p in t._ctx.parents if p is not None and p._ctx is not None), None)

node, chain = loss, []
while node is not None:
    chain.append(node._ctx.fn.__name__)
    node = inner_parent(node)
print(f"   loss <- {' <- '.join(chain)} <- leaves")
assert chain == ["Sum", "Mul", "Add", "MatMul"]
assert w.is_leaf and b.is_leaf and not loss.is_leaf

# --------------------------------------------------------------------------------------------------
print("\n3. backward(): gradients for the leaves, then the graph is freed")
loss.backward()
# By hand: loss = sum(y^2), so dloss/dy = 2y; y = x @ w + b, so dloss/dw = x^T (2y) and
# dloss/db = 2y summed over the batch axis that broadcasting added to b.
gy = 2 * (x.numpy() @ w.numpy() + b.numpy())                 # (1, K)
print(f"   w.grad {w.grad.shape}, b.grad {b.grad.shape}")
assert np.allclose(w.grad.numpy(), x.numpy().T @ gy, rtol=1e-6)
assert np.allclose(b.grad.numpy(), gy.sum(axis=0), rtol=1e-6)
# Once walked, the nodes let go of their inputs and saved arrays, so memory is returned at once.
# The loss is now a leaf: to differentiate again, run the forward again.
assert loss.is_leaf
print("   after backward the graph is released: loss.is_leaf =", loss.is_leaf)

# --------------------------------------------------------------------------------------------------
print("\n4. Gradients accumulate")
# A second forward and backward *adds* to w.grad. That is what lets a value used twice collect
# both contributions, and it is why a training loop clears gradients before each step.
first = w.grad.numpy()
((x @ w + b) ** 2).sum().backward()
print(f"   after a second backward, w.grad is {np.round(w.grad.numpy() / first, 6).ravel()} x the first")
assert np.allclose(w.grad.numpy(), 2 * first, rtol=1e-6)
w.zero_grad()
b.zero_grad()
assert w.grad is None

# A tensor used twice in one expression: d(a*a + a)/da = 2a + 1.
a = Tensor([1.0, -2.0, 0.5], requires_grad=True)
(a * a + a).sum().backward()
assert np.allclose(a.grad.numpy(), 2 * a.numpy() + 1)
print(f"   a used three times: grad {a.grad.numpy()} = 2a + 1")

# --------------------------------------------------------------------------------------------------
print("\n5. Broadcasting is undone in one place")
# A per-channel scale (1, C, 1, 1) multiplies a batch (N, C, H, W). Its gradient comes out of
# Mul.backward with the big shape and the engine sums it back to (1, C, 1, 1).
imgs = Tensor(rng.standard_normal((4, 3, 5, 5)))
scale = Tensor(np.ones((1, 3, 1, 1)), requires_grad=True)
(imgs * scale).sum().backward()
print(f"   scale {scale.shape}: grad {scale.grad.shape}")
assert scale.grad.shape == (1, 3, 1, 1)
assert np.allclose(scale.grad.numpy(), imgs.numpy().sum(axis=(0, 2, 3), keepdims=True), rtol=1e-5)

# --------------------------------------------------------------------------------------------------
print("\n6. no_grad(): compute without recording")
# Evaluation and parameter updates must not grow a graph.
with minicct.no_grad():
    z = x @ w
print(f"   inside no_grad: z.requires_grad = {z.requires_grad}")
assert not z.requires_grad and z.is_leaf
assert minicct.is_grad_enabled()                              # back on outside the block

# --------------------------------------------------------------------------------------------------
print("\n7. Your own operation: a Function")
# forward and backward work on raw arrays (NumPy or CuPy), side by side. `ctx` carries what the
# backward needs. Here: the sigmoid, whose derivative reuses its own output: s' = s (1 - s).


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):                   # x: raw array, any shape
        xp = minicct.get_array_module(x)   # numpy or cupy: the one device switch
        y = 1.0 / (1.0 + xp.exp(-x))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, gy):                 # gy: d(loss)/d(y), same shape as y
        (y,) = ctx.saved_tensors
        return gy * y * (1.0 - y)          # d(loss)/d(x)


v = rng.standard_normal((2, 5))
t1 = Tensor(v, requires_grad=True)
Sigmoid.apply(t1).sum().backward()
# The same function composed from the Tensor's own operations: more nodes, same gradient.
t2 = Tensor(v, requires_grad=True)
(1 / (1 + (-t2).exp())).sum().backward()
print(f"   Sigmoid Function grad vs composed grad: max |diff| = "
      f"{np.abs(t1.grad.numpy() - t2.grad.numpy()).max():.1e}")
assert np.allclose(t1.grad.numpy(), t2.grad.numpy(), atol=1e-6)

# --------------------------------------------------------------------------------------------------
print("\n8. A whole regression, by hand and by the tape")
# Mean squared error of a linear model: L = mean((X w - t)^2), X (N, D), w (D, 1), t (N, 1).
# By hand: dL/dw = 2/N X^T (X w - t). The tape gets there without being told.
X = rng.standard_normal((64, 4))
t = X @ np.array([[1.0], [-2.0], [0.5], [3.0]]) + 0.01 * rng.standard_normal((64, 1))
w_np = np.zeros((4, 1))
w_t = Tensor(np.zeros((4, 1)), requires_grad=True, dtype="float64")
Xt, tt = Tensor(X, dtype="float64"), Tensor(t, dtype="float64")
for step in range(200):
    g_hand = 2 / len(X) * X.T @ (X @ w_np - t)
    w_t.zero_grad()
    ((Xt @ w_t - tt) ** 2).mean().backward()
    assert np.allclose(w_t.grad.numpy(), g_hand, atol=1e-12)
    w_np -= 0.1 * g_hand
    with minicct.no_grad():
        w_t.data -= 0.1 * w_t.grad.data                       # update the array in place
print(f"   both found w = {np.round(w_t.numpy().ravel(), 2)} (true [1, -2, 0.5, 3])")
assert np.allclose(w_np, w_t.numpy()) and np.allclose(w_np.ravel(), [1, -2, 0.5, 3], atol=0.02)

print("\nAll claims of lesson 03 hold.")
