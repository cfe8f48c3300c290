"""Lesson 20 — the Module system: how a model knows its own parameters.

What you will learn
    * why a model needs a registry at all: the optimizer must find every trainable array, a
      checkpoint must give each one a name that survives a restart, and dropout must know whether
      the model is training;
    * registration by assignment: ``self.fc1 = Linear(...)`` goes through ``__setattr__``, which
      files a parameter or a submodule under its name, in the order of assignment;
    * dotted names from the tree (``fc1.weight``), and why the order must come from a dict, never
      from a ``set`` (whose order changes with Python's hash seed, from one run to the next);
    * ``state_dict`` / ``load_state_dict``: a copy out by name, and a copy back in that checks
      everything before it writes anything, into the same arrays (an optimizer keeps its references);
    * ``train()`` / ``eval()``: one flag, set on every module of the tree.

What it builds on
    Lessons 03 (Tensor), 05 (a linear layer), 11 (dropout, train and eval), 14 (weights loaded by
    their official names).

Run it:  python lessons/20_modules.py
"""
import os
import subprocess
import sys

import numpy as np

rng = np.random.default_rng(0)


# --------------------------------------------------------------------------------------------------
print("1. A Module system in plain Python")
# Lessons 12-14 wrote the model as functions of a dict of weights (scratch.py): that works, but every
# caller must know every name. From lesson 14 on we used minicct's models, which are Modules, without
# looking inside. A Module keeps its weights as attributes and finds them itself: assigning a Param
# or a MiniModule to an attribute registers it.
class Param:
    """A trainable array (minicct's Parameter is a Tensor that requires a gradient)."""

    def __init__(self, data):
        self.data = np.asarray(data, dtype=np.float64)


class MiniModule:
    def __init__(self):
        # object.__setattr__: our own __setattr__ below needs these to exist already.
        object.__setattr__(self, "_params", {})      # name -> Param, in the order of assignment
        object.__setattr__(self, "_children", {})    # name -> MiniModule, in the order of assignment
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if isinstance(value, Param):
            self._params[name] = value
        elif isinstance(value, MiniModule):
            self._children[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):   # called only when ordinary lookup fails: look in the registries
        for registry in ("_params", "_children"):
            if name in self.__dict__.get(registry, {}):
                return self.__dict__[registry][name]
        raise AttributeError(name)

    def named_parameters(self, prefix=""):
        """(dotted name, Param): a module's own first, then each child's, recursively."""
        for k, p in self._params.items():
            yield prefix + k, p
        for k, m in self._children.items():
            yield from m.named_parameters(prefix + k + ".")

    def modules(self):
        yield self
        for m in self._children.values():
            yield from m.modules()

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        return {k: p.data.copy() for k, p in self.named_parameters()}

    def load_state_dict(self, state):
        own = dict(self.named_parameters())
        problems = ([f"missing {k}" for k in own if k not in state]
                    + [f"unexpected {k}" for k in state if k not in own]
                    + [f"shape of {k}: {np.shape(state[k])} vs {p.data.shape}" for k, p in own.items()
                       if k in state and np.shape(state[k]) != p.data.shape])
        if problems:                    # all of them at once, and nothing written
            raise KeyError("; ".join(problems))
        for k, p in own.items():
            p.data[...] = state[k]      # into the same array: whoever holds p sees the new values

    def __call__(self, *args):
        return self.forward(*args)


class MiniLinear(MiniModule):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = Param(rng.standard_normal((n_out, n_in)) / np.sqrt(n_in))   # (out, in), as lesson 05
        self.bias = Param(np.zeros(n_out))

    def forward(self, x):
        return x @ self.weight.data.T + self.bias.data


class MiniDropout(MiniModule):
    def __init__(self, p):
        super().__init__()
        self.p = p                      # a plain number: an ordinary attribute, not registered

    def forward(self, x):
        if not self.training:
            return x
        return x * (rng.random(x.shape) >= self.p) / (1 - self.p)


class MiniMLP(MiniModule):
    def __init__(self):
        super().__init__()
        self.fc1 = MiniLinear(4, 8)
        self.drop = MiniDropout(0.5)
        self.fc2 = MiniLinear(8, 3)

    def forward(self, x):
        return self.fc2(self.drop(np.maximum(self.fc1(x), 0)))


mini = MiniMLP()
names = [k for k, _ in mini.named_parameters()]
print(f"   parameters, found by walking the tree: {names}")
assert names == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
assert "p" not in mini._params and mini.drop.p == 0.5 and mini.fc1.weight is mini._children["fc1"]._params["weight"]

# eval() reaches every module: dropout in the middle switches off, and the output is deterministic.
x = rng.standard_normal((5, 4))
mini.eval()
assert not any(m.training for m in mini.modules())
assert np.array_equal(mini(x), mini(x))
mini.train()
assert all(m.training for m in mini.modules()) and not np.array_equal(mini(x), mini(x))
print("   eval() reaches the dropout inside: two eval passes agree, two training passes differ")

# state_dict out, load_state_dict in: same names, same values, into the arrays already there.
other = MiniMLP()
held = other.fc1.weight                       # as an optimizer would hold it
other.load_state_dict(mini.state_dict())
assert other.fc1.weight is held and np.array_equal(held.data, mini.fc1.weight.data)
mini.eval(), other.eval()
assert np.array_equal(other(x), mini(x))
bad = MiniMLP().state_dict()                  # other weights, so a half-done load would show
bad["fc2.bias"] = np.zeros(4)
del bad["fc1.bias"]
before = other.state_dict()
try:
    other.load_state_dict(bad)
    raise AssertionError("a bad state_dict was accepted")
except KeyError as e:
    print(f"   a bad state_dict is refused, every problem named: {e}")
    assert "missing fc1.bias" in str(e) and "shape of fc2.bias" in str(e)
assert all(np.array_equal(before[k], v) for k, v in other.state_dict().items())   # nothing was written


# --------------------------------------------------------------------------------------------------
print("\n2. Why the registries are dicts and not sets")
# An optimizer keeps its moments in a list, one per parameter, in the order parameters() gives;
# a checkpoint may store them that way too. That order must be the same in every run. A dict keeps
# the order of insertion; a set's order depends on the strings' hashes, and Python salts string
# hashes with a random seed per process (PYTHONHASHSEED). Watch a set of our names in a few runs:
code = "print(list({'fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'}))"
orders = set()
for seed in range(8):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONHASHSEED=str(seed))).stdout.strip()
    orders.add(out)
print(f"   8 processes, {len(orders)} different orders of the same set, e.g. {sorted(orders)[0]}")
assert len(orders) > 1
print("   a dict gives the order of assignment in every process:", names)


# --------------------------------------------------------------------------------------------------
print("\n3. minicct.nn.Module: the same ideas, and what it adds")
import minicct
from minicct import nn
from minicct.nn import StateDictError


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.drop(minicct.functional.relu(self.fc1(x))))


model = MLP().double()                         # float64, to compare with our float64 arrays exactly
assert [k for k, _ in model.named_parameters()] == names
assert list(model.state_dict()) == list(mini.state_dict())
print(f"   the same names in the same order: {list(model.state_dict())}")

held = model.fc1.weight
model.load_state_dict(mini.state_dict())       # our weights, loaded by name
assert model.fc1.weight is held                # the same Parameter, new values
model.eval(), mini.eval()
assert not any(m.training for m in model.modules())
assert np.allclose(model(minicct.Tensor(x, dtype=np.float64)).numpy(), mini(x), rtol=1e-12, atol=1e-12)
print("   our weights loaded into minicct's MLP: the same outputs in eval mode")
back = MiniMLP()
back.load_state_dict(model.state_dict())       # and back the other way
back.eval()
assert np.allclose(back(x), mini(x), rtol=1e-12, atol=1e-12)

# The same refusal, all problems listed, nothing written.
before = model.state_dict()
try:
    model.load_state_dict(bad)
    raise AssertionError("a bad state_dict was accepted")
except StateDictError as e:
    assert "fc1.bias" in str(e) and "fc2.bias" in str(e)
    print("   a bad state_dict: StateDictError naming the missing key and the wrong shape")
assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())

# What minicct adds. Buffers: state that is saved but not trained (the sine positional table).
model.register_buffer("table", minicct.Tensor(np.arange(3.0)))
assert "table" in model.state_dict() and "table" not in dict(model.named_parameters())
# Mistakes caught at assignment: a plain array where a parameter lives would silently stop training.
try:
    model.fc1.weight = np.zeros((8, 4))
    raise AssertionError("a plain array replaced a parameter")
except TypeError as e:
    print(f"   assigning a plain array to fc1.weight: TypeError ({str(e)[:60]}...)")


class Forgetful(nn.Module):
    def __init__(self):
        self.fc = nn.Linear(2, 2)              # before super().__init__(): nowhere to register it


try:
    Forgetful()
    raise AssertionError("registration without super().__init__() went unnoticed")
except AttributeError as e:
    assert "super().__init__()" in str(e)
    print("   forgetting super().__init__(): an error that says so")
print("   and more: to(device) moves every parameter and buffer, double()/float() cast them,")
print("   zero_grad(), repr() draws the tree, and state_dict() follows PyTorch's order.")

print("\nAll claims of lesson 20 hold.")
