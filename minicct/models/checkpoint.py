"""Model weights: save and load a state_dict as ``.npz`` (NumPy) or ``.pth`` (PyTorch), without torch.

    save_weights(model, "cct.npz")                    # or "cct.pth": torch.load can read it
    load_weights(model, "cct_7_3x1_32_cifar10_300epochs.pth")   # an official checkpoint

(Training checkpoints — weights plus optimizer, schedule and data-loader state — are
``minicct.training.checkpoint``'s business; these functions move the weights alone.)

The names and array layouts are the official ones, so a state_dict moves between minicct and the
released PyTorch code by name.

**The .pth format.** ``torch.save`` writes a zip archive:

    <archive>/data.pkl     a pickle of the object (e.g. an OrderedDict name → tensor)
    <archive>/data/<key>   the raw bytes of each storage (one per distinct tensor memory)
    <archive>/byteorder    'little' or 'big';   <archive>/version   the format version

Inside the pickle a tensor is a call ``torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, hooks)`` whose ``storage`` is a *persistent id*
``('storage', torch.FloatStorage, key, location, numel)`` that points at ``data/<key>``; the storage
class gives the dtype.

**Safety.** Unpickling calls whatever functions the file names, so a ``.pth`` from the internet can
run arbitrary code under ``pickle.load`` (``os.system`` is one opcode away). ``read_pth`` uses an
unpickler whose ``find_class`` allows only the few names that rebuild tensors (and
``collections.OrderedDict``), and refuses everything else with an error; tensors are rebuilt into
NumPy arrays with their offset and strides checked against the storage's size. A checkpoint never
runs code here.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

from minicct import backend
from minicct.autograd.tensor import Tensor
from minicct.errors import CheckpointError  # the one definition; raised from here
from minicct.nn.module import Module, StateDictError

POS_KEY = "classifier.positional_emb"

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
class _Frozen:
    """Objects the restricted unpickler makes itself. They cannot be changed afterwards: a pickle's
    BUILD opcode sets attributes, and a crafted one must not swap a storage's array or dtype."""
    __slots__ = ()

    def __setattr__(self, name, value):
        raise CheckpointError(f"malformed checkpoint: it tries to modify a {type(self).__name__[1:]}")


class _StorageType(_Frozen):
    """Stand-in for a torch storage class (``torch.FloatStorage`` ...): only its dtype matters."""
    __slots__ = ("name", "dtype")

    def __init__(self, name):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", STORAGE_DTYPES[name])


class _Storage(_Frozen):
    """One storage's elements: a 1-D NumPy array read from ``data/<key>``."""
    __slots__ = ("array",)

    def __init__(self, array):
        object.__setattr__(self, "array", array)


class _TensorRef(_Frozen):
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
_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, tuples, strings, numbers and tensors (see the module docstring)."""

    def __init__(self, file, zf, prefix, byteorder):
        super().__init__(file)
        self.zf, self.prefix, self.byteorder = zf, prefix, byteorder
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(
            f"refusing to load {module}.{name} from the checkpoint: a checkpoint may only hold "
            f"tensors, dicts, lists and plain values, and unpickling anything else could run code. "
            f"If you trust the file, load it with torch and save its state_dict alone.")

    def persistent_load(self, pid):
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
        unpickler = _RestrictedUnpickler(io.BytesIO(zf.read(pkls[0])), zf, prefix, byteorder)
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
    """
    pw = _PickleWriter()
    pw.w(b"\x80\x02")                                           # PROTO 2
    pw.save(obj)
    pw.w(b".")                                                  # STOP
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        _write_aligned(zf, f"{archive_name}/data.pkl", pw.out.getvalue())
        _write_aligned(zf, f"{archive_name}/byteorder", b"little")
        for key, a in enumerate(pw.storages):
            _write_aligned(zf, f"{archive_name}/data/{key}", a.tobytes())
        _write_aligned(zf, f"{archive_name}/version", b"3\n")


# =================================================================================================
# State dicts, .npz, and loading into a model
# =================================================================================================
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


def save_npz(state_dict, path):
    """Save name → array to an uncompressed ``.npz`` (keys keep their dots)."""
    np.savez(path, **{k: backend.to_numpy(v.data if isinstance(v, Tensor) else v)
                      for k, v in state_dict.items()})


def load_npz(path):
    """OrderedDict name → array from an ``.npz`` (no pickles: ``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as f:
        return OrderedDict((k, f[k]) for k in f.files)


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
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix == ".npz":
        save_npz(state, path)
    elif suffix in (".pth", ".pt", ".bin"):
        write_pth(OrderedDict(state), path)
    else:
        raise ValueError(f"unknown checkpoint extension {suffix!r}: use .npz or .pth")
