"""Model weights: save and load a model's state_dict as ``.npz`` (NumPy) or ``.pth`` (PyTorch),
without torch, and fit an official checkpoint to a model.

    save_weights(model, "cct.npz")                    # or "cct.pth": torch.load can read it
    load_weights(model, "cct_7_3x1_32_cifar10_300epochs.pth")   # an official checkpoint

The file formats themselves (and why reading a ``.pth`` never runs code) are ``minicct.formats``'s;
training checkpoints — weights plus optimizer, schedule and data-loader state — are
``minicct.training.checkpoint``'s. This module adds what is about models: the names and array
layouts are the official ones, so a state_dict moves between minicct and the released PyTorch code
by name, and a positional embedding made for another image size is adapted (``adapt_state_dict``).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from minicct.errors import StateDictError
from minicct.formats.state_dict import read_state_dict, write_state_dict
from minicct.nn.module import Module

POS_KEY = "classifier.positional_emb"


def resize_pos_embed(posemb, new_length, num_tokens=0):
    """Resize a learnable positional embedding to another number of tokens, as the official code
    does (after timm): the image tokens form a square grid, which is resized bilinearly
    (``F.interpolate(mode='bilinear', align_corners=False)``); the ``num_tokens`` leading
    (class) tokens are kept as they are.

    posemb: (1, num_tokens + g², d) → (1, new_length, d), new_length = num_tokens + G².
    """
    posemb = np.asarray(posemb)
    tokens, grid = posemb[:, :num_tokens], posemb[0, num_tokens:]
    g_old, g_new = math.isqrt(len(grid)), math.isqrt(new_length - num_tokens)
    if g_old * g_old != len(grid) or g_new * g_new != new_length - num_tokens:
        raise ValueError(f"can only resize square token grids: {len(grid)} → {new_length - num_tokens} tokens")
    grid = grid.reshape(g_old, g_old, -1).astype(np.float64)
    grid = _bilinear_axis(_bilinear_axis(grid, g_new, 0), g_new, 1)
    grid = grid.reshape(1, g_new * g_new, -1).astype(posemb.dtype)
    return np.concatenate([tokens, grid], axis=1)


_resize_pos_embed = resize_pos_embed  # (the loaders below take a keyword of the same name)


def _bilinear_axis(a, out, axis):
    """Linear interpolation along one axis, PyTorch's align_corners=False rule: output pixel i
    samples the input at (i + 0.5)·in/out − 0.5 (clamped at 0), between its two neighbours."""
    n = a.shape[axis]
    src = np.maximum((np.arange(out) + 0.5) * (n / out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = src - i0
    shape = [1] * a.ndim
    shape[axis] = out
    w1 = w1.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w1) + np.take(a, i1, axis=axis) * w1


def adapt_state_dict(model, state_dict, resize_pos_embed=False):
    """Fit a checkpoint's positional embedding to ``model`` (a CompactTransformer), as the official
    loader does: a sine table of another length is replaced by the model's own (it is a fixed
    function of the shape); a learnable one of another length is an error unless
    ``resize_pos_embed=True``, which interpolates it. Returns a new dict; other keys are untouched."""
    state = OrderedDict(state_dict)
    classifier = getattr(model, "classifier", None)
    own = getattr(classifier, "positional_emb", None)
    if POS_KEY not in state or own is None:
        return state
    theirs = np.shape(state[POS_KEY])
    if len(theirs) != 3 or theirs[0] != 1 or theirs[2] != own.shape[2] or theirs[1] == own.shape[1]:
        return state   # same length, or not the same kind of model: load_state_dict will judge
    if classifier.positional_embedding == "sine":
        state[POS_KEY] = own.numpy()
    elif resize_pos_embed:
        state[POS_KEY] = _resize_pos_embed(state[POS_KEY], own.shape[1], classifier.num_tokens)
    else:
        raise StateDictError(
            f"{POS_KEY}: the checkpoint's learnable positional embedding has {theirs[1]} positions, "
            f"the model's has {own.shape[1]} (a different image size). Build the model with the "
            f"checkpoint's img_size, or pass resize_pos_embed=True to interpolate it bilinearly as "
            f"the official code does.")
    return state


def load_weights(model, path, strict=True, resize_pos_embed=False):
    """Load an ``.npz`` or ``.pth`` checkpoint into ``model`` (see ``Module.load_state_dict``).
    Returns ``LoadResult(missing_keys, unexpected_keys)``."""
    state = adapt_state_dict(model, read_state_dict(path), resize_pos_embed=resize_pos_embed)
    return model.load_state_dict(state, strict=strict)


def save_weights(model_or_state, path):
    """Save a model's state_dict (or a state_dict) to ``.npz`` or, for ``.pth``/``.pt``, to a
    torch.save-compatible file."""
    state = model_or_state.state_dict() if isinstance(model_or_state, Module) else model_or_state
    write_state_dict(state, path)
