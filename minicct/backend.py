"""Arrays and devices: the one place that decides between NumPy (CPU) and CuPy (GPU).

Every kernel starts with ``xp = get_array_module(x)`` and then writes ``xp.exp``, ``xp.matmul``...
so the same line of code runs on either device. CuPy is imported lazily, only when a GPU is asked
for or a CuPy array is seen, so ``import minicct`` stays fast and works without CuPy installed.

Devices are the strings ``"cpu"`` and ``"gpu"``. The default comes from the ``MINICCT_DEVICE``
environment variable (``cpu`` when unset).
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from minicct.errors import DeviceError  # the one definition; raised from here

DEVICES = ("cpu", "gpu")

CUPY_INSTALL_HINT = (
    "minicct runs on a GPU through CuPy. Install the wheel that matches your CUDA driver, e.g. "
    "`pip install cupy-cuda12x` (CUDA 12) or `pip install cupy-cuda13x` (CUDA 13); see "
    "requirements-gpu.txt. Without a GPU, use device='cpu'."
)


_cupy = None  # the imported module once a GPU has been asked for


def import_cupy():
    """Import CuPy and check a GPU is really there; raise one clear DeviceError otherwise."""
    global _cupy
    if _cupy is not None:
        return _cupy
    try:
        import cupy
    except ImportError as e:  # not installed, or installed for the wrong CUDA
        raise DeviceError(f"device 'gpu' needs CuPy, which could not be imported ({e}). "
                          + CUPY_INSTALL_HINT) from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy present but no driver / no device
        raise DeviceError(f"CuPy is installed but no usable GPU was found ({e}). "
                          + CUPY_INSTALL_HINT) from None
    if n == 0:
        raise DeviceError("CuPy is installed but reports 0 GPUs. " + CUPY_INSTALL_HINT)
    _cupy = cupy
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one GPU (never raises)."""
    try:
        import_cupy()
        return True
    except DeviceError:
        return False


def check_device(device) -> str:
    """Normalise a device name ('cpu', 'gpu'; 'cuda' is accepted as 'gpu') or raise ValueError."""
    if device is None:
        return default_device()
    d = str(device).lower()
    if d.startswith("cuda"):
        d = "gpu"
    if d not in DEVICES:
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'gpu'")
    return d


def default_device() -> str:
    """The device used when none is given: $MINICCT_DEVICE, else 'cpu'."""
    env = os.environ.get("MINICCT_DEVICE", "cpu").strip().lower() or "cpu"
    if env.startswith("cuda"):
        env = "gpu"
    if env not in DEVICES:
        raise ValueError(f"MINICCT_DEVICE={env!r} is not a device: set it to 'cpu' or 'gpu'")
    return env


def xp_for(device) -> object:
    """The array module (numpy or cupy) for a device name."""
    return import_cupy() if check_device(device) == "gpu" else np


def is_gpu_array(a) -> bool:
    """True for a CuPy ndarray (checked without importing CuPy)."""
    return _cupy is not None and isinstance(a, _cupy.ndarray) or (
        "cupy" in sys.modules and type(a).__module__.startswith("cupy"))


def device_of(a) -> str:
    """'gpu' for a CuPy array, 'cpu' for anything else."""
    return "gpu" if is_gpu_array(a) else "cpu"


def get_array_module(*arrays):
    """numpy or cupy, whichever the given arrays belong to (numpy for scalars and lists)."""
    for a in arrays:
        if is_gpu_array(a):
            return import_cupy()
    return np


def to_device(a, device):
    """Copy an array to a device (no copy when already there)."""
    device = check_device(device)
    if device == "gpu":
        cp = import_cupy()
        return a if isinstance(a, cp.ndarray) else cp.asarray(a)
    if is_gpu_array(a):
        return a.get()
    return np.asarray(a)


def to_numpy(a) -> np.ndarray:
    """A host NumPy array for any array (a copy from the GPU, the array itself on the CPU)."""
    return a.get() if is_gpu_array(a) else np.asarray(a)


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` where repeated indices add up (np.add.at on the CPU,
    cupyx.scatter_add on the GPU). Only for indexing backward, not for hot kernels."""
    if is_gpu_array(target):
        import cupyx
        cupyx.scatter_add(target, index, values)
    else:
        np.add.at(target, index, values)


def memory_order(a) -> tuple:
    """The axes of an array from the largest stride to the smallest: (0, 1, 2, 3) for a C-contiguous
    (N, C, H, W) array, (0, 2, 3, 1) for channels-last, (2, 3, 0, 1) for (H, W, N, C) memory."""
    return tuple(sorted(range(a.ndim), key=lambda k: (-abs(a.strides[k]), k)))


def empty_in_order(xp, shape, dtype, order):
    """An empty array of ``shape`` whose memory holds its axes in ``order`` (as memory_order gives)."""
    a = xp.empty(tuple(shape[k] for k in order), dtype=dtype)
    return a.transpose(tuple(order.index(k) for k in range(len(order))))


# ---- graph mode ------------------------------------------------------------------------------------
_graph_mode = False   # True while a step runs as it is (or will be) captured into a CUDA graph


def in_graph_mode() -> bool:
    """True inside ``graph_mode()``: the step being run is, or rehearses, a CUDA-graph capture."""
    return _graph_mode


@contextlib.contextmanager
def graph_mode():
    """Within the block, run as a CUDA graph needs (``minicct.training.graph_step`` sets it for its
    warm-up steps and its capture): matrix products by minicct's own GEMM kernel on a GPU instead of
    cuBLAS, which CuPy refuses to capture (``kernels.dispatch.matmul``), and dropout masks only from
    a generator a graph can capture (``minicct.random``). Arrays and results are otherwise the same."""
    global _graph_mode
    before, _graph_mode = _graph_mode, True
    try:
        yield
    finally:
        _graph_mode = before


# ---- BLAS threads ----------------------------------------------------------------------------------
_blas = None   # (set_num_threads, get_num_threads) of the OpenBLAS NumPy uses; False: none found


def _openblas():
    """ctypes handles to the OpenBLAS that NumPy is linked with, or None (MKL, Accelerate...).

    The library is found among those already loaded (Linux), else in NumPy's wheel folder; opening
    a loaded library again returns the same one, so the setting reaches NumPy's products."""
    global _blas
    if _blas is not None:
        return _blas or None
    import ctypes
    import glob
    paths = []
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        pass
    if not paths:
        root = os.path.dirname(np.__file__)
        paths = glob.glob(os.path.join(root + ".libs", "*openblas*")) + \
            glob.glob(os.path.join(root, ".dylibs", "*openblas*"))
    _blas = False
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                set_n = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                get_n = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if set_n is not None and get_n is not None:
                    _blas = (set_n, get_n)
                    return _blas
    return None


def blas_threads():
    """How many threads NumPy's OpenBLAS uses for one matrix product; None when it cannot be asked."""
    handles = _openblas()
    return int(handles[1]()) if handles else None


@contextlib.contextmanager
def limit_blas_threads(n):
    """Within the block, NumPy's matrix products use at most ``n`` threads (OpenBLAS only; a no-op
    for other BLAS libraries). For code that runs its own threads (``minicct.parallel``): two
    threads each calling a 2-thread OpenBLAS would put 4 busy threads on 2 cores."""
    handles = _openblas()
    before = int(handles[1]()) if handles else None
    if before is not None and before > n:
        handles[0](int(n))
    try:
        yield
    finally:
        if before is not None and before > n:
            handles[0](before)


def status_kb(field):
    """A field of /proc/self/status in kB (Linux: 'VmRSS', 'VmHWM' ...), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ---- the C allocator -------------------------------------------------------------------------------
_MALLOC_KEEP = None   # True once keep_freed_memory() has applied its settings


def keep_freed_memory(mmap_threshold_mb=64, trim_threshold_mb=256) -> bool:
    """Ask glibc's malloc to keep freed arrays for reuse instead of handing them back to the kernel.

    A training step on the CPU allocates and frees the same few hundred arrays every step. By
    default glibc gives each large one (above an adaptive threshold of 128 KB to 32 MB) its own
    fresh ``mmap`` and unmaps it when NumPy frees it, so the kernel zero-fills every 4 KB page again
    on first touch: about 5,000 page faults and 25-50 ms of system time per CCT-2 step here, ~15%
    of the step. Blocks below ``mmap_threshold_mb`` now come from malloc's heap, and the heap is
    only shrunk when more than ``trim_threshold_mb`` lie free at its top: the same memory is
    reused step after step with no page faults. The price is that the process keeps its peak
    memory (CCT-2's training peak rose by ~4 MB). PyTorch's CPU allocator goes through the same
    malloc, so in one process both frameworks get the setting.

    The training, evaluation and benchmark commands call this on the CPU. Linux with glibc only;
    elsewhere (macOS, Windows, musl) it does nothing and returns False. Returns True when applied.
    """
    global _MALLOC_KEEP
    if _MALLOC_KEEP:
        return True
    import ctypes
    import platform
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # from <malloc.h>
    ok = (libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold_mb) << 20) == 1
          and libc.mallopt(M_TRIM_THRESHOLD, int(trim_threshold_mb) << 20) == 1)
    _MALLOC_KEEP = ok
    return ok
