"""Two pairs of operations that always run together in CCT, written as their compositions: the references.

    add_drop_path(x, branch)  = x + drop_path(branch)    the residual connection, with stochastic depth
    linear_gelu(x, w, b)      = gelu(linear(x, w, b))     the first layer of the transformer's MLP

Each is the reference kernels of its parts called one after the other, so it means exactly what
the unfused model computed; ``minicct.functional`` runs it as *one* Function (one graph node
instead of two: less Python per step). ``kernels/fast/fused.py`` computes the same thing with
fewer passes over memory; ``kernels/dispatch.py`` picks.
"""
from __future__ import annotations

from typing import NamedTuple

from minicct.kernels.activation import gelu_forward, gelu_backward
from minicct.kernels.dropout import drop_path_forward, drop_path_backward
from minicct.kernels.linear import linear_forward, linear_backward


def check_same_shape(x, branch):
    if x.shape != branch.shape:
        raise ValueError(f"add_drop_path: the skip x {tuple(x.shape)} and the branch "
                         f"{tuple(branch.shape)} must have the same shape")


def add_drop_path_forward(x, branch, p=0.0, training=True, generator=None):
    """x, branch: (N, ...) -> y = x + drop_path(branch): each sample's branch kept (scaled by
    1/(1-p)) or dropped; the cache is drop_path's mask (None when nothing is dropped)."""
    check_same_shape(x, branch)
    b, m = drop_path_forward(branch, p, training, generator)
    return x + b, m


def add_drop_path_backward(gy, m):
    """gy: shape of x -> (gx, gbranch) = (gy, gy * mask): the skip path passes gy on unchanged."""
    return gy, drop_path_backward(gy, m)


class LinearGeluCache(NamedTuple):
    linear: object        # linear_forward's cache (the input x and the weight)
    gelu: object          # gelu_forward's cache


def linear_gelu_forward(x, w, b=None, approximate="none", gelu=gelu_forward):
    """x: (..., IN), w: (OUT, IN), b: (OUT,) or None -> y = gelu(x @ w.T + b): (..., OUT), cache.
    gelu: the GELU forward to compose with (the reference here; dispatch passes the CUDA one)."""
    h, linear_cache = linear_forward(x, w, b)
    y, gelu_cache = gelu(h, approximate)
    return y, LinearGeluCache(linear_cache, gelu_cache)


def linear_gelu_backward(gy, cache, need_gx=True, need_gw=True, gelu_grad=gelu_backward):
    """gy: (..., OUT) -> (gx, gw, gb) as linear_backward, of the GELU's input gradient.
    gelu_grad: the GELU backward matching the forward's ``gelu``."""
    gh = gelu_grad(gy, cache.gelu)
    return linear_backward(gh, cache.linear, need_gx=need_gx, need_gw=need_gw)
