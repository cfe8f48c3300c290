"""Tensor: an array (NumPy or CuPy) that remembers how it was made, so it can be differentiated.

Each Tensor made by a Function keeps that Function's context in ``_ctx`` (its inputs and what
forward saved). ``backward()`` walks this graph from the output to the leaves in reverse
topological order and adds each gradient into the leaves' ``.grad``.
"""
from __future__ import annotations

import numpy as np

from minicct import backend
from minicct.autograd import grad_mode


def _coerce_dtype(arr, dtype):
    """The dtype policy: floats become float32 unless a dtype is asked for; ints and bools stay."""
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    kind = arr.dtype.kind
    if kind == "f":
        return arr.astype(np.float32, copy=False)
    if kind in "iub":
        return arr
    raise TypeError(f"Tensor cannot hold dtype {arr.dtype}: use float, integer or bool data")


def unbroadcast(g, shape):
    """Sum a gradient of a broadcast shape back to ``shape`` (the one place broadcasting is undone).

    g: the gradient of an op's output, shape broadcast(shape, other). Leading axes that
    broadcasting added are summed away; axes where ``shape`` has 1 are summed with keepdims.
    """
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"gradient of shape {g.shape} cannot be reduced to input shape {shape}")
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if g.shape != shape:
        raise ValueError(f"gradient of shape {g.shape} does not match input shape {shape}: "
                         "a Function's backward returned a wrong shape")
    return g


class Tensor:
    """An n-dimensional array on 'cpu' (NumPy) or 'gpu' (CuPy), with automatic differentiation.

        Tensor(data, requires_grad=False, device=None, dtype=None)

    data: a Tensor, array, list or scalar. Float data becomes float32 unless ``dtype`` is given;
    integer and bool data keep their type (labels). ``device`` defaults to where ``data`` lives
    (a CuPy array stays on the GPU) and otherwise to $MINICCT_DEVICE ('cpu' when unset).
    The array is shared, not copied, when no conversion is needed.
    """

    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__, not NumPy's loop

    def __init__(self, data, requires_grad=False, device=None, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        if device is None:
            device = backend.device_of(data) if backend.is_gpu_array(data) else backend.default_device()
        else:
            device = backend.check_device(device)
        if not backend.is_gpu_array(data) and not isinstance(data, np.ndarray):
            data = np.asarray(data)
        arr = _coerce_dtype(backend.to_device(data, device), dtype)
        self.data = arr
        self.grad = None
        self._ctx = None
        self._freed = False  # True once backward() has released the graph that made this tensor
        self.requires_grad = False
        self.requires_grad_(requires_grad)

    @classmethod
    def _wrap(cls, arr, requires_grad=False):
        """A Tensor around an array as it is: no copy, no dtype policy (used by Functions)."""
        t = cls.__new__(cls)
        t.data = arr
        t.grad = None
        t._ctx = None
        t._freed = False
        t.requires_grad = requires_grad
        return t

    def _graph_node(self):
        """What a graph records when this tensor is the input of a Function.

        A leaf: the tensor itself (backward adds into its ``.grad``). A computed tensor: a stand-in
        made once, sharing its ``_ctx`` (the Function that computed it) but not its array -- its
        data is one element broadcast to the shape. So the graph keeps an intermediate result
        alive only where a Function saved it for backward, as PyTorch's graph holds nodes rather
        than tensors: a ReLU's input, say, is freed as soon as the forward pass lets go of it.
        """
        if self._ctx is None:
            return self
        node = getattr(self, "_node", None)
        if node is None:
            node = Tensor._wrap(_stand_in(self.data), requires_grad=True)
            node._ctx = self._ctx
            self._node = node
        return node

    def requires_grad_(self, flag=True):
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only float tensors can require gradients (this one is {self.data.dtype})")
        self.requires_grad = bool(flag)
        return self

    # ---- what it is ---------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='gpu'" if self.device == "gpu" else ""
        body = np.array2string(self.numpy(), precision=4, threshold=20, prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{dev}{grad})"

    def numpy(self) -> np.ndarray:
        """A host NumPy copy of the data (changing it never changes the tensor)."""
        return np.array(backend.to_numpy(self.data), copy=True)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor._wrap(self.data)

    def to(self, device) -> "Tensor":
        """This tensor on another device ('cpu' or 'gpu'); itself when already there.
        Gradients flow back across the move."""
        device = backend.check_device(device)
        if device == self.device:
            return self
        return ops.ToDevice.apply(self, device=device)

    def astype(self, dtype) -> "Tensor":
        return ops.Cast.apply(self, dtype=np.dtype(dtype))

    # ---- backpropagation ----------------------------------------------------------------------
    def backward(self, grad=None):
        """Add d(self)/d(leaf) · grad into every leaf's ``.grad``.

        grad: the upstream gradient (defaults to 1 for a one-element tensor). The graph behind
        ``self`` is released afterwards, so its memory is freed and it cannot be walked twice.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: no input of the "
                               "computation had requires_grad=True (or it ran under no_grad())")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward() without a gradient needs a one-element output, got "
                                 f"shape {self.shape}: pass grad= of that shape")
            g = xp.ones_like(self.data)
        else:
            g = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if g.shape != self.shape:
                raise ValueError(f"grad has shape {g.shape}, the tensor has shape {self.shape}")

        _backpropagate(self, g, on_leaf=Tensor._accumulate)

    def _topological_order(self):
        """Tensors reachable from self that need a gradient, each after everything that uses it.

        Iterative depth-first search (a deep graph must not hit Python's recursion limit): a node
        is emitted when all its inputs have been emitted; reversing gives output-first order.
        """
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            t, inputs_done = stack.pop()
            if inputs_done:
                order.append(t)
                continue
            if id(t) in visited:
                continue
            if t._freed:
                raise RuntimeError(
                    "backward() reached a graph that an earlier backward() already freed: run the "
                    "forward computation again before calling backward() a second time")
            visited.add(id(t))
            stack.append((t, True))
            if t._ctx is not None:
                for p in t._ctx.parents:
                    if p is not None and p.requires_grad and id(p) not in visited:
                        stack.append((p, False))
        order.reverse()
        return order

    def _accumulate(self, g):
        if g.dtype != self.data.dtype:
            g = g.astype(self.data.dtype)
        if self.grad is None:
            # Copy: the same array may have been handed to several inputs (e.g. by add).
            xp = backend.get_array_module(g)
            self.grad = Tensor._wrap(xp.array(g, copy=True))
        else:
            self.grad.data += g

    def zero_grad(self):
        self.grad = None

    # ---- arithmetic (NumPy broadcasting) ------------------------------------------------------
    def _lift(self, other):
        """Python scalars and arrays as constant tensors on this tensor's device and float dtype."""
        if isinstance(other, Tensor):
            return other
        xp = backend.get_array_module(self.data)
        if backend.is_gpu_array(other) or isinstance(other, np.ndarray) or self.dtype.kind == "f":
            arr = backend.to_device(other, self.device) if not np.isscalar(other) else other
            if self.dtype.kind == "f":
                arr = xp.asarray(arr, dtype=self.dtype)
            else:
                arr = xp.asarray(arr)
        else:
            arr = xp.asarray(other)
        return Tensor._wrap(arr)

    def __add__(self, o): return ops.Add.apply(self, self._lift(o))
    def __radd__(self, o): return ops.Add.apply(self._lift(o), self)
    def __sub__(self, o): return ops.Sub.apply(self, self._lift(o))
    def __rsub__(self, o): return ops.Sub.apply(self._lift(o), self)
    def __mul__(self, o): return ops.Mul.apply(self, self._lift(o))
    def __rmul__(self, o): return ops.Mul.apply(self._lift(o), self)
    def __truediv__(self, o): return ops.Div.apply(self, self._lift(o))
    def __rtruediv__(self, o): return ops.Div.apply(self._lift(o), self)
    def __neg__(self): return ops.Neg.apply(self)
    def __matmul__(self, o): return ops.MatMul.apply(self, self._lift(o))
    def __rmatmul__(self, o): return ops.MatMul.apply(self._lift(o), self)

    def __pow__(self, o):
        if isinstance(o, Tensor):
            return ops.PowTensor.apply(self, o)
        return ops.Pow.apply(self, exponent=o)

    def __rpow__(self, o):
        return ops.PowTensor.apply(self._lift(o), self)

    # Comparisons give bool tensors outside the graph (masks, accuracy). __eq__ is left alone so
    # tensors stay hashable by identity.
    def __lt__(self, o): return Tensor._wrap(self.data < _raw(o))
    def __le__(self, o): return Tensor._wrap(self.data <= _raw(o))
    def __gt__(self, o): return Tensor._wrap(self.data > _raw(o))
    def __ge__(self, o): return Tensor._wrap(self.data >= _raw(o))

    # ---- reductions and elementwise functions -------------------------------------------------
    def sum(self, axis=None, keepdims=False): return ops.Sum.apply(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return ops.Mean.apply(self, axis=axis, keepdims=keepdims)
    def max(self, axis=None, keepdims=False): return ops.Max.apply(self, axis=axis, keepdims=keepdims)
    def exp(self): return ops.Exp.apply(self)
    def log(self): return ops.Log.apply(self)
    def sqrt(self): return ops.Sqrt.apply(self)

    def argmax(self, axis=None):
        return Tensor._wrap(self.data.argmax(axis=axis))

    # ---- shape ---------------------------------------------------------------------------------
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.Reshape.apply(self, shape=shape)

    def flatten(self, start_dim=0, end_dim=-1):
        nd = self.ndim
        s, e = start_dim % nd if nd else 0, end_dim % nd if nd else 0
        new = self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:]
        return self.reshape(new)

    def unsqueeze(self, dim):
        dim = dim if dim >= 0 else self.ndim + 1 + dim
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def transpose(self, *axes):
        """With two axes, swap them (PyTorch's transpose); with all axes or none, permute (NumPy's)."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if len(axes) == 2 and self.ndim != 2:
            return self.swapaxes(*axes)
        if len(axes) == 0:
            axes = tuple(reversed(range(self.ndim)))
        return ops.Transpose.apply(self, axes=tuple(axes))

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return ops.Transpose.apply(self, axes=tuple(axes))

    def contiguous(self):
        """The same values laid out C-contiguous in memory (PyTorch's name); self if they are."""
        if self.data.flags.c_contiguous:
            return self
        return ops.Contiguous.apply(self)

    def swapaxes(self, a, b):
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return ops.Transpose.apply(self, axes=tuple(axes))

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        return ops.GetItem.apply(self, index=_raw_index(index))


_ONE = {}   # dtype -> a one-element NumPy array that every CPU stand-in of that dtype views


def _stand_in(a):
    """An array with a's shape and dtype over a single element (all strides 0): what a graph
    node needs to know of a computed tensor, for almost no memory. (np.ndarray directly: this
    runs for every recorded input, and broadcast_to costs ten times more.)"""
    if backend.is_gpu_array(a):
        xp = backend.get_array_module(a)
        return xp.broadcast_to(xp.empty((), a.dtype), a.shape)
    one = _ONE.get(a.dtype)
    if one is None:
        one = _ONE[a.dtype] = np.zeros(1, a.dtype)
    return np.ndarray(a.shape, a.dtype, buffer=one, strides=(0,) * a.ndim)


def _backpropagate(root, g, on_leaf=None, capture=None):
    """Walk the graph behind ``root`` from the output to the leaves, with d(root) = ``g``.

    on_leaf(t, g): called once with each leaf's total gradient (``backward`` accumulates it).
    capture: optional dict id(graph node) -> None, filled with the total gradient of those nodes
    (``t._graph_node()``: leaves or not) as the walk reaches them (``grad``). The graph is freed
    as it is walked.
    """
    start = root._graph_node()
    order = start._topological_order()
    grads = {id(start): g}
    for t in order:
        g = grads.pop(id(t), None)
        if capture is not None and id(t) in capture:
            capture[id(t)] = g
        ctx = t._ctx
        if ctx is None:  # a leaf
            if g is not None and on_leaf is not None:
                on_leaf(t, g)
            continue
        if g is not None:
            gxs = ctx.fn.backward(ctx, g)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            if len(gxs) != len(ctx.parents):
                raise RuntimeError(f"{ctx.fn.__name__}.backward returned {len(gxs)} gradients "
                                   f"for {len(ctx.parents)} inputs")
            for p, gx in zip(ctx.parents, gxs):
                if p is None or gx is None or not p.requires_grad:
                    continue
                gx = unbroadcast(gx, p.shape)
                key = id(p)
                grads[key] = grads[key] + gx if key in grads else gx
        # Free the graph as we go: this node's saved arrays and its links to its inputs.
        ctx.release()
        t._ctx = None
        t._freed = True
    if start is not root:
        root._ctx = None
        root._freed = True


def grad(output, inputs, grad_output=None):
    """d(output)/d(input) · grad_output for each of ``inputs``, *returned* instead of added to
    their ``.grad`` (PyTorch's ``torch.autograd.grad``). No ``.grad`` anywhere is touched.

    output: a Tensor (one element, unless grad_output is given); inputs: Tensors on its graph
    (leaves or intermediate results); grad_output: the upstream gradient (array, Tensor or number).
    Returns a list of Tensors (None for an input the output does not depend on). The arrays may
    share memory with each other (an addition hands one gradient to both its inputs): copy one
    before writing into it. The graph is freed, as by ``backward()``.

    Used where several threads backpropagate through one model at once (``minicct.parallel``):
    each gets its own gradients and nothing is written to the shared parameters.
    """
    if not output.requires_grad:
        raise RuntimeError("grad() of a tensor that does not require grad")
    xp = backend.get_array_module(output.data)
    if grad_output is None:
        if output.data.size != 1:
            raise ValueError(f"grad() without grad_output needs a one-element output, got shape {output.shape}")
        g = xp.ones_like(output.data)
    else:
        g = grad_output.data if isinstance(grad_output, Tensor) else \
            xp.asarray(grad_output, dtype=output.dtype)
        g = xp.broadcast_to(g, output.shape) if g.shape != output.shape else g
    nodes = [t._graph_node() for t in inputs]
    capture = {id(n): None for n in nodes}
    _backpropagate(output, g, capture=capture)
    return [None if capture[id(n)] is None else Tensor._wrap(capture[id(n)]) for n in nodes]


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def _raw_index(index):
    """Indices may hold Tensors (integer or bool): use their arrays."""
    if isinstance(index, tuple):
        return tuple(_raw(i) for i in index)
    return _raw(index)


from minicct.autograd import ops  # noqa: E402  (ops needs Tensor defined first)
