"""Module: a layer or a model — parameters, buffers and submodules kept in order, by name.

    class TwoLayer(Module):
        def __init__(self):
            super().__init__()
            self.fc1 = Linear(4, 8)       # a submodule: registered under 'fc1'
            self.fc2 = Linear(8, 2)
        def forward(self, x):
            return self.fc2(relu(self.fc1(x)))

    m = TwoLayer()
    [name for name, _ in m.named_parameters()]   # ['fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias']

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it (``__setattr__``); the
registries are plain dicts, so the order is the order of assignment — never a ``set``, whose order
would change with the hash seed and scramble optimizer state and checkpoints.

The names are the ones PyTorch would give the same tree (``tokenizer.conv_layers.0.0.weight``), and
``state_dict()`` lists them in PyTorch's order (a module's own parameters, its buffers, then each
child's), so weights move between minicct and PyTorch by name.
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from minicct import backend
from minicct.autograd.tensor import Tensor
from minicct.errors import StateDictError  # the one definition; raised from here


class Parameter(Tensor):
    """A Tensor that is a learnable weight of a Module: ``requires_grad=True`` unless told otherwise.

    Parameter(data, requires_grad=True, dtype=None). Results of operations on a Parameter are plain
    Tensors; only the leaf itself is a Parameter.
    """

    def __init__(self, data, requires_grad=True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model (see the module docstring).

    Subclasses call ``super().__init__()`` first, assign parameters and submodules as attributes and
    define ``forward``; calling the module calls ``forward``.
    """

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dicts to exist already.
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # ---- registration ---------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() has run: "
                                 f"call super().__init__() first in {type(self).__name__}.__init__")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._forget(name, keep=params)
            params[name] = value  # a reassignment keeps its place in the order
        elif isinstance(value, Module):
            self._forget(name, keep=modules)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to parameter {name!r} of "
                                f"{type(self).__name__}: wrap it in nn.Parameter (or assign None)")
            params[name] = None
        elif name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(value).__name__}")
            buffers[name] = value
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign a {type(value).__name__} to submodule {name!r}")
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Called only when ordinary lookup fails: the registered things live in the three dicts.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def _forget(self, name, keep):
        """Remove ``name`` from every registry but ``keep`` (a name means one thing at a time)."""
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        self.__dict__.pop(name, None)

    def register_parameter(self, name, param):
        """Register a Parameter (or None, for an optional one such as a missing bias)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}) needs a Parameter or None, "
                            f"got {type(param).__name__}")
        self._forget(name, keep=self._parameters)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Register a Tensor that belongs to the module's state but is not trained.

        Buffers move with ``to(device)``; a persistent one is saved in ``state_dict()``. Example: the
        fixed sinusoidal positional table, which is in the released checkpoints under
        ``classifier.positional_emb``.
        """
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer({name!r}) needs a Tensor or None, got {type(tensor).__name__}")
        self._forget(name, keep=self._buffers)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}) needs a Module or None, got {type(module).__name__}")
        self._forget(name, keep=self._modules)
        self._modules[name] = module

    # ---- walking the tree -----------------------------------------------------------------------
    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ('' or ``prefix``) and every descendant, depth first,
        each module once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            kids = [(f"{name}.{k}" if name else k, c) for k, c in m.named_children()]
            stack.extend(reversed(kids))  # reversed: pop them in insertion order

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter), in registration order; a parameter shared by two modules once."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, m in mods:
            for k, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{k}" if mname else k), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, m in mods:
            for k, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{k}" if mname else k), b

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant, children before parents (as PyTorch does)."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ---- modes, devices, dtypes -----------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout and drop-path active) or, with ``mode=False``, evaluation mode."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def _tensors(self):
        """Every parameter and buffer (each once), for the in-place moves below."""
        seen = set()
        for m in self.modules():
            for t in list(m._parameters.values()) + list(m._buffers.values()):
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    yield t

    def to(self, device):
        """Move every parameter, gradient and buffer to ``device`` ('cpu' or 'gpu'), in place.

        The Parameter objects stay the same (only their arrays move), so an optimizer built before
        the move still holds the right objects. Returns self.
        """
        device = backend.check_device(device)
        for t in self._tensors():
            t.data = backend.to_device(t.data, device)
            if t.grad is not None:
                t.grad.data = backend.to_device(t.grad.data, device)
        return self

    def astype(self, dtype):
        """Cast every floating parameter and buffer to ``dtype`` in place (e.g. float64 for gradcheck)."""
        dtype = np.dtype(dtype)
        for t in self._tensors():
            if t.data.dtype.kind == "f":
                t.data = t.data.astype(dtype)
                t.grad = None
        return self

    def double(self):
        return self.astype(np.float64)

    def float(self):
        return self.astype(np.float32)

    def zero_grad(self):
        """Forget every parameter's gradient (``grad = None``: the next backward starts afresh)."""
        for p in self.parameters():
            p.grad = None

    # ---- state ----------------------------------------------------------------------------------
    def _named_state(self, prefix=""):
        """(name, Tensor) in PyTorch's state_dict order: own parameters, own persistent buffers,
        then each child's, recursively."""
        for k, p in self._parameters.items():
            if p is not None:
                yield prefix + k, p
        for k, b in self._buffers.items():
            if b is not None and k not in self._non_persistent:
                yield prefix + k, b
        for k, m in self.named_children():
            yield from m._named_state(prefix + k + ".")

    def state_dict(self):
        """OrderedDict of dotted name → NumPy array (a host copy), parameters and persistent buffers.

        Array layouts are PyTorch's: Linear weight (out, in), Conv2d weight (O, C, KH, KW).
        """
        return OrderedDict((k, t.numpy()) for k, t in self._named_state())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (NumPy, CuPy or Tensors) into the parameters and buffers with the same names.

        Values are cast to each parameter's dtype and copied into its existing array, on its device
        (the Parameter objects, and an optimizer's views of them, stay valid). Nothing is written
        unless everything fits. A shape mismatch is always an error; with ``strict`` so are keys the
        model lacks (unexpected) and keys the dict lacks (missing). The error lists them all by name.
        Returns ``LoadResult(missing_keys, unexpected_keys)``.
        """
        own = OrderedDict(self._named_state())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched, arrays = [], {}
        for k, t in own.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            v = v.data if isinstance(v, Tensor) else v
            v = v if hasattr(v, "shape") else np.asarray(v)
            if tuple(v.shape) != tuple(t.shape):
                mismatched.append(f"{k}: checkpoint {tuple(v.shape)}, model {tuple(t.shape)}")
            else:
                arrays[k] = v
        problems = []
        if mismatched:
            problems.append("shape mismatch for " + "; ".join(mismatched))
        if strict and missing:
            problems.append("missing keys (in the model, not in the state_dict): " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys (in the state_dict, not in the model): " + ", ".join(unexpected))
        if problems:
            raise StateDictError(f"error(s) loading state_dict into {type(self).__name__}:\n  "
                                 + "\n  ".join(problems))
        for k, v in arrays.items():
            t = own[k]
            xp = backend.get_array_module(t.data)
            t.data[...] = xp.asarray(backend.to_device(v, t.device), dtype=t.dtype)
        return LoadResult(missing, unexpected)

    # ---- calling --------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- printing -------------------------------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        kids = [f"({k}): " + repr(m).replace("\n", "\n  ") for k, m in self.named_children()]
        extra = self.extra_repr()
        if not kids:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}(" + (f"{extra}" if extra else "")
        return head + "\n  " + "\n  ".join(kids) + "\n)"


class Sequential(Module):
    """Modules applied one after the other; children are named '0', '1', ... as in PyTorch."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return Sequential(*mods[i]) if isinstance(i, slice) else mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class ModuleList(Module):
    """A list of modules, registered as '0', '1', ... (it has no forward of its own)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        mods = list(self._modules.values())
        return ModuleList(mods[i]) if isinstance(i, slice) else mods[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


def functional_call(module, tensors, *args, **kwargs):
    """Call ``module(*args, **kwargs)`` with some parameters/buffers replaced by other Tensors.

    tensors: dict dotted name → Tensor. The originals are put back afterwards, even on error. This
    is how a gradient check differentiates a whole model with respect to its weights: it passes
    float64 copies that it perturbs, and the model reads them in place of its own.
    """
    slots = []
    for name, t in tensors.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module
        for part in owner_name.split(".") if owner_name else ():
            owner = owner._modules[part]
        registry = owner._parameters if leaf in owner._parameters else owner._buffers
        if leaf not in registry:
            raise KeyError(f"{name!r} is neither a parameter nor a buffer of {type(module).__name__}")
        slots.append((registry, leaf, registry[leaf]))
        registry[leaf] = t
    try:
        return module(*args, **kwargs)
    finally:
        for registry, leaf, original in reversed(slots):
            registry[leaf] = original
