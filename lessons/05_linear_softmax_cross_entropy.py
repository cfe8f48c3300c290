"""Lesson 05 — a linear layer, softmax and cross-entropy: a classifier on 2-D toy data.

What you will learn
    * the linear layer y = x W^T + b, and how its weights are first drawn;
    * softmax turns scores into probabilities, and why we subtract the row maximum first;
    * cross-entropy through log-softmax (the log-sum-exp trick), and its famous gradient
      (p - onehot) / N, checked against the tape;
    * a training loop: forward, loss, zero the gradients, backward, step;
    * why one linear layer draws only straight boundaries, and how a hidden layer with a ReLU
      bends them. The decision regions are saved as pictures.

What it builds on
    Lesson 03 (Tensors and backward) and lesson 04 (gradient checking).

Run it:  python lessons/05_linear_softmax_cross_entropy.py
Pictures: lessons/output/05_blobs.png, lessons/output/05_spiral.png
"""
import pathlib
import time

import numpy as np
from PIL import Image, ImageDraw

import minicct
from minicct import Tensor, gradcheck

OUT = pathlib.Path(__file__).resolve().parent / "output"
OUT.mkdir(exist_ok=True)
rng = np.random.default_rng(0)
t_start = time.time()

# --------------------------------------------------------------------------------------------------
print("1. Toy data: points in the plane, three classes")
def blobs(n_per_class=100):
    """Three Gaussian clouds: (3n, 2) float points and (3n,) int labels."""
    centres = np.array([[-1.0, -0.6], [1.0, -0.6], [0.0, 1.0]])
    X = np.concatenate([c + 0.35 * rng.standard_normal((n_per_class, 2)) for c in centres])
    return X.astype(np.float32), np.repeat(np.arange(3), n_per_class)

def spiral(n_per_class=100):
    """Three interleaved spiral arms: no straight line separates them."""
    X, y = [], []
    for k in range(3):
        r = np.linspace(0.05, 1.0, n_per_class)
        angle = np.linspace(4 * k, 4 * k + 4, n_per_class) + 0.15 * rng.standard_normal(n_per_class)
        X.append(np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1))
        y.append(np.full(n_per_class, k))
    return np.concatenate(X).astype(np.float32), np.concatenate(y)

Xb, yb = blobs()
print(f"   blobs: X {Xb.shape} {Xb.dtype}, labels {yb.shape} with counts {np.bincount(yb)}")

# --------------------------------------------------------------------------------------------------
print("\n2. The linear layer")
# PyTorch's convention, which minicct follows: W has shape (out_features, in_features) and
# y = x @ W.T + b. Weights start uniform in ±1/sqrt(in_features), so that the scores of a fresh
# layer have about the same size whatever the number of inputs.
class Linear:
    def __init__(self, d_in, d_out):
        bound = 1 / np.sqrt(d_in)
        self.weight = Tensor(rng.uniform(-bound, bound, (d_out, d_in)), requires_grad=True)
        self.bias = Tensor(rng.uniform(-bound, bound, d_out), requires_grad=True)

    def __call__(self, x):                             # x: (N, d_in) -> (N, d_out)
        return x @ self.weight.T + self.bias

    def parameters(self):
        return [self.weight, self.bias]

layer = Linear(2, 3)
scores = layer(Tensor(Xb[:4]))
print(f"   (4, 2) @ W.T {layer.weight.T.shape} + b {layer.bias.shape} -> scores {scores.shape}")
assert scores.shape == (4, 3)

# --------------------------------------------------------------------------------------------------
print("\n3. Softmax, safely")
# softmax(s)_k = e^{s_k} / sum_j e^{s_j}. Adding a constant to every score changes nothing (it
# cancels), so we subtract the row's largest score: the biggest exponent becomes e^0 = 1 and
# nothing can overflow.
s = np.array([[1000.0, 1001.0, 1002.0]])
with np.errstate(over="ignore", invalid="ignore"):
    naive = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
safe_e = np.exp(s - s.max(axis=1, keepdims=True))
safe = safe_e / safe_e.sum(axis=1, keepdims=True)
print(f"   scores {s.ravel()}: naive softmax {naive.ravel()}, shifted softmax {np.round(safe.ravel(), 4)}")
assert np.isnan(naive).all() and np.allclose(safe.sum(), 1.0)

def log_softmax(s):
    """log p = s - logsumexp(s), with the max shifted out. s: (N, K) Tensor -> (N, K)."""
    m = Tensor(s.data.max(axis=1, keepdims=True))    # a constant: the shift has zero gradient anyway
    z = s - m
    return z - z.exp().sum(axis=1, keepdims=True).log()

# --------------------------------------------------------------------------------------------------
print("\n4. Cross-entropy and its gradient")
# The loss for one example is -log p[label]: small when the right class gets high probability.
# For the mean over N examples, the gradient with respect to the scores is (p - onehot) / N —
# every score is pushed down by its probability, the right one pulled up by 1.
def cross_entropy(scores, labels):
    """scores: (N, K) Tensor, labels: (N,) ints -> the mean negative log-likelihood, a () Tensor."""
    onehot = np.eye(scores.shape[1], dtype=scores.dtype)[labels]      # (N, K)
    return -(log_softmax(scores) * Tensor(onehot)).sum() / len(labels)

S = Tensor(rng.standard_normal((5, 3)), requires_grad=True)
lab = np.array([0, 2, 1, 1, 0])
loss = cross_entropy(S, lab)
loss.backward()
p = np.exp(S.numpy()) / np.exp(S.numpy()).sum(axis=1, keepdims=True)
by_hand = (p - np.eye(3)[lab]) / 5
print(f"   loss {loss.item():.4f}; tape gradient equals (p - onehot)/N: "
      f"{np.allclose(S.grad.numpy(), by_hand, atol=1e-6)}")
assert np.allclose(S.grad.numpy(), by_hand, atol=1e-6)
assert abs(loss.item() - np.mean(-np.log(p[np.arange(5), lab]))) < 1e-5
# With no information (all scores equal) the loss is log K: a sanity check for any fresh model.
assert abs(cross_entropy(Tensor(np.zeros((4, 3))), np.array([0, 1, 2, 0])).item() - np.log(3)) < 1e-6
# And the whole chain passes the weighted gradient check of lesson 04.
W0 = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
assert gradcheck(lambda W: log_softmax(Tensor(Xb[:6]) @ W.T), [W0])
print("   gradcheck(log_softmax(x @ W.T)) passes")

# --------------------------------------------------------------------------------------------------
print("\n5. Training a linear classifier on the blobs")
def train(model, X, y, steps, lr):
    Xt = Tensor(X)
    for step in range(steps):
        loss = cross_entropy(model(Xt), y)
        for p in model.parameters():
            p.zero_grad()
        loss.backward()
        with minicct.no_grad():
            for p in model.parameters():
                p.data -= lr * p.grad.data                  # plain gradient descent
        if step % (steps // 4) == 0 or step == steps - 1:
            print(f"   step {step:4d}  loss {loss.item():.4f}")
    return loss.item()

def accuracy(model, X, y):
    with minicct.no_grad():
        return float((model(Tensor(X)).numpy().argmax(axis=1) == y).mean())

linear = Linear(2, 3)
first = cross_entropy(linear(Tensor(Xb)), yb).item()
last = train(linear, Xb, yb, steps=200, lr=0.5)
acc_blobs = accuracy(linear, Xb, yb)
print(f"   loss {first:.3f} -> {last:.3f}, accuracy {acc_blobs:.1%}")
assert last < first / 4 and acc_blobs > 0.95

# --------------------------------------------------------------------------------------------------
print("\n6. A hidden layer for the spiral")
# One linear layer can only cut the plane with straight lines. Put a layer of 64 hidden units
# and a ReLU (max(0, h)) in between and the boundaries can bend.
class ReLUMask(minicct.Function):
    @staticmethod
    def forward(ctx, h):
        mask = h > 0
        ctx.save_for_backward(mask)
        return h * mask

    @staticmethod
    def backward(ctx, gy):
        (mask,) = ctx.saved_tensors
        return gy * mask                                   # the gradient passes where h was > 0

class MLP:
    def __init__(self, d_in, d_hidden, d_out):
        self.fc1, self.fc2 = Linear(d_in, d_hidden), Linear(d_hidden, d_out)

    def __call__(self, x):                                   # (N, 2) -> (N, 64) -> (N, 3)
        return self.fc2(ReLUMask.apply(self.fc1(x)))

    def parameters(self):
        return self.fc1.parameters() + self.fc2.parameters()

Xs, ys = spiral()
lin_s = Linear(2, 3)
print("   one linear layer:")
train(lin_s, Xs, ys, steps=200, lr=0.5)
mlp = MLP(2, 64, 3)
print("   linear -> ReLU -> linear:")
train(mlp, Xs, ys, steps=1500, lr=1.0)
acc_lin, acc_mlp = accuracy(lin_s, Xs, ys), accuracy(mlp, Xs, ys)
print(f"   spiral: linear {acc_lin:.1%}, with a hidden layer {acc_mlp:.1%}")
assert acc_lin < 0.7 and acc_mlp > 0.9

# --------------------------------------------------------------------------------------------------
print("\n7. Pictures of the decision regions")
COLOURS = np.array([[230, 80, 70], [70, 140, 230], [90, 190, 90]], dtype=np.uint8)

def draw(model, X, y, path, size=240, span=1.8):
    """Colour each pixel by the predicted class (pale) and draw the points (strong)."""
    grid = np.linspace(-span, span, size, dtype=np.float32)
    gx, gy = np.meshgrid(grid, -grid)                        # y grows upwards in the picture
    with minicct.no_grad():
        pred = model(Tensor(np.stack([gx.ravel(), gy.ravel()], 1))).numpy().argmax(1)
    pale = (0.35 * COLOURS[pred] + 0.65 * 255).astype(np.uint8).reshape(size, size, 3)
    img = Image.fromarray(pale)
    d = ImageDraw.Draw(img)
    to_px = lambda v: (v + span) / (2 * span) * (size - 1)
    for (a, b), k in zip(X, y):
        px, py = to_px(a), size - 1 - to_px(b)
        d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=tuple(int(c) for c in COLOURS[k]))
    img.save(path)
    print(f"   wrote {path.relative_to(OUT.parent.parent)}")

draw(linear, Xb, yb, OUT / "05_blobs.png")
draw(mlp, Xs, ys, OUT / "05_spiral.png")


# --------------------------------------------------------------------------------------------------
print("\n8. The same pieces in minicct.functional")
# minicct's versions use PyTorch's names: F.linear(x, W, b) with W (out, in), F.log_softmax,
# F.cross_entropy(scores, labels) (labels as class indices, or (N, K) soft targets, lesson 16),
# F.relu. Each is one Function with a hand-written backward instead of a chain of small ones.
import minicct.functional as F

x = Tensor(Xs[:8])
W, bias = Tensor(mlp.fc1.weight.numpy(), requires_grad=True), Tensor(mlp.fc1.bias.numpy(), requires_grad=True)
assert np.allclose(F.linear(x, W, bias).numpy(), mlp.fc1(x).numpy(), atol=1e-6)
assert np.allclose(F.relu(mlp.fc1(x)).numpy(), ReLUMask.apply(mlp.fc1(x)).numpy())
S1 = Tensor(rng.standard_normal((6, 3)), requires_grad=True)
S2 = Tensor(S1.numpy(), requires_grad=True)
lab = np.array([0, 1, 2, 2, 1, 0])
assert np.allclose(F.log_softmax(S1, dim=1).numpy(), log_softmax(S1).numpy(), atol=1e-6)
ours, theirs = cross_entropy(S1, lab), F.cross_entropy(S2, Tensor(lab))
ours.backward()
theirs.backward()
print(f"   cross-entropy: ours {ours.item():.6f}, F.cross_entropy {theirs.item():.6f}; gradients agree")
assert abs(ours.item() - theirs.item()) < 1e-6 and np.allclose(S1.grad.numpy(), S2.grad.numpy(), atol=1e-6)
assert gradcheck(lambda s: F.cross_entropy(s, Tensor(lab)), [S2])
print(f"\nAll claims of lesson 05 hold ({time.time() - t_start:.1f} s).")
