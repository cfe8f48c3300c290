"""What every command (``train``, ``evaluate``, ``predict``, ``python -m minicct.data``) shares: a
parser whose mistakes are one line, value checkers for flags, the device check, and ``run_cli``.

A user's mistake ends a command with exactly one line on stderr and exit code 2, never a traceback:

    minicct.train: error: --lr -1: must be a number above 0 (the peak learning rate, e.g. --lr 5.5e-4)

Each flag is checked once, where it is parsed (``type=positive(float, "...")``); settings that
depend on each other (a warm-up longer than the run) are checked once after the merge, by the
command. Anything raised as a ``MinicctError`` is reported the same way; any other exception is a
bug in minicct and keeps its traceback.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from minicct.errors import MinicctError, RunError

EXIT_ERROR = 2        # bad input: flags, data, device, checkpoint
EXIT_DIVERGED = 3     # NaN/inf loss
EXIT_INTERRUPTED = 130


class UsageError(RunError):
    """A flag is missing, unknown or malformed (what argparse would print after its usage)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a mistake raises UsageError (one line via run_cli) instead of printing the usage
    and exiting; --help still prints the help. Examples in the description and epilog keep their lines."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        # argparse says "argument --lr: ..."; the flag alone reads better
        if message.startswith("argument "):
            message = message[len("argument "):]
        raise UsageError(f"{message} (see {self.prog} --help)" if "required" in message or
                         "unrecognized" in message else message)


def _number(kind, value):
    try:
        x = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not {'an integer' if kind is int else 'a number'}") from None
    if isinstance(x, float) and not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{value} is not a finite number")
    return x


def checked(kind, test, need, example):
    """An argparse ``type``: parse ``kind`` (int or float), then demand ``test(x)``.

    need: what the value must be ("above 0"); example: a good value, shown as the fix."""
    def parse(value):
        try:
            x = _number(kind, value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{e} (e.g. {example})") from None
        if not test(x):
            raise argparse.ArgumentTypeError(f"{value} must be {need} (e.g. {example})")
        return x
    parse.__name__ = kind.__name__
    return parse


def positive(kind, example):
    return checked(kind, lambda x: x > 0, "above 0", example)


def non_negative(kind, example):
    return checked(kind, lambda x: x >= 0, "0 or more", example)


def probability(example):
    return checked(float, lambda x: 0.0 <= x <= 1.0, "a probability between 0 and 1", example)


def existing_folder(fix):
    """An argparse ``type`` for a folder that must exist (--data-dir): the value as given, or one line
    naming the value and ``fix`` (what to do instead; ``{value}`` in it is replaced by the value)."""
    def parse(value):
        if not Path(value).expanduser().is_dir():
            raise argparse.ArgumentTypeError(f"{value}: no such folder; {fix.replace('{value}', value)}")
        return value
    parse.__name__ = "folder"
    return parse


def plural(n, word, words=None):
    """``plural(1, 'epoch') == '1 epoch'``, ``plural(3, 'class', 'classes') == '3 classes'``."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def use_device(device, flag="--device"):
    """The normalised device name ('cpu' or 'gpu'), checked usable now: one RunError in flags'
    words otherwise (CuPy missing, no GPU). On the CPU, freed arrays are kept for reuse (backend)."""
    from minicct import backend
    try:
        device = backend.check_device(device)
    except ValueError:
        raise RunError(f"{flag} {device}: unknown device; use {flag} cpu or {flag} gpu") from None
    if device == "gpu":
        try:
            backend.xp_for(device)
        except backend.DeviceError as e:
            why = str(e).split(". ")[0]
            raise RunError(f"{flag} gpu: {why}. Install CuPy for your CUDA (`pip install cupy-cuda12x` or "
                           f"cupy-cuda13x, see requirements-gpu.txt), or run on the CPU with {flag} cpu") from None
    else:
        backend.keep_freed_memory()   # reuse freed arrays: no page faults every step (backend.py)
    return device


def run_cli(main, argv=None, prog="minicct") -> int:
    """Call ``main(argv)``; turn the errors a user can fix into ``prog: error: message`` and an exit code."""
    from minicct.training.errors import NonFiniteLoss
    try:
        return main(argv)
    except NonFiniteLoss as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MinicctError as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_ERROR
