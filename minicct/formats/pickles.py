"""One unpickler that builds only what a table allows — for every pickle minicct reads.

A pickle is a little program: loading it calls whatever functions it names (``os.system`` is one
opcode away), so a file from the internet can run code under ``pickle.load``. Every global a pickle
names goes through ``Unpickler.find_class``; ``RestrictedUnpickler`` answers it from a table
(module, name) → object and refuses everything else. Two tables are used:

    NUMPY_ARRAYS   CIFAR batches: dicts/lists of bytes, ints and NumPy arrays
    (pth.py)       PyTorch .pth files: OrderedDicts of tensors, rebuilt as NumPy arrays

Nothing outside the table can be reached: REDUCE (a call) and BUILD (set attributes) only ever act
on objects the table or the pickle's own plain values provided. BUILD could still set attributes on a
table entry itself — a plain Python function's ``__defaults__``, for the rest of the process — so the
functions in the tables sit behind ``SealedCall``, and the stand-in objects a reader makes derive from
``Sealed``: neither can be modified.
"""
from __future__ import annotations

import codecs
import pickle

import numpy as np

try:   # NumPy 2 moved numpy.core to numpy._core; files written by NumPy 1 still name the old one
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:   # NumPy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric


class Sealed:
    """Base of objects a pickle may get hold of: a BUILD opcode cannot set anything on them."""
    __slots__ = ()

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError(f"malformed pickle: it tries to modify a {type(self).__name__.strip('_')}")


class SealedCall(Sealed):
    """A function a pickle may call (REDUCE), behind a wrapper the pickle cannot modify."""
    __slots__ = ("fn",)

    def __init__(self, fn):
        object.__setattr__(self, "fn", fn)

    def __call__(self, *args):
        return self.fn(*args)


def _both_cores(name, obj):
    """The entry for ``numpy.core.<name>`` and ``numpy._core.<name>``: the same object either way."""
    module, attr = name.rsplit(".", 1)
    return {(f"numpy.core.{module}", attr): obj, (f"numpy._core.{module}", attr): obj}


# What rebuilding a NumPy array needs: protocol 2-4 call _reconstruct then BUILD (ndarray.__setstate__);
# protocol 5 calls _frombuffer; a NumPy scalar is `scalar(dtype, bytes)`; Python 3's protocol 2
# writes bytes as `_codecs.encode(str, 'latin1')`.
NUMPY_ARRAYS = {
    **_both_cores("multiarray._reconstruct", _multiarray._reconstruct),
    **_both_cores("multiarray.scalar", _multiarray.scalar),
    **_both_cores("numeric._frombuffer", SealedCall(_numeric._frombuffer)),   # (a Python function)
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain values plus the globals in ``allowed``; any other global raises ``error``.

    allowed: {(module, name): object}, what the pickle gets when it names ``module.name``.
    what: what the file should be ("a CIFAR batch"), and hint: advice appended, for the message.
    persistent_load: called with each persistent id (a .pth's storage references); None refuses them.
    kwargs: passed to ``pickle.Unpickler`` (e.g. ``encoding='bytes'`` for Python 2 pickles).
    """

    def __init__(self, file, allowed, what, hint="", error=pickle.UnpicklingError, persistent_load=None,
                 **kwargs):
        super().__init__(file, **kwargs)
        self.allowed, self.what, self.hint, self.error = allowed, what, hint, error
        if persistent_load is not None:
            self.persistent_load = persistent_load

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise self.error(f"refusing to load {module}.{name} from {self.what}: only the few names that "
                         f"rebuild its contents are allowed, and unpickling anything else could run code"
                         f"{self.hint}")


def load_restricted(file, allowed, what, **kwargs):
    """The object pickled in ``file`` (a path or a binary file object), built by ``RestrictedUnpickler``."""
    if hasattr(file, "read"):
        return RestrictedUnpickler(file, allowed, what, **kwargs).load()
    with open(file, "rb") as f:
        return RestrictedUnpickler(f, allowed, what, **kwargs).load()
