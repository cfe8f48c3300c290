"""Lesson 15 — AdamW and cosine annealing (the schedule as a picture).

What you will learn
    * Adam: a running mean of the gradient (m) and of its square (v), each step scaled by 1/sqrt(v),
      and why both are "bias-corrected" in the first steps;
    * why weight decay must be *decoupled* from the gradient (AdamW) rather than added to it (L2):
      Adam's normalisation would otherwise cancel it;
    * which parameters get no decay (biases and norm scales), as timm and CCT do;
    * the CCT recipe's learning-rate schedule: a linear warmup, a cosine down to a floor, and a
      short cooldown — drawn as a picture;
    * that our from-scratch versions and minicct.optim agree number for number.

What it builds on
    Lesson 05 (a training loop with plain gradient descent).

Run it:  python lessons/15_adamw_and_cosine.py
Picture: lessons/output/15_cosine_schedule.png
"""
import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw

import minicct
from minicct import Tensor
from minicct.optim import AdamW, CosineLRScheduler, param_groups_weight_decay

OUT = pathlib.Path(__file__).resolve().parent / "output"
OUT.mkdir(exist_ok=True)
rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. Adam, from scratch")
# For a parameter p with gradient g, at step t = 1, 2, ...
#   m = b1 m + (1 - b1) g          a running mean of g          (b1 = 0.9)
#   v = b2 v + (1 - b2) g^2        a running mean of g^2        (b2 = 0.999)
#   p = p - lr * mhat / (sqrt(vhat) + eps),   mhat = m / (1 - b1^t),   vhat = v / (1 - b2^t)
# m and v start at 0, so early on they are too small; dividing by (1 - b^t) undoes exactly that.
class OurAdamW:
    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8, decoupled=True):
        self.params, self.lr, self.wd, self.eps, self.decoupled = params, lr, weight_decay, eps, decoupled
        self.b1, self.b2 = betas
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            if self.decoupled:
                p *= 1 - self.lr * self.wd                 # AdamW: shrink p directly
            else:
                g = g + self.wd * p                        # "Adam + L2": decay hidden in the gradient
            m[:] = self.b1 * m + (1 - self.b1) * g
            v[:] = self.b2 * v + (1 - self.b2) * g * g
            mhat = m / (1 - self.b1 ** self.t)
            vhat = v / (1 - self.b2 ** self.t)
            p -= self.lr * mhat / (np.sqrt(vhat) + self.eps)

# The first step of Adam moves every parameter by about lr, whatever the size of its gradient:
# mhat / sqrt(vhat) = g / |g| = ±1. That is Adam's point: a step size you can reason about.
p = np.array([1.0, 1.0, 1.0])
OurAdamW([p], lr=0.01, weight_decay=0.0).step([np.array([1e-4, 1.0, -1e4])])
print(f"   gradients 1e-4, 1, -1e4 -> first steps {np.round(1.0 - p, 6)} (each about lr = 0.01)")
assert np.allclose(np.abs(1.0 - p), 0.01, rtol=1e-3)

# --------------------------------------------------------------------------------------------------
print("\n2. Why weight decay is decoupled")
# A weight that the loss does not care about (g = 0) should simply decay: p <- p (1 - lr wd).
# With L2 the "gradient" becomes wd * p, and Adam divides it by its own size: the weight then
# moves by ~lr per step whatever wd is — a decay of 1e-4 and of 1e-1 do the same thing.
for wd in (1e-4, 1e-1):
    pl2, pw = np.array([1.0]), np.array([1.0])
    l2, aw = OurAdamW([pl2], lr=0.01, weight_decay=wd, decoupled=False), OurAdamW([pw], lr=0.01, weight_decay=wd)
    for _ in range(10):
        l2.step([np.zeros(1)])
        aw.step([np.zeros(1)])
    print(f"   wd={wd:<6}: after 10 steps  Adam+L2 p = {pl2[0]:.4f}   AdamW p = {pw[0]:.6f} "
          f"(= (1 - lr wd)^10 = {(1 - 0.01 * wd) ** 10:.6f})")
    assert abs(pl2[0] - 0.9) < 2e-3                         # ~lr per step, blind to wd
    assert abs(pw[0] - (1 - 0.01 * wd) ** 10) < 1e-12

# --------------------------------------------------------------------------------------------------
print("\n3. Our AdamW and minicct.optim.AdamW agree")
# A small regression problem with a weight matrix and a bias, trained 50 steps by both.
X = rng.standard_normal((64, 5)).astype(np.float32)
T = (X @ rng.standard_normal((5, 2)) + 0.3).astype(np.float32)
W0, b0 = rng.standard_normal((5, 2)).astype(np.float32), np.zeros(2, np.float32)

def loss_and_grads(W, b):
    """Mean squared error and its gradients, through the tape."""
    Wt, bt = Tensor(W, requires_grad=True), Tensor(b, requires_grad=True)
    loss = ((Tensor(X) @ Wt + bt - Tensor(T)) ** 2).mean()
    loss.backward()
    return loss.item(), [Wt.grad.numpy(), bt.grad.numpy()]

ours = [W0.astype(np.float64), b0.astype(np.float64)]
opt_ours = OurAdamW(ours, lr=0.05, weight_decay=0.06)
W, b = Tensor(W0.copy(), requires_grad=True), Tensor(b0.copy(), requires_grad=True)
opt = AdamW([W, b], lr=0.05, weight_decay=0.06)
for step in range(50):
    _, g = loss_and_grads(*[a.astype(np.float32) for a in ours])
    opt_ours.step([gi.astype(np.float64) for gi in g])
    opt.zero_grad()
    loss = ((Tensor(X) @ W + b - Tensor(T)) ** 2).mean()
    loss.backward()
    opt.step()
diff = max(np.abs(ours[0] - W.numpy()).max(), np.abs(ours[1] - b.numpy()).max())
print(f"   after 50 steps: loss {loss.item():.4f}, largest difference between the two {diff:.1e}")
assert diff < 1e-4 and loss.item() < 0.1

# --------------------------------------------------------------------------------------------------
print("\n4. Which parameters decay")
# Decay keeps the weights that mix features small. Biases and LayerNorm's scale/shift are 1-D,
# few, and shrinking them fights the normalisation — so timm (and CCT) leave every parameter
# with ndim <= 1, and every '.bias', undecayed.
class Tiny:
    """A stand-in model: just names and parameters."""
    def __init__(self):
        self.params = {"fc.weight": Tensor(np.ones((4, 3)), requires_grad=True),
                       "fc.bias": Tensor(np.ones(4), requires_grad=True),
                       "norm.weight": Tensor(np.ones(4), requires_grad=True),
                       "pos_embedding": Tensor(np.ones((1, 5, 4)), requires_grad=True)}

    def named_parameters(self):
        return iter(self.params.items())

tiny = Tiny()
no_decay, decay = param_groups_weight_decay(tiny, weight_decay=0.06)
name_of = {id(p): n for n, p in tiny.params.items()}
print(f"   no decay: {[name_of[id(p)] for p in no_decay['params']]}\n   decay:    {[name_of[id(p)] for p in decay['params']]}")
assert {name_of[id(p)] for p in decay["params"]} == {"fc.weight", "pos_embedding"}
assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.06

# --------------------------------------------------------------------------------------------------
print("\n5. The learning-rate schedule of the CCT CIFAR recipe")
# base lr 5.5e-4; warm up linearly from 1e-5 over 10 epochs; a half cosine from the base down to
# 1e-5 over epochs 0..300; then 10 cooldown epochs at 1e-5. As timm does it, the cosine is counted
# from epoch 0 and the warmup simply overrides its first 10 epochs.
BASE, MIN, WARM, T0, COOL = 5.5e-4, 1e-5, 10, 300, 10

def our_lr(epoch):
    if epoch < WARM:
        return MIN + epoch * (BASE - MIN) / WARM
    if epoch >= T0:
        return MIN
    return MIN + 0.5 * (BASE - MIN) * (1 + math.cos(math.pi * epoch / T0))

sched = CosineLRScheduler(BASE, t_initial=T0, min_lr=MIN, warmup_epochs=WARM, warmup_lr=MIN,
                          cooldown_epochs=COOL)
epochs = np.arange(sched.total_epochs)
lrs = np.array([our_lr(e) for e in epochs])
theirs = np.array([sched.lr_at(e) for e in epochs])
print(f"   {sched.total_epochs} epochs; lr at epoch 0 {lrs[0]:.2e}, 9 {lrs[9]:.2e}, 10 {lrs[10]:.2e}, "
      f"150 {lrs[150]:.2e}, 299 {lrs[299]:.2e}, 305 {lrs[305]:.2e}")
assert sched.total_epochs == 310 and np.allclose(lrs, theirs, rtol=1e-12)
assert lrs[0] == MIN and lrs.max() < BASE and abs(lrs[150] - (BASE + MIN) / 2) < 1e-12
assert np.all(np.diff(lrs[WARM:T0]) < 0) and np.all(lrs[T0:] == MIN)

# The scheduler also writes the lr into the optimizer's parameter groups when stepped.
sched2 = CosineLRScheduler(BASE, t_initial=T0, min_lr=MIN, warmup_epochs=WARM, warmup_lr=MIN,
                           cooldown_epochs=COOL, optimizer=opt)
sched2.step(150)
assert all(abs(g["lr"] - our_lr(150)) < 1e-15 for g in opt.param_groups)

# --------------------------------------------------------------------------------------------------
print("\n6. The schedule as a picture")
def plot(xs, ys, path, w=640, h=320, pad=50, title=""):
    """A line chart with Pillow: axes, a few tick labels, the curve."""
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    x0, x1, y0, y1 = pad + 20, w - 20, h - pad, 40
    sx = lambda x: x0 + (x - xs[0]) / (xs[-1] - xs[0]) * (x1 - x0)
    sy = lambda y: y0 + y / ys.max() * (y1 - y0)
    d.line([(x0, y1), (x0, y0), (x1, y0)], fill="black")
    for e in (0, WARM, T0 // 2, T0):
        d.line([(sx(e), y0), (sx(e), y0 + 4)], fill="black")
        d.text((sx(e) - 8, y0 + 8), str(int(e)), fill="black")
    for v in (MIN, BASE / 2, BASE):
        d.line([(x0 - 4, sy(v)), (x0, sy(v))], fill="black")
        d.text((4, sy(v) - 6), f"{v:.1e}", fill="black")
    d.line([(sx(x), sy(y)) for x, y in zip(xs, ys)], fill=(40, 90, 200), width=2)
    d.text((x0, 12), title, fill="black")
    d.text(((x0 + x1) // 2 - 20, h - 18), "epoch", fill="black")
    img.save(path)
    return path

path = plot(epochs, lrs, OUT / "15_cosine_schedule.png",
            title="CCT recipe: warmup 10, cosine to 300, cooldown 10")
print(f"   wrote {path.relative_to(OUT.parent.parent)}")

print("\nAll claims of lesson 15 hold.")
