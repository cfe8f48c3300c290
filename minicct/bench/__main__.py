"""python -m minicct.bench [subcommand] [options]   (see minicct/bench/__init__.py)

    python -m minicct.bench                          # = step: a CCT training step vs PyTorch
    python -m minicct.bench kernels --device cpu     # each kernel at CCT-2 shapes, vs sgemm and torch
    python -m minicct.bench side-by-side --epochs 2 --train-limit 2000 --test-limit 1000
                                                     # the recipe in minicct and in PyTorch + timm
"""
from __future__ import annotations

import difflib
import importlib
import sys

from minicct.cli import ArgumentParser, run_cli, use_device
from minicct.errors import RunError

# name -> (module, one-line help). A module provides add_arguments(parser) and main(args).
SUBCOMMANDS = {
    "step": ("minicct.bench.step", "a CCT training step (and evaluation, memory, data epoch) vs PyTorch"),
    "kernels": ("minicct.bench.kernels", "time every kernel at CCT-2 shapes (forward, backward)"),
    "side-by-side": ("minicct.bench.side_by_side", "train CCT-2/3x2 with the paper's recipe, shortened, in "
                                                   "minicct and in PyTorch + timm: both curves, one table"),
}
DEFAULT = "step"   # used when no subcommand is given


def build_parser():
    common = ArgumentParser(add_help=False)
    common.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="run on NumPy (cpu) or CuPy (gpu)")
    parser = ArgumentParser(prog="python -m minicct.bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}",
                                parser_class=ArgumentParser)
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(module=module)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a in SUBCOMMANDS for a in argv) and not {"-h", "--help"} & set(argv):
        argv.insert(0, DEFAULT)
    args = build_parser().parse_args(argv)
    if args.device == "gpu" and args.module != "minicct.bench.side_by_side":
        use_device("gpu")                  # no CuPy or no GPU: one line that says how
    check_models(getattr(args, "models", None))
    return importlib.import_module(args.module).main(args)


def check_models(models):
    """--models: every comma-separated name a registered model (RunError naming the close ones)."""
    if not models:
        return
    from minicct.models import list_models
    known = list_models()
    for name in models.split(","):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise RunError(f"--models {models}: unknown model {name!r}{hint}")


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="minicct.bench"))
