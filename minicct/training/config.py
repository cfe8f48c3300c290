"""The training command's flags, their defaults (the paper's CIFAR-10 recipe) and the presets.

Where a setting comes from, lowest to highest priority:

    1. the flag defaults below: CCT-2/3x2 on CIFAR-10 as the official ``configs/datasets/cifar10.yml``
       runs it through timm (300 cosine epochs + 10 warmup inside them + 10 cooldown = 310 epochs)
    2. a preset (``--preset NAME``; ``shapes``, ``cifar100``, ``mnist``, ``fashion-mnist`` and
       ``flowers102`` apply by themselves to the dataset of that name): a dict of flag defaults in ``PRESETS``
    3. with ``--resume``, the settings stored in the checkpoint (so a bare ``--resume auto`` continues
       the same run)
    4. flags given on the command line
"""
from __future__ import annotations

import argparse
import ast
import sys

from minicct import backend

# Each preset is a dict of flag defaults (argparse dest names), applied over the recipe's defaults.
PRESETS = {
    # The shapes dataset: small, clean, offline. A toy CCT-2 (width 64, 32 tokenizer filters: 74 k
    # parameters) without attention dropout, stochastic depth, label smoothing, RandAugment or mixing
    # (they slow a 7-epoch run down more than they help), at full lr from the first epoch.
    # Measured: 93.9% test top-1 in 107 s on 2 cores at load ~5.5; 91.2% in 56 s on a quiet machine
    # after the Winograd conv (90.5% with it off: float32 rounding alone moves a 7-epoch run ~2 points).
    "shapes": dict(model="cct_2_3x2_32", epochs=7, warmup_epochs=0, cooldown_epochs=0, batch_size=64,
                   model_kwargs=["embedding_dim=64", "in_planes=32", "attention_dropout=0.0",
                                 "stochastic_depth=0.0"],
                   lr=3e-3, weight_decay=0.05, aa="none", mixup=0.0, cutmix=0.0, reprob=0.0, smoothing=0.0),
    # CIFAR-10 against the clock on a CPU (issue 7: 80% in 30 minutes on 2 cores): CCT-2/3x2 for as
    # many epochs as fit in 30 minutes (--time-limit sizes the run after the first epoch, with a 3%
    # margin: 11 on 2 quiet cores, ~2.5 minutes each with evaluation). A short run underfits, so no regulariser
    # that slows learning (RandAugment, Mixup/CutMix, erasing, attention dropout, stochastic depth);
    # batch 64: twice the updates per epoch of batch 128 (53% after the first epoch against 47%).
    # Batch 32 learns faster still per image (3-epoch runs on 25k images: 62.6% against 61.4%), but
    # in the trainer its per-step costs (loader, optimizer, thread hand-offs) make an epoch ~12%
    # slower (166 s against 145 s), which takes an epoch out of the 30 minutes. The lr is set
    # before every update: a warm-up over the first epoch from 5e-4, then a cosine from 2e-3 to 1e-5.
    "fast-cpu": dict(model="cct_2_3x2_32", model_kwargs=["attention_dropout=0.0", "stochastic_depth=0.0"],
                     epochs=12, time_limit=30.0, sched_on_updates=True, warmup_epochs=1, warmup_lr=5e-4,
                     cooldown_epochs=0, batch_size=64, lr=2e-3, weight_decay=0.05, aa="none", mixup=0.0,
                     cutmix=0.0, reprob=0.0, smoothing=0.1),
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
    # are the CIFAR-10 recipe (the defaults) with CCT-7/3x1, one 3x3 conv + pool: 14x14 = 196 tokens.
    "mnist": dict(model="cct_7_3x1_32"),
    "fashion-mnist": dict(model="cct_7_3x1_32"),
}

# A dataset named here trains with its preset unless --preset says otherwise.
DATASET_PRESETS = {"shapes": "shapes", "cifar100": "cifar100", "cifar-100": "cifar100", "mnist": "mnist",
                   "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
                   "fashionmnist": "fashion-mnist", "flowers102": "flowers102", "flowers-102": "flowers102",
                   "flowers102-valid": "flowers102"}


def build_parser(argument_default=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minicct.train", argument_default=argument_default,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a Compact Transformer (CCT / CVT / ViT-Lite). With no flags: the paper's "
                    "CIFAR-10 recipe for cct_2_3x2_32 (310 epochs).",
        epilog="examples:\n"
               "  python -m minicct.train cifar10                      # the paper's recipe\n"
               "  python -m minicct.train shapes                       # offline, about a minute on a CPU\n"
               "  python -m minicct.train path/to/folder --img-size 64 # your own ImageFolder data\n"
               "  python -m minicct.train cifar10 --resume auto        # continue runs/cifar10-cct_2_3x2_32\n"
               "Presets (--preset): " + ", ".join(PRESETS))
    d = (lambda v: v) if argument_default is None else (lambda v: argument_default)
    p.add_argument("dataset", nargs="?", default=d(None),
                   help="'cifar10', 'cifar100', 'mnist', 'fashion-mnist', 'flowers102', 'shapes', or an "
                        "ImageFolder root (train/<class>/*, "
                        "test/<class>/* or val/<class>/*); may be left out with --resume")

    g = p.add_argument_group("model")
    g.add_argument("--model", default=d("cct_2_3x2_32"), help="model name (see minicct.models.list_models())")
    g.add_argument("--model-kwargs", nargs="*", default=d([]), metavar="KEY=VALUE",
                   help="extra create_model arguments, e.g. embedding_dim=64 num_layers=1 stochastic_depth=0")
    g.add_argument("--img-size", type=int, default=d(None),
                   help="side of the square input; default: the dataset's own (32 for CIFAR and shapes)")

    g = p.add_argument_group("optimisation (AdamW, timm's cosine schedule stepped per epoch)")
    g.add_argument("--epochs", type=int, default=d(300),
                   help="length of the cosine schedule; the run lasts epochs + cooldown-epochs")
    g.add_argument("--batch-size", "-b", type=int, default=d(128),
                   help="training batch (the last partial batch is dropped)")
    g.add_argument("--lr", type=float, default=d(5.5e-4), help="peak learning rate")
    g.add_argument("--weight-decay", type=float, default=d(0.06),
                   help="decoupled weight decay (not on biases and 1-D parameters)")
    g.add_argument("--warmup-epochs", type=int, default=d(10), help="linear warmup epochs (inside the cosine)")
    g.add_argument("--warmup-lr", type=float, default=d(1e-5), help="learning rate of epoch 0")
    g.add_argument("--cooldown-epochs", type=int, default=d(10), help="epochs at min-lr after the cosine")
    g.add_argument("--min-lr", type=float, default=d(1e-5), help="floor of the cosine and the cooldown's lr")
    g.add_argument("--sched-on-updates", action="store_true", default=d(False),
                   help="set the learning rate before every update (the schedule at fractional epochs) "
                        "instead of once per epoch: smoother for short runs")
    g.add_argument("--time-limit", type=float, default=d(None), metavar="MINUTES",
                   help="size the run to end within this many minutes: after the first epoch, --epochs "
                        "becomes as many epochs as fit at the measured pace (saved, so --resume keeps it)")

    g = p.add_argument_group("augmentation and regularisation (timm's semantics)")
    g.add_argument("--aa", default=d("rand-m9-mstd0.5-inc1"), help="RandAugment policy, or 'none'")
    g.add_argument("--mixup", type=float, default=d(0.8), help="Mixup alpha (0 = off)")
    g.add_argument("--cutmix", type=float, default=d(1.0), help="CutMix alpha (0 = off)")
    g.add_argument("--mixup-prob", type=float, default=d(1.0), help="probability of mixing a batch")
    g.add_argument("--mixup-switch-prob", type=float, default=d(0.5),
                   help="probability of CutMix instead of Mixup when both are on")
    g.add_argument("--mixup-off-epoch", type=int, default=d(175), help="no mixing from this epoch on (0 = never off)")
    g.add_argument("--reprob", type=float, default=d(0.25), help="random erasing probability")
    g.add_argument("--smoothing", type=float, default=d(0.1), help="label smoothing")

    g = p.add_argument_group("run")
    g.add_argument("--preset", default=d(None), choices=sorted(PRESETS),
                   help="a named set of defaults (shapes, cifar100, mnist, fashion-mnist and flowers102 "
                        "use theirs unless told otherwise)")
    g.add_argument("--seed", type=int, default=d(42), help="seed of initialisation, data order, augmentation, dropout")
    g.add_argument("--device", default=d(None), help="'cpu' or 'gpu' (default: $MINICCT_DEVICE, else cpu)")
    g.add_argument("--workers", "-j", type=int, default=d(2), help="background processes preparing batches (0 = none)")
    g.add_argument("--data-dir", default=d(None), help="where datasets live or are downloaded (default: data/)")
    g.add_argument("--output", default=d(None), help="run folder (default: runs/<dataset>-<model>)")
    g.add_argument("--resume", default=d(None), metavar="PATH|auto",
                   help="continue from a checkpoint; 'auto' = <output>/last.npz")
    g.add_argument("--eval-batch-size", type=int, default=d(256), help="batch size for evaluation")
    g.add_argument("--stop-epoch", type=int, default=d(None),
                   help="stop before this epoch (the schedule is unchanged): a bounded run to --resume later")
    g.add_argument("--train-limit", type=int, default=d(None),
                   help="use only the first N training images (quick checks)")
    g.add_argument("--test-limit", type=int, default=d(None), help="use only the first N test images (quick checks)")
    return p


# The settings a resumed run takes from its checkpoint unless given again on the command line:
# everything except these, which describe the machine or this invocation rather than the run
# (the output folder is where the checkpoint is, unless --output says otherwise).
NOT_RESUMED = {"resume", "stop_epoch", "device", "workers", "data_dir", "output"}


def parse_args(argv=None, checkpoint_args=None):
    """Parse the command line into a Namespace, applying a preset and (for --resume) saved settings.

    checkpoint_args: a callable ``(settings: dict) -> dict or None`` that returns the settings saved
    in the checkpoint that ``settings['resume']`` names (only called when --resume is given).
    Returns (args, explicit) where ``explicit`` is the set of flags given on the command line.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    parser.parse_args(argv)  # --help, and one clear message for an unknown or malformed flag
    defaults = vars(parser.parse_args([]))
    explicit = vars(build_parser(argument_default=argparse.SUPPRESS).parse_args(argv))

    def merge(saved):
        preset = explicit.get("preset", saved.get("preset"))
        dataset = explicit.get("dataset", saved.get("dataset"))
        if preset is None and dataset is not None:
            preset = DATASET_PRESETS.get(str(dataset).lower())
        chosen = dict(PRESETS.get(preset, {}))
        if "model" in explicit:  # a preset's model_kwargs belong to the preset's model
            chosen.pop("model_kwargs", None)
        return {**defaults, **chosen, **saved, **explicit, "preset": preset}

    values = merge({})
    if values["resume"] and checkpoint_args is not None:
        saved = checkpoint_args(values) or {}
        values = merge({k: v for k, v in saved.items() if k in defaults and k not in NOT_RESUMED})
    args = argparse.Namespace(**values)
    if args.dataset is None:
        parser.error("a dataset is needed ('cifar10', 'cifar100', 'shapes' or a folder), or --resume PATH")
    try:
        args.device = backend.check_device(args.device)
    except ValueError as e:
        parser.error(str(e))
    for name in ("epochs", "batch_size", "eval_batch_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.workers < 0:
        parser.error("--workers cannot be negative")
    try:
        args.model_kwargs = parse_kwargs(args.model_kwargs)
    except ValueError as e:
        parser.error(str(e))
    return args, set(explicit)


def parse_kwargs(items):
    """['embedding_dim=64', 'mlp_ratio=1.5', 'positional_embedding=sine'] -> {'embedding_dim': 64, ...}
    (values read as Python literals where they are one, else kept as strings). A dict passes through."""
    if isinstance(items, dict):
        return dict(items)
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--model-kwargs takes KEY=VALUE items, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out
