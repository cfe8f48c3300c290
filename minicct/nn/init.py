"""Weight initialisation, drawn from one seedable generator.

Every initialiser fills a Parameter's array in place and takes ``generator=`` (a
``numpy.random.Generator``); without one it draws from ``minicct.random``'s init stream, which
``minicct.manual_seed(seed)`` resets. Draws are made on the CPU in float64 and then cast and copied
to the parameter's dtype and device, so a seed gives the same weights on NumPy and on CuPy.

    minicct.manual_seed(0)
    model = minicct.models.create_model("cct_7_3x1_32")   # the same weights every time

The formulas are PyTorch's (``torch.nn.init``), so a model starts from the same distribution as the
official code (not from the same numbers: the two libraries' random streams differ).
"""
from __future__ import annotations

import math

import numpy as np

from minicct import backend
from minicct.random import init_generator


def _fill(tensor, values):
    """Write host ``values`` into the tensor's array, keeping its dtype, device and identity."""
    xp = backend.get_array_module(tensor.data)
    tensor.data[...] = xp.asarray(backend.to_device(values, tensor.device), dtype=tensor.dtype)
    return tensor


def _fans(shape):
    """(fan_in, fan_out) as PyTorch counts them: Linear (out, in) → (in, out);
    Conv (O, C, KH, KW) → (C·KH·KW, O·KH·KW)."""
    if len(shape) < 2:
        raise ValueError(f"fan in/out needs a tensor of at least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def constant_(tensor, value):
    return _fill(tensor, np.full(tensor.shape, value))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    g = generator or init_generator()
    return _fill(tensor, g.uniform(a, b, size=tensor.shape))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    g = generator or init_generator()
    return _fill(tensor, g.normal(mean, std, size=tensor.shape))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Normal(mean, std) redrawn until it lies in [a, b].

    As in PyTorch, ``a`` and ``b`` are absolute values, not multiples of ``std``: the released CCT
    code calls ``trunc_normal_(w, std=.02)`` and so cuts at ±2 = ±100 std, which in practice never
    happens. The point of the name is the distribution, not the cut.
    """
    if not a < b:
        raise ValueError(f"trunc_normal_ needs a < b, got a={a}, b={b}")
    if not a <= mean <= b:
        # Rejection sampling would take forever when the mean lies far outside [a, b].
        raise ValueError(f"trunc_normal_: mean {mean} lies outside [{a}, {b}]")
    g = generator or init_generator()
    out = g.normal(mean, std, size=tensor.shape)
    bad = (out < a) | (out > b)
    while bad.any():
        out[bad] = g.normal(mean, std, size=int(bad.sum()))
        bad = (out < a) | (out > b)
    return _fill(tensor, out)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", generator=None):
    """He initialisation: Normal(0, gain / sqrt(fan)) with gain sqrt(2 / (1 + a²)).

    PyTorch's default (a=0, 'fan_in', leaky_relu gain) is what the CCT tokenizer uses, so for a conv
    (O, C, KH, KW) the std is sqrt(2 / (C·KH·KW)): it keeps the variance of activations through ReLU.
    """
    fan_in, fan_out = _fans(tensor.shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out}[mode]
    std = math.sqrt(2.0 / (1.0 + a * a)) / math.sqrt(fan)
    return normal_(tensor, 0.0, std, generator=generator)


def default_uniform_(weight, bias=None, generator=None):
    """PyTorch's default for Linear and Conv2d: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    (PyTorch writes it as kaiming_uniform_ with a=sqrt(5), which works out to the same bound.)
    """
    fan_in, _ = _fans(weight.shape)
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    uniform_(weight, -bound, bound, generator=generator)
    if bias is not None:
        uniform_(bias, -bound, bound, generator=generator)
