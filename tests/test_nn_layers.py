"""Each layer: gradcheck (float64) over its input and every parameter, shapes, MACs, errors."""
import numpy as np
import pytest

import minicct
from minicct import models, nn
from minicct.autograd import gradcheck
from minicct.models import trace_macs


def check_layer(layer, x_shape, seed=0, max_elements=None):
    """gradcheck of ``layer`` (in eval mode, float64) with respect to its input and each parameter."""
    layer.double().eval()
    names = [n for n, _ in layer.named_parameters()]
    x = minicct.Tensor(np.random.default_rng(seed).standard_normal(x_shape), requires_grad=True,
                       dtype=np.float64)

    def fn(x, *params):
        return nn.functional_call(layer, dict(zip(names, params)), x)

    assert gradcheck(fn, [x] + list(layer.parameters()), names=["input"] + names,
                     max_elements=max_elements)
    return trace_macs(layer, x)   # counted from the forward it runs


def test_linear():
    macs = check_layer(nn.Linear(5, 3), (2, 4, 5))
    assert macs == 2 * 4 * 5 * 3


def test_linear_without_bias():
    check_layer(nn.Linear(4, 3, bias=False), (3, 4))


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=1, padding=1, bias=False),
                                dict(kernel_size=2, stride=2, padding=0, bias=True),
                                dict(kernel_size=3, stride=2, padding=1, bias=True)])
def test_conv2d(kw):
    conv = nn.Conv2d(2, 3, **kw)
    macs = check_layer(conv, (2, 2, 5, 6))
    oh, ow = conv.output_size(5, 6)
    assert macs == 2 * 3 * oh * ow * 2 * conv.kernel_size[0] * conv.kernel_size[1]


def test_maxpool2d_overlapping_windows():
    assert check_layer(nn.MaxPool2d(3, 2, 1), (2, 2, 7, 6)) == 0


def test_layer_norm():
    ln = nn.LayerNorm(6)
    # random scale and shift so their gradients are not the trivial ones
    ln.weight.data[...] = np.random.default_rng(1).standard_normal(6)
    ln.bias.data[...] = np.random.default_rng(2).standard_normal(6)
    assert check_layer(ln, (2, 3, 6)) == 5 * 2 * 3 * 6


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.GELU(), nn.Identity(), nn.Dropout(0.3),
                                   nn.DropPath(0.3)])
def test_elementwise(layer):
    assert check_layer(layer, (3, 4, 5)) == 0


def test_attention():
    attn = nn.Attention(8, num_heads=2, attention_dropout=0.1, projection_dropout=0.1)
    assert [n for n, _ in attn.named_parameters()] == ["qkv.weight", "proj.weight", "proj.bias"]
    assert attn.qkv.weight.shape == (24, 8)
    macs = check_layer(attn, (2, 5, 8))
    assert macs == 2 * 5 * 8 * 24 + 2 * (2 * 5 * 5 * 8) + 2 * 5 * 8 * 8


def test_attention_matches_naive_heads():
    """The attention layer against a per-head loop written with plain NumPy."""
    rng = np.random.default_rng(0)
    attn = nn.Attention(6, num_heads=3).eval()
    x = rng.standard_normal((2, 4, 6)).astype(np.float32)
    qkv = x @ attn.qkv.weight.numpy().T                     # (N, L, 3d)
    q, k, v = np.split(qkv, 3, axis=-1)
    heads = []
    for h in range(3):
        sl = slice(2 * h, 2 * h + 2)
        s = q[..., sl] @ k[..., sl].transpose(0, 2, 1) / np.sqrt(2)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        heads.append(a @ v[..., sl])
    ref = np.concatenate(heads, -1) @ attn.proj.weight.numpy().T + attn.proj.bias.numpy()
    assert np.allclose(attn(minicct.Tensor(x)).numpy(), ref, atol=1e-5)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="heads"):
        nn.Attention(10, num_heads=3)


def test_dropout_train_mode_scales_kept_values():
    drop = nn.Dropout(0.5)
    y = drop(minicct.Tensor(np.ones((100, 100)))).numpy()
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    path = nn.DropPath(0.5)
    y = path(minicct.Tensor(np.ones((400, 3, 2)))).numpy()
    per_sample = y.reshape(400, -1)
    assert np.all((per_sample == 0).all(1) | (per_sample == 2).all(1))   # whole samples dropped


def test_bad_hyper_parameters():
    with pytest.raises(ValueError):
        nn.Dropout(1.5)
    with pytest.raises(ValueError):
        nn.DropPath(1.0)
    with pytest.raises(ValueError):
        nn.Conv2d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match="larger than the padded input"):
        models.count_macs(nn.Conv2d(3, 4, 5), (1, 3, 3, 3))
