"""The functional API: PyTorch's names and argument orders, Tensors in and out, gradients only
where asked for, and a deliberately broken backward that gradcheck must catch."""
import numpy as np
import pytest

import minicct
import minicct.functional as F
from minicct import Function, GradcheckError, Tensor, gradcheck
from minicct.kernels import conv2d_forward, softmax_forward


def test_positional_argument_orders(rng):
    x = Tensor(rng.standard_normal((2, 3, 8, 8)))
    w = Tensor(rng.standard_normal((4, 3, 3, 3)))
    b = Tensor(rng.standard_normal(4))
    assert F.conv2d(x, w, b, 2, 1).shape == (2, 4, 4, 4)
    assert F.max_pool2d(x, 3, 2, 1).shape == (2, 3, 4, 4)
    t = Tensor(rng.standard_normal((2, 5, 6)))
    assert F.layer_norm(t, (6,), Tensor(np.ones(6)), Tensor(np.zeros(6)), 1e-5).shape == (2, 5, 6)
    assert F.linear(t, Tensor(np.ones((3, 6))), Tensor(np.zeros(3))).shape == (2, 5, 3)
    assert F.softmax(t, 1).shape == F.log_softmax(t, 0).shape == (2, 5, 6)
    assert F.dropout(t, 0.5, False).shape == F.drop_path(t, 0.1, False).shape == (2, 5, 6)
    qkv = Tensor(rng.standard_normal((18, 6)))
    assert F.multi_head_attention(t, qkv, Tensor(np.eye(6)), None, 3, 0.0, 0.0, False).shape == (2, 5, 6)
    assert F.cross_entropy(Tensor(rng.standard_normal((4, 3))), Tensor(np.array([0, 1, 2, 0])), 0.1).shape == ()


def test_float32_in_float32_out_and_no_graph_without_grad(rng):
    x = Tensor(rng.standard_normal((2, 3, 6, 6)))
    w = Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    y = F.gelu(F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2))
    assert y.dtype == np.float32 and y.requires_grad
    with minicct.no_grad():
        assert not F.conv2d(x, w).requires_grad


def test_tokenizer_chain_backward_end_to_end(rng, kernel_mode):
    """conv -> relu -> pool -> tokens -> layer norm -> loss: gradients reach the conv weight."""
    x = Tensor(rng.standard_normal((2, 3, 8, 8)), dtype=np.float64)
    w = Tensor(rng.standard_normal((4, 3, 3, 3)) * 0.3, requires_grad=True, dtype=np.float64)

    def fn(w):
        y = F.max_pool2d(F.relu(F.conv2d(x, w, None, 1, 1)), 3, 2, 1)   # (2, 4, 4, 4)
        tokens = y.flatten(2).transpose(1, 2)                              # (2, 16, 4)
        return F.layer_norm(tokens, 4).sum(axis=2)
    assert gradcheck(fn, [w])


class BrokenSoftmax(Function):
    """Softmax whose backward forgets the -sum(gy * y) term of the Jacobian."""

    @staticmethod
    def forward(ctx, x):
        y, ctx.y = softmax_forward(x)
        return y

    @staticmethod
    def backward(ctx, gy):
        return gy * ctx.y


class BrokenConv(Function):
    """conv2d whose weight gradient is flipped in the kernel's spatial axes."""

    @staticmethod
    def forward(ctx, x, w):
        from minicct.kernels import conv2d_backward
        y, cache = conv2d_forward(x, w, None, 1, 1)
        ctx.backward_fn = lambda gy: conv2d_backward(gy, cache)[:2]
        return y

    @staticmethod
    def backward(ctx, gy):
        gx, gw = ctx.backward_fn(gy)
        return gx, gw[:, :, ::-1, ::-1]


def test_gradcheck_catches_a_broken_backward(rng):
    x = Tensor(rng.standard_normal((3, 5)), requires_grad=True, dtype=np.float64)
    assert gradcheck(F.softmax, [x])
    with pytest.raises(GradcheckError):
        gradcheck(BrokenSoftmax.apply, [x])
    xi = Tensor(rng.standard_normal((1, 2, 5, 5)), dtype=np.float64)
    w = Tensor(rng.standard_normal((2, 2, 3, 3)), requires_grad=True, dtype=np.float64)
    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(BrokenConv.apply, [xi, w])
