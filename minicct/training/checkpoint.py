"""Training checkpoints: what ``python -m minicct.train`` writes, and the model it describes.

    save_checkpoint("runs/x/last.npz", {"epoch": 3, "model": model.state_dict(), "rng": {...}})
    ckpt = load_checkpoint("runs/x/last.npz")
    model = model_from_checkpoint(ckpt)

The file format (a nested dict of arrays and plain values in one ``.npz``, written atomically) is
``minicct.formats.npz``'s; this module adds what a checkpoint means to training.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from minicct.errors import CheckpointError  # noqa: F401  (raised by the readers; imported from here too)
from minicct.formats import npz
from minicct.formats.files import atomic_write  # noqa: F401
from minicct.formats.npz import save_checkpoint  # noqa: F401


def load_checkpoint(path) -> dict:
    """``minicct.formats.npz.load_checkpoint``, after two checks that give the commands' users a
    clear message: a folder names its best.npz as the fix, and a file that is not a zip archive is
    refused before NumPy reads it (NumPy would take a text file for a pickle and suggest
    ``allow_pickle=True``, which is unsafe advice)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{str(path)!r} is a folder, not a checkpoint: give a file in it, e.g. "
                              f"{str(path / 'best.npz')!r}")
    if path.is_file() and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{str(path)!r} is not a minicct checkpoint (not an .npz archive): give a "
                              f"last.npz or best.npz written by python -m minicct.train")
    return npz.load_checkpoint(path)


def model_from_checkpoint(ckpt: dict, device="cpu", average=True):
    """Rebuild the model a training checkpoint describes, with its weights, in eval mode, on ``device``.

    ckpt: what ``load_checkpoint`` returned for a file that ``python -m minicct.train`` wrote.
    average: for a run trained with --ema, load the moving average of the weights (what the run
    evaluated) rather than the last step's weights.
    """
    from minicct import models
    try:
        info = ckpt["model"]
        # What the data told the model: its channels (1 for MNIST) or a text set's vocabulary size.
        # Checkpoints older than data_kwargs were all of RGB images.
        from_data = info.get("data_kwargs", {"n_input_channels": int(info.get("n_input_channels", 3))})
        img_size = None if info.get("img_size") is None else int(info["img_size"])
        model = models.create_model(info["name"], num_classes=int(info["num_classes"]), img_size=img_size,
                                    **{**from_data, **info.get("kwargs", {})})
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"the checkpoint does not describe a model ({e}): was it written by "
                              "python -m minicct.train?") from None
    model.load_state_dict(ckpt["ema"]["average"] if average and "ema" in ckpt else info["state"])
    return model.to(device).eval()


def evaluated_as(ckpt: dict, average=True, flip=None) -> str:
    """How the model is evaluated: '' or e.g. ' (weight average --ema 0.999, test-time flip)'.
    By default as the run evaluated (and so evaluate/predict do); average=False: the last step's
    weights (said when the run kept an average); flip: True/False, None for the run's --tta-flip."""
    args = ckpt.get("args") or {}
    flip = bool(args.get("tta_flip")) if flip is None else flip
    how = []
    if "ema" in ckpt:
        how.append(f"weight average --ema {float(ckpt['ema']['decay']):g}" if average else "last weights, not the average")
    how += ["test-time flip"] if flip else []
    return f" ({', '.join(how)})" if how else ""
