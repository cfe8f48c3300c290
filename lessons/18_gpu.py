"""Lesson 18 — the same on a GPU, with CuPy.

What you will learn
    * minicct runs on a GPU by swapping NumPy for CuPy: every kernel starts with
      `xp = get_array_module(x)`, so one line of code serves both (lesson 03's Sigmoid did this);
    * moving tensors and whole models with `.to("gpu")`, and that every kernel gives the same
      numbers on both devices (to float32 rounding), forward and backward;
    * how much faster a training step is, and a CCT-2/3x2 trained on 32x32 `shapes` in seconds.

What it builds on
    Lessons 03 (the device switch), 06-10 (the kernels), 17 (the training loop).

Without CuPy or a GPU this lesson says so, explains how to get one going, and exits normally.

Run it:  python lessons/18_gpu.py [--epochs 12]
"""
import argparse
import sys
import time

import numpy as np

import minicct
import minicct.functional as F
from minicct import Tensor, backend

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=12, help="epochs of the GPU training run on shapes")
args = parser.parse_args()

# --------------------------------------------------------------------------------------------------
print("0. Is there a GPU?")
if not minicct.gpu_available():
    try:
        backend.xp_for("gpu")
    except minicct.DeviceError as e:
        reason = str(e)
    print(f"   No usable GPU here, so this lesson stops now (that is fine: everything else runs on the CPU).\n"
          f"   Why: {reason}\n"
          f"   On a machine with an NVIDIA GPU, install CuPy for its CUDA version and run this file again.")
    sys.exit(0)
import cupy as cp  # noqa: E402  (only now that we know it works)

props = cp.cuda.runtime.getDeviceProperties(0)
print(f"   yes: {props['name'].decode()}, CuPy {cp.__version__}")
rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("\n1. Tensors on the GPU")
a_cpu = Tensor(rng.standard_normal((256, 128)), requires_grad=True)
a_gpu = Tensor(a_cpu.numpy(), device="gpu", requires_grad=True)       # or a_cpu.to("gpu")
print(f"   a_gpu.device = {a_gpu.device}, its array is a {type(a_gpu.data).__module__}.{type(a_gpu.data).__name__}")
assert a_gpu.device == "gpu" and isinstance(a_gpu.data, cp.ndarray)
for t in (a_cpu, a_gpu):
    ((t @ t.T / 128).exp().mean()).backward()
assert np.allclose(a_cpu.grad.numpy(), a_gpu.grad.numpy(), rtol=1e-4, atol=1e-8)
print("   the same expression and its backward agree between CPU and GPU")
# Mixing devices in one operation is refused with a clear message instead of copying silently.
try:
    a_cpu + a_gpu
    raise AssertionError("mixing devices should fail")
except minicct.DeviceError as e:
    print(f"   mixing devices: {str(e)[:80]}...")

# --------------------------------------------------------------------------------------------------
print("\n2. Every kernel, on both devices")
def both(fn, *arrays, **kw):
    """fn on CPU tensors and on GPU tensors; compare outputs and input gradients."""
    outs, grads = [], []
    gy = None
    for device in ("cpu", "gpu"):
        ts = [Tensor(a, device=device, requires_grad=a.dtype.kind == "f") for a in arrays]
        y = fn(*ts, **kw)
        gy = rng.standard_normal(y.shape).astype(np.float32) if gy is None else gy
        y.backward(Tensor(gy, device=device))
        outs.append(y.numpy())
        grads.append([t.grad.numpy() for t in ts if t.requires_grad])
    ok = np.allclose(outs[0], outs[1], rtol=1e-3, atol=1e-4) and all(
        np.allclose(g0, g1, rtol=1e-3, atol=1e-4) for g0, g1 in zip(*grads))
    return ok

f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
checks = {
    "conv2d 3x3": both(lambda x, w: F.conv2d(x, w, padding=1), f32(4, 3, 16, 16), f32(8, 3, 3, 3)),
    "max_pool2d 3/2/1": both(lambda x: F.max_pool2d(x, 3, 2, 1), f32(4, 8, 16, 16)),
    "layer_norm": both(lambda x, g, b: F.layer_norm(x, (32,), g, b), f32(4, 10, 32), f32(32), f32(32)),
    "gelu": both(F.gelu, f32(4, 10, 32)),
    "attention": both(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), f32(2, 2, 10, 8), f32(2, 2, 10, 8), f32(2, 2, 10, 8)),
    "cross_entropy": both(lambda z: F.cross_entropy(z, Tensor(np.array([0, 3, 1, 2]), device=z.device)), f32(4, 5)),
}
for name, ok in checks.items():
    print(f"   {name:17} CPU == GPU (forward and backward): {ok}")
assert all(checks.values())

# --------------------------------------------------------------------------------------------------
print("\n3. A whole model: same weights, same logits and gradients")
from minicct.models import create_model
from minicct.optim import AdamW

model_cpu = create_model("cct_2_3x2_32", num_classes=6)
model_gpu = create_model("cct_2_3x2_32", num_classes=6)
model_gpu.load_state_dict(model_cpu.state_dict())
model_gpu.to("gpu")
model_cpu.eval()
model_gpu.eval()
x = f32(8, 3, 32, 32)
labels = np.arange(8) % 6
for m, dev in ((model_cpu, "cpu"), (model_gpu, "gpu")):
    F.cross_entropy(m(Tensor(x, device=dev)), Tensor(labels, device=dev)).backward()
logit_gap = np.abs(model_cpu(Tensor(x)).numpy() - model_gpu(Tensor(x, device="gpu")).numpy()).max()
# Gradients are compared against the largest gradient in the model: some are (in exact arithmetic)
# zero — SeqPool's bias, lesson 13 — and their float32 noise has no meaningful relative size.
scale = max(np.abs(p.grad.numpy()).max() for p in model_cpu.parameters())
gaps = {name: np.abs(p.grad.numpy() - q.grad.numpy()).max() / scale
        for (name, p), q in zip(model_cpu.named_parameters(), model_gpu.parameters())}
worst = max(gaps, key=gaps.get)
grad_gap = gaps[worst]
print(f"   CCT-2/3x2: largest logit difference {logit_gap:.1e}; largest gradient difference {grad_gap:.1e} "
      f"of the largest gradient ({worst})")
assert logit_gap < 1e-3 and grad_gap < 1e-2

# --------------------------------------------------------------------------------------------------
print("\n4. How much faster is a training step?")
def step_time(model, device, batch, steps):
    opt = AdamW(model.parameters(), lr=1e-4)
    xb, yb = Tensor(f32(batch, 3, 32, 32), device=device), Tensor(np.arange(batch) % 6, device=device)
    model.train()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device == "gpu":
            cp.cuda.Device().synchronize()                           # GPU work is asynchronous
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))                               # the first step includes warm-up

t_cpu = step_time(model_cpu, "cpu", 128, 3)
t_gpu = step_time(model_gpu, "gpu", 128, 12)
print(f"   CCT-2/3x2, batch 128: CPU {t_cpu * 1e3:.0f} ms/step ({128 / t_cpu:.0f} img/s), "
      f"GPU {t_gpu * 1e3:.1f} ms/step ({128 / t_gpu:.0f} img/s): {t_cpu / t_gpu:.0f}x")
assert t_gpu < t_cpu

# --------------------------------------------------------------------------------------------------
print(f"\n5. Training CCT-2/3x2 on 32x32 shapes on the GPU ({args.epochs} epochs)")
# Lesson 17's loop with the shapes preset; only `device="gpu"` differs.
from minicct.data import eval_loader, get_dataset, train_loader
from minicct.optim import CosineLRScheduler, param_groups_weight_decay

minicct.manual_seed(0)
train, test = get_dataset("shapes")
model = create_model("cct_2_3x2_32", num_classes=6).to("gpu")
opt = AdamW(param_groups_weight_decay(model, 0.05), lr=1e-3)
sched = CosineLRScheduler(1e-3, t_initial=args.epochs, min_lr=1e-5, warmup_epochs=1, warmup_lr=1e-5, optimizer=opt)
loader = train_loader(train, batch_size=64, seed=0, auto_augment=None, mixup_alpha=0, cutmix_alpha=0,
                      smoothing=0.1, reprob=0)
t0 = time.time()
for epoch in range(args.epochs):
    sched.step(epoch)
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(Tensor(xb, device="gpu")), Tensor(yb, device="gpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with minicct.no_grad():
        pred = np.concatenate([model(Tensor(xb, device="gpu")).numpy().argmax(1)
                               for xb, _ in eval_loader(test, mean=train.mean, std=train.std)])
    acc = float((pred == test.labels).mean())
    print(f"   epoch {epoch + 1:2d}  loss {loss.item():.3f}  test top-1 {acc:.1%}  {time.time() - t0:5.1f} s", flush=True)
assert acc > 0.45, "twelve epochs should get well past chance (16.7%)"

print("\nAll claims of lesson 18 hold.")
