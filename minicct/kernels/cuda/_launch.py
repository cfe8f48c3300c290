"""What the CuPy kernels share: the C type of a dtype, launch sizes, a cache of compiled modules."""
from __future__ import annotations

import functools

import numpy as np

from minicct import backend

THREADS = 256


def ctype(dtype):
    """'float' or 'double' for float32 / float64 (the kernels are written for a typedef T)."""
    if dtype == np.float32:
        return "float"
    if dtype == np.float64:
        return "double"
    raise TypeError(f"the CuPy kernels take float32 or float64 arrays, got {dtype}")


def grid(n):
    """Blocks of THREADS threads to cover n threads."""
    return ((int(n) + THREADS - 1) // THREADS,)


@functools.lru_cache(maxsize=None)
def module(src, ctype_name):
    """The CUDA source ``src`` (with %(T)s for the element type) compiled once per type."""
    cp = backend.import_cupy()
    return cp.RawModule(code=src % {"T": ctype_name}, options=("--std=c++14",))
