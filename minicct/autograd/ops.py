"""The Tensor's own operations: arithmetic, reductions, shapes, indexing, joining.

Each is a Function with its forward and backward side by side. Gradients may come back in a
broadcast shape; the engine's ``unbroadcast`` sums them to each input's shape.
"""
from __future__ import annotations

import numpy as np

from minicct import backend
from minicct.autograd.function import Function


def _xp(*arrays):
    return backend.get_array_module(*arrays)


# ---- arithmetic --------------------------------------------------------------------------------
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, gy):
        return gy, gy


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, gy):
        return gy, -gy


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, gy):
        a, b = ctx.saved_tensors
        ga = gy * b if ctx.needs_input_grad[0] else None
        gb = gy * a if ctx.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, gy):
        a, b = ctx.saved_tensors
        ga = gy / b if ctx.needs_input_grad[0] else None
        gb = -gy * a / (b * b) if ctx.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, gy):
        return -gy


class Pow(Function):
    """a ** p for a constant exponent p."""

    @staticmethod
    def forward(ctx, a, exponent):
        ctx.save_for_backward(a)
        ctx.p = exponent
        return a ** exponent

    @staticmethod
    def backward(ctx, gy):
        (a,) = ctx.saved_tensors
        return gy * ctx.p * a ** (ctx.p - 1)


class PowTensor(Function):
    """a ** b where both are tensors: d/db = a**b · log a (defined for a > 0)."""

    @staticmethod
    def forward(ctx, a, b):
        y = a ** b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, gy):
        a, b, y = ctx.saved_tensors
        xp = _xp(a)
        ga = gy * b * a ** (b - 1) if ctx.needs_input_grad[0] else None
        gb = gy * y * xp.log(a) if ctx.needs_input_grad[1] else None
        return ga, gb


def _matmul(a, b):
    """a @ b as the kernels' dispatch picks it (cuBLAS, or minicct's GEMM inside a CUDA-graph
    capture). Imported at the call: the engine sits below the kernels and loads without them."""
    from minicct.kernels import dispatch
    return dispatch.matmul(a, b)


class MatMul(Function):
    """Batched matrix product with NumPy's broadcasting over leading axes (both inputs >= 1-D)."""

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul needs arrays of at least 1 dimension, got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul shapes {a.shape} @ {b.shape} do not match: "
                             f"{a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]}")
        ctx.save_for_backward(a, b)
        return _matmul(a, b)

    @staticmethod
    def backward(ctx, gy):
        a, b = ctx.saved_tensors
        xp = _xp(a)
        # Treat 1-D operands as matrices (a row for a, a column for b), as matmul itself does.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = gy
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = _matmul(g2, xp.swapaxes(b2, -1, -2))
            ga = ga.reshape(ga.shape[:-2] + (ga.shape[-1],)) if a.ndim == 1 else ga
        if ctx.needs_input_grad[1]:
            gb = _matmul(xp.swapaxes(a2, -1, -2), g2)
            gb = gb.reshape(gb.shape[:-2] + (gb.shape[-2],)) if b.ndim == 1 else gb
        return ga, gb


# ---- elementwise functions ---------------------------------------------------------------------
class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        y = _xp(a).exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved_tensors
        return gy * y


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return _xp(a).log(a)

    @staticmethod
    def backward(ctx, gy):
        (a,) = ctx.saved_tensors
        return gy / a


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        y = _xp(a).sqrt(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, gy):
        (y,) = ctx.saved_tensors
        return gy / (2 * y)


class Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, gy):
        return gy.astype(ctx.dtype), None


class ToDevice(Function):
    @staticmethod
    def forward(ctx, a, device):
        ctx.device = backend.device_of(a)
        return backend.to_device(a, device)

    @staticmethod
    def backward(ctx, gy):
        return backend.to_device(gy, ctx.device)


# ---- reductions --------------------------------------------------------------------------------
def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(a % ndim for a in axis)


def _expand_reduced(g, in_shape, axes, keepdims):
    """Put back the reduced axes of a gradient (as size 1) so it broadcasts against the input."""
    if not keepdims:
        shape = [1 if i in axes else n for i, n in enumerate(in_shape)]
        g = g.reshape(shape)
    return g


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axes, ctx.keepdims = a.shape, _norm_axes(axis, a.ndim), keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, gy):
        g = _expand_reduced(gy, ctx.shape, ctx.axes, ctx.keepdims)
        return _xp(gy).broadcast_to(g, ctx.shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axes, ctx.keepdims = a.shape, _norm_axes(axis, a.ndim), keepdims
        ctx.count = int(np.prod([a.shape[i] for i in ctx.axes])) if ctx.axes else 1
        return a.mean(axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, gy):
        g = _expand_reduced(gy, ctx.shape, ctx.axes, ctx.keepdims) / ctx.count
        return _xp(gy).broadcast_to(g, ctx.shape)


class Max(Function):
    """Maximum over axes. On ties the gradient is shared equally among the tied elements (the
    subgradient that keeps sum-of-gradients equal to the upstream gradient)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        y = a.max(axis=axis, keepdims=True)
        ctx.axes, ctx.keepdims = _norm_axes(axis, a.ndim), keepdims
        ctx.save_for_backward(a, y)
        return y if keepdims else y.reshape([n for i, n in enumerate(y.shape) if i not in ctx.axes])

    @staticmethod
    def backward(ctx, gy):
        a, y = ctx.saved_tensors
        mask = (a == y).astype(a.dtype)
        mask /= mask.sum(axis=ctx.axes, keepdims=True)
        return mask * _expand_reduced(gy, a.shape, ctx.axes, ctx.keepdims)


# ---- shapes ------------------------------------------------------------------------------------
class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, gy):
        return gy.reshape(ctx.shape)


class Contiguous(Function):
    """The same values, laid out C-contiguous in memory (a copy only when they are not already).

    Backward hands the gradient back in the input's memory order, so the operations before it
    (which were fast on that order) get their gradients in it too."""

    @staticmethod
    def forward(ctx, a):
        xp = _xp(a)
        ctx.order = backend.memory_order(a)
        return xp.ascontiguousarray(a)

    @staticmethod
    def backward(ctx, gy):
        order = ctx.order
        if order == tuple(range(gy.ndim)):
            return gy
        gx = backend.empty_in_order(_xp(gy), gy.shape, gy.dtype, order)
        gx[...] = gy
        return gx


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes):
        if sorted(a_ % a.ndim for a_ in axes) != list(range(a.ndim)):
            raise ValueError(f"axes {axes} are not a permutation of the {a.ndim} axes of shape {a.shape}")
        ctx.axes = tuple(x % a.ndim for x in axes)
        return a.transpose(ctx.axes)

    @staticmethod
    def backward(ctx, gy):
        return gy.transpose(np.argsort(ctx.axes))


class GetItem(Function):
    """Indexing and slicing. Basic slices write the gradient straight back; advanced (integer
    array) indices may repeat an element, so their gradients are added with a scatter-add."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, gy):
        xp = _xp(gy)
        g = xp.zeros(ctx.shape, dtype=gy.dtype)
        idx = ctx.index if isinstance(ctx.index, tuple) else (ctx.index,)
        advanced = any(not (isinstance(i, (slice, int, type(None), type(Ellipsis))) or np.isscalar(i))
                       for i in idx)
        if advanced:
            backend.scatter_add(g, ctx.index, gy)
        else:
            g[ctx.index] = gy
        return g


class Concatenate(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = _xp(*arrays)
        ctx.axis = axis % arrays[0].ndim
        ctx.bounds = np.cumsum([a.shape[ctx.axis] for a in arrays])[:-1]
        return xp.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, gy):
        return tuple(_xp(gy).split(gy, ctx.bounds, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = _xp(*arrays)
        ctx.axis = axis % (arrays[0].ndim + 1)
        return xp.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, gy):
        n = gy.shape[ctx.axis]
        return tuple(gy.take(i, axis=ctx.axis) for i in range(n))


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis (gradients split back)."""
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Join tensors along a new axis."""
    return Stack.apply(*tensors, axis=axis)
