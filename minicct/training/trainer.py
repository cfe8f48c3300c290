"""The training run: build everything from the settings, then loop over epochs.

    run = Trainer(args)           # data, model, AdamW, cosine schedule, loaders; restores --resume
    run.fit()                     # epoch after epoch: train, evaluate, checkpoint, log, draw

One epoch (``train_one_epoch``) is the classic loop

    for x, y in loader:                       # x (N, 3, S, S) float32, y (N, C) soft targets
        loss = cross_entropy(model(x), y)     # mixing and label smoothing already made y
        loss.backward(); optimizer.step(); optimizer.zero_grad()

with a NaN/inf check on every loss. On the CPU the forward and backward lines run as
``parallel.forward_backward(model, cross_entropy, x, y)``: the same loss and gradients, computed
over slices of the batch on every core (``minicct.parallel``). After each epoch the run writes
``<output>/last.npz`` (and ``best.npz`` when test top-1 improves) atomically, appends a row to
``metrics.csv`` and redraws ``curves.png``.

Resuming restores the model, the optimizer's moments, the schedule position, the epoch and every
random generator, so on the CPU a resumed run ends with the same weights, bit for bit, as one that
was never interrupted: the data pipeline's randomness is a function of (seed, epoch, batch), and the
generators the model draws from (initialisation, dropout, drop-path) are saved and restored.
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

from minicct import backend
from minicct.optim import AdamW, CosineLRScheduler, param_groups_weight_decay
from minicct.training.checkpoint import load_checkpoint, save_checkpoint
from minicct.training.curves import draw_curves
from minicct.training.errors import NonFiniteLoss, RunError
from minicct.training.metrics import Mean, MetricsCSV, topk_correct

CSV_FIELDS = ["epoch", "lr", "train_loss", "test_loss", "test_top1", "test_top5", "epoch_time",
              "data_wait", "img_per_s"]


def default_output(dataset, model) -> Path:
    """``runs/<dataset>-<model>``: where runs go when --output is not given."""
    name = Path(str(dataset)).name or "data"
    return Path("runs") / f"{name}-{model}"


def _numbered(base: Path):
    """base, base-2, base-3, ...: the folders successive runs with the same default output use."""
    yield base
    i = 2
    while True:
        yield base.with_name(f"{base.name}-{i}")
        i += 1


def new_run_folder(output, dataset, model) -> Path:
    """Where a new (not resumed) run writes. Without --output: the first of runs/<dataset>-<model>,
    ...-2, ...-3 that holds no checkpoint, so an earlier run is never overwritten. An explicit
    --output that already holds a checkpoint is an error."""
    if output:
        out = Path(output)
        if (out / "last.npz").is_file():
            raise RunError(f"{out} already holds a run (last.npz): continue it with --resume auto, or "
                           f"choose another --output")
        return out
    return next(f for f in _numbered(default_output(dataset, model)) if not (f / "last.npz").is_file())


def resume_path(resume, output, dataset, model) -> Path:
    """The checkpoint ``--resume`` names: a file, a run folder (its last.npz), or 'auto' (the
    --output folder's last.npz, else the newest runs/<dataset>-<model>[-N] holding one)."""
    if resume == "auto":
        if output:
            return Path(output) / "last.npz"
        found = None
        for folder in _numbered(default_output(dataset, model)):
            if not folder.is_dir():
                break
            if (folder / "last.npz").is_file():
                found = folder / "last.npz"
        if found is None:
            raise RunError(f"--resume auto found no checkpoint in {default_output(dataset, model)}: "
                           f"nothing to resume (give --output or a checkpoint path)")
        return found
    path = Path(resume)
    return path / "last.npz" if path.is_dir() else path


# ---- random generators ------------------------------------------------------------------------------
def _generators():
    """Every numpy Generator the model draws from during training, by name (those that exist)."""
    gens = {}
    with contextlib.suppress(ImportError, AttributeError):
        from minicct.nn import init
        gens["init"] = init.get_generator()
    with contextlib.suppress(ImportError, AttributeError):
        from minicct.kernels import dropout
        # dropout/drop-path masks (CPU); the module keeps its generator in _rng until it offers a getter
        gens["dropout"] = dropout.get_generator() if hasattr(dropout, "get_generator") else dropout._rng
    return gens


def seed_everything(seed):
    """Seed initialisation, dropout/drop-path, and NumPy's and Python's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    with contextlib.suppress(ImportError, AttributeError):
        from minicct.nn import init
        init.manual_seed(seed)
    with contextlib.suppress(ImportError, AttributeError):
        from minicct.kernels import dropout
        dropout.manual_seed(seed + 1)


def rng_state() -> dict:
    """The state of every generator, as plain data (for a checkpoint)."""
    state = {name: g.bit_generator.state for name, g in _generators().items()}
    state["numpy_global"] = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    state["python"] = {"version": version, "internal": list(internal), "gauss": gauss}
    return state


def set_rng_state(state: dict):
    """Put every generator back where ``rng_state()`` found it (in place: the objects stay the same)."""
    for name, g in _generators().items():
        if name in state:
            g.bit_generator.state = state[name]
    if "numpy_global" in state:
        np.random.set_state(state["numpy_global"])
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


# ---- one epoch --------------------------------------------------------------------------------------
def train_one_epoch(model, loader, optimizer, device, epoch, total_epochs, lr, progress=True, log=print,
                    schedule=None):
    """Train over one pass of ``loader``; returns {'train_loss', 'img_per_s', 'data_wait', 'epoch_time',
    'steady_time'} (the last: the epoch's time at the pace of its last three quarters, without the
    start-up of the first steps; what --time-limit plans with).

    Raises NonFiniteLoss (before any update from that batch) when a loss is NaN or infinite.
    progress: a tqdm bar on a terminal; elsewhere (a log file) a line every tenth of the epoch.
    schedule: None (lr fixed for the epoch), or a callable ``schedule(fraction) -> lr`` that sets the
    learning rate before each update, ``fraction`` = step / steps of this epoch (--sched-on-updates).
    """
    from minicct import Tensor, parallel
    from minicct import functional as F

    model.train()
    steps = len(loader)
    bar = _progress(steps, f"epoch {epoch}/{total_epochs}", progress)
    loss_mean, seen = Mean(), 0
    t0 = time.perf_counter()
    quarter, t_quarter = steps // 4, None
    try:
        for step, (x, y) in enumerate(loader):
            if step == quarter:
                t_quarter = time.perf_counter()
            if schedule is not None:
                lr = schedule(step / steps)
            x = Tensor(backend.to_device(x, device))
            y = Tensor(backend.to_device(y, device))
            # loss = F.cross_entropy(model(x), y); loss.backward() -- on all cores (minicct.parallel)
            value = parallel.forward_backward(model, F.cross_entropy, x, y)
            if not math.isfinite(value):
                raise NonFiniteLoss(epoch, step, steps, value)
            optimizer.step()
            optimizer.zero_grad()
            n = x.shape[0]
            loss_mean.update(value, n)
            seen += n
            rate = seen / (time.perf_counter() - t0)
            if bar is not None and not bar.disable:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_mean.value:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}",
                                refresh=False)
            elif progress and (step + 1) % max(1, steps // 10) == 0 and step + 1 < steps:
                log(f"  epoch {epoch}: step {step + 1}/{steps}  loss {loss_mean.value:.4f}  {rate:.0f} img/s")
    finally:
        if bar is not None:
            bar.close()
    end = time.perf_counter()
    elapsed = end - t0
    steady = elapsed if t_quarter is None or steps - quarter < 1 else (end - t_quarter) * steps / (steps - quarter)
    return {"train_loss": loss_mean.value, "img_per_s": seen / elapsed, "data_wait": loader.wait_time,
            "epoch_time": elapsed, "steady_time": steady}


def evaluate(model, loader, device, progress=False):
    """Mean cross-entropy and top-1/top-5 accuracy (%) over ``loader`` (x normalised, y int labels).

    Returns {'test_loss', 'test_top1', 'test_top5', 'n'}.
    """
    from minicct import Tensor, no_grad, parallel

    was_training = getattr(model, "training", True)
    model.eval()
    total_loss, c1, c5, n = 0.0, 0, 0, 0
    bar = _progress(len(loader), "evaluate", progress)
    try:
        with no_grad():
            for x, y in loader:
                logits = parallel.forward(model, Tensor(backend.to_device(x, device))).data
                logits = backend.to_numpy(logits).astype(np.float64)
                y = np.asarray(y)
                # cross-entropy from a stable log-softmax: logsumexp(z) - z[label]
                zmax = logits.max(axis=1, keepdims=True)
                lse = np.log(np.exp(logits - zmax).sum(axis=1)) + zmax[:, 0]
                total_loss += float((lse - logits[np.arange(len(y)), y]).sum())
                a1, a5 = topk_correct(logits, y, (1, 5))
                c1, c5, n = c1 + a1, c5 + a5, n + len(y)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return {"test_loss": total_loss / n, "test_top1": 100.0 * c1 / n, "test_top5": 100.0 * c5 / n, "n": n}


def _progress(total, desc, enabled):
    """A tqdm bar on stderr, shown only on a terminal (a log file gets the per-epoch lines alone)."""
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr, disable=None)


def _fmt_time(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def epochs_within(limit_s, elapsed_s, per_epoch_s, warmup_epochs=0, cooldown_epochs=0, margin=0.03):
    """The cosine length (--epochs) for a run that must end within ``limit_s`` seconds, decided
    after its first epoch: ``elapsed_s`` since start, an epoch takes ``per_epoch_s`` (the first
    epoch's steady pace, evaluation included).

    The remaining epochs are as many as fit before ``margin`` (a fraction) of the limit at that
    pace; the run is then 1 + that many epochs, cooldown included. The first epoch's
    learning rate does not depend on the length (the warmup's, or the top of the cosine), so the
    epoch already done stays valid. At least warmup + 1 (a cosine of one epoch after the warmup)."""
    left = limit_s * (1 - margin) - elapsed_s
    total = 1 + max(0, int(left // max(per_epoch_s, 1e-9)))
    return max(total - cooldown_epochs, warmup_epochs + 1, 1)


# ---- the run ----------------------------------------------------------------------------------------
class Trainer:
    """Everything one training run needs, built from the parsed flags (see minicct.training.config)."""

    def __init__(self, args, log=print, progress=True):
        self.created = time.perf_counter()   # --time-limit counts from here
        self.args, self.log, self.progress = args, log, progress
        self.device = args.device
        backend.xp_for(self.device)  # a GPU without CuPy fails here, with the install hint
        if self.device == "cpu":
            backend.keep_freed_memory()   # reuse freed arrays: no page faults every step (backend.py)
        try:   # an unknown model name is reported before any data is looked for
            from minicct.models.registry import model_config
            model_config(args.model)
        except ValueError as e:
            raise RunError(f"cannot build model {args.model!r}: {e}") from None
        resume_from = None
        if args.resume:
            resume_from = resume_path(args.resume, args.output, args.dataset, args.model)
            resume = load_checkpoint(resume_from)
            self.output = Path(args.output) if args.output else resume_from.parent
        else:
            self.output = new_run_folder(args.output, args.dataset, args.model)
        self.checkpoint_last = self.output / "last.npz"
        self.checkpoint_best = self.output / "best.npz"

        seed_everything(args.seed)
        self.train_set, self.test_set = self._datasets()
        self.model = self._model()
        groups = param_groups_weight_decay(self.model, args.weight_decay)
        self.optimizer = AdamW(groups, lr=args.lr)
        self.scheduler = CosineLRScheduler(args.lr, args.epochs, min_lr=args.min_lr,
                                           warmup_epochs=args.warmup_epochs, warmup_lr=args.warmup_lr,
                                           cooldown_epochs=args.cooldown_epochs, optimizer=self.optimizer)
        self.total_epochs = self.scheduler.total_epochs
        self.train_loader, self.test_loader = self._loaders()
        self.csv = MetricsCSV(self.output / "metrics.csv", CSV_FIELDS)
        self.start_epoch, self.history, self.best = 0, [], None
        if resume_from is not None:
            self._restore(resume, resume_from)
        else:
            self.csv.truncate(0)  # a new run in a folder with an old metrics.csv starts it afresh

    # ---- building --------------------------------------------------------------------------------
    def _datasets(self):
        from minicct.data import get_dataset
        a = self.args
        train, test = get_dataset(a.dataset, data_dir=a.data_dir, img_size=a.img_size)
        for ds, limit in ((train, a.train_limit), (test, a.test_limit)):
            if limit is not None:
                ds.images, ds.labels = ds.images[:limit], ds.labels[:limit]
        if len(train) < a.batch_size:
            raise RunError(f"the training set has {len(train)} images, fewer than one batch of "
                           f"{a.batch_size}: lower --batch-size")
        return train, test

    def _model(self):
        from minicct import models
        a = self.args
        try:
            model = models.create_model(a.model, num_classes=self.train_set.num_classes,
                                        img_size=self.train_set.img_size,
                                        **{"n_input_channels": self.train_set.channels, **a.model_kwargs})
        except (KeyError, ValueError, TypeError) as e:
            msg = e.args[0] if e.args else str(e)
            raise RunError(f"cannot build model {a.model!r} for {self.train_set.img_size}px images: {msg}") from None
        return model.to(self.device)

    def _loaders(self):
        from minicct.data.loader import eval_loader, train_loader
        a = self.args
        aa = None if str(a.aa).lower() in ("", "none", "off") else a.aa
        try:
            train = train_loader(self.train_set, batch_size=a.batch_size, seed=a.seed, workers=a.workers,
                                 auto_augment=aa, mixup_alpha=a.mixup, cutmix_alpha=a.cutmix,
                                 mix_prob=a.mixup_prob, switch_prob=a.mixup_switch_prob,
                                 smoothing=a.smoothing, reprob=a.reprob)
        except ValueError as e:  # a malformed --aa policy, an impossible probability...
            raise RunError(f"bad augmentation settings: {e}") from None
        test = eval_loader(self.test_set, batch_size=a.eval_batch_size, mean=self.train_set.mean,
                           std=self.train_set.std)
        return train, test

    # ---- checkpoints -----------------------------------------------------------------------------
    def state(self, epochs_done, metrics):
        """Everything a checkpoint holds, after ``epochs_done`` epochs."""
        a = self.args
        return {
            "epoch": epochs_done,
            "model": {"name": a.model, "num_classes": self.train_set.num_classes,
                      "img_size": self.train_set.img_size, "n_input_channels": self.train_set.channels,
                      "kwargs": dict(a.model_kwargs),
                      "state": self.model.state_dict()},
            "data": {"dataset": str(a.dataset), "classes": list(self.train_set.classes),
                     "mean": list(self.train_set.mean), "std": list(self.train_set.std),
                     "img_size": self.train_set.img_size},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loader": self.train_loader.state_dict(),
            "rng": rng_state(),
            "metrics": metrics,
            "best": self.best,
            "history": self.history,
            "args": {k: v for k, v in vars(a).items()},
        }

    def _restore(self, ckpt, path):
        a = self.args
        saved = ckpt["model"]
        if saved["name"] != a.model:
            raise RunError(f"{path} holds a {saved['name']} model, but this run builds {a.model}: "
                           f"drop --model, or start a new run without --resume")
        self.model.load_state_dict(saved["state"])
        # The moments and step counts come from the checkpoint; the hyperparameters from this run's
        # settings (the same unless a flag was given again, e.g. a new --weight-decay).
        decays = [g["weight_decay"] for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for g, wd in zip(self.optimizer.param_groups, decays):
            g["weight_decay"] = wd
        self.start_epoch = int(ckpt["epoch"])
        self.scheduler.step(self.start_epoch)  # the schedule's position is the epoch
        self.train_loader.load_state_dict(ckpt["loader"])
        set_rng_state(ckpt["rng"])
        self.history = list(ckpt.get("history") or [])
        self.best = ckpt.get("best")
        self.csv.truncate(self.start_epoch)  # rows logged after this checkpoint was written are redone
        self.log(f"resumed from {path} after epoch {self.start_epoch - 1} "
                 f"({self.total_epochs - self.start_epoch} epochs to go)")

    def _save(self, epochs_done, metrics, is_best):
        state = self.state(epochs_done, metrics)
        save_checkpoint(self.checkpoint_last, state)
        if is_best:
            save_checkpoint(self.checkpoint_best, state)

    # ---- the loop --------------------------------------------------------------------------------
    def describe(self):
        a = self.args
        n_params = sum(int(np.prod(p.shape)) for p in self.model.parameters())
        preset = f", preset {a.preset}" if a.preset else ""
        mixing = a.mixup > 0 or a.cutmix > 0
        off = f" (off from epoch {a.mixup_off_epoch})" if mixing and a.mixup_off_epoch else ""
        aug = f"aa {a.aa}, mixup {a.mixup}, cutmix {a.cutmix}{off}, reprob {a.reprob}, smoothing {a.smoothing}"
        return (f"{a.model} ({n_params / 1e6:.3f} M parameters) on {a.dataset}: {len(self.train_set)} train / "
                f"{len(self.test_set)} test images, {self.train_set.num_classes} classes, "
                f"{self.train_set.img_size}px; device {self.device}{preset}\n"
                f"  AdamW lr {a.lr:g} wd {a.weight_decay:g}, batch {a.batch_size}, {self.total_epochs} epochs "
                f"(cosine {a.epochs}, warmup {a.warmup_epochs} from {a.warmup_lr:g}, cooldown "
                f"{a.cooldown_epochs}, min lr {a.min_lr:g}); {aug}; {a.workers} data workers\n"
                f"  output: {self.output}")

    def fit(self):
        """Train from ``start_epoch`` to the end of the schedule (or --stop-epoch). Returns the last metrics."""
        a = self.args
        self.output.mkdir(parents=True, exist_ok=True)
        self.log(self.describe())
        last = None
        started = time.perf_counter()

        def end():   # read again after every epoch: --time-limit re-sizes the run after the first
            return self.total_epochs if a.stop_epoch is None else min(self.total_epochs, a.stop_epoch)

        epoch = self.start_epoch
        try:
            while epoch < end():
                last = self._one_epoch(epoch)
                epoch += 1
                if epoch == self.start_epoch + 1:
                    per_epoch = time.perf_counter() - started
                    todo = end() - epoch
                    self.log(f"  about {_fmt_time(per_epoch)} per epoch: {todo} more epochs, about "
                             f"{_fmt_time(per_epoch * todo)} to go (the whole run: about "
                             f"{_fmt_time(per_epoch * self.total_epochs)})")
        except KeyboardInterrupt:
            if self.history or self.start_epoch:
                self.log(f"interrupted; continue with --resume {self.checkpoint_last}")
            else:
                self.log("interrupted before the first checkpoint")
            raise
        finally:
            self.train_loader.close()
            self.test_loader.close()
        if self.best is not None:
            self.log(f"best test top-1 {self.best['test_top1']:.2f}% at epoch {self.best['epoch']} "
                     f"({self.checkpoint_best})")
        return last

    def _one_epoch(self, epoch):
        a = self.args
        lr = self.scheduler.step(epoch)
        self.train_loader.set_epoch(epoch)
        if self.train_loader.mixup is not None:
            self.train_loader.mixup.enabled = not (a.mixup_off_epoch and epoch >= a.mixup_off_epoch)
        schedule = (lambda fraction: self.scheduler.step(epoch + fraction)) if a.sched_on_updates else None
        try:
            stats = train_one_epoch(self.model, self.train_loader, self.optimizer, self.device, epoch,
                                    self.total_epochs, lr, self.progress, self.log, schedule)
        except NonFiniteLoss as e:
            done = self.start_epoch > 0 or bool(self.history)
            raise NonFiniteLoss(e.epoch, e.step, e.steps, e.value,
                                self.checkpoint_last if done and self.checkpoint_last.is_file() else None) from None
        trained = time.perf_counter()
        stats.update(evaluate(self.model, self.test_loader, self.device))
        row = {"epoch": epoch, "lr": lr, **stats}
        is_best = self.best is None or row["test_top1"] > self.best["test_top1"]
        if is_best:
            self.best = {"epoch": epoch, "test_top1": row["test_top1"], "test_top5": row["test_top5"]}
        self.history.append({k: row[k] for k in CSV_FIELDS})
        if a.time_limit and epoch == 0 and self.start_epoch == 0:
            self._fit_schedule_to_time_limit(stats["steady_time"] + time.perf_counter() - trained)
        self._save(epoch + 1, {k: row[k] for k in CSV_FIELDS}, is_best)
        self.csv.append(row)
        self._draw()
        self.log(f"epoch {epoch:>3}/{self.total_epochs}  lr {lr:.3g}  train loss {row['train_loss']:.4f}  "
                 f"test loss {row['test_loss']:.4f}  top-1 {row['test_top1']:.2f}%  top-5 {row['test_top5']:.2f}%  "
                 f"time {row['epoch_time']:.1f}s  data wait {row['data_wait']:.1f}s  "
                 f"{row['img_per_s']:.0f} img/s" + ("  *best" if is_best else ""))
        return row

    def _fit_schedule_to_time_limit(self, per_epoch):
        """--time-limit, after the first epoch of a new run: make the run as many epochs as fit
        (see epochs_within) at ``per_epoch`` seconds an epoch (the first epoch's steady pace,
        evaluation included). The new length goes into --epochs, which the checkpoints save, so a
        resumed run keeps it."""
        a = self.args
        now = time.perf_counter()
        epochs = epochs_within(a.time_limit * 60, now - self.created, per_epoch,
                               a.warmup_epochs, a.cooldown_epochs)
        if epochs != a.epochs:
            a.epochs = epochs
            self.scheduler.t_initial = epochs
            self.total_epochs = self.scheduler.total_epochs
        self.log(f"  time limit {a.time_limit:g} min: an epoch takes about {_fmt_time(per_epoch)}, so the run "
                 f"is sized to {self.total_epochs} epochs (--epochs {a.epochs}), ending about "
                 f"{_fmt_time(now - self.created + per_epoch * (self.total_epochs - 1))} after start")

    def _draw(self):
        h = self.history
        epochs = [r["epoch"] for r in h]
        draw_curves(self.output / "curves.png", epochs, [
            ("loss", {"train": [r["train_loss"] for r in h], "test": [r["test_loss"] for r in h]}),
            ("test accuracy %", {"top-1": [r["test_top1"] for r in h], "top-5": [r["test_top5"] for r in h]})])
