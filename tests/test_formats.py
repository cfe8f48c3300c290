"""minicct.formats: the one restricted unpickler (for CIFAR batches and .pth files alike) and atomic
writes. The round trips and the .pth layout are tested in test_checkpoint.py."""
import builtins
import os
import pickle
import subprocess
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from minicct import formats
from minicct.data.datasets import restricted_pickle_load
from minicct.errors import CheckpointError
from minicct.formats import pickles, pth


class _Evil:
    """Pickles as a call of ``fn(arg)``: what a malicious file would hold."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def _write_pth_pickle(path, payload):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", b"3\n")


def _load_as_cifar(path, payload):
    path.write_bytes(payload)
    return restricted_pickle_load(path)


def _load_as_pth(path, payload):
    _write_pth_pickle(path, payload)
    return formats.read_pth(path)


USES = {"cifar": _load_as_cifar, "pth": _load_as_pth}


@pytest.mark.parametrize("use", USES)
@pytest.mark.parametrize("fn", [os.system, builtins.eval, subprocess.check_output, np.load])
def test_a_pickle_that_would_run_code_fails_in_both_uses(tmp_path, use, fn):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Evil(fn, f"touch {marker}")}, protocol=2)
    with pytest.raises((pickle.UnpicklingError, CheckpointError), match="refusing to load"):
        USES[use](tmp_path / "evil", payload)
    assert not marker.exists()


@pytest.mark.parametrize("use", USES)
def test_both_uses_go_through_the_one_unpickler(tmp_path, use, monkeypatch):
    asked = []
    real = pickles.RestrictedUnpickler.find_class

    def spy(self, module, name):
        asked.append((module, name))
        return real(self, module, name)
    monkeypatch.setattr(pickles.RestrictedUnpickler, "find_class", spy)
    if use == "cifar":
        path = tmp_path / "batch"
        path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3), np.uint8)}, protocol=2))
        restricted_pickle_load(path)
    else:
        formats.write_pth(OrderedDict(w=np.zeros(3, np.float32)), tmp_path / "w.pth")
        formats.read_pth(tmp_path / "w.pth")
    assert asked, "the reader did not use RestrictedUnpickler"


def test_each_use_allows_only_its_own_table(tmp_path):
    # a CIFAR batch may not rebuild torch tensors; a .pth may not call NumPy's array rebuilders
    with pytest.raises(pickle.UnpicklingError, match="refusing to load torch._utils._rebuild_tensor_v2"):
        _load_as_cifar(tmp_path / "a", b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)R.")
    with pytest.raises(pickle.UnpicklingError, match="refusing to load collections.OrderedDict"):
        _load_as_cifar(tmp_path / "b", b"\x80\x02ccollections\nOrderedDict\n)R.")
    with pytest.raises(CheckpointError, match=r"refusing to load numpy\.(_)?core\.multiarray\._reconstruct"):
        _load_as_pth(tmp_path / "c.pth", pickle.dumps(OrderedDict(w=np.zeros(2)), protocol=2))


# BUILD with a slot state sets attributes on whatever is on the stack: on a plain Python function
# that would replace its defaults for the rest of the process.
def _set_defaults_payload(module, name):
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
            b"N}X\x0c\x00\x00\x00__defaults__K\x05\x85s\x86b.")


@pytest.mark.parametrize("use, module, name, fn", [
    ("pth", "torch._utils", "_rebuild_tensor_v2", pth._rebuild_tensor_v2),
    ("cifar", "numpy._core.numeric", "_frombuffer", pickles._numeric._frombuffer),
    ("cifar", "numpy.core.numeric", "_frombuffer", pickles._numeric._frombuffer),
])
def test_a_pickle_cannot_modify_the_functions_it_may_call(tmp_path, use, module, name, fn):
    before = fn.__defaults__
    with pytest.raises((pickle.UnpicklingError, CheckpointError), match="modify"):
        USES[use](tmp_path / "f", _set_defaults_payload(module, name))
    assert fn.__defaults__ == before


def test_numpy_arrays_from_either_numpy_module_name_load(tmp_path):
    # protocol 2 as NumPy 1 wrote it names numpy.core; NumPy 2 names numpy._core
    payload = pickle.dumps({b"x": np.arange(4, dtype=np.int16)}, protocol=2)
    for core in (b"numpy.core", b"numpy._core"):
        for other in (b"numpy.core", b"numpy._core"):
            payload = payload.replace(other + b".multiarray", core + b".multiarray")
        got = _load_as_cifar(tmp_path / "p", payload)
        np.testing.assert_array_equal(got[b"x"], np.arange(4))


# ---- atomic writes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("write, suffix", [(formats.write_pth, ".pth"), (formats.save_npz, ".npz")])
def test_an_interrupted_save_leaves_the_previous_file_whole(tmp_path, monkeypatch, write, suffix):
    path = tmp_path / f"w{suffix}"
    old = OrderedDict(w=np.arange(3, dtype=np.float32))
    write(old, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pth, "_write_aligned", crash)
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        write(OrderedDict(w=np.zeros(1000, np.float32)), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]   # no temporary file left behind
    np.testing.assert_array_equal(formats.read_state_dict(path)["w"], old["w"])
