"""The training command's settings: the flags, their defaults (the paper's CIFAR-10 recipe), the
presets, and ``Config``, the one object a run is built from.

Where a setting comes from, lowest to highest priority:

    1. ``DEFAULTS``: CCT-2/3x2 on CIFAR-10 as the official ``configs/datasets/cifar10.yml`` runs it
       through timm (300 cosine epochs + 10 warmup inside them + 10 cooldown = 310 epochs)
    2. a preset (``--preset NAME``; a dataset in ``DATASET_PRESETS`` -- shapes, cifar100, mnist,
       fashion-mnist, flowers102, text-synth -- brings its own): a dict of flag defaults in ``PRESETS``
    3. with ``--resume``, the settings stored in the checkpoint (so a bare ``--resume auto`` continues
       the same run, on the same data folder)
    4. flags given on the command line

One rule changes a default: ``--epochs N`` below the recipe's 300, with the warm-up and cooldown
left to the recipe, scales them with it (``--epochs 30``: warm-up 1, cooldown 1), a short version
of the same recipe; the run's header says so. A warm-up given (or preset) as long as the run is an error.

    flags = parse_flags(argv)                 # only the flags given, each checked once
    config = make_config(flags, saved)        # + defaults, preset, checkpoint; checked together; frozen
    config.optim.lr, config.schedule.total_epochs, config.run.output, config.flags()
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from minicct.cli import ArgumentParser, checked, existing_folder, non_negative, plural, positive, probability
from minicct.errors import RunError

# The paper's recipe: every flag's default (argparse dest names).
DEFAULTS = dict(
    dataset=None, model="cct_2_3x2_32", model_kwargs=[], img_size=None, glove=None,
    epochs=300, batch_size=128, lr=5.5e-4, weight_decay=0.06, warmup_epochs=10, warmup_lr=1e-5,
    cooldown_epochs=10, min_lr=1e-5, sched_on_updates=False, time_limit=None,
    aa="rand-m9-mstd0.5-inc1", mixup=0.8, cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.5,
    mixup_off_epoch=175, hflip=0.5, reprob=0.25, smoothing=0.1,
    preset=None, seed=42, device=None, workers=None, data_dir=None, output=None, resume=None,
    eval_batch_size=256, stop_epoch=None, train_limit=None, test_limit=None, ema=0.0, tta_flip=False,
    cuda_graph="off", eval_every=1,
)

# Each preset is a dict of flag defaults (argparse dest names), applied over the recipe's defaults.
PRESETS = {
    # The shapes dataset: small, clean, offline. A toy CCT-2 (width 64, 32 tokenizer filters: 74 k
    # parameters) without attention dropout, stochastic depth, label smoothing, RandAugment or mixing
    # (they slow a 7-epoch run down more than they help), at full lr from the first epoch.
    # Measured: 93.9% test top-1 in 107 s on 2 cores at load ~5.5; 91.2% in 56 s on a quiet machine
    # after the Winograd conv (90.5% with it off: float32 rounding alone moves a 7-epoch run ~2 points);
    # 96.6% in 69 s (load ~1) with minicct.random's seeding policy (other seeds, other initial weights).
    "shapes": dict(model="cct_2_3x2_32", epochs=7, warmup_epochs=0, cooldown_epochs=0, batch_size=64,
                   model_kwargs=["embedding_dim=64", "in_planes=32", "attention_dropout=0.0",
                                 "stochastic_depth=0.0"],
                   lr=3e-3, weight_decay=0.05, aa="none", mixup=0.0, cutmix=0.0, reprob=0.0, smoothing=0.0),
    # CIFAR-10 against the clock on a CPU (issues 7 and 13): CCT-2/3x2 for as many epochs as fit in 30
    # minutes (--time-limit sizes the run after the first epoch, with a 3% margin: 10-14 epochs on
    # 2 cores, as fast as the machine is that day). A short run underfits, so no regulariser that
    # slows learning (RandAugment, Mixup/CutMix, erasing, attention dropout, stochastic depth). The lr
    # is set before every update: a warm-up over the first epoch from 5e-4, then a cosine from 2e-3
    # to 1e-5. Measured on the full data (issue 13's note, session 5):
    #   batch 32: +0.9 points over batch 64 at 7 epochs, seed 1 (75.55% against 74.68%, last weights,
    #     no flip), at the same pace: with worker processes a micro-batch of 16 per core is one
    #     piece, and the old ~12% per-step cost of batch 32 (threads) is gone;
    #   --tta-flip: +0.2 to +0.8 points (mean +0.5) on each of 4 runs, for one more forward pass per evaluation;
    #   --eval-every 4: 3-4 evaluations instead of 10-14, about an epoch more training in 30 minutes;
    #   --ema 0.999 (not used): -0.0 to -0.3 points on the same 4 runs (the cosine's end already
    #     averages the weights).
    # The tokenizer's first conv has 32 filters instead of CCT-2/3x2's 64 (in_planes=32; 0.246M
    # parameters instead of 0.284M): it halves the second conv and the first pool, the bulk of a CPU
    # step. Measured over 3 epochs, seed 0 (session 6): 69.52% against 69.24% (train loss 1.2149
    # against 1.2154) at 1.3x the pace (428-465 img/s against 344-353); 16 filters: 68.84%, 1.1x
    # faster again. --model-kwargs attention_dropout=0.0 stochastic_depth=0.0 gives the paper's 64.
    # With it, against the clock (seeds 0 and 1): 77.70% / 77.05% with --time-limit 20 (9 epochs, 64
    # filters: 77.03% / 76.09% in 8 and 7), 80.48% / 80.00% with 30 (14 / 13 epochs).
    "fast-cpu": dict(model="cct_2_3x2_32", model_kwargs=["attention_dropout=0.0", "stochastic_depth=0.0", "in_planes=32"],
                     epochs=12, time_limit=30.0, sched_on_updates=True, warmup_epochs=1, warmup_lr=5e-4,
                     cooldown_epochs=0, batch_size=32, lr=2e-3, weight_decay=0.05, aa="none", mixup=0.0,
                     cutmix=0.0, reprob=0.0, smoothing=0.1, tta_flip=True, eval_every=4),
    # ---- the paper's other experiments (each applies by itself to the dataset of its name) ----------
    # CIFAR-100: the official configs/datasets/cifar100.yml -- the CIFAR-10 recipe with lr 6e-4, warmup
    # from 1e-6 and mixing never switched off. The model stays CCT-2/3x2 unless --model says otherwise.
    "cifar100": dict(lr=6e-4, warmup_lr=1e-6, mixup_off_epoch=0),
    # Flowers-102 from scratch: the official configs/pretrained/cct_7-7x2_flowers102.yml (with
    # configs/datasets/flowers102.yml's random erasing): CCT-7/7x2 with sine positions at 224 px,
    # batch 96, lr 5e-4, warmup from 1e-6, mixing never off; 300 + 10 epochs on the 1020 training images.
    "flowers102": dict(model="cct_7_7x2_224_sine", img_size=224, batch_size=96, lr=5e-4, weight_decay=0.06,
                       warmup_lr=1e-6, mixup_off_epoch=0, reprob=0.25),
    # MNIST and Fashion-MNIST, 28x28 grey: the official repository has no config for them, so these
    # are the CIFAR-10 recipe (the defaults) with CCT-7/3x1, one 3x3 conv + pool: 14x14 = 196 tokens,
    # without the horizontal flip: a mirrored digit is another (or no) digit.
    "mnist": dict(model="cct_7_3x1_32", hflip=0.0),
    "fashion-mnist": dict(model="cct_7_3x1_32", hflip=0.0),
    # The synthetic text task (minicct.data.text.make_text_synth), offline: text CCT-2 with 2-word
    # kernels (it must see which word a "not" stands next to), no image augmentation (the text
    # batches ignore it), no attention dropout or stochastic depth in a run this short.
    # Measured: 99.8% test top-1 after the first epoch, 100.0% after 3, in 73 s on 2 cores at load ~11
    # (18 s on a quiet machine).
    "text-synth": dict(model="text_cct_2_k2", epochs=3, warmup_epochs=0, cooldown_epochs=0, batch_size=64,
                       model_kwargs=["attention_dropout=0.0", "stochastic_depth=0.0"],
                       lr=1e-3, weight_decay=0.05, aa="none", mixup=0.0, cutmix=0.0, reprob=0.0,
                       smoothing=0.0),
    # AG News (120,000 news items, 4 classes) and TREC (5,452 questions, 6 classes) with text CCT-2,
    # 2-word kernels, trainable embeddings. The official repository publishes no training recipe
    # for text, so these are ours, not the paper's: AdamW as for images, a short warm-up, no
    # image augmentation (text batches have none), label smoothing kept.
    "agnews": dict(model="text_cct_2_k2", epochs=20, warmup_epochs=2, cooldown_epochs=0, batch_size=128,
                   lr=1e-3, weight_decay=0.05, aa="none", mixup=0.0, cutmix=0.0, reprob=0.0, smoothing=0.1),
    "trec": dict(model="text_cct_2_k2", epochs=50, warmup_epochs=5, cooldown_epochs=0, batch_size=64,
                 lr=1e-3, weight_decay=0.05, aa="none", mixup=0.0, cutmix=0.0, reprob=0.0, smoothing=0.1),
}

# A dataset named here trains with its preset unless --preset says otherwise.
DATASET_PRESETS = {"shapes": "shapes", "cifar100": "cifar100", "mnist": "mnist", "fashion-mnist": "fashion-mnist",
                   "flowers102": "flowers102", "flowers102-valid": "flowers102", "text-synth": "text-synth",
                   "agnews": "agnews", "trec": "trec"}

# The datasets known by name (anything else must be an image folder); '-' and '_' do not count
# when a name is matched ('cifar-10', 'fashion_mnist').
DATASETS = ("cifar10", "cifar100", "shapes", "mnist", "fashion-mnist", "flowers102", "flowers102-valid",
            "text-synth", "agnews", "trec")


def dataset_key(name):
    """'Fashion_MNIST' -> 'fashion-mnist': the DATASETS entry a name means, or None."""
    squash = str(name).lower().replace("-", "").replace("_", "")
    return next((d for d in DATASETS if d.replace("-", "") == squash), None)

EXAMPLES = """examples:
  python -m minicct.train cifar10                       # the paper's recipe: 310 epochs (~18 h on 2 CPU cores)
  python -m minicct.train cifar10 --preset fast-cpu     # ~80% in 30 minutes on 2 CPU cores (~77% in 20)
  python -m minicct.train cifar10 --epochs 30           # the recipe, shortened: warm-up/cooldown scaled to 1
  python -m minicct.train shapes                        # offline synthetic data, about a minute on a CPU
  python -m minicct.train path/to/folder --img-size 64  # your own ImageFolder data
  python -m minicct.train cifar10 --resume auto         # continue the newest runs/cifar10-cct_2_3x2_32[-N]

A new run writes to runs/<dataset>-<model>, or to runs/<dataset>-<model>-2, -3 ... when that folder
already holds a run (the header says which); --output DIR names the folder (an error if it holds one).
"""


def build_parser() -> ArgumentParser:
    """The one parser. Every flag's default is SUPPRESS, so parsing yields only the flags given; the
    defaults live in DEFAULTS (shown once in the help)."""
    p = ArgumentParser(prog="python -m minicct.train", argument_default=argparse.SUPPRESS,
                       description="Train a Compact Transformer (CCT / CVT / ViT-Lite). With the dataset alone, "
                                   "`cifar10`: the paper's\nCIFAR-10 recipe for cct_2_3x2_32 (310 epochs).",
                       epilog=EXAMPLES + "presets (--preset): " + ", ".join(PRESETS))

    def add(group, *names, help, **kw):
        dest = kw.get("dest") or names[0].lstrip("-").replace("-", "_")
        default = DEFAULTS[dest]
        if default not in (None, False, []):   # shown once, here (help strings never repeat it)
            help += f" (default: {default:g})" if isinstance(default, float) else f" (default: {default})"
        group.add_argument(*names, help=help, **kw)

    add(p, "dataset", nargs="?", help=f"one of {', '.join(DATASETS)}, or an ImageFolder root (train/<class>/*, "
                                      "test/<class>/* or val/<class>/*); may be left out with --resume PATH")
    g = p.add_argument_group("model")
    add(g, "--model", help="model name, e.g. cct_7_3x1_32 (python -c 'import minicct.models as m; "
                           "print(m.list_models())' lists them)")
    add(g, "--model-kwargs", nargs="*", metavar="KEY=VALUE", type=kwarg_item,
        help="extra create_model arguments, e.g. embedding_dim=64 num_layers=1 stochastic_depth=0")
    add(g, "--img-size", type=positive(int, "--img-size 32"),
        help="side of the square input; default: the dataset's own (32 for CIFAR and shapes)")
    add(g, "--glove", metavar="PATH",
        help="text models: word vectors from this GloVe-format text file (word v1 ... v300 a line), "
             "kept frozen; words it lacks start random")

    g = p.add_argument_group("optimisation (AdamW, timm's cosine schedule stepped per epoch)")
    add(g, "--epochs", type=positive(int, "--epochs 300"),
        help="length of the cosine; the run lasts epochs + cooldown. Below 300, a warm-up and cooldown "
             "left to the recipe are scaled with it")
    add(g, "--batch-size", "-b", type=positive(int, "--batch-size 128"),
        help="training batch (the last partial batch is dropped)")
    add(g, "--lr", type=positive(float, "--lr 5.5e-4"), help="peak learning rate")
    add(g, "--weight-decay", type=non_negative(float, "--weight-decay 0.06"),
        help="decoupled weight decay (not on biases and 1-D parameters)")
    add(g, "--warmup-epochs", type=non_negative(int, "--warmup-epochs 10"),
        help="linear warm-up epochs (inside the cosine)")
    add(g, "--warmup-lr", type=non_negative(float, "--warmup-lr 1e-5"), help="learning rate of epoch 0")
    add(g, "--cooldown-epochs", type=non_negative(int, "--cooldown-epochs 10"),
        help="epochs at --min-lr after the cosine")
    add(g, "--min-lr", type=non_negative(float, "--min-lr 1e-5"), help="floor of the cosine and the cooldown's lr")
    add(g, "--sched-on-updates", action="store_true",
        help="set the learning rate before every update (the schedule at fractional epochs) instead of "
             "once per epoch: smoother for short runs")
    add(g, "--time-limit", type=positive(float, "--time-limit 30"), metavar="MINUTES",
        help="size the run to end within this many minutes: after the first epoch, --epochs becomes as "
             "many epochs as fit at the measured pace (saved, so --resume keeps it)")

    add(g, "--ema", type=checked(float, lambda x: 0.0 <= x < 1.0, "0 (off) or a decay below 1", "--ema 0.999"),
        metavar="DECAY", help="keep an exponential moving average of the weights with this decay (e.g. 0.999), "
                              "updated after every step: it is what each epoch evaluates and the checkpoints' "
                              "evaluate/predict use (0 = off)")

    g = p.add_argument_group("augmentation and regularisation (timm's semantics)")
    add(g, "--aa", help="RandAugment policy (rand-m<magnitude>[-mstd<std>][-inc1][-n<ops>]), or 'none'")
    add(g, "--mixup", type=non_negative(float, "--mixup 0.8"), help="Mixup alpha (0 = off)")
    add(g, "--cutmix", type=non_negative(float, "--cutmix 1.0"), help="CutMix alpha (0 = off)")
    add(g, "--mixup-prob", type=probability("--mixup-prob 1.0"), help="probability of mixing a batch")
    add(g, "--mixup-switch-prob", type=probability("--mixup-switch-prob 0.5"),
        help="probability of CutMix instead of Mixup when both are on")
    add(g, "--mixup-off-epoch", type=non_negative(int, "--mixup-off-epoch 175"),
        help="no mixing from this epoch on (0 = never off)")
    add(g, "--hflip", type=probability("--hflip 0.5"),
        help="probability of a horizontal flip (0 for digits and text-like images, which a flip mirrors)")
    add(g, "--reprob", type=probability("--reprob 0.25"), help="random erasing probability")
    add(g, "--smoothing", type=probability("--smoothing 0.1"), help="label smoothing")

    g = p.add_argument_group("run")
    add(g, "--preset", choices=sorted(PRESETS),
        help="a named set of defaults (the shapes dataset uses 'shapes' unless told otherwise)")
    add(g, "--seed", type=non_negative(int, "--seed 42"),
        help="seed of initialisation, data order, augmentation, dropout")
    add(g, "--device", help="'cpu' or 'gpu' (default: $MINICCT_DEVICE, else cpu)")
    add(g, "--cuda-graph", choices=["off", "on"],
        help="'on' (needs --device gpu): capture the training step and evaluation as CUDA graphs and "
             "replay them, with the same dropout masks as 'off' (issue 14). 'off' until a GPU run has "
             "verified it")
    add(g, "--workers", "-j", type=non_negative(int, "--workers 2"),
        help="background processes preparing batches (0 = none; default: 2 on the CPU, where the "
             "training step needs the cores, and every core but one with --device gpu)")
    data_dir_fix = ("give the folder that holds cifar-10-batches-py (or the archive), create it first "
                    "(mkdir -p {value}) for CIFAR to be downloaded there, or leave --data-dir out to use data/")
    add(g, "--data-dir", type=existing_folder(data_dir_fix),
        help="an existing folder where CIFAR is (or is downloaded to); the cifar-10-batches-py folder "
             "itself works too (default: data/; saved for --resume)")
    add(g, "--output", help="run folder (default: runs/<dataset>-<model>, -2, -3... for later runs)")
    add(g, "--resume", metavar="PATH|auto",
        help="continue from a checkpoint or run folder; 'auto' = the newest run in --output or "
             "runs/<dataset>-<model>[-N]")
    add(g, "--tta-flip", action=argparse.BooleanOptionalAction,
        help="evaluate each test image and its mirror image and average their logits (test-time "
             "augmentation: twice the evaluation time); --no-tta-flip turns a preset's off")
    add(g, "--eval-batch-size", type=positive(int, "--eval-batch-size 256"), help="batch size for evaluation")
    add(g, "--eval-every", type=positive(int, "--eval-every 5"), metavar="N",
        help="evaluate after every Nth epoch and after the last one (and, with --time-limit, after the "
             "first, to time it): under a --time-limit the evaluations skipped become training time")
    add(g, "--stop-epoch", type=positive(int, "--stop-epoch 5"),
        help="stop before this epoch (the schedule is unchanged): a bounded run to --resume later")
    add(g, "--train-limit", type=positive(int, "--train-limit 5000"),
        help="use N training images, the same number from each class (a fixed choice): quick checks")
    add(g, "--test-limit", type=positive(int, "--test-limit 1000"),
        help="use N test images, the same number from each class (a fixed choice): quick checks")
    return p


# The settings a resumed run takes from its checkpoint unless given again on the command line:
# everything except these, which describe the machine or this invocation rather than the run
# (the output folder is where the checkpoint is, unless --output says otherwise).
NOT_RESUMED = {"resume", "stop_epoch", "device", "workers", "output", "cuda_graph"}

# Where each flag lives in Config: dest -> (group, field).
GROUPS = {
    "model": {"model": "name", "model_kwargs": "kwargs", "img_size": "img_size", "glove": "glove"},
    "optim": {"lr": "lr", "weight_decay": "weight_decay", "batch_size": "batch_size", "ema": "ema"},
    "schedule": {k: k for k in ("epochs", "warmup_epochs", "warmup_lr", "cooldown_epochs", "min_lr",
                                "sched_on_updates", "time_limit")},
    "augment": {k: k for k in ("aa", "mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "mixup_off_epoch",
                               "hflip", "reprob", "smoothing")},
    "run": {k: k for k in ("dataset", "preset", "seed", "device", "workers", "data_dir", "output", "resume",
                           "eval_batch_size", "stop_epoch", "train_limit", "test_limit", "tta_flip",
                           "cuda_graph", "eval_every")},
}


@dataclass(frozen=True)
class ModelConfig:
    name: str
    kwargs: dict
    img_size: int | None
    glove: str | None = None     # text models: a GloVe-format file of frozen word vectors

    @property
    def label(self):
        """The model's name in run folders: ``cct_2_3x2_32``, with ``-w64`` when --model-kwargs sets
        its width (embedding_dim) and ``-c32`` when it sets the tokenizer's inner conv filters
        (in_planes): ``cct_2_3x2_32-c32`` (fast-cpu), ``cct_2_3x2_32-w64-c32`` (shapes)."""
        marks = (("w", "embedding_dim"), ("c", "in_planes"))
        return self.name + "".join(f"-{m}{self.kwargs[k]}" for m, k in marks if k in self.kwargs)


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    weight_decay: float
    batch_size: int
    ema: float = 0.0             # decay of the weight average evaluated instead of the weights (0: none)


@dataclass(frozen=True)
class ScheduleConfig:
    epochs: int              # the cosine's length
    warmup_epochs: int
    warmup_lr: float
    cooldown_epochs: int
    min_lr: float
    sched_on_updates: bool
    time_limit: float | None

    @property
    def total_epochs(self):
        return self.epochs + self.cooldown_epochs


@dataclass(frozen=True)
class AugmentConfig:
    aa: str
    mixup: float
    cutmix: float
    mixup_prob: float
    mixup_switch_prob: float
    mixup_off_epoch: int
    hflip: float
    reprob: float
    smoothing: float

    @property
    def policy(self):
        """The RandAugment policy string, or None for 'none'."""
        return None if str(self.aa).lower() in ("", "none", "off") else self.aa


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    preset: str | None
    seed: int
    device: str
    workers: int
    data_dir: str | None
    output: str | None
    resume: str | None
    eval_batch_size: int
    stop_epoch: int | None
    train_limit: int | None
    test_limit: int | None
    cuda_graph: str = "off"
    tta_flip: bool = False       # evaluate on each image and its mirror (logits averaged)
    eval_every: int = 1          # evaluate after every Nth epoch and the last


@dataclass(frozen=True)
class Config:
    """Every setting of a run, in groups; built once (``make_config``) and never changed. A run that
    must change one (--time-limit) makes a new Config with ``with_epochs``."""
    model: ModelConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    augment: AugmentConfig
    run: RunConfig
    explicit: frozenset = frozenset()      # the flags given on the command line
    notes: tuple = ()                      # defaults that were adapted (said in the run's header)

    @classmethod
    def from_flags(cls, values: dict, explicit=(), notes=()):
        groups = {g: {f: values[dest] for dest, f in fields.items()} for g, fields in GROUPS.items()}
        return cls(ModelConfig(**groups["model"]), OptimConfig(**groups["optim"]),
                   ScheduleConfig(**groups["schedule"]), AugmentConfig(**groups["augment"]),
                   RunConfig(**groups["run"]), frozenset(explicit), tuple(notes))

    def flags(self) -> dict:
        """dest -> value for every flag: what a checkpoint saves (and --resume reads back)."""
        out = {dest: getattr(getattr(self, g), f) for g, fields in GROUPS.items() for dest, f in fields.items()}
        out["model_kwargs"] = dict(out["model_kwargs"])
        return out

    def with_epochs(self, epochs):
        """The same run with a cosine of ``epochs`` epochs (what --time-limit decides)."""
        return dataclasses.replace(self, schedule=dataclasses.replace(self.schedule, epochs=epochs))


# ---- from the command line to a Config -----------------------------------------------------------
def parse_flags(argv=None) -> dict:
    """The flags given on the command line, each checked (dest -> value); --help prints and exits."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return vars(build_parser().parse_args(argv))


def merge(explicit: dict, saved: dict | None = None):
    """Defaults < preset < saved (a checkpoint's settings) < explicit. Returns (values, notes)."""
    saved = {k: v for k, v in (saved or {}).items() if k in DEFAULTS and k not in NOT_RESUMED}
    preset = explicit.get("preset", saved.get("preset"))
    dataset = explicit.get("dataset", saved.get("dataset"))
    if preset is None and dataset is not None:
        preset = DATASET_PRESETS.get(dataset_key(dataset))
    chosen = dict(PRESETS.get(preset, {}))
    if "model" in explicit:  # a preset's model_kwargs belong to the preset's model
        chosen.pop("model_kwargs", None)
    values = {**DEFAULTS, **chosen, **saved, **explicit, "preset": preset}
    notes = []
    # A preset's test-time flip where a mirror image is not an image of the same class (text, --hflip 0):
    # off, with a note (given as a flag, it is refused instead, in check()).
    if chosen.get("tta_flip") and "tta_flip" not in explicit and "tta_flip" not in saved:
        why = no_mirror(dataset, values["hflip"])
        if why:
            values["tta_flip"] = False
            notes.append(f"the preset's --tta-flip is off: {why}")
    # --epochs N said how long the run is: a preset's time limit (fast-cpu's 30 minutes) would re-size
    # it after the first epoch, so it is dropped unless --time-limit is given too.
    if "epochs" in explicit and "time_limit" not in explicit and "time_limit" not in saved \
            and chosen.get("time_limit"):
        values["time_limit"] = None
        notes.append(f"--epochs {values['epochs']} given: the preset's --time-limit {chosen['time_limit']:g} is off "
                     f"(give --time-limit MINUTES as well to size the run to the clock instead)")
    # A short run of the recipe: the recipe's warm-up and cooldown shrink with --epochs (else
    # --epochs 1 would run 11 epochs, 10 of them warming up).
    if "epochs" in explicit and values["epochs"] < DEFAULTS["epochs"]:
        scaled = {k: math.floor(DEFAULTS[k] * values["epochs"] / DEFAULTS["epochs"] + 0.5)
                  for k in ("warmup_epochs", "cooldown_epochs")
                  if k not in explicit and k not in saved and k not in chosen}
        if scaled:
            values.update(scaled)
            notes.append(", ".join(f"{k.replace('_epochs', '').replace('warmup', 'warm-up')} "
                                   f"{DEFAULTS[k]} -> {v}" for k, v in scaled.items())
                         + f": the recipe's, scaled to --epochs {values['epochs']} (give --warmup-epochs "
                           f"/ --cooldown-epochs to choose)")
    return values, notes


def make_config(explicit: dict, saved: dict | None = None) -> Config:
    """The run's Config from the flags given and (for --resume) the checkpoint's saved settings;
    every setting that depends on another is checked here, once, before anything is built."""
    values, notes = merge(explicit, saved)
    if saved is not None and "seed" in explicit and saved.get("seed") is not None \
            and explicit["seed"] != saved["seed"]:
        raise RunError(f"--seed {explicit['seed']} with --resume: the run goes on with its own random streams "
                       f"(seed {saved['seed']}, saved in the checkpoint); drop --seed, or start a new run")
    if saved is not None and "data_dir" not in explicit and values["data_dir"] is not None \
            and not Path(values["data_dir"]).is_dir():
        raise RunError(f"the run's data folder {values['data_dir']} (saved in its checkpoint) does not exist: "
                       f"give --data-dir DIR")
    values["model_kwargs"] = parse_kwargs(values["model_kwargs"])
    check(values, explicit)
    return Config.from_flags(values, explicit, notes)


def parse_args(argv=None, saved=None) -> Config:
    """``make_config(parse_flags(argv), saved)``: the command line to a Config, without reading any
    checkpoint (the training command finds and reads --resume's once, in minicct.train)."""
    return make_config(parse_flags(argv), saved)


def check(values: dict, explicit: dict):
    """Checks across flags (each flag alone was checked while parsing), before anything is loaded.
    Normalises in place: the device name, and --data-dir and a folder dataset as absolute paths."""
    from minicct import backend
    check_model(values["model"], values["model_kwargs"])
    dataset = values["dataset"]
    if dataset is None:
        raise RunError(f"no dataset: give one of {', '.join(DATASETS)} or an image folder "
                       "(python -m minicct.train DATASET), or --resume PATH to continue a run")
    key = dataset_key(dataset)
    if key is None and not Path(dataset).expanduser().is_dir():
        raise RunError(f"dataset {dataset!r}: not one of {', '.join(DATASETS)}, and "
                       f"{str(Path(dataset).expanduser().resolve())!r} is not a directory (an image folder "
                       f"holds train/<class>/* and test/<class>/*)")
    # saved absolute, so that --resume finds the data from any working directory
    if values["data_dir"] is not None:
        values["data_dir"] = str(Path(values["data_dir"]).expanduser().resolve())
    # a known name in its one spelling ('Cifar-10' -> 'cifar10'): the data loader and the run
    # folders see one name; anything else is a folder, made absolute
    values["dataset"] = key if key is not None else str(Path(dataset).expanduser().resolve())
    try:
        values["device"] = backend.check_device(values["device"])
    except ValueError:
        raise RunError(f"--device {values['device']}: unknown device; use --device cpu or --device gpu") from None
    if values["cuda_graph"] == "on" and values["device"] != "gpu":
        raise RunError(f"--cuda-graph on: CUDA graphs need a GPU, and the device is {values['device']}; "
                       f"add --device gpu, or leave --cuda-graph off")
    check_policy(values["aa"])
    if values["workers"] is None:
        values["workers"] = default_workers(values["device"])
    if values["glove"] is not None:
        if not str(values["model"]).startswith("text_"):
            raise RunError(f"--glove {values['glove']}: word vectors are for text models; --model "
                           f"{values['model']} is an image model (e.g. --model text_cct_2_k2 with a text dataset)")
        if not Path(values["glove"]).expanduser().is_file():
            raise RunError(f"--glove {values['glove']}: no such file; give a GloVe-format text file "
                           f"(e.g. glove.840B.300d.txt, one 'word v1 ... v300' a line)")
        values["glove"] = str(Path(values["glove"]).expanduser().resolve())
    w, e = values["warmup_epochs"], values["epochs"]
    if w and w >= e:
        origin = "" if "warmup_epochs" in explicit else (
            f" (preset {values['preset']})" if "warmup_epochs" in PRESETS.get(values["preset"], {}) else " (saved)")
        raise RunError(f"--warmup-epochs {w}{origin} is not shorter than --epochs {e}: the cosine would never start; "
                       f"give --warmup-epochs {e - 1}{' or less' if e > 1 else ''}, or a longer --epochs")
    why = no_mirror(values["dataset"], values["hflip"]) if values["tta_flip"] else None
    if why:
        raise RunError(f"--tta-flip averages each test image with its mirror, but {why}: drop --tta-flip")
    if values["output"] is not None and Path(values["output"]).exists() and not Path(values["output"]).is_dir():
        raise RunError(f"--output {values['output']}: a file is there; give a folder")


def no_mirror(dataset, hflip):
    """Why a test-time flip makes no sense for this data (None when it does): a text dataset has no
    mirror image, and --hflip 0 says a mirrored image is not of the same class."""
    from minicct.data.text import TEXT_DATASET_NAMES
    if dataset_key(dataset) in TEXT_DATASET_NAMES:
        return "a text dataset has no mirror image"
    if hflip == 0:
        return f"--hflip {hflip:g} says a mirrored image is not of the same class"
    return None


def default_workers(device, cores=None):
    """Data workers when --workers is not given. On the CPU the training step itself runs on every
    core, so 2 workers (fewer on a single core) keep augmentation going beside it without taking
    the step's cores. On a GPU the step takes a few milliseconds and the CPU does nothing else: every
    core but the one driving the GPU augments (RandAugment runs on the CPU, at a few thousand
    images a second per core, and the paper's epoch must not wait for it)."""
    from minicct.parallel import default_threads
    cores = default_threads() if cores is None else cores
    return max(1, cores - 1) if device == "gpu" else min(2, cores)


def check_model(name, kwargs):
    """An unknown --model (with the closest names) or --model-kwargs key is a RunError."""
    import inspect
    from minicct.models.cct import CompactTransformer
    from minicct.models.registry import list_models
    names = list_models()
    if name not in names:
        squash = str(name).replace("_", "").lower()
        close = [n for n in names if n.replace("_", "").startswith(squash)][:3]
        close += [n for n in difflib.get_close_matches(str(name), names, n=3, cutoff=0.5) if n not in close]
        hint = f"; did you mean {' or '.join(close[:3])}?" if close else ""
        raise RunError(f"--model {name}: unknown model{hint} (python -c 'import minicct.models as m; "
                       f"print(m.list_models())' lists all {len(names)})")
    from minicct.models.text import TextCompactTransformer, list_text_models
    cls = TextCompactTransformer if name in list_text_models() else CompactTransformer
    params = inspect.signature(cls.__init__).parameters
    known = set(params) - {"self", "num_classes"}
    for key, value in kwargs.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else f" (known: {', '.join(sorted(known))})"
            raise RunError(f"--model-kwargs {key}=...: {name} has no argument {key!r}{hint}")
        # a number where the model takes a number (the constructor would fail later, after loading data)
        default = params[key].default
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and not number:
            raise RunError(f"--model-kwargs {key}={value}: {key} takes a number, e.g. {key}={default}")
        if number and (not math.isfinite(value) or value < 0):
            raise RunError(f"--model-kwargs {key}={value}: must be a finite number, 0 or more")
        if number and key in SIZE_KWARGS and value <= 0:
            raise RunError(f"--model-kwargs {key}={value}: {key} is a size, it must be more than 0 "
                           f"(e.g. {key}={default})")


# The model arguments that are sizes or counts (a 0 would fail deep in the model, or divide by zero).
SIZE_KWARGS = frozenset({"img_size", "n_input_channels", "embedding_dim", "num_layers", "num_heads", "mlp_ratio",
                         "kernel_size", "n_conv_layers", "stride", "pooling_kernel_size", "pooling_stride",
                         "in_planes", "seq_len", "word_embedding_dim"})


def check_policy(aa):
    """A RandAugment policy that does not parse is a RunError naming --aa."""
    if str(aa).lower() in ("", "none", "off"):
        return
    from minicct.data.randaugment import RandAugment
    try:
        RandAugment.from_config(aa)
    except (ValueError, KeyError) as e:
        raise RunError(f"--aa {aa}: not a RandAugment policy ({e}); e.g. --aa rand-m9-mstd0.5-inc1, "
                       f"or --aa none") from None


def kwarg_item(item):
    """One --model-kwargs item, 'KEY=VALUE' (an argparse type)."""
    key, sep, _ = item.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE (e.g. --model-kwargs embedding_dim=64)")
    return item


def parse_kwargs(items):
    """['embedding_dim=64', 'mlp_ratio=1.5', 'positional_embedding=sine'] -> {'embedding_dim': 64, ...}
    (values read as Python literals where they are one, else kept as strings). A dict passes through."""
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items or []:
        key, _, value = kwarg_item(item).partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def describe_schedule(s: ScheduleConfig) -> str:
    """'310 epochs: warm-up 10 (from 1e-05), cosine to epoch 300, cooldown 10 at 1e-05'."""
    return (f"{plural(s.total_epochs, 'epoch')} (cosine {s.epochs} with a warm-up of {s.warmup_epochs} "
            f"from lr {s.warmup_lr:g} inside it, then a cooldown of {s.cooldown_epochs} at lr {s.min_lr:g})")
