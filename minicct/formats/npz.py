""".npz files: a model's weights (name → array), and training checkpoints (a nested tree of arrays and
plain values). Both load with ``allow_pickle=False``: an .npz can only ever produce arrays and plain
values, never run code. Both are written atomically (files.py).

    save_npz(model.state_dict(), "cct.npz");  state = load_npz("cct.npz")
    save_checkpoint("runs/x/last.npz", {"epoch": 3, "model": model.state_dict(), "rng": {...}})
    ckpt = load_checkpoint("runs/x/last.npz")

A checkpoint's arrays (NumPy or CuPy) are stored as NumPy arrays under their path in the tree
("model/classifier.fc.weight"); everything else (numbers, strings, lists, None, big integers such as a
random generator's state) goes into one JSON document stored beside them.
"""
from __future__ import annotations

import json
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from minicct import backend
from minicct.autograd.tensor import Tensor
from minicct.errors import CheckpointError
from minicct.formats.files import atomic_write


def save_npz(state_dict, path):
    """Save name → array (NumPy, CuPy or Tensor) to an uncompressed ``.npz``, atomically (keys keep
    their dots). As ``np.savez`` does, ``.npz`` is appended to a path that lacks it."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = {k: backend.to_numpy(v.data if isinstance(v, Tensor) else v) for k, v in state_dict.items()}
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_npz(path):
    """OrderedDict name → array from an ``.npz`` (no pickles: ``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as f:
        return OrderedDict((k, f[k]) for k in f.files)


FORMAT = "minicct-checkpoint"
VERSION = 1
_TREE_KEY = "__tree__"


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
