"""The training run: small builders, each making one piece from the settings, and a short loop.

    config = make_config(flags)                 # minicct.training.config: every setting, frozen
    run = Trainer(config, resume)               # data, model, AdamW, schedule, loaders; restores --resume
    run.fit()                                   # epoch after epoch: train, evaluate, checkpoint, log, draw

One epoch (``train_one_epoch``) is the classic loop of lessons/17_training_cct.py

    for x, y in loader:                       # x (N, 3, S, S) float32, y (N, C) soft targets
        loss = cross_entropy(model(x), y)     # mixing and label smoothing already made y
        loss.backward(); optimizer.step(); optimizer.zero_grad()

with a NaN/inf check on every loss. On the CPU the forward and backward lines run as
``parallel.forward_backward(model, cross_entropy, x, y)``: the same loss and gradients, computed
over slices of the batch on every core (``minicct.parallel``). The learning rate has one source:
the schedule, which the loop reads before every epoch (or every update, --sched-on-updates) and
writes into the optimizer (``set_lr``). After each epoch the run writes ``<output>/last.npz`` (and
``best.npz`` when test top-1 improves) atomically, appends a row to ``metrics.csv`` and redraws
``curves.png``.

Resuming restores the model, the optimizer's moments, the epoch and every random generator, so on
the CPU a resumed run ends with the same weights, bit for bit, as one that was never interrupted:
the data pipeline's randomness is a function of (seed, epoch, batch), and the generators the model
draws from (initialisation, dropout, drop-path) are saved and restored.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np

import minicct.random
from minicct import backend
from minicct.cli import plural
from minicct.optim import AdamW, CosineLRScheduler, WeightEMA, param_groups_weight_decay
from minicct.training.checkpoint import save_checkpoint
from minicct.training.config import describe_schedule
from minicct.training.curves import draw_curves
from minicct.training.errors import NonFiniteLoss, RunError
from minicct.training.evaluation import evaluate, progress_bar
from minicct.training.metrics import Mean, MetricsCSV
from minicct.training.runs import new_run_folder

CSV_FIELDS = ["epoch", "lr", "train_loss", "test_loss", "test_top1", "test_top5", "epoch_time",
              "data_wait", "img_per_s"]


# ---- the builders: one piece of the run each, from its group of settings --------------------------
def load_data(config):
    """(train, test) ImageDatasets; --train-limit/--test-limit take class-balanced fixed subsets."""
    import minicct.data
    from minicct.data.datasets import balanced_subset
    r = config.run
    train, test = minicct.data.get_dataset(r.dataset, data_dir=r.data_dir, img_size=config.model.img_size)
    if r.train_limit is not None:
        train = balanced_subset(train, r.train_limit)
    if r.test_limit is not None:
        test = balanced_subset(test, r.test_limit)
    if len(train) < config.optim.batch_size:
        raise RunError(f"the training set has {len(train)} images, fewer than one batch of "
                       f"{config.optim.batch_size}: lower --batch-size")
    return train, test


def build_model(model_cfg, train_set, device, log=print):
    """The model named by --model (+ --model-kwargs), sized for the data, on ``device``."""
    from minicct import models
    # The data tells the model what it needs beyond its size (model_kwargs): an image set its
    # channels (1 for MNIST's grey digits), a text set its vocabulary size and longest sentence.
    kwargs = {**getattr(train_set, "model_kwargs", {}), **model_cfg.kwargs}
    if model_cfg.glove:              # frozen word vectors for a text model (checked in config)
        from minicct.data.text import load_glove
        table, found = load_glove(model_cfg.glove, train_set.vocab, dim=kwargs.get("word_embedding_dim", 300))
        kwargs.update(embeddings=table, freeze_embeddings=True)
        log(f"  --glove: {found:,} of the {len(train_set.vocab):,} words found in {model_cfg.glove}")
    what = f"{train_set.img_size}px images" if train_set.img_size else "this data"
    try:
        model = models.create_model(model_cfg.name, num_classes=train_set.num_classes,
                                    img_size=train_set.img_size, **kwargs)
    except (KeyError, ValueError, TypeError) as e:
        msg = e.args[0] if e.args else str(e)
        raise RunError(f"cannot build model {model_cfg.name!r} for {what}: {msg} "
                       f"(check --model, --model-kwargs and --img-size)") from None
    return model.to(device)


def build_optimizer(model, optim_cfg):
    """AdamW, weight decay on weights only; its learning rate is set by the loop from the schedule."""
    return AdamW(param_groups_weight_decay(model, optim_cfg.weight_decay))


def build_schedule(schedule_cfg, peak_lr):
    """timm's cosine with warm-up and cooldown (minicct.optim.scheduler), read with ``lr_at``."""
    s = schedule_cfg
    return CosineLRScheduler(peak_lr, s.epochs, min_lr=s.min_lr, warmup_epochs=s.warmup_epochs,
                             warmup_lr=s.warmup_lr, cooldown_epochs=s.cooldown_epochs)


def build_loaders(config, train_set, test_set):
    """The training loader (augmentation, mixing, smoothing) and the evaluation loader."""
    from minicct.data.loader import eval_loader, train_loader
    a = config.augment
    if getattr(train_set, "kind", "") == "text":      # batches of word ids: no image augmentation
        from minicct.data.text import text_loaders
        return text_loaders(train_set, test_set, config.optim.batch_size, config.run.seed,
                            config.run.eval_batch_size, a.smoothing)
    try:
        train = train_loader(train_set, batch_size=config.optim.batch_size, seed=config.run.seed,
                             workers=config.run.workers, auto_augment=a.policy, hflip=a.hflip, mixup_alpha=a.mixup,
                             cutmix_alpha=a.cutmix, mix_prob=a.mixup_prob, switch_prob=a.mixup_switch_prob,
                             smoothing=a.smoothing, reprob=a.reprob)
    except ValueError as e:
        raise RunError(f"bad augmentation settings: {e}") from None
    test = eval_loader(test_set, batch_size=config.run.eval_batch_size, mean=train_set.mean, std=train_set.std)
    return train, test


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


# ---- one epoch --------------------------------------------------------------------------------------
def train_one_epoch(model, loader, optimizer, device, epoch, total_epochs, lr, progress=True, log=print,
                    schedule=None, ema=None, graph_step=None):
    """Train over one pass of ``loader``; returns {'train_loss', 'img_per_s', 'data_wait', 'epoch_time',
    'steady_time'} (the last: the epoch's time at the pace of its last three quarters, without the
    start-up of the first steps; what --time-limit plans with).

    Raises NonFiniteLoss (before any update from that batch) when a loss is NaN or infinite.
    progress: a tqdm bar on a terminal; elsewhere (a log file) a line every tenth of the epoch.
    schedule: None (lr fixed for the epoch), or a callable ``schedule(fraction) -> lr`` that sets the
    learning rate before each update, ``fraction`` = step / steps of this epoch (--sched-on-updates).
    ema: None, or a ``WeightEMA`` updated after every optimizer step (--ema).
    graph_step: None, or a ``graph_step.GraphStep`` (--cuda-graph on) that does forward, backward and
    update on host batches; its loss is checked after the update (a replay cannot stop half-way).
    """
    from minicct import Tensor, parallel
    from minicct import functional as F

    model.train()
    steps = len(loader)
    bar = progress_bar(steps, f"epoch {epoch}/{total_epochs}", progress)
    loss_mean, seen = Mean(), 0
    t0 = time.perf_counter()
    quarter, t_quarter = steps // 4, None
    try:
        for step, (x, y) in enumerate(loader):
            if step == quarter:
                t_quarter = time.perf_counter()
            if schedule is not None:
                lr = schedule(step / steps)
            n = len(x)
            if graph_step is not None:      # the whole step as one CUDA graph replay
                value = graph_step(x, y)
                if not math.isfinite(value):
                    raise NonFiniteLoss(epoch, step, steps, value)
            else:
                x = Tensor(backend.to_device(x, device))
                y = Tensor(backend.to_device(y, device))
                # loss = F.cross_entropy(model(x), y); loss.backward() -- on all cores (minicct.parallel)
                value = parallel.forward_backward(model, F.cross_entropy, x, y)
                if not math.isfinite(value):
                    raise NonFiniteLoss(epoch, step, steps, value)
                optimizer.step()
                optimizer.zero_grad()
            if ema is not None:
                ema.update()
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


def _fmt_time(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def epochs_within(limit_s, elapsed_s, per_epoch_s, warmup_epochs=0, cooldown_epochs=0, margin=0.03,
                  final_s=0.0):
    """The cosine length (--epochs) for a run that must end within ``limit_s`` seconds, decided
    after its first epoch: ``elapsed_s`` since start, an epoch takes ``per_epoch_s`` (the first
    epoch's steady pace, with its share of the evaluations), and ``final_s`` more is kept for the
    last evaluation (with --eval-every N > 1; with N = 1 every epoch's own is in per_epoch_s).

    The remaining epochs are as many as fit before ``margin`` (a fraction) of the limit at that
    pace; the run is then 1 + that many epochs, cooldown included. The first epoch's
    learning rate does not depend on the length (the warmup's, or the top of the cosine), so the
    epoch already done stays valid. At least warmup + 1 (a cosine of one epoch after the warmup)."""
    left = limit_s * (1 - margin) - elapsed_s - final_s
    total = 1 + max(0, int(left // max(per_epoch_s, 1e-9)))
    return max(total - cooldown_epochs, warmup_epochs + 1, 1)


# ---- the run ----------------------------------------------------------------------------------------
class Trainer:
    """One training run, built from a Config (minicct.training.config) and, to continue a run, the
    checkpoint ``minicct.training.runs.find_resume`` read."""

    def __init__(self, config, resume=None, log=print, progress=True):
        self.created = time.perf_counter()   # --time-limit counts from here
        self.config, self.log, self.progress = config, log, progress
        self.device = config.run.device
        self.resume = resume
        if resume is not None:
            saved = resume.ckpt["model"]["name"]
            if saved != config.model.name:   # before any data is loaded
                raise RunError(f"{resume.path} holds a {saved} model, but --model {config.model.name} was given: "
                               f"drop --model, or start a new run without --resume")
            self.output = Path(config.run.output) if config.run.output else resume.path.parent
            self.output_note = None
        else:
            self.output, self.output_note = new_run_folder(config.run.output, config.run.dataset,
                                                           config.model.label)
        self.checkpoint_last = self.output / "last.npz"
        self.checkpoint_best = self.output / "best.npz"

        minicct.random.manual_seed(config.run.seed)
        self.train_set, self.test_set = load_data(config)
        self.model = build_model(config.model, self.train_set, self.device, log)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.ema = WeightEMA(self.model, config.optim.ema) if config.optim.ema else None
        self.schedule = build_schedule(config.schedule, config.optim.lr)
        self.train_loader, self.test_loader = build_loaders(config, self.train_set, self.test_set)
        self.csv = MetricsCSV(self.output / "metrics.csv", CSV_FIELDS)
        self.start_epoch, self.history, self.best = 0, [], None
        if resume is not None:
            self._restore(resume)
        else:
            self.csv.truncate(0)  # a new run in a folder with an old metrics.csv starts it afresh
        self.graph_step = self.graph_forward = None
        if config.run.cuda_graph == "on":     # after the restore: the optimizer's state is final
            from minicct import functional as F
            from minicct.training.graph_step import GraphForward, GraphStep
            self.graph_step = GraphStep(self.model, self.optimizer, F.cross_entropy)
            self.graph_forward = GraphForward(self.model)

    @property
    def total_epochs(self):
        return self.config.schedule.total_epochs

    # ---- the loop --------------------------------------------------------------------------------
    def fit(self):
        """Train from ``start_epoch`` to the end of the schedule (or --stop-epoch). Returns the last metrics."""
        self.output.mkdir(parents=True, exist_ok=True)
        self.log(self.describe())
        last, started = None, time.perf_counter()
        epoch = self.start_epoch
        try:
            while epoch < self.end_epoch():   # read after every epoch: --time-limit re-sizes the run
                last = self.train_epoch(epoch)
                epoch += 1
                if epoch == self.start_epoch + 1 and epoch < self.end_epoch():
                    self._log_estimate(epoch, time.perf_counter() - started)
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

    def end_epoch(self):
        stop = self.config.run.stop_epoch
        return self.total_epochs if stop is None else min(self.total_epochs, stop)

    def train_epoch(self, epoch):
        """Train one epoch, evaluate, checkpoint, log; returns the epoch's metrics row."""
        c = self.config
        started_epoch = time.perf_counter()
        lr = set_lr(self.optimizer, self.schedule.lr_at(epoch))
        self.train_loader.set_epoch(epoch)
        if self.train_loader.mixup is not None:
            off = c.augment.mixup_off_epoch
            self.train_loader.mixup.enabled = not (off and epoch >= off)
        per_update = None
        if c.schedule.sched_on_updates:
            per_update = lambda fraction: set_lr(self.optimizer, self.schedule.lr_at(epoch + fraction))  # noqa: E731
        try:
            stats = train_one_epoch(self.model, self.train_loader, self.optimizer, self.device, epoch,
                                    self.total_epochs, lr, self.progress, self.log, per_update, self.ema,
                                    self.graph_step)
        except NonFiniteLoss as e:
            done = self.start_epoch > 0 or bool(self.history)
            raise NonFiniteLoss(e.epoch, e.step, e.steps, e.value,
                                self.checkpoint_last if done and self.checkpoint_last.is_file() else None) from None
        sizing = c.schedule.time_limit and epoch == 0 and self.start_epoch == 0
        evaluated = sizing or self.evaluates(epoch)
        trained = time.perf_counter()
        if evaluated:
            with self.ema.applied() if self.ema is not None else contextlib.nullcontext():   # --ema: the average
                stats.update(evaluate(self.model, self.test_loader, self.device, flip=c.run.tta_flip,
                                      forward=self.graph_forward))
        else:                           # --eval-every: not this epoch (blank in metrics.csv)
            stats.update(test_loss=None, test_top1=None, test_top5=None)
        row = {"epoch": epoch, "lr": lr, **stats}
        is_best = evaluated and (self.best is None or row["test_top1"] > self.best["test_top1"])
        if is_best:
            self.best = {"epoch": epoch, "test_top1": row["test_top1"], "test_top5": row["test_top5"]}
        self.history.append({k: row[k] for k in CSV_FIELDS})
        eval_s = time.perf_counter() - trained if evaluated else 0.0
        self._times = (trained - started_epoch, eval_s)   # this epoch's training and evaluation seconds
        if sizing:
            self._fit_to_time_limit(stats["steady_time"], eval_s)
        self._save(epoch + 1, {k: row[k] for k in CSV_FIELDS}, is_best)
        self.csv.append(row)
        self._draw()
        test = (f"test loss {row['test_loss']:.4f}  top-1 {row['test_top1']:.2f}%  top-5 {row['test_top5']:.2f}%"
                if evaluated else f"(not evaluated: --eval-every {c.run.eval_every})")
        self.log(f"epoch {epoch:>3}/{self.total_epochs}  lr {lr:.3g}  train loss {row['train_loss']:.4f}  "
                 f"{test}  time {row['epoch_time']:.1f}s  data wait {row['data_wait']:.1f}s  "
                 f"{row['img_per_s']:.0f} img/s" + ("  *best" if is_best else ""))
        return row

    def evaluates(self, epoch):
        """Whether the model is evaluated after ``epoch``: every --eval-every'th epoch, and the last
        one of this invocation (the end of the schedule, or --stop-epoch)."""
        return (epoch + 1) % self.config.run.eval_every == 0 or epoch + 1 >= self.end_epoch()

    def _fit_to_time_limit(self, train_s, eval_s):
        """--time-limit, after the first epoch of a new run: a new Config and a new schedule as many
        epochs long as fit (see epochs_within) at the first epoch's pace: ``train_s`` seconds of
        training (its steady pace) and ``eval_s`` of evaluation, which every --eval-every'th epoch and
        the last one pay. The checkpoints save the new --epochs, so --resume keeps it."""
        c = self.config
        now = time.perf_counter()
        every = c.run.eval_every
        per_epoch = train_s + eval_s / every
        epochs = epochs_within(c.schedule.time_limit * 60, now - self.created, per_epoch,
                               c.schedule.warmup_epochs, c.schedule.cooldown_epochs,
                               final_s=eval_s if every > 1 else 0.0)
        self.config = c.with_epochs(epochs)
        self.schedule = build_schedule(self.config.schedule, self.config.optim.lr)
        self.log(f"  time limit {c.schedule.time_limit:g} min: an epoch takes about {_fmt_time(per_epoch)}, so "
                 f"the run is sized to {plural(self.total_epochs, 'epoch')} (--epochs {epochs}), ending about "
                 f"{_fmt_time(now - self.created + per_epoch * (self.total_epochs - 1) + (eval_s if every > 1 else 0))} "
                 f"after start")

    def _log_estimate(self, epoch, elapsed):
        """After the first epoch of this invocation (``elapsed`` seconds so far): the time to go, at
        that epoch's pace of training plus one evaluation for each epoch ahead that is evaluated
        (when that epoch was not evaluated (--eval-every), the evaluations are counted, not timed)."""
        train_s, eval_s = self._times
        ahead = range(epoch, self.end_epoch())
        evals = sum(self.evaluates(e) for e in ahead)
        to_go = train_s * len(ahead) + eval_s * evals
        untimed = f" and {plural(evals, 'evaluation')}" if evals and not eval_s else ""
        self.log(f"  about {_fmt_time(train_s)} per epoch" + (f" and {_fmt_time(eval_s)} per evaluation" if eval_s else "")
                 + f": {plural(len(ahead), 'more epoch')}, about {_fmt_time(to_go)}{untimed} to go "
                 f"({'the whole run' if self.start_epoch == 0 else 'since the resume'}: about "
                 f"{_fmt_time(elapsed + to_go)}{untimed})")

    def describe(self):
        """The run's header: what is trained on what, the whole schedule, where it is written."""
        c, a = self.config, self.config.augment
        n_params = sum(int(np.prod(p.shape)) for p in self.model.parameters())
        kwargs = ", ".join(f"{k}={v}" for k, v in c.model.kwargs.items())
        model = f"{c.model.label} ({c.model.name}{' with ' + kwargs if kwargs else ''}; " \
                f"{n_params / 1e6:.3f} M parameters)"
        preset = f", preset {c.run.preset}" if c.run.preset else ""
        mixing = a.mixup > 0 or a.cutmix > 0
        off = f" (off from epoch {a.mixup_off_epoch})" if mixing and a.mixup_off_epoch else ""
        aug = (f"aa {a.aa}, hflip {a.hflip:g}, mixup {a.mixup}, cutmix {a.cutmix}{off}, reprob {a.reprob}, "
               f"smoothing {a.smoothing}; {plural(c.run.workers, 'data worker')}")
        if getattr(self.train_set, "kind", "") == "text":   # word ids: no image augmentation, no workers
            what = f"sentences of up to {self.train_set.seq_len} words"
            aug = f"smoothing {a.smoothing} (text batches take no image augmentation)"
        else:
            what = f"images of {self.train_set.img_size}px"
        lines = [f"{model} on {c.run.dataset}: {len(self.train_set)} train / {len(self.test_set)} test {what}, "
                 f"{plural(self.train_set.num_classes, 'class', 'classes')}; device {self.device}"
                 f"{' (step and evaluation as CUDA graphs)' if c.run.cuda_graph == 'on' else ''}{preset}",
                 f"  AdamW lr {c.optim.lr:g} wd {c.optim.weight_decay:g}, batch {c.optim.batch_size}; "
                 f"{describe_schedule(c.schedule)}",
                 f"  {aug}"]
        evaluated = [f"a moving average of the weights (--ema {c.optim.ema:g})"] if self.ema is not None else []
        evaluated += ["each image and its mirror (--tta-flip)"] if c.run.tta_flip else []
        if evaluated:
            lines.append(f"  evaluated on {' and on '.join(evaluated)}")
        if c.run.eval_every > 1:
            lines.append(f"  evaluated after every {c.run.eval_every}th epoch and the last"
                         + (" (and the first, to size the run)" if c.schedule.time_limit else "")
                         + f" (--eval-every {c.run.eval_every})")
        lines += [f"  note: {n}" for n in c.notes]
        if self.resume is not None:
            lines.append(f"  resumed from {self.resume.path} after epoch {self.start_epoch - 1}, "
                         f"{plural(self.total_epochs - self.start_epoch, 'epoch')} to go"
                         + (f" ({self.resume.note})" if self.resume.note else ""))
        lines.append(f"  output: {self.output}" + (f" ({self.output_note})" if self.output_note else ""))
        return "\n".join(lines)

    # ---- checkpoints -----------------------------------------------------------------------------
    def state(self, epochs_done, metrics):
        """Everything a checkpoint holds, after ``epochs_done`` epochs."""
        c = self.config
        return {
            "epoch": epochs_done,
            "model": {"name": c.model.name, "num_classes": self.train_set.num_classes,
                      "img_size": self.train_set.img_size, "kwargs": dict(c.model.kwargs),
                      # what the data told the model (channels; a text set's vocabulary size)
                      "data_kwargs": dict(getattr(self.train_set, "model_kwargs", {})),
                      "state": self.model.state_dict()},
            "data": {"dataset": str(c.run.dataset), "classes": list(self.train_set.classes),
                     "mean": list(self.train_set.mean), "std": list(self.train_set.std),
                     "img_size": self.train_set.img_size},
            "optimizer": self.optimizer.state_dict(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "scheduler": dict(self.schedule.state_dict(), epoch=epochs_done),
            "loader": self.train_loader.state_dict(),
            "rng": minicct.random.get_state(),
            "metrics": metrics,
            "best": self.best,
            "history": self.history,
            "args": c.flags(),
        }

    def _restore(self, resume):
        ckpt = resume.ckpt
        self.model.load_state_dict(ckpt["model"]["state"])
        # The moments and step counts come from the checkpoint; the hyperparameters from this run's
        # settings (the same unless a flag was given again, e.g. a new --weight-decay).
        decays = [g["weight_decay"] for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"])
        elif self.ema is not None:
            self.log("  note: the checkpoint has no weight average (it was trained without --ema): the average "
                     "starts from its weights")
        for g, wd in zip(self.optimizer.param_groups, decays):
            g["weight_decay"] = wd
        self.start_epoch = int(ckpt["epoch"])
        self._compare_schedule(ckpt.get("scheduler"))
        self.train_loader.load_state_dict(ckpt["loader"])
        minicct.random.set_state(ckpt["rng"])
        self.history = list(ckpt.get("history") or [])
        self.best = ckpt.get("best")
        self.csv.truncate(self.start_epoch)  # rows logged after this checkpoint was written are redone

    def _compare_schedule(self, saved):
        """The schedule is rebuilt from the settings; the checkpoint's copy (written by ``state``) says
        whether a flag given again on --resume (--epochs, --lr, ...) changed it: one line if so."""
        if not saved:
            return
        now = self.schedule.state_dict()
        changed = [f"{k} {saved[k]:g} -> {now[k]:g}" for k in now
                   if k != "epoch" and k in saved and not isinstance(now[k], bool) and saved[k] != now[k]]
        if changed:
            self.log(f"  note: the learning-rate schedule differs from the checkpoint's ({', '.join(changed)}): "
                     f"the run continues on the new one")

    def _save(self, epochs_done, metrics, is_best):
        state = self.state(epochs_done, metrics)
        save_checkpoint(self.checkpoint_last, state)
        if is_best:
            save_checkpoint(self.checkpoint_best, state)

    def _draw(self):
        h = self.history
        epochs = [r["epoch"] for r in h]
        draw_curves(self.output / "curves.png", epochs, [
            ("loss", {"train": [r["train_loss"] for r in h], "test": [r["test_loss"] for r in h]}),
            ("test accuracy %", {"top-1": [r["test_top1"] for r in h], "top-5": [r["test_top5"] for r in h]})])
