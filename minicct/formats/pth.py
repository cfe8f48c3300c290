"""PyTorch's ``.pth`` files, read and written without torch. Tensors come back as NumPy arrays.

    state = read_pth("cct_7_3x1_32_cifar10_300epochs.pth")     # an official checkpoint
    write_pth(state, "cct.pth")                                # torch.load can read it

**The format.** ``torch.save`` writes a zip archive:

    <archive>/data.pkl     a pickle of the object (e.g. an OrderedDict name → tensor)
    <archive>/data/<key>   the raw bytes of each storage (one per distinct tensor memory)
    <archive>/byteorder    'little' or 'big';   <archive>/version   the format version

Inside the pickle a tensor is a call ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, hooks)`` whose ``storage`` is a *persistent id*
``('storage', torch.FloatStorage, key, location, numel)`` that points at ``data/<key>``; the storage
class gives the dtype.

**Safety.** ``read_pth`` unpickles with ``RestrictedUnpickler`` (pickles.py), whose table ``PTH_GLOBALS``
holds only the few names that rebuild tensors (and ``collections.OrderedDict``); everything else is
refused with a CheckpointError. Tensors are rebuilt into NumPy arrays with their offset and strides
checked against the storage's size, and the objects the reader makes cannot be modified by the
pickle. A checkpoint never runs code here.

**Writing.** Python's pickler would name ``torch._utils._rebuild_tensor_v2`` only if torch were
importable, so ``write_pth`` writes the few opcodes itself (protocol 2), then the storages, each
aligned to 64 bytes as torch.save does. The file is written atomically.
"""
from __future__ import annotations

import io
import math
import struct
import zipfile
from collections import OrderedDict

import numpy as np

from minicct import backend
from minicct.autograd.tensor import Tensor
from minicct.errors import CheckpointError
from minicct.formats.files import atomic_write
from minicct.formats.pickles import RestrictedUnpickler, Sealed, SealedCall

# torch storage class name ↔ NumPy dtype. bfloat16 has no NumPy dtype: it is read into float32.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_STORAGE_FOR_DTYPE = {np.dtype(v): k for k, v in STORAGE_DTYPES.items() if v != "bfloat16"}


# =================================================================================================
# Reading .pth
# =================================================================================================
class _StorageType(Sealed):
    """Stand-in for a torch storage class (``torch.FloatStorage`` ...): only its dtype matters."""
    __slots__ = ("name", "dtype")

    def __init__(self, name):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", STORAGE_DTYPES[name])


class _Storage(Sealed):
    """One storage's elements: a 1-D NumPy array read from ``data/<key>``."""
    __slots__ = ("array",)

    def __init__(self, array):
        object.__setattr__(self, "array", array)


class _TensorRef(Sealed):
    """What the pickle's tensor calls produce; turned into plain NumPy arrays after loading."""
    __slots__ = ("array",)

    def __init__(self, array):
        object.__setattr__(self, "array", array)


# A tensor may view its storage with stride 0 (an expanded tensor): it is materialised here, so its
# size is capped, lest a tiny file ask for terabytes.
MAX_EXPANDED_ELEMENTS = 2 ** 24


def _as_int_tuple(v, what):
    if not isinstance(v, tuple) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        raise CheckpointError(f"malformed tensor in checkpoint: {what} must be a tuple of ints, got {v!r}")
    return v


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    """NumPy array (a copy) of the tensor that views ``storage`` at offset/size/stride (in elements)."""
    if not isinstance(storage, _Storage):
        raise CheckpointError("malformed tensor in checkpoint: its storage is not a storage reference")
    size, stride = _as_int_tuple(size, "size"), _as_int_tuple(stride, "stride")
    if not isinstance(storage_offset, int) or len(size) != len(stride):
        raise CheckpointError(f"malformed tensor in checkpoint: offset {storage_offset!r}, size {size}, "
                              f"stride {stride}")
    flat = storage.array
    if any(n < 0 for n in size) or any(s < 0 for s in stride) or storage_offset < 0:
        raise CheckpointError(f"malformed tensor in checkpoint: negative size/stride/offset "
                              f"({size}, {stride}, {storage_offset})")
    if 0 in size:
        return _TensorRef(np.zeros(size, flat.dtype))
    count = math.prod(size)
    if count > max(flat.size, MAX_EXPANDED_ELEMENTS):
        raise CheckpointError(f"malformed tensor in checkpoint: size {size} ({count} elements) from a "
                              f"storage of {flat.size}")
    # Every element the view can reach must lie inside the storage: as_strided does not check.
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise CheckpointError(f"malformed tensor in checkpoint: size {size}, stride {stride}, offset "
                              f"{storage_offset} reach element {last} of a storage of {flat.size}")
    view = np.lib.stride_tricks.as_strided(flat[storage_offset:], shape=size,
                                           strides=[s * flat.itemsize for s in stride],
                                           writeable=False)
    return _TensorRef(np.array(view, copy=True))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """A saved nn.Parameter: keep its data."""
    if not isinstance(data, _TensorRef):
        raise CheckpointError("malformed parameter in checkpoint: its data is not a tensor")
    return data




# (module, name) → what the restricted unpickler hands back for it. Nothing else is allowed.
PTH_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): SealedCall(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): SealedCall(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): SealedCall(_rebuild_parameter),
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _StorageReader:
    """The unpickler's ``persistent_load``: a storage reference → its elements, read from the zip once."""

    def __init__(self, zf, prefix, byteorder):
        self.zf, self.prefix, self.byteorder = zf, prefix, byteorder
        self.storages = {}

    def __call__(self, pid):

        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unknown persistent id in checkpoint: {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or \
                not isinstance(numel, int):
            raise CheckpointError(f"malformed storage reference in checkpoint: {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(self._read_storage(key, storage_type, numel))
        return self.storages[key]

    def _read_storage(self, key, storage_type, numel):
        name = f"{self.prefix}data/{key}"
        try:
            raw = self.zf.read(name)
        except KeyError:
            raise CheckpointError(f"checkpoint refers to storage {key!r} but has no {name}") from None
        order = "<" if self.byteorder == "little" else ">"
        if storage_type.dtype == "bfloat16":
            # bfloat16 is the top half of a float32: shift the 16 bits up.
            half = np.frombuffer(raw, dtype=order + "u2")
            arr = (half.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(storage_type.dtype).newbyteorder(order))
            arr = arr.astype(np.dtype(storage_type.dtype).newbyteorder("="), copy=False)
        if arr.size < numel:
            raise CheckpointError(f"storage {key!r} holds {arr.size} elements, the pickle says {numel}")
        return arr[:numel]



def _unwrap(obj):
    """Replace the tensor placeholders by their arrays, in dicts, lists and tuples."""
    if isinstance(obj, _TensorRef):
        return obj.array
    if isinstance(obj, _Storage):
        return obj.array
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _unwrap(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(v) for v in obj)
    return obj


def read_pth(path):
    """Read a ``torch.save`` file (zip format) without torch: tensors come back as NumPy arrays.

    Returns the saved object (usually an OrderedDict name → array; possibly a dict wrapping one).
    Raises CheckpointError for anything but tensors and plain containers/values.
    """
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CheckpointError(
            f"{path} is not a zip archive. PyTorch's legacy (pre-1.6) format is not supported: "
            f"re-save it with a recent torch.save") from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{path} is a zip archive but not a torch.save file (no <archive>/data.pkl)")
        prefix = pkls[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in zf.namelist():
            byteorder = zf.read(prefix + "byteorder").decode().strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"unknown byteorder {byteorder!r} in {path}")
        unpickler = RestrictedUnpickler(
            io.BytesIO(zf.read(pkls[0])), PTH_GLOBALS, "the checkpoint", error=CheckpointError,
            hint=(". A checkpoint may only hold tensors, dicts, lists and plain values; if you trust "
                  "the file, load it with torch and save its state_dict alone."),
            persistent_load=_StorageReader(zf, prefix, byteorder))
        try:
            obj = unpickler.load()
        except CheckpointError:
            raise
        except Exception as e:  # a broken pickle: say so plainly, whatever went wrong inside it
            raise CheckpointError(f"could not read the pickle in {path}: {type(e).__name__}: {e}") from None
    try:
        return _unwrap(obj)
    except RecursionError:  # a pickle can build a list that contains itself
        raise CheckpointError(f"{path} holds a self-referencing structure, not a state_dict") from None



# =================================================================================================
# Writing .pth
# =================================================================================================
class _PickleWriter:
    """Writes the pickle opcodes for a state_dict by hand (protocol 2), as ``torch.save`` would.

    Python's pickler would save a reference to ``torch._utils._rebuild_tensor_v2`` only if torch
    were importable; here the few opcodes are written directly. Supported values: dict /
    OrderedDict, list, tuple, str, int, float, bool, None and arrays (written as tensors).
    """

    def __init__(self):
        self.out = io.BytesIO()
        self.storages = []   # contiguous little-endian arrays, data/0, data/1, ...

    def w(self, b):
        self.out.write(b)

    def glob(self, module, name):
        self.w(b"c" + module.encode() + b"\n" + name.encode() + b"\n")      # GLOBAL

    def save(self, obj):
        if isinstance(obj, Tensor):
            obj = backend.to_numpy(obj.data)
        if backend.is_gpu_array(obj):
            obj = backend.to_numpy(obj)
        if isinstance(obj, (np.ndarray, np.generic)):
            self.tensor(np.asarray(obj))
        elif isinstance(obj, OrderedDict):
            self.glob("collections", "OrderedDict")
            self.w(b")R")                                      # EMPTY_TUPLE, REDUCE: OrderedDict()
            self.items(obj)
        elif isinstance(obj, dict):
            self.w(b"}")                                       # EMPTY_DICT
            self.items(obj)
        elif isinstance(obj, (list, tuple)):
            self.w(b"]" if isinstance(obj, list) else b"")      # EMPTY_LIST
            self.w(b"(")                                       # MARK
            for v in obj:
                self.save(v)
            self.w(b"e" if isinstance(obj, list) else b"t")     # APPENDS / TUPLE
        elif obj is None:
            self.w(b"N")
        elif obj is True or obj is False:
            self.w(b"\x88" if obj else b"\x89")                # NEWTRUE / NEWFALSE
        elif isinstance(obj, int):
            if -2 ** 31 <= obj < 2 ** 31:
                self.w(b"J" + struct.pack("<i", obj))            # BININT
            else:
                n = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
                self.w(b"\x8a" + bytes([len(n)]) + n)            # LONG1
        elif isinstance(obj, float):
            self.w(b"G" + struct.pack(">d", obj))                # BINFLOAT
        elif isinstance(obj, str):
            b = obj.encode("utf-8")
            self.w(b"X" + struct.pack("<I", len(b)) + b)          # BINUNICODE
        else:
            raise TypeError(f"cannot write a {type(obj).__name__} to a .pth file")

    def items(self, d):
        self.w(b"(")                                            # MARK
        for k, v in d.items():
            self.save(k)
            self.save(v)
        self.w(b"u")                                            # SETITEMS

    def tensor(self, a):
        native = a.dtype.newbyteorder("=")
        if native not in _STORAGE_FOR_DTYPE:
            raise TypeError(f"cannot write an array of dtype {a.dtype} to a .pth file")
        a = np.asarray(a, order="C").astype(a.dtype.newbyteorder("<"), copy=False)  # (keeps 0-d)
        key = str(len(self.storages))
        self.storages.append(a)
        strides = tuple(s // a.itemsize for s in a.strides) if a.ndim else ()
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.w(b"(")                                            # MARK: the call's arguments
        self.w(b"(")                                            # MARK: the persistent id
        self.save("storage")
        self.glob("torch", _STORAGE_FOR_DTYPE[native])
        self.save(key)
        self.save("cpu")
        self.save(int(a.size))
        self.w(b"tQ")                                           # TUPLE, BINPERSID
        self.save(0)                                            # storage offset
        self.save(tuple(int(n) for n in a.shape))
        self.save(strides)
        self.save(False)                                        # requires_grad
        self.glob("collections", "OrderedDict")
        self.w(b")R")                                           # backward hooks: OrderedDict()
        self.w(b"tR")                                           # TUPLE, REDUCE: the call


def _write_aligned(zf, name, data, align=64):
    """Add a stored (uncompressed) record whose data starts on an ``align``-byte boundary, as
    torch.save does (so torch.load(mmap=True) can map the storages in place)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header_end = zf.fp.tell() + 30 + len(name.encode())
    pad = -header_end % align
    if 0 < pad < 4:          # an extra field needs 4 bytes of header
        pad += align
    if pad:
        info.extra = b"FB" + struct.pack("<H", pad - 4) + b"\0" * (pad - 4)
    zf.writestr(info, data)


def write_pth(obj, path, archive_name="archive"):
    """Write ``obj`` (a state_dict of arrays/Tensors, or a dict wrapping one) as a torch.save file.

    ``torch.load(path)`` (weights_only or not) reads it back as tensors; ``read_pth`` as arrays.
    The file is written atomically.
    """
    pw = _PickleWriter()
    pw.w(b"\x80\x02")                                           # PROTO 2
    pw.save(obj)
    pw.w(b".")                                                  # STOP

    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            _write_aligned(zf, f"{archive_name}/data.pkl", pw.out.getvalue())
            _write_aligned(zf, f"{archive_name}/byteorder", b"little")
            for key, a in enumerate(pw.storages):
                _write_aligned(zf, f"{archive_name}/data/{key}", a.tobytes())
            _write_aligned(zf, f"{archive_name}/version", b"3\n")
    atomic_write(path, write)

