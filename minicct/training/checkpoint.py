"""Checkpoints: a nested dict of arrays and plain values, in one ``.npz`` file, written atomically.

    save_checkpoint("runs/x/last.npz", {"epoch": 3, "model": model.state_dict(), "rng": {...}})
    ckpt = load_checkpoint("runs/x/last.npz")

Arrays (NumPy or CuPy) are stored as NumPy arrays under their path in the tree ("model/classifier.fc.weight");
everything else (numbers, strings, lists, None, big integers such as a random generator's state) goes
into one JSON document stored beside them. Loading uses ``allow_pickle=False``: a checkpoint can only
ever produce arrays and plain values, never run code.

Atomic: the file is written under a temporary name in the same folder, flushed to disk and then
renamed over the target (``os.replace``), so an interrupted save leaves the previous checkpoint whole.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from minicct import backend

FORMAT = "minicct-checkpoint"
VERSION = 1
_TREE_KEY = "__tree__"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not a minicct checkpoint. The message says which file."""


def _split(tree, arrays, path):
    """The JSON-able skeleton of ``tree``; each array is replaced by {"__array__": key} and put in ``arrays``."""
    if isinstance(tree, dict):
        return {str(k): _split(v, arrays, f"{path}/{k}" if path else str(k)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split(v, arrays, f"{path}/{i}") for i, v in enumerate(tree)]
    if isinstance(tree, np.ndarray) or backend.is_gpu_array(tree):
        arrays[path] = backend.to_numpy(tree)
        return {"__array__": path}
    if isinstance(tree, np.generic):  # numpy scalars -> Python numbers
        return tree.item()
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store a {type(tree).__name__} at {path!r} in a checkpoint "
                    "(arrays, numbers, strings, lists and dicts only)")


def _join(skeleton, arrays):
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__array__"}:
            return arrays[skeleton["__array__"]]
        return {k: _join(v, arrays) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_join(v, arrays) for v in skeleton]
    return skeleton


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(path, tree: dict) -> Path:
    """Write ``tree`` (a dict) to ``path`` (.npz) atomically; returns the path."""
    arrays = {}
    skeleton = _split(dict(tree, format=FORMAT, version=VERSION), arrays, "")
    document = np.array(json.dumps(skeleton))  # a 0-d unicode array: loads without pickle
    atomic_write(path, lambda f: np.savez(f, **{_TREE_KEY: document}, **arrays))
    return Path(path)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by ``save_checkpoint``: the same tree, arrays as NumPy arrays."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if _TREE_KEY not in f.files:
                raise CheckpointError(f"{str(path)!r} is an .npz file but not a minicct checkpoint "
                                      f"(it holds {', '.join(f.files[:5])}...)")
            skeleton = json.loads(str(f[_TREE_KEY]))
            arrays = {k: f[k] for k in f.files if k != _TREE_KEY}
    except CheckpointError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e} (truncated or not a minicct "
                              "checkpoint?)") from None
    tree = _join(skeleton, arrays)
    if tree.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a minicct checkpoint")
    return tree


def model_from_checkpoint(ckpt: dict, device="cpu"):
    """Rebuild the model a training checkpoint describes, with its weights, in eval mode, on ``device``.

    ckpt: what ``load_checkpoint`` returned for a file that ``python -m minicct.train`` wrote.
    """
    from minicct import models
    try:
        info = ckpt["model"]
        channels = int(info.get("n_input_channels", 3))  # 1 for grey data (MNIST); older checkpoints: 3
        model = models.create_model(info["name"], num_classes=int(info["num_classes"]), img_size=int(info["img_size"]),
                                    **{"n_input_channels": channels, **info.get("kwargs", {})})
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"the checkpoint does not describe a model ({e}): was it written by "
                              "python -m minicct.train?") from None
    model.load_state_dict(info["state"])
    return model.to(device).eval()
