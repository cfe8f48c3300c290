"""python -m minicct.bench side-by-side: the paper's CIFAR-10 recipe, shortened, trained twice.

CCT-2/3x2 on CIFAR-10 is trained once by minicct (its own ``Trainer``: loader, RandAugment, Mixup,
erasing, AdamW, cosine schedule) and once by PyTorch with timm's own components, with the same
recipe, on the same images, from the same initial weights, evaluated the same way (test top-1 after
every epoch). The result is one PNG with both curves, one CSV and a table: does minicct learn what
the reference stack learns?

The recipe is the official ``configs/datasets/cifar10.yml`` (``minicct.training.config``'s defaults):
AdamW lr 5.5e-4, weight decay 0.06 (not on biases and 1-D parameters), batch 128,
RandomResizedCrop(32, scale (0.8, 1), bilinear or bicubic) + flip, RandAugment rand-m9-mstd0.5-inc1,
Mixup 0.8 / CutMix 1.0 (switch 0.5) with label smoothing 0.1, random erasing 0.25 (per-pixel noise).
Only the length changes. The paper runs 310 epochs: warm-up 10 (inside the cosine), cosine 300,
cooldown 10, mixing off from epoch 175. An N-epoch run scales each by N/310, rounded half up:

    warm-up  = max(1, round(10 N / 310))   at least one epoch from warmup-lr 1e-5, as the paper starts
    cooldown = round(10 N / 310)           epochs at min-lr 1e-5 after the cosine
    cosine   = N - cooldown                (timm's t_initial; the warm-up overwrites its first epochs)
    mix-off  = round(175 N / 310)          no Mixup/CutMix from this epoch on (smoothing stays)

    N = 20: warm-up 1, cosine 19, cooldown 1, mixing off from epoch 11 (the paper: 175/310 = 56%).

The PyTorch side: ``minicct.bench.torch_twin`` (the same network; minicct's initial weights copied
by name), timm's RandomResizedCropAndInterpolation, ``rand_augment_transform``, Mixup (mode 'batch'),
RandomErasing, SoftTargetCrossEntropy, ``create_optimizer_v2('adamw')`` (timm's no-decay groups) and
CosineLRScheduler stepped per epoch; torchvision's flip, ToTensor and Normalize. Differences from the
official run, each the same on both sides:

* float32 throughout (the official config trained with fp16 autocast);
* RandAugment's Posterize at magnitude 10 keeps 0 bits, which Pillow >= 10 refuses (about 0.16% of
  images would raise): it gives a black image, as Pillow < 10 did (minicct's posterize does that too);
* CutMix's box is the paper-era one, ``cut_h // 2`` each side of the centre (timm >= 1.0.29 uses
  ``(cut_h + 1) // 2`` below it; minicct keeps the paper-era box): ``PaperEraMixup`` below;
* mixing happens on the normalised batch, before erasing (the official run mixed uint8 images while
  collating, before normalising and erasing: the same up to rounding).

Each side checkpoints after every epoch (``<out>/minicct/last.npz``, ``<out>/torch/last.pt``) and
``--resume`` continues both (a 20-epoch side takes about 70 minutes on 2 cores). The randomness of
each epoch is a function of (seed, epoch) on both sides, so a resumed run matches an uninterrupted one.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from minicct.bench.common import format_table
from minicct.cli import EXIT_ERROR, UsageError
from minicct.errors import MinicctError

MODEL = "cct_2_3x2_32"
PAPER = dict(epochs=310, warmup=10, cooldown=10, mixup_off=175)   # the official CIFAR-10 run, in epochs
SIDES = ("minicct", "torch")
LABELS = {"minicct": "minicct", "torch": "PyTorch"}
INSTALL = ("pip install --no-deps timm==1.0.31 torchvision==0.28.0 && pip install pyyaml huggingface_hub "
           "safetensors  (and torch itself: pip install torch)")
PROG = "minicct.bench side-by-side"


# A bad flag or missing input is a UsageError (minicct.cli), and any MinicctError (a RunError from the
# recipe's checks, a DatasetError) ends the command as one line: ``minicct.bench side-by-side: error: ...``.


def add_arguments(p):
    import argparse
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = "\n\n".join(__doc__.split("\n\n")[1:4]) + (
        "\n\nExpected time on 2 CPU cores: about 3.5 minutes per epoch per side on the full data\n"
        "(N = 20: about 70 minutes a side); --epochs 2 --train-limit 2000 --test-limit 1000: a few minutes.\n"
        "See minicct/bench/side_by_side.py for the PyTorch side and the differences from the official run.")
    p.add_argument("--epochs", type=int, default=20, help="N: the whole run, cooldown included (paper: 310)")
    p.add_argument("--seed", type=int, default=42,
                   help="seed of each side (initial weights, data order, augmentation, dropout)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding cifar-10-batches-py (default: $MINICCT_DATA_DIR, else data/)")
    p.add_argument("--train-limit", type=int, default=None,
                   help="train on this many images, the same number from each class (default: all 50,000)")
    p.add_argument("--test-limit", type=int, default=None,
                   help="evaluate on this many test images, the same number from each class (default: all)")
    p.add_argument("--out", default="runs/side-by-side", help="folder for checkpoints, CSV and PNG")
    p.add_argument("--sides", default="minicct,torch", help="which to train: minicct, torch or both")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of each side (default: minicct's $MINICCT_THREADS or all cores; torch's own)")
    p.add_argument("--workers", type=int, default=2, help="data worker processes of each side")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (each side from its last epoch)")
    p.add_argument("--stop-epoch", type=int, default=None,
                   help="stop each side before this epoch (the schedule is unchanged): continue later with --resume")


# ---- the schedule -----------------------------------------------------------------------------------
def round_half_up(x):
    return int(math.floor(x + 0.5))


def scaled_schedule(n):
    """The paper's epoch counts scaled to an n-epoch run (see the module docstring):
    dict(epochs, warmup, cosine, cooldown, mixup_off)."""
    f = n / PAPER["epochs"]
    warmup = max(1, round_half_up(PAPER["warmup"] * f))
    cooldown = round_half_up(PAPER["cooldown"] * f)
    return dict(epochs=n, warmup=warmup, cosine=n - cooldown, cooldown=cooldown,
                mixup_off=round_half_up(PAPER["mixup_off"] * f))


def recipe_config(sched, seed, workers, data_dir, output, train_limit=None, test_limit=None,
                  stop_epoch=None, batch_size=None):
    """The trainer's Config for this run: the paper's recipe (minicct.training.config's defaults)
    with the scaled epoch counts. Both sides read the recipe's numbers from here."""
    from minicct.training import config
    argv = ["cifar10", "--model", MODEL, "--epochs", str(sched["cosine"]),
            "--warmup-epochs", str(sched["warmup"]), "--cooldown-epochs", str(sched["cooldown"]),
            "--mixup-off-epoch", str(sched["mixup_off"]), "--seed", str(seed), "--workers", str(workers),
            "--output", str(output), "--device", "cpu"]
    for flag, value in (("--data-dir", data_dir), ("--train-limit", train_limit), ("--test-limit", test_limit),
                        ("--stop-epoch", stop_epoch), ("--batch-size", batch_size)):
        if value is not None:
            argv += [flag, str(value)]
    return config.make_config(config.parse_flags(argv))


def recipe_args(sched, seed, workers, data_dir, output, **kwargs):
    """recipe_config's settings as one flat namespace (flag name -> value), for the PyTorch side."""
    return SimpleNamespace(**recipe_config(sched, seed, workers, data_dir, output, **kwargs).flags())


def mixed_batch(y, smoothing, num_classes):
    """True when the soft targets y (N, C) show mixing: some row is not a smoothed one-hot row."""
    on = 1.0 - smoothing + smoothing / num_classes
    return bool((np.asarray(y).max(axis=1) < on - 1e-5).any())


def seed_for(seed, epoch):
    """A 32-bit seed for one epoch of one run."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


# ---- the data -----------------------------------------------------------------------------------------
def load_data(data_dir, train_limit, test_limit):
    from minicct.data import DatasetError, get_dataset
    from minicct.data.datasets import balanced_subset, default_data_dir
    root = Path(data_dir) if data_dir else default_data_dir()
    if not (root / "cifar-10-batches-py").is_dir():
        raise UsageError(f"--data-dir {root}: no cifar-10-batches-py folder there; point --data-dir at the "
                         f"folder holding it (python -m minicct.train cifar10 downloads it into data/)")
    try:
        train, test = get_dataset("cifar10", data_dir=root, download=False)
    except DatasetError as e:
        raise UsageError(f"--data-dir {root}: {e}") from None
    # The same class-balanced subsets the trainer's --train-limit / --test-limit take.
    if train_limit is not None:
        train = balanced_subset(train, train_limit)
    if test_limit is not None:
        test = balanced_subset(test, test_limit)
    return train, test, root


# ---- the minicct side -------------------------------------------------------------------------------
class _WatchMixing:
    """The trainer's train loader, unchanged, counting the batches whose targets are mixed."""

    def __init__(self, loader, smoothing, num_classes):
        self.loader, self.smoothing, self.num_classes = loader, smoothing, num_classes
        self.batches = self.mixed = 0

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.batches = self.mixed = 0
        for x, y in self.loader:
            self.batches += 1
            self.mixed += mixed_batch(y, self.smoothing, self.num_classes)
            yield x, y


def _side_trainer(on_epoch):
    """minicct's Trainer, keeping one record per epoch (in its checkpoints too): epoch, lr,
    train_loss, test_top1, seconds (training + evaluation), mixed (the share of mixed batches)."""
    from minicct.training.trainer import Trainer

    class SideTrainer(Trainer):
        def __init__(self, config, resume=None, **kwargs):
            self.records = []
            super().__init__(config, resume, **kwargs)
            self.train_loader = _WatchMixing(self.train_loader, config.augment.smoothing,
                                             self.train_set.num_classes)

        def train_epoch(self, epoch):
            self._t0 = time.perf_counter()
            return super().train_epoch(epoch)

        def _save(self, epochs_done, metrics, is_best):
            watch = self.train_loader
            self.records.append(dict(epoch=metrics["epoch"], lr=metrics["lr"], train_loss=metrics["train_loss"],
                                     test_top1=metrics["test_top1"], seconds=time.perf_counter() - self._t0,
                                     mixed=watch.mixed / max(1, watch.batches)))
            super()._save(epochs_done, metrics, is_best)
            on_epoch("minicct", self.records)

        def state(self, epochs_done, metrics):
            return dict(super().state(epochs_done, metrics), side_by_side=self.records)

        def _restore(self, resume):
            super()._restore(resume)
            self.records = list(resume.ckpt.get("side_by_side") or [])[:self.start_epoch]

    return SideTrainer


def run_minicct(config, resume, on_epoch, log):
    Trainer = _side_trainer(on_epoch)
    trainer = Trainer(config, resume, log=log, progress=sys.stderr.isatty())
    on_epoch("minicct", trainer.records)
    if len(trainer.records) < trainer.total_epochs:
        trainer.fit()
    return trainer.records


# ---- the PyTorch side -------------------------------------------------------------------------------
def torch_missing():
    """The names among torch, torchvision, timm that cannot be imported here (found, not imported)."""
    def found(name):
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):   # a broken install, or a module blanked out in sys.modules
            return False
    return [m for m in ("torch", "torchvision", "timm") if not found(m)]


def _import_timm():
    """Import torchvision and timm. A CUDA build of torchvision next to a CPU build of torch (what
    PyPI serves for Linux) cannot load its compiled ops, and torchvision 0.28 then fails on import
    while registering a shape function for its nms op; the ops are never used here, so their
    schemas are declared (kept in ``_import_timm.lib``) and the import tried again."""
    import torch
    if "timm" in sys.modules:
        return sys.modules["timm"]
    try:
        import torchvision  # noqa: F401,F811
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        _import_timm.lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _import_timm.lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401,F811
    import timm
    return timm


def _posterize_pillow9(img, bits_to_keep, **_):
    """timm's posterize, with 0 bits kept giving a black image as Pillow < 10 did (Pillow >= 10 refuses)."""
    from PIL import Image, ImageOps
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def paper_era_box(H, W, lam):
    """The paper-era timm CutMix box for weight lam: sides int(H sqrt(1 - lam)) x int(W sqrt(1 - lam)),
    ``cut // 2`` on each side of a uniform random centre (numpy's global generator, as timm), clipped;
    returns (y0, y1, x0, x1) and the lam the clipped box really gives."""
    r = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(H * r), int(W * r)
    cy, cx = np.random.randint(0, H), np.random.randint(0, W)
    y0, y1 = np.clip(cy - cut_h // 2, 0, H), np.clip(cy + cut_h // 2, 0, H)
    x0, x1 = np.clip(cx - cut_w // 2, 0, W), np.clip(cx + cut_w // 2, 0, W)
    return (int(y0), int(y1), int(x0), int(x1)), 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)


def _paper_era_mixup_class():
    _import_timm()
    from timm.data import Mixup

    class PaperEraMixup(Mixup):
        """timm's Mixup (mode 'batch') with the paper-era CutMix box (``paper_era_box``)."""

        def _mix_batch(self, x):
            lam, use_cutmix = self._params_per_batch()
            if lam == 1.0:
                return 1.0
            if use_cutmix:
                (y0, y1, x0, x1), lam = paper_era_box(x.shape[-2], x.shape[-1], lam)
                x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
            else:
                partner = x.flip(0).mul_(1.0 - lam)     # flip copies: x is scaled in place after
                x.mul_(lam).add_(partner)
            return lam

    return PaperEraMixup


class _Images:
    """A map-style dataset for torch's DataLoader: image i (uint8 (H, W, 3) -> PIL -> transform), label i."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _seed_worker(worker_id):
    """DataLoader workers: torch seeds torch and `random` per worker; timm's RandAugment also draws
    from numpy's global generator."""
    import torch
    np.random.seed(torch.initial_seed() % 2**32)


def train_transform(args, ds):
    """timm's training transform for CIFAR as the official config builds it (uint8 PIL in, tensor out)."""
    _import_timm()
    from timm.data import rand_augment_transform
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision import transforms as T
    fill = tuple(min(255, round(255 * m)) for m in ds.mean)       # timm's img_mean
    ra = rand_augment_transform(args.aa, dict(translate_const=int(ds.img_size * 0.45), img_mean=fill))
    for op in ra.ops:
        if op.name.startswith("Posterize"):
            op.aug_fn = _posterize_pillow9
    return T.Compose([RandomResizedCropAndInterpolation(ds.img_size, scale=(0.8, 1.0), interpolation="random"),
                      T.RandomHorizontalFlip(0.5), ra, T.ToTensor(), T.Normalize(ds.mean, ds.std)])


def initial_model(args, train):
    """The minicct model the trainer starts from: seeded as ``Trainer`` seeds before building it."""
    import minicct
    from minicct import models
    minicct.random.manual_seed(args.seed)
    return models.create_model(args.model, num_classes=train.num_classes, img_size=train.img_size,
                               **{**train.model_kwargs, **args.model_kwargs})


def run_torch(args, sched, datasets, out, threads, resume, stop_epoch, on_epoch, log):
    """Train the twin with timm's components; one record per epoch as the minicct side keeps."""
    import torch
    _import_timm()
    from timm.data.random_erasing import RandomErasing
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from minicct.bench import torch_twin

    if threads:
        torch.set_num_threads(threads)
    train, test = datasets
    C = train.num_classes
    model = torch_twin.from_minicct(initial_model(args, train))
    optimizer = create_optimizer_v2(model, opt="adamw", lr=args.lr, weight_decay=args.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=sched["cosine"], lr_min=args.min_lr,
                                  warmup_t=sched["warmup"], warmup_lr_init=args.warmup_lr, t_in_epochs=True)
    total = sched["cosine"] + sched["cooldown"]   # timm's run: the cycle, then the cooldown at lr_min
    mixup = _paper_era_mixup_class()(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                                     switch_prob=args.mixup_switch_prob, mode="batch",
                                     label_smoothing=args.smoothing, num_classes=C)
    erasing = RandomErasing(probability=args.reprob, mode="pixel", device="cpu")
    loss_fn = SoftTargetCrossEntropy()
    transform = train_transform(args, train)

    mean = torch.tensor(train.mean).view(1, 3, 1, 1)      # as the trainer: the training split's stats
    std = torch.tensor(train.std).view(1, 3, 1, 1)
    test_x = (torch.from_numpy(test.images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    test_y = torch.from_numpy(test.labels)

    ckpt_path = out / "last.pt"
    records, start = [], 0
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, records = int(ckpt["epoch"]), list(ckpt["records"])[:int(ckpt["epoch"])]
        log(f"resumed from {ckpt_path} after epoch {start - 1} ({total - start} epochs to go)")
    on_epoch("torch", records)
    end = total if stop_epoch is None else min(total, stop_epoch)
    out.mkdir(parents=True, exist_ok=True)
    for epoch in range(start, end):
        t0 = time.perf_counter()
        s = seed_for(args.seed, epoch)
        torch.manual_seed(s)          # dropout, drop-path, erasing, the workers' seeds
        np.random.seed(s)             # Mixup's draws (numpy's global generator, as timm)
        random.seed(s)
        scheduler.step(epoch)
        lr = optimizer.param_groups[0]["lr"]
        mixup.mixup_enabled = not (args.mixup_off_epoch and epoch >= args.mixup_off_epoch)
        loader = torch.utils.data.DataLoader(
            _Images(train.images, train.labels, transform), batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
            generator=torch.Generator().manual_seed(s), worker_init_fn=_seed_worker)
        model.train()
        loss_sum, seen, batches, mixed = 0.0, 0, 0, 0
        for x, y in loader:
            x, y = mixup(x, y)
            x = erasing(x)
            mixed += mixed_batch(y.numpy(), args.smoothing, C)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(x)
            seen += len(x)
            batches += 1
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(test_x[i:i + 256]).argmax(1) == test_y[i:i + 256]).sum())
                          for i in range(0, len(test_x), 256))
        records.append(dict(epoch=epoch, lr=lr, train_loss=loss_sum / seen, test_top1=100.0 * correct / len(test_x),
                            seconds=time.perf_counter() - t0, mixed=mixed / max(1, batches)))
        tmp = ckpt_path.with_name(ckpt_path.name + ".tmp")
        torch.save(dict(epoch=epoch + 1, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        records=records), tmp)
        os.replace(tmp, ckpt_path)
        r = records[-1]
        log(f"epoch {epoch:>3}/{total}  lr {lr:.3g}  train loss {r['train_loss']:.4f}  top-1 "
            f"{r['test_top1']:.2f}%  mixed batches {100 * r['mixed']:.0f}%  {r['seconds']:.1f}s")
        on_epoch("torch", records)
    return records


# ---- the report -------------------------------------------------------------------------------------
CSV_COLUMNS = ["lr", "mixed", "train_loss", "test_top1", "seconds"]


def write_report(out, records):
    """<out>/side_by_side.csv (one row per epoch, both sides) and <out>/side_by_side.png (top-1 and
    train loss per epoch, one curve per side)."""
    from minicct.training.checkpoint import atomic_write
    from minicct.training.curves import draw_curves
    n = max((len(r) for r in records.values()), default=0)
    header = ["epoch"] + [f"{c}_{side}" for c in CSV_COLUMNS for side in records]
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(header)
    for e in range(n):
        w.writerow([e] + [records[side][e][c] if e < len(records[side]) else ""
                          for c in CSV_COLUMNS for side in records])
    atomic_write(out / "side_by_side.csv", lambda f: f.write(text.getvalue().encode()))
    draw_curves(out / "side_by_side.png", list(range(n)), [
        ("test top-1 %", {LABELS[s]: [r["test_top1"] for r in recs] for s, recs in records.items()}),
        ("train loss", {LABELS[s]: [r["train_loss"] for r in recs] for s, recs in records.items()})])


def _fmt_time(seconds):
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def summary(records, total):
    rows = []
    for side, recs in records.items():
        if not recs:
            rows.append([LABELS[side], f"0/{total}", "-", "-", "-"])
            continue
        best = max(recs, key=lambda r: r["test_top1"])
        rows.append([LABELS[side], f"{len(recs)}/{total}", f"{recs[-1]['test_top1']:.2f}%",
                     f"{best['test_top1']:.2f}% (epoch {best['epoch']})",
                     _fmt_time(sum(r["seconds"] for r in recs))])
    text = format_table(["side", "epochs", "final top-1", "best top-1", "wall time"], rows)
    if len(records) == 2 and all(records.values()):
        a, b = records["minicct"], records["torch"]
        text += (f"\nminicct - PyTorch: final {a[-1]['test_top1'] - b[-1]['test_top1']:+.2f} points, best "
                 f"{max(r['test_top1'] for r in a) - max(r['test_top1'] for r in b):+.2f} points"
                 + ("" if len(a) == len(b) else " (the sides ran different numbers of epochs)"))
    return text


def saved_records(out, side):
    """The per-epoch records in a side's checkpoint in ``out`` ([] when there is none, or the PyTorch
    side's cannot be read without torch)."""
    if side == "minicct":
        from minicct.training.checkpoint import load_checkpoint
        path = out / "minicct" / "last.npz"
        return list(load_checkpoint(path).get("side_by_side") or []) if path.is_file() else []
    path = out / "torch" / "last.pt"
    if not path.is_file() or torch_missing():
        return []
    import torch
    return list(torch.load(path, weights_only=True)["records"])


# ---- the command ------------------------------------------------------------------------------------
SETTINGS_KEYS = ("epochs", "seed", "train_limit", "test_limit")


def _check(args):
    for flag in ("epochs", "threads", "train_limit", "test_limit", "stop_epoch"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise UsageError(f"--{flag.replace('_', '-')} {v}: must be a positive number")
    if args.epochs < 2:
        raise UsageError(f"--epochs {args.epochs}: the shortest scaled recipe is 2 epochs (a warm-up epoch "
                         f"and a cosine epoch); give --epochs 2 or more")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be 0 or more")
    if args.workers < 0:
        raise UsageError(f"--workers {args.workers}: cannot be negative (0 = prepare batches in-process)")
    if args.device != "cpu":
        raise UsageError(f"--device {args.device}: side-by-side trains on the CPU only; drop --device")
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    bad = [s for s in sides if s not in SIDES]
    if bad or not sides:
        raise UsageError(f"--sides {args.sides}: expected minicct, torch or minicct,torch")
    if "torch" in sides and torch_missing():
        raise UsageError(f"the PyTorch side needs {', '.join(torch_missing())} (not importable here): "
                         f"{INSTALL}; or run --sides minicct")
    return [s for s in SIDES if s in sides]   # minicct first: its workers fork before torch is imported


CHECKPOINTS = {"minicct": "minicct/last.npz", "torch": "torch/last.pt"}


def _settings(args, out, sides):
    """Check --out against --resume: a side starts in a folder where it has no checkpoint (the other
    side may have run there already, with the same settings: the two sides one after the other), and
    a resumed run needs the same settings as the run it continues. Writes <out>/settings.json."""
    mine = {k: getattr(args, k) for k in SETTINGS_KEYS}
    path = out / "settings.json"
    started = [s for s in SIDES if (out / CHECKPOINTS[s]).is_file()]
    saved = json.loads(path.read_text()) if path.is_file() else None
    if args.resume and not started and saved is None:
        raise UsageError(f"--resume: {out} holds no run to continue; drop --resume to start one")
    if not args.resume and any(s in started for s in sides):
        side = next(s for s in sides if s in started)
        raise UsageError(f"--out {out} already holds the {LABELS[side]} side's run: continue it with --resume, "
                         f"or choose another --out")
    diff = [k for k in SETTINGS_KEYS if saved is not None and saved.get(k) != mine[k]]
    if diff:
        raise UsageError(f"{'--resume: ' if args.resume else ''}{out} holds a run with " + ", ".join(
            f"--{k.replace('_', '-')} {saved.get(k)}" for k in diff) + ": give the same values, or another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine, indent=1) + "\n")


def main(args):
    try:
        return _main(args)
    except MinicctError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_ERROR


def _main(args):
    sides = _check(args)
    out = Path(args.out)
    train, test, root = load_data(args.data_dir, args.train_limit, args.test_limit)
    batch = recipe_config(scaled_schedule(args.epochs), args.seed, 0, root, out).optim.batch_size
    if len(train) < batch:
        raise UsageError(f"--train-limit {args.train_limit}: fewer images than one batch of the recipe "
                         f"({batch}); give at least {batch}")
    _settings(args, out, sides)
    if args.threads:
        os.environ["MINICCT_THREADS"] = str(args.threads)
    sched = scaled_schedule(args.epochs)
    recipe = recipe_args(sched, args.seed, args.workers, root, out / "minicct")
    total = sched["cosine"] + sched["cooldown"]
    print(f"side by side: {MODEL} on CIFAR-10 from {root}: {len(train)} train / {len(test)} test images "
          f"(class-balanced), seed {args.seed}, float32 on the CPU, sides: {', '.join(LABELS[s] for s in sides)}\n"
          f"  recipe: AdamW lr {recipe.lr:g} wd {recipe.weight_decay:g}, batch {recipe.batch_size}; "
          f"{recipe.aa}, Mixup {recipe.mixup} / CutMix {recipe.cutmix}, erasing {recipe.reprob}, smoothing "
          f"{recipe.smoothing}\n"
          f"  schedule: the paper's 310 epochs scaled to {total}: warm-up {sched['warmup']} (from "
          f"{recipe.warmup_lr:g}), cosine {sched['cosine']}, cooldown {sched['cooldown']} (at {recipe.min_lr:g}), "
          f"mixing off from epoch {sched['mixup_off']} (paper: 10, 300, 10, 175)\n"
          f"  the same on both sides, unlike the official run: float32 (it used fp16 autocast); RandAugment "
          f"Posterize at 0 bits gives a black image as Pillow < 10 did (Pillow >= 10 refuses it); CutMix uses "
          f"the paper-era box (cut // 2 each side; timm >= 1.0.29 rounds up below the centre)\n"
          f"  output: {out}/side_by_side.csv, side_by_side.png; checkpoints in {out}/minicct, {out}/torch",
          flush=True)

    # Sides run in this call start from their checkpoints; a side run earlier (--sides, --resume)
    # keeps its place in the CSV, the PNG and the table.
    records = {s: [] if s in sides else saved_records(out, s) for s in SIDES}
    records = {s: r for s, r in records.items() if s in sides or r}

    def on_epoch(side, recs):
        records[side] = list(recs)
        write_report(out, records)

    def logger(side):
        def log(text):
            for line in str(text).splitlines():
                print(f"[{LABELS[side]}] {line}", flush=True)
        return log

    if "minicct" in sides:
        ckpt = out / "minicct" / "last.npz"
        from minicct.training.runs import find_resume
        config_m = recipe_config(sched, args.seed, args.workers, root, out / "minicct", args.train_limit,
                                 args.test_limit, stop_epoch=args.stop_epoch)
        resume = (find_resume(str(ckpt), None, "cifar10", config_m.model.label)
                  if args.resume and ckpt.is_file() else None)
        run_minicct(config_m, resume, on_epoch, logger("minicct"))
    if "torch" in sides:
        run_torch(recipe, sched, (train, test), out / "torch", args.threads, args.resume, args.stop_epoch,
                  on_epoch, logger("torch"))
    write_report(out, records)
    print()
    print(summary(records, total))
    return 0
