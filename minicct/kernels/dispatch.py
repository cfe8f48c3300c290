"""Which implementation of each kernel runs: the one place that decides.

Every op has a *reference* implementation, the plain portable version a lesson builds, in its own
module (``kernels/conv.py``, ``kernels/norm.py``, ...). Some ops also have *fast* versions in
clearly named modules beside them: ``kernels/fast/`` for array tricks written for NumPy
(flat-buffer im2col, Winograd, cache blocking; the im2col and the folded attention also serve
CuPy, in one block) and ``kernels/cuda/`` for CuPy ``RawKernel``s. Each is tested against its
reference, forward and backward.

The choice depends on three things only:
    * the device of the arrays (NumPy or CuPy),
    * the mode: ``MINICCT_KERNELS=reference|fast`` (default ``fast``), read once at import;
      ``set_mode`` / ``use_mode`` change it (tests run the model with both), and
    * a size rule where a fast version pays only above a size (measured in the training step:
      ``WINOGRAD_MIN_CHANNELS``, ``SDPA_FAST_MIN_SCORES``).

Matrix products are chosen here too (``matmul``, ``row_dots``): cuBLAS, except on a GPU inside
``backend.graph_mode()`` (a step being captured into a CUDA graph, which cannot hold cuBLAS calls),
where minicct's own GEMM (``kernels/cuda/gemm.py``) runs.

The autograd Functions (``minicct.functional``) ask here once per call, keep the chosen ``Impl``
on their context and call its backward with the forward's cache: no string tags in caches, no
device checks inside kernels.

    impl = dispatch.conv2d(x, w, stride, padding)
    y, cache = impl.forward(x, w, b, stride, padding)
    gx, gw, gb = impl.backward(gy, cache, need_gx=..., need_gw=...)
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
from typing import Callable, NamedTuple

from minicct.backend import get_array_module, in_graph_mode, is_gpu_array

MODES = ("reference", "fast")
ENV = "MINICCT_KERNELS"


class Impl(NamedTuple):
    """One implementation of an op: a name (for tests and benchmarks) and its two functions."""
    name: str
    forward: Callable
    backward: Callable


def _mode_from_env():
    value = os.environ.get(ENV, "fast").strip().lower() or "fast"
    if value not in MODES:
        raise ValueError(f"${ENV}={os.environ[ENV]!r} is not a kernel mode: use one of {', '.join(MODES)}")
    return value


_mode = _mode_from_env()


def mode():
    """The current kernel mode: 'reference' or 'fast'."""
    return _mode


def set_mode(value):
    """Set the kernel mode for the whole process ('reference' or 'fast'); returns the old one."""
    global _mode
    if value not in MODES:
        raise ValueError(f"kernel mode must be one of {', '.join(MODES)}, got {value!r}")
    old, _mode = _mode, value
    return old


@contextlib.contextmanager
def use_mode(value):
    """``with use_mode('reference'): ...`` runs the block with that kernel mode."""
    old = set_mode(value)
    try:
        yield
    finally:
        set_mode(old)


def on_gpu(x):
    """True for a CuPy array (backend.is_gpu_array: the one test of where an array lives)."""
    return is_gpu_array(x)


def fast(x):
    """True when the fast versions apply: fast mode, on NumPy."""
    return _mode == "fast" and not on_gpu(x)


def fast_gpu(x):
    """True when the CuPy fast versions apply: fast mode, on CuPy."""
    return _mode == "fast" and on_gpu(x)


# ---- the table ---------------------------------------------------------------------------------
# One selector per op: (arrays and static arguments) -> Impl. Imports are at the top of the
# selectors' module level below, so a selector is only a few comparisons.
from minicct.kernels import (conv as _conv, pool as _pool, norm as _norm, activation as _act,   # noqa: E402
                             attention as _attn, dropout as _drop, loss as _loss, linear as _lin,
                             adamw as _adamw, philox as _philox, fused as _fused)
from minicct.kernels.fast import (conv_im2col as _conv_im2col, winograd as _winograd,   # noqa: E402
                                  pool as _pool_fast, gelu as _gelu_fast, attention as _attn_fast,
                                  philox as _philox_fast, fused as _fused_fast)
from minicct.kernels.cuda import (gelu as _gelu_cuda, norm as _norm_cuda, pool as _pool_cuda,   # noqa: E402
                                  adamw as _adamw_cuda, philox as _philox_cuda, gemm as _gemm_cuda)

_CONV = Impl("conv2d", _conv.conv2d_forward, _conv.conv2d_backward)
_CONV_IM2COL = Impl("conv2d_im2col_flat", _conv_im2col.conv2d_forward, _conv_im2col.conv2d_backward)
# On a GPU: the weight gradient as one cuBLAS product (the blocks work around OpenBLAS only).
_CONV_IM2COL_GPU = Impl("conv2d_im2col_flat_one_product", _conv_im2col.conv2d_forward,
                        functools.partial(_conv_im2col.conv2d_backward, gw_block=None))
_CONV_WINOGRAD = Impl("conv2d_winograd", _winograd.conv2d_forward, _winograd.conv2d_backward)
_POOL = Impl("max_pool2d", _pool.max_pool2d_forward, _pool.max_pool2d_backward)
_POOL_FAST = Impl("max_pool2d_fast", _pool_fast.max_pool2d_forward, _pool_fast.max_pool2d_backward)
_POOL_CUDA = Impl("max_pool2d_cuda", _pool_cuda.max_pool2d_forward, _pool_cuda.max_pool2d_backward)
_NORM = Impl("layer_norm", _norm.layer_norm_forward, _norm.layer_norm_backward)
_NORM_CUDA = Impl("layer_norm_cuda", _norm_cuda.layer_norm_forward, _norm_cuda.layer_norm_backward)
_GELU = Impl("gelu", _act.gelu_forward, _act.gelu_backward)
_GELU_FAST = Impl("gelu_fast", _gelu_fast.gelu_forward, _gelu_fast.gelu_backward)
_GELU_CUDA = Impl("gelu_cuda", _gelu_cuda.gelu_forward, _gelu_cuda.gelu_backward)
_RELU = Impl("relu", _act.relu_forward, _act.relu_backward)
_SOFTMAX = Impl("softmax", _act.softmax_forward, _act.softmax_backward)
_LOG_SOFTMAX = Impl("log_softmax", _act.log_softmax_forward, _act.log_softmax_backward)
_SDPA = Impl("sdpa", _attn.sdpa_forward, _attn.sdpa_backward)
_SDPA_FAST = Impl("sdpa_fast", _attn_fast.sdpa_forward, _attn_fast.sdpa_backward)
# On a GPU: the folded math in one block (one kernel per pass over all the scores).
_SDPA_FAST_GPU = Impl("sdpa_fast_one_block", functools.partial(_attn_fast.sdpa_forward, block=None),
                      _attn_fast.sdpa_backward)
_DROPOUT = Impl("dropout", _drop.dropout_forward, _drop.dropout_backward)
_DROP_PATH = Impl("drop_path", _drop.drop_path_forward, _drop.drop_path_backward)
_XENT = Impl("cross_entropy", _loss.cross_entropy_forward, _loss.cross_entropy_backward)
_LINEAR = Impl("linear", _lin.linear_forward, _lin.linear_backward)
# Fused pairs (kernels/fused.py: the compositions; kernels/fast/fused.py: fewer arrays on NumPy).
_ADD_DROP_PATH = Impl("add_drop_path", _fused.add_drop_path_forward, _fused.add_drop_path_backward)
_ADD_DROP_PATH_FAST = Impl("add_drop_path_fast", _fused_fast.add_drop_path_forward,
                           _fused_fast.add_drop_path_backward)
_LINEAR_GELU = Impl("linear_gelu", _fused.linear_gelu_forward, _fused.linear_gelu_backward)
_LINEAR_GELU_FAST = Impl("linear_gelu_fast", _fused_fast.linear_gelu_forward,
                         _fused_fast.linear_gelu_backward)
# On a GPU: the composition with the CUDA GELU.
_LINEAR_GELU_CUDA = Impl("linear_gelu_cuda",
                         functools.partial(_fused.linear_gelu_forward, gelu=_gelu_cuda.gelu_forward),
                         functools.partial(_fused.linear_gelu_backward,
                                           gelu_grad=_gelu_cuda.gelu_backward))


# A 3x3 stride-1 conv with at least this many input and output channels goes through Winograd's
# F(2x2, 3x3) on NumPy (2.25x fewer multiplies, ~35% less time for CCT's 64 -> 128 conv in the
# training step). Below it the transforms cost more than they save (CCT's 3-channel first conv).
# 0 turns Winograd off. On CuPy the flat im2col always runs: one large GEMM suits a GPU better.
WINOGRAD_MIN_CHANNELS = 16


def conv2d(x, w, stride, padding):
    if _mode == "reference":
        return _CONV
    if (not on_gpu(x) and WINOGRAD_MIN_CHANNELS and _winograd.supported(w, stride)
            and min(w.shape[:2]) >= WINOGRAD_MIN_CHANNELS):
        return _CONV_WINOGRAD
    return _CONV_IM2COL_GPU if on_gpu(x) else _CONV_IM2COL


def max_pool2d(x):
    if fast_gpu(x):
        return _POOL_CUDA
    if fast(x):
        return _POOL_FAST
    return _POOL


def layer_norm(x):
    # On NumPy the reference is the fast one: blocking its rows measured x1.00 in the training step.
    return _NORM_CUDA if fast_gpu(x) else _NORM


def gelu(x, approximate="none"):
    if fast_gpu(x):
        return _GELU_CUDA
    return _GELU_FAST if fast(x) else _GELU


def relu(x):
    return _RELU            # reference everywhere: one maximum and one product already


def softmax(x):
    return _SOFTMAX         # reference everywhere (attention has its own fused softmax)


def log_softmax(x):
    return _LOG_SOFTMAX     # reference everywhere


# On NumPy the folded, cache-blocked attention pays only where an image's (heads, L, S) scores are
# large. Measured in the training step (A/B, one process, 12-16 steps each): CCT-7/3x1 (4 heads,
# 256 tokens: 262,144 scores an image) 4% faster with it; CCT-2/3x2 (2 heads, 64 tokens: 8,192)
# 4% slower, so the reference runs there.
SDPA_FAST_MIN_SCORES = 1 << 16


def sdpa(q, k=None):
    """q: (N, heads, L, D), k: (N, heads, S, D) (None: self-attention, S = L)."""
    if _mode == "reference":
        return _SDPA
    if on_gpu(q):
        return _SDPA_FAST_GPU
    S = q.shape[-2] if k is None else k.shape[-2]
    scores = math.prod(q.shape[1:-1]) * S if q.ndim >= 3 else 0              # heads * L * S
    return _SDPA_FAST if scores >= SDPA_FAST_MIN_SCORES else _SDPA


def dropout(x):
    return _DROPOUT


def drop_path(x):
    return _DROP_PATH


class RandomImpl(NamedTuple):
    """One implementation of the Philox draws (not a forward/backward pair): both take
    (xp, key, stream, base, shape, ...) and make the same numbers (``kernels/philox.py``)."""
    name: str
    uniform: Callable       # (xp, key, stream, base, shape, dtype) -> numbers in [0, 1)
    keep_mask: Callable     # (xp, key, stream, base, shape, p, dtype) -> booleans, P(True) = 1 - p


_PHILOX = RandomImpl("philox", _philox.uniform, _philox.keep_mask)
_PHILOX_FAST = RandomImpl("philox_fast", _philox_fast.uniform, _philox_fast.keep_mask)
_PHILOX_CUDA = RandomImpl("philox_cuda", _philox_cuda.uniform, _philox_cuda.keep_mask)


def philox(xp):
    """The Philox draws for arrays of module xp (numpy or cupy): in fast mode the in-place chunked
    one on NumPy, one fused kernel on CuPy; in reference mode the portable one."""
    if _mode == "reference":
        return _PHILOX
    return _PHILOX_FAST if xp.__name__ == "numpy" else _PHILOX_CUDA


def cross_entropy(logits):
    return _XENT            # reference everywhere: one log-softmax and one product


def adamw_update(p):
    """The AdamW update for parameters p (not a forward/backward pair: one in-place function)."""
    return _adamw_cuda.adamw_update_ if fast_gpu(p) else _adamw.adamw_update_


def matmul(a, b):
    """``a @ b`` for the kernels' matrix products (the product itself, not an Impl: there is no
    backward to pair it with). cuBLAS through ``@`` everywhere, except on a GPU in graph mode
    (``backend.graph_mode``): CuPy refuses to capture cuBLAS calls, so there minicct's own tiled
    GEMM runs (``kernels/cuda/gemm.py``; slower than cuBLAS eagerly, but one graph replays it)."""
    if in_graph_mode() and on_gpu(a):
        return _gemm_cuda.matmul(a, b)
    return a @ b


def row_dots(a, b):
    """a, b: (..., i, j) -> (..., i): sum over j of a * b, without the product array on NumPy
    (``einsum``). On a GPU in graph mode the product and a reduction instead: CuPy's einsum is
    a cuBLAS product, which a capture refuses."""
    if in_graph_mode() and on_gpu(a):
        return (a * b).sum(axis=-1)
    return get_array_module(a).einsum("...ij,...ij->...i", a, b)


def linear(x):
    # Reference in both modes: it is three GEMMs already, nothing to gain from another version.
    return _LINEAR


def add_drop_path(x):
    """x + drop_path(branch) as one op (the residual connection)."""
    return _ADD_DROP_PATH_FAST if fast(x) else _ADD_DROP_PATH


def linear_gelu(x):
    """gelu(linear(x)) as one op (the MLP's first layer); the GELU as ``gelu`` picks it."""
    if fast_gpu(x):
        return _LINEAR_GELU_CUDA
    return _LINEAR_GELU_FAST if fast(x) else _LINEAR_GELU
