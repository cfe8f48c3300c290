"""Function: one differentiable operation, written on raw arrays.

A Function subclass defines

    @staticmethod
    def forward(ctx, *args, **kwargs) -> array          # Tensor args arrive as raw arrays
    @staticmethod
    def backward(ctx, gy) -> tuple of arrays or None    # one gradient per positional arg

and is called as ``MyFn.apply(*args, **kwargs)``, which unwraps Tensors, runs ``forward``, wraps the
result in a Tensor and, when a gradient is needed, records the node in the graph. ``backward``
may return a gradient of a broadcast shape: the engine sums it back to the input's shape
(``unbroadcast``), the one place where broadcasting is undone.
"""
from __future__ import annotations

import contextlib

from minicct.backend import DeviceError
from minicct.autograd import grad_mode

# Watchers of every operation (see ``observe``). Empty, as it almost always is, it costs one test
# per operation; ``minicct.models.count_macs`` fills it for the length of one forward pass.
_observers = []


@contextlib.contextmanager
def observe(fn):
    """Inside the ``with`` block, call ``fn(cls, args, out)`` after each Function applied: ``cls``
    the Function, ``args`` the raw arrays and values its forward received, ``out`` its raw result."""
    _observers.append(fn)
    try:
        yield
    finally:
        _observers.remove(fn)


class Context:
    """What a Function's forward leaves for its backward.

    ``save_for_backward(*arrays)`` / ``saved_tensors``, ``needs_input_grad`` (one bool per
    positional arg of forward), and any attribute forward chooses to set.
    """

    def __init__(self):
        self.saved_tensors = ()
        self.needs_input_grad = ()
        self.parents = ()   # the Tensor inputs' graph nodes (None for non-Tensor args), in order
        self.fn = None      # the Function class, for backward

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays

    def release(self):
        """Drop every reference forward left here, so the graph's memory can be freed."""
        self.__dict__.clear()


class Function:
    """Base class of every differentiable operation (see the module docstring)."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, gy):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        from minicct.autograd.tensor import Tensor

        device = None
        raw = []
        for a in args:
            if isinstance(a, Tensor):
                if device is None:
                    device = a.device
                elif a.device != device:
                    raise DeviceError(
                        f"{cls.__name__} got tensors on different devices ({device} and "
                        f"{a.device}): move them to one device first with .to('{device}')")
                raw.append(a.data)
            else:
                raw.append(a)

        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = grad_mode.is_grad_enabled() and any(needs)
        ctx = Context()
        ctx.needs_input_grad = needs
        out = cls.forward(ctx, *raw, **kwargs)
        for fn in _observers:
            fn(cls, raw, out)
        t = Tensor._wrap(out, requires_grad=record)
        if record:
            # The inputs as graph nodes: leaves themselves, computed tensors by a stand-in that
            # does not hold their array (Tensor._graph_node).
            ctx.parents = tuple(a._graph_node() if isinstance(a, Tensor) else None for a in args)
            ctx.fn = cls
            t._ctx = ctx
        return t
