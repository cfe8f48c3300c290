"""The layers: each holds its parameters and calls one function of ``minicct.functional``.

A layer here does no arithmetic of its own: the math, forward and backward, is in the kernels. A
layer's job is to own the weights (their shapes, PyTorch's layouts and initialisation), remember
its hyper-parameters, and know whether it is training (dropout, drop-path).

A layer does not count its own MACs either: ``minicct.models.count_macs`` watches the functions a
forward pass applies and counts from their arrays' shapes.
"""
from __future__ import annotations

import numpy as np

from minicct import functional as F
from minicct.nn import init
from minicct.nn.module import Module, Parameter


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _empty(*shape):
    return np.zeros(shape, dtype=np.float32)


class Linear(Module):
    """y = x @ weight.T + bias.

    weight: (out_features, in_features) (PyTorch's layout), bias: (out_features,).
    x: (..., in_features) → (..., out_features). Initialised as PyTorch does by default
    (U(±1/sqrt(in_features))); the models re-initialise as the paper's code does.
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(_empty(out_features, in_features))
        self.register_parameter("bias", Parameter(_empty(out_features)) if bias else None)
        init.default_uniform_(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution. weight: (O, C, KH, KW), bias: (O,).

    x: (N, C, H, W) → (N, O, OH, OW) with OH = (H + 2·ph − KH) // sh + 1 (and the same for W).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"Conv2d needs kernel_size >= 1, stride >= 1, padding >= 0; got "
                             f"{self.kernel_size}, {self.stride}, {self.padding}")
        self.weight = Parameter(_empty(out_channels, in_channels, *self.kernel_size))
        self.register_parameter("bias", Parameter(_empty(out_channels)) if bias else None)
        init.default_uniform_(self.weight, self.bias)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def output_size(self, h, w):
        """(OH, OW) for an (h, w) input; ValueError when the kernel does not fit."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"Conv2d kernel {self.kernel_size} with padding {self.padding} does "
                             f"not fit a {h}x{w} input")
        return oh, ow

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class MaxPool2d(Module):
    """Max over k×k windows. x: (N, C, H, W) → (N, C, OH, OW); stride defaults to kernel_size."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        self.padding = _pair(padding, "padding")

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def output_size(self, h, w):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"MaxPool2d window {self.kernel_size} with padding {self.padding} does "
                             f"not fit a {h}x{w} input")
        return oh, ow

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class LayerNorm(Module):
    """Normalise over the last dimension(s), then scale by ``weight`` and shift by ``bias``.

    normalized_shape: int or tuple, the trailing shape normalised over; weight, bias of that shape
    (ones and zeros). x: (..., *normalized_shape) → same shape.
    """

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)
        self.eps = float(eps)
        self.weight = Parameter(np.ones(self.normalized_shape, np.float32))
        self.bias = Parameter(np.zeros(self.normalized_shape, np.float32))

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class _Elementwise(Module):
    """A layer without weights that keeps the shape."""


class Dropout(_Elementwise):
    """Zero each element with probability p and scale the rest by 1/(1-p); identity in eval()."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class DropPath(_Elementwise):
    """Stochastic depth: drop a whole residual branch for some samples of the batch.

    Each sample's branch output is zeroed with probability p and the kept ones scaled by 1/(1-p), so
    the expected output is unchanged; identity in eval(). x: (N, ...) → same shape.
    """

    def __init__(self, p=0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x):
        return F.drop_path(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class ReLU(_Elementwise):
    def forward(self, x):
        return F.relu(x)


class GELU(_Elementwise):
    """The exact GELU, 0.5·x·(1 + erf(x/√2)), as the paper's code uses."""

    def forward(self, x):
        return F.gelu(x)


class Identity(_Elementwise):
    def forward(self, x):
        return x


__all__ = ["Linear", "Conv2d", "MaxPool2d", "LayerNorm", "Dropout", "DropPath", "ReLU", "GELU",
           "Identity"]
