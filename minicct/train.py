"""``python -m minicct.train DATASET [flags]``: train a Compact Transformer.

    python -m minicct.train cifar10              # CCT-2/3x2 with the paper's recipe (310 epochs)
    python -m minicct.train shapes               # offline synthetic data, about a minute on a CPU
    python -m minicct.train cifar10 --resume auto
    python -m minicct.train --help               # every flag, with its default

The pieces live in ``minicct.training``: ``config`` (flags, defaults, presets), ``trainer`` (the
epoch loop, checkpoints, resuming), ``checkpoint`` (atomic .npz files), ``metrics`` and ``curves``.
"""
from __future__ import annotations

import sys

from minicct.training.checkpoint import load_checkpoint
from minicct.training.config import parse_args
from minicct.training.errors import run_cli
from minicct.training.trainer import Trainer, resume_path


def saved_settings(values):
    """The flags stored in the checkpoint that --resume names (they become this run's defaults)."""
    path = resume_path(values["resume"], values["output"], values["dataset"], values["model"])
    return load_checkpoint(path).get("args", {})


def main(argv=None):
    args, _ = parse_args(argv, checkpoint_args=saved_settings)
    Trainer(args).fit()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="minicct.train"))
