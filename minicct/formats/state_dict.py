"""A state_dict file (name → array) in whichever format: ``.npz`` (NumPy) or ``.pth`` (PyTorch).

    state = read_state_dict("cct_7_3x1_32_cifar10_300epochs.pth")   # the content decides the format
    write_state_dict(model.state_dict(), "cct.pth")                 # the extension decides it
"""
from __future__ import annotations

import os
import zipfile
from collections import OrderedDict

import numpy as np

from minicct.errors import CheckpointError
from minicct.formats.npz import load_npz, save_npz
from minicct.formats.pth import read_pth, write_pth


def extract_state_dict(obj):
    """The state_dict inside a loaded checkpoint: the object itself, or its 'state_dict' / 'model' /
    'model_state_dict' entry; a 'module.' prefix (DataParallel) is removed from every key."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"a checkpoint should hold a dict of arrays, got {type(obj).__name__}")
    if not all(isinstance(v, np.ndarray) for v in obj.values()):
        for k in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(k), dict):
                return extract_state_dict(obj[k])
        raise CheckpointError(f"no state_dict in the checkpoint (top-level keys: {list(obj)[:10]})")
    if obj and all(k.startswith("module.") for k in obj):
        obj = OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return OrderedDict(obj)


def read_state_dict(path):
    """name → array from an ``.npz`` or a ``.pth`` (the content decides, not the extension)."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        names = []
    if names and all(n.endswith(".npy") for n in names):
        return load_npz(path)
    return extract_state_dict(read_pth(path))


def write_state_dict(state_dict, path):
    """Save name → array to ``.npz`` or, for ``.pth``/``.pt``/``.bin``, to a torch.save-compatible file."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".npz":
        save_npz(state_dict, path)
    elif suffix in (".pth", ".pt", ".bin"):
        write_pth(OrderedDict(state_dict), path)
    else:
        raise ValueError(f"unknown checkpoint extension {suffix!r}: use .npz or .pth")
