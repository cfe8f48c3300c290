"""``python -m minicct.train DATASET [flags]``: train a Compact Transformer.

    python -m minicct.train cifar10              # CCT-2/3x2 with the paper's recipe (310 epochs)
    python -m minicct.train shapes               # offline synthetic data, about a minute on a CPU
    python -m minicct.train cifar10 --resume auto
    python -m minicct.train --help               # every flag, with its default

One way through, each step once:

    flags    the command line, each flag checked        (training.config.parse_flags)
    resume   --resume's checkpoint, found and read      (training.runs.find_resume)
    config   defaults < preset < checkpoint < flags     (training.config.make_config: frozen, checked)
    device   usable, or one line saying which flag      (minicct.cli.use_device)
    run      Trainer(config, resume).fit()              (training.trainer)
"""
from __future__ import annotations

import sys

from minicct.cli import run_cli, use_device
from minicct.training.config import ModelConfig, make_config, merge, parse_flags, parse_kwargs
from minicct.training.runs import find_resume
from minicct.training.trainer import Trainer


def main(argv=None):
    flags = parse_flags(argv)
    resume = None
    if flags.get("resume"):
        values, _ = merge(flags)    # enough to know where --resume auto looks
        label = ModelConfig(values["model"], parse_kwargs(values["model_kwargs"]), None).label
        resume = find_resume(flags["resume"], flags.get("output"), values["dataset"], label)
    config = make_config(flags, saved=resume.ckpt.get("args", {}) if resume else None)
    use_device(config.run.device)
    Trainer(config, resume).fit()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="minicct.train"))
