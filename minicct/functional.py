"""The kernels as differentiable functions, under PyTorch's names and argument orders.

    import minicct.functional as F
    y = F.conv2d(x, w, padding=1)          # x, w: Tensors; y: Tensor on the graph

Each Function below is a thin wrapper: forward asks ``kernels.dispatch`` which version of the op
to run (the reference, a fast NumPy one, a CUDA one), keeps that ``Impl`` and its cache on
``ctx`` and returns the output; backward calls the same Impl's backward on the raw arrays and
returns one gradient per positional argument (None where there is none). The math lives in
``minicct/kernels``.
"""
from __future__ import annotations

from minicct.autograd import Function, Tensor
from minicct.backend import get_array_module
from minicct.kernels import dispatch
from minicct.kernels.dropout import check_p

__all__ = ["conv2d", "max_pool2d", "layer_norm", "softmax", "log_softmax", "gelu", "relu", "linear",
           "dropout", "drop_path", "scaled_dot_product_attention", "multi_head_attention",
           "cross_entropy", "linear_gelu", "add_drop_path"]


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride=1, padding=0):
        ctx.impl = dispatch.conv2d(x, w, stride, padding)
        y, ctx.cache = ctx.impl.forward(x, w, b, stride, padding)
        return y

    @staticmethod
    def backward(ctx, gy):
        need_gx, need_gw, _ = ctx.needs_input_grad
        return ctx.impl.backward(gy, ctx.cache, need_gx=need_gx, need_gw=need_gw)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """x: (N, C, H, W), weight: (O, C, KH, KW), bias: (O,) -> (N, O, OH, OW). stride, padding:
    int or (h, w). The output is channels-last in memory (kernels/conv.py; in fast mode
    kernels/fast/ explains its layout)."""
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding)


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride=None, padding=0):
        ctx.impl = dispatch.max_pool2d(x)
        y, ctx.cache = ctx.impl.forward(x, kernel_size, stride, padding)
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.cache)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """x: (N, C, H, W) -> (N, C, OH, OW); stride defaults to kernel_size; padding <= kernel/2."""
    return MaxPool2d.apply(x, kernel_size=kernel_size, stride=stride, padding=padding)


class LayerNorm(Function):
    @staticmethod
    def forward(ctx, x, w, b, normalized_shape, eps=1e-5):
        ctx.impl = dispatch.layer_norm(x)
        y, ctx.cache = ctx.impl.forward(x, normalized_shape, w, b, eps)
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.cache)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """x: (..., *normalized_shape); weight, bias: normalized_shape -> shape of x."""
    return LayerNorm.apply(x, weight, bias, normalized_shape=normalized_shape, eps=eps)


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, dim=-1):
        ctx.impl = dispatch.softmax(x)
        y, ctx.y = ctx.impl.forward(x, dim)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.y, ctx.dim)


def softmax(x, dim=-1):
    """Softmax along ``dim``; x: any shape."""
    return Softmax.apply(x, dim=dim)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, dim=-1):
        ctx.impl = dispatch.log_softmax(x)
        z, ctx.z = ctx.impl.forward(x, dim)
        ctx.dim = dim
        return z

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.z, ctx.dim)


def log_softmax(x, dim=-1):
    """log(softmax(x)) along ``dim``, computed stably; x: any shape."""
    return LogSoftmax.apply(x, dim=dim)


class Gelu(Function):
    @staticmethod
    def forward(ctx, x, approximate="none"):
        ctx.impl = dispatch.gelu(x, approximate)
        y, ctx.cache = ctx.impl.forward(x, approximate)
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.cache)


def gelu(x, approximate="none"):
    """x * Phi(x) (exact, through erf); approximate='tanh' for the tanh formula."""
    return Gelu.apply(x, approximate=approximate)


class Relu(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.impl = dispatch.relu(x)
        y, ctx.y = ctx.impl.forward(x)
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.y)


def relu(x):
    """max(x, 0) elementwise."""
    return Relu.apply(x)


class Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.impl = dispatch.linear(x)
        y, ctx.cache = ctx.impl.forward(x, w, b)
        return y

    @staticmethod
    def backward(ctx, gy):
        need_gx, need_gw, _ = ctx.needs_input_grad
        return ctx.impl.backward(gy, ctx.cache, need_gx=need_gx, need_gw=need_gw)


def linear(x, weight, bias=None):
    """x: (..., IN), weight: (OUT, IN), bias: (OUT,) -> (..., OUT) = x @ weight.T + bias."""
    return Linear.apply(x, weight, bias)


def _is_identity(x, p, training, name):
    """True when dropout / drop_path would hand x back unchanged and x is already a Tensor."""
    check_p(p, name)
    return isinstance(x, Tensor) and (not training or p == 0.0)


class LinearGelu(Function):
    @staticmethod
    def forward(ctx, x, w, b, approximate="none"):
        ctx.impl = dispatch.linear_gelu(x)
        y, ctx.cache = ctx.impl.forward(x, w, b, approximate)
        return y

    @staticmethod
    def backward(ctx, gy):
        need_gx, need_gw, _ = ctx.needs_input_grad
        return ctx.impl.backward(gy, ctx.cache, need_gx=need_gx, need_gw=need_gw)


def linear_gelu(x, weight, bias=None, approximate="none"):
    """gelu(linear(x, weight, bias)) as one Function (the transformer MLP's first layer).
    x: (..., IN), weight: (OUT, IN), bias: (OUT,) -> (..., OUT)."""
    return LinearGelu.apply(x, weight, bias, approximate=approximate)


class Dropout(Function):
    @staticmethod
    def forward(ctx, x, p=0.5, training=True, generator=None):
        ctx.impl = dispatch.dropout(x)
        y, ctx.mask = ctx.impl.forward(x, p, training, generator)
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.mask)


def dropout(x, p=0.5, training=True, generator=None):
    """Zero each element with probability p and scale the rest by 1/(1-p); identity when not
    training. generator: optional numpy Generator (else ``minicct.random``'s dropout stream).
    When nothing can be dropped (eval mode, or p = 0 as in CCT's MLP) a Tensor comes back as it
    is: no Function, no graph node, nothing for backward to walk."""
    if _is_identity(x, p, training, "dropout"):
        return x
    return Dropout.apply(x, p=p, training=training, generator=generator)


class DropPath(Function):
    @staticmethod
    def forward(ctx, x, p=0.0, training=False, generator=None):
        ctx.impl = dispatch.drop_path(x)
        y, ctx.mask = ctx.impl.forward(x, p, training, generator)
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.mask)


def drop_path(x, p=0.0, training=False, generator=None):
    """Stochastic depth: x: (N, ...); each sample zeroed with probability p, survivors scaled by
    1/(1-p). Defaults as the official CCT's drop_path (p=0, training=False). The identity (eval
    mode or p = 0) returns a Tensor x itself, as ``dropout`` does."""
    if _is_identity(x, p, training, "drop_path"):
        return x
    return DropPath.apply(x, p=p, training=training, generator=generator)


class AddDropPath(Function):
    @staticmethod
    def forward(ctx, x, branch, p=0.0, training=False, generator=None):
        ctx.impl = dispatch.add_drop_path(x)
        y, ctx.mask = ctx.impl.forward(x, branch, p, training, generator)
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.mask)


def add_drop_path(x, branch, p=0.0, training=False, generator=None):
    """The residual connection with stochastic depth, x + drop_path(branch, p, training), as one
    Function. x, branch: (N, ...), the same shape -> (N, ...); the mask is drawn as drop_path's."""
    return AddDropPath.apply(x, branch, p=p, training=training, generator=generator)


class ScaledDotProductAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, dropout_p=0.0, training=True, generator=None, key_mask=None):
        ctx.impl = dispatch.sdpa(q, k)
        y, ctx.cache = ctx.impl.forward(q, k, v, dropout_p, training, generator, key_mask=key_mask)
        return y

    @staticmethod
    def backward(ctx, gy):
        return ctx.impl.backward(gy, ctx.cache)


def scaled_dot_product_attention(q, k, v, dropout_p=0.0, training=True, generator=None,
                                 key_mask=None):
    """q: (N, heads, L, D), k, v: (N, heads, S, D) -> softmax(q k^T / sqrt(D)) v: (N, heads, L, D).
    dropout_p drops attention weights (training only). key_mask: None or booleans (N, S), an
    array (not a Tensor): False keys (padding) get attention weight 0."""
    return ScaledDotProductAttention.apply(q, k, v, dropout_p=dropout_p, training=training,
                                           generator=generator, key_mask=key_mask)


class _HeadsAttention(Function):
    """(N, L, 3C) packed q|k|v -> split into heads, attend, merge heads -> (N, L, C).

    The split is the official CCT ``Attention``'s: reshape(N, L, 3, heads, D).permute(2, 0, 3, 1, 4),
    so a PyTorch ``qkv.weight`` (3C, C) loads unchanged.
    """

    @staticmethod
    def forward(ctx, qkv, num_heads, dropout_p=0.0, training=True, generator=None, key_mask=None):
        N, L, C3 = qkv.shape
        C = C3 // 3
        q, k, v = qkv.reshape(N, L, 3, num_heads, C // num_heads).transpose(2, 0, 3, 1, 4)
        ctx.impl = dispatch.sdpa(q, k)
        out, ctx.cache = ctx.impl.forward(q, k, v, dropout_p, training, generator, key_mask=key_mask)
        ctx.q_shape = q.shape
        return out.transpose(0, 2, 1, 3).reshape(N, L, C)     # (N, heads, L, D) -> (N, L, C)

    @staticmethod
    def backward(ctx, gy):
        N, H, L, D = ctx.q_shape
        xp = get_array_module(gy)
        gq, gk, gv = ctx.impl.backward(gy.reshape(N, L, H, D).transpose(0, 2, 1, 3), ctx.cache)
        g = xp.empty((N, L, 3, H, D), dtype=gy.dtype)
        for i, gi in enumerate((gq, gk, gv)):
            g[:, :, i] = gi.transpose(0, 2, 1, 3)
        return g.reshape(N, L, 3 * H * D)


def multi_head_attention(x, qkv_weight, proj_weight, proj_bias, num_heads, attn_drop=0.0,
                         proj_drop=0.0, training=True, generator=None, key_mask=None):
    """The paper's self-attention (official CCT ``Attention``).

    x: (N, L, C), qkv_weight: (3C, C) (no bias), proj_weight: (C, C), proj_bias: (C,) or None
    -> (N, L, C) = dropout(proj(attention(split_heads(x @ qkv_weight.T)))).
    key_mask: None or booleans (N, L): False tokens (padding) are never attended to.
    """
    if x.ndim != 3:
        raise ValueError(f"multi_head_attention: x must be (N, L, C), got shape {tuple(x.shape)}")
    N, L, C = x.shape
    if num_heads <= 0 or C % num_heads:
        raise ValueError(f"multi_head_attention: num_heads={num_heads} must divide the width C={C}")
    if tuple(qkv_weight.shape) != (3 * C, C):
        raise ValueError(f"multi_head_attention: qkv_weight must be (3C, C) = {(3 * C, C)}, "
                         f"got {tuple(qkv_weight.shape)}")
    if tuple(proj_weight.shape) != (C, C):
        raise ValueError(f"multi_head_attention: proj_weight must be (C, C) = {(C, C)}, "
                         f"got {tuple(proj_weight.shape)}")
    qkv = linear(x, qkv_weight)
    y = _HeadsAttention.apply(qkv, num_heads=num_heads, dropout_p=attn_drop, training=training,
                              generator=generator, key_mask=key_mask)
    y = linear(y, proj_weight, proj_bias)
    return dropout(y, proj_drop, training, generator)


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx, logits, target, label_smoothing=0.0):
        ctx.impl = dispatch.cross_entropy(logits)
        loss, ctx.cache = ctx.impl.forward(logits, target, label_smoothing)
        return loss

    @staticmethod
    def backward(ctx, gy):
        need_gz, need_gt = ctx.needs_input_grad
        return ctx.impl.backward(gy, ctx.cache, need_gz=need_gz, need_gt=need_gt)


def cross_entropy(logits, target, label_smoothing=0.0):
    """logits: (N, C); target: (N,) integer class indices or (N, C) probabilities -> mean loss ().
    label_smoothing eps: target becomes (1 - eps) target + eps / C, as PyTorch."""
    return CrossEntropy.apply(logits, target, label_smoothing=label_smoothing)
