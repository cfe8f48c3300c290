"""Small helpers shared by the kernels: argument normalisation and checks."""
from __future__ import annotations


def pair(v, name):
    """An int or a pair of ints as a pair (PyTorch's ``kernel_size=3`` == ``(3, 3)``)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        a, b = v
    else:
        a = b = v
    try:
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}") from None


def check_positive(v, name):
    if min(v) <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")


def check_nonnegative(v, name):
    if min(v) < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")


def check_ndim(a, ndim, name, layout):
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(a.shape)}")
