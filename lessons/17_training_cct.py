"""Lesson 17 — training a Compact Convolutional Transformer.

What you will learn
    * the training loop, with every piece from the earlier lessons: the model (14), soft-target
      cross-entropy (05, 16), AdamW with no-decay groups and a warmup + cosine schedule (15), the
      data pipeline (16);
    * the first check to make on any new model: it must be able to memorise one small batch;
    * training, evaluating (top-1 accuracy and a confusion matrix), saving the weights and
      drawing the loss curve.

What it builds on
    Everything so far. After this: lesson 18 (the same on a GPU), lesson 19 (inside the model).

Run it:
    python lessons/17_training_cct.py             # ~20-40 s: a narrow CCT-2 on 16x16 `shapes`
    python lessons/17_training_cct.py --full      # CCT-2/3x2 on 32x32 `shapes`, 12 epochs: about
                                                  #   10 minutes on 2 CPU cores (`python -m minicct.train
                                                  #   shapes`, a narrower model: ~94% in about a minute)
    python lessons/17_training_cct.py --cifar10   # CCT-2/3x2 on CIFAR-10 with the paper's recipe
                                                  #   (310 epochs: days on a CPU, hours on a GPU;
                                                  #   --epochs N for a shorter schedule)
    add --device gpu to either of the long ones when CuPy and a GPU are there (lesson 18).
Outputs: lessons/output/17_cct_shapes.npz (weights, used by lesson 19), lessons/output/17_loss.png
"""
import argparse
import pathlib
import time

import numpy as np
from PIL import Image, ImageDraw

import minicct
import minicct.functional as F
from minicct import Tensor
from minicct.data import eval_loader, get_dataset, train_loader
from minicct.models import count_params, create_model
from minicct.optim import AdamW, CosineLRScheduler, param_groups_weight_decay

OUT = pathlib.Path(__file__).resolve().parent / "output"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--full", action="store_true", help="CCT-2/3x2 on 32x32 shapes for 12 epochs (about 10 minutes on 2 cores)")
parser.add_argument("--cifar10", action="store_true", help="CCT-2/3x2 on CIFAR-10, the paper's recipe (downloads 170 MB once)")
parser.add_argument("--epochs", type=int, default=None, help="epochs of the cosine for --full / --cifar10")
parser.add_argument("--steps", type=int, default=150, help="training steps of the default short run")
parser.add_argument("--device", default="cpu", help="'cpu' or 'gpu'")
parser.add_argument("--workers", type=int, default=0, help="background processes preparing batches")
args = parser.parse_args()
OUT.mkdir(exist_ok=True)
t_start = time.time()
minicct.manual_seed(0)                    # initialisation, dropout and drop-path (see minicct.random)

# --------------------------------------------------------------------------------------------------
print("1. Data and model")
if args.cifar10:
    # The paper's CIFAR-10 recipe (minicct's `python -m minicct.train cifar10` uses the same numbers,
    # and adds what a long run needs: checkpoints, --resume, mixing switched off from epoch 175).
    R = dict(dataset="cifar10", img=32, width={}, batch=128, lr=5.5e-4, wd=0.06, warmup=10, cooldown=10,
             epochs=args.epochs or 300, aa="rand-m9-mstd0.5-inc1", mixup=0.8, cutmix=1.0, reprob=0.25)
elif args.full:
    # Like the shapes preset of `python -m minicct.train shapes` (short, light augmentation), at full width.
    R = dict(dataset="shapes", img=32, width={}, batch=64, lr=1e-3, wd=0.05, warmup=1, cooldown=0,
             epochs=args.epochs or 12, aa=None, mixup=0.0, cutmix=0.0, reprob=0.0)
else:
    # The default: a narrow CCT-2/3x2 (width 64 instead of 128) on 16x16 images, counted in steps.
    R = dict(dataset="shapes", img=16, width=dict(embedding_dim=64, in_planes=32), batch=64, lr=3e-3,
             wd=0.05, warmup=10, cooldown=0, epochs=None, aa=None, mixup=0.0, cutmix=0.0, reprob=0.0)
train, test = get_dataset(R["dataset"], img_size=R["img"])
C = len(train.classes)
model = create_model("cct_2_3x2_32", num_classes=C, img_size=R["img"], **R["width"]).to(args.device)
print(f"   {R['dataset']}: {len(train.images)} training / {len(test.images)} test images of {R['img']}x{R['img']}, "
      f"{C} classes")
print(f"   model: CCT-2/3x2{' (narrow)' if R['width'] else ''}, {count_params(model):,} parameters")

def to_tensor(a):
    return Tensor(a, device=args.device)

# --------------------------------------------------------------------------------------------------
print("\n2. First check: can it memorise one batch?")
# A model, loss and optimiser that work together drive the loss on a fixed small batch towards 0.
# If they cannot, something is broken (a wrong gradient, a detached parameter, a bad learning
# rate) and no amount of data will help. It takes seconds, so always do it first.
probe = create_model("cct_2_3x2_32", num_classes=C, img_size=R["img"], **R["width"]).to(args.device)
probe.eval()                              # no dropout or drop-path: we want pure memorisation
x0, y0 = next(iter(eval_loader(train, batch_size=16)))
opt = AdamW(probe.parameters(), lr=3e-3, weight_decay=0.0)
for step in range(40):
    loss = F.cross_entropy(probe(to_tensor(x0)), to_tensor(y0))
    opt.zero_grad()
    loss.backward()
    opt.step()
with minicct.no_grad():
    acc0 = float((probe(to_tensor(x0)).numpy().argmax(1) == y0).mean())
print(f"   after 40 steps on the same 16 images: loss {loss.item():.3f}, accuracy on them {acc0:.0%}")
assert acc0 == 1.0 and loss.item() < 0.1
del probe, opt

# --------------------------------------------------------------------------------------------------
print("\n3. Training")
# One step: forward, loss against the (soft) targets, clear old gradients, backward, AdamW step.
# The learning rate follows lesson 15's schedule; here it is stepped once per *step* (the short run)
# or once per epoch (the long runs, as timm and the paper do).
loader = train_loader(train, batch_size=R["batch"], seed=0, workers=args.workers, img_size=R["img"],
                      auto_augment=R["aa"], mixup_alpha=R["mixup"], cutmix_alpha=R["cutmix"],
                      smoothing=0.1, reprob=R["reprob"])
opt = AdamW(param_groups_weight_decay(model, R["wd"]), lr=R["lr"])
per_step = R["epochs"] is None
t_initial = args.steps if per_step else R["epochs"]
sched = CosineLRScheduler(R["lr"], t_initial=t_initial, min_lr=1e-5, warmup_epochs=R["warmup"], warmup_lr=1e-5,
                          cooldown_epochs=R["cooldown"], optimizer=opt)

def evaluate(split):
    model.eval()
    pred = []
    with minicct.no_grad():
        for x, _ in eval_loader(split, batch_size=250, mean=train.mean, std=train.std):
            pred.append(model(to_tensor(x)).numpy().argmax(axis=1))
    model.train()
    return np.concatenate(pred)

def train_step(x, y):
    loss = F.cross_entropy(model(to_tensor(x)), to_tensor(y))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()

losses = []
model.train()
if per_step:                              # the short run: a fixed number of steps
    while len(losses) < args.steps:
        for x, y in loader:               # x (B, 3, S, S) float32, y (B, C) soft targets
            sched.step(len(losses))
            losses.append(train_step(x, y))
            if len(losses) % 25 == 0:
                print(f"   step {len(losses):4d}  lr {opt.param_groups[0]['lr']:.2e}  loss (last 25) "
                      f"{np.mean(losses[-25:]):.3f}  {time.time() - t_start:5.1f} s")
            if len(losses) == args.steps:
                break
else:                                     # the long runs: epochs, evaluated after each
    for epoch in range(sched.total_epochs):
        sched.step(epoch)
        for x, y in loader:
            losses.append(train_step(x, y))
        acc = float((evaluate(test) == test.labels).mean())
        print(f"   epoch {epoch + 1:3d}/{sched.total_epochs}  lr {opt.param_groups[0]['lr']:.2e}  train loss "
              f"{np.mean(losses[-len(loader):]):.3f}  test top-1 {acc:.1%}  {time.time() - t_start:7.0f} s", flush=True)

# --------------------------------------------------------------------------------------------------
print("\n4. Evaluation")
pred = evaluate(test)
acc = float((pred == test.labels).mean())
confusion = np.zeros((C, C), int)
np.add.at(confusion, (test.labels, pred), 1)                       # rows: truth, columns: prediction
print(f"   test top-1 {acc:.1%} (chance {1 / C:.1%}); confusion matrix (rows = true class):")
print("   " + " " * 9 + " ".join(f"{c[:6]:>6}" for c in train.classes))
for name, row in zip(train.classes, confusion):
    print(f"   {name:>9} " + " ".join(f"{v:6d}" for v in row))
first, last = np.mean(losses[:20]), np.mean(losses[-20:])
print(f"   training loss {first:.3f} -> {last:.3f} (ln {C} = {np.log(C):.3f} is a guess)")
if per_step or sched.total_epochs >= 10:  # (a 1-epoch smoke run of --full spends it all in warmup)
    assert last < first - 0.1, "the training loss should clearly fall"
    assert acc > 1.5 / C, "the model should beat chance clearly"

# --------------------------------------------------------------------------------------------------
print("\n5. Saving the weights and the loss curve")
# state_dict(): name -> NumPy array, with the official CCT names. Plain .npz is enough to save it;
# load_state_dict() puts the arrays back into a model of the same shape.
name = "17_cct_shapes.npz" if R["dataset"] == "shapes" and not args.full else f"17_cct_{R['dataset']}_full.npz"
path = OUT / name
np.savez(path, **model.state_dict(), _img_size=np.array(R["img"]), _width=np.array(R["width"].get("embedding_dim", 128)))
again = create_model("cct_2_3x2_32", num_classes=C, img_size=R["img"], **R["width"])
with np.load(path) as f:
    again.load_state_dict({k: f[k] for k in f.files if not k.startswith("_")})
again.eval()
model.eval()
with minicct.no_grad():
    x, _ = next(iter(eval_loader(test, batch_size=8, mean=train.mean, std=train.std)))
    assert np.allclose(again(Tensor(x)).numpy(), model(to_tensor(x)).numpy(), atol=1e-5)
print(f"   wrote {path.relative_to(OUT.parent.parent)}; a fresh model loaded from it gives the same logits")

w, h, pad = 640, 300, 50
img = Image.new("RGB", (w, h), "white")
d = ImageDraw.Draw(img)
smooth = np.convolve(losses, np.ones(10) / 10, mode="valid") if len(losses) > 10 else np.array(losses)
top = max(losses)
sx = lambda i: pad + i / max(1, len(losses) - 1) * (w - pad - 20)
sy = lambda v: h - pad - v / top * (h - pad - 20)
d.line([(pad, 20), (pad, h - pad), (w - 20, h - pad)], fill="black")
d.line([(sx(i), sy(v)) for i, v in enumerate(losses)], fill=(190, 190, 230))
d.line([(sx(i + 5), sy(v)) for i, v in enumerate(smooth)], fill=(40, 90, 200), width=2)
d.line([(pad, sy(np.log(C))), (w - 20, sy(np.log(C)))], fill=(200, 80, 80))
d.text((w - 140, sy(np.log(C)) + 4), f"ln {C}: guessing", fill=(200, 80, 80))
d.text((pad, h - pad + 10), f"0 .. {len(losses)} steps", fill="black")
d.text((4, 20), f"{top:.2f}", fill="black")
d.text((4, h - pad - 8), "0", fill="black")
loss_path = OUT / "17_loss.png"
img.save(loss_path)
print(f"   wrote {loss_path.relative_to(OUT.parent.parent)}")

print(f"\nAll claims of lesson 17 hold ({time.time() - t_start:.1f} s).")
