"""The fused pairs (kernels/fused.py, kernels/fast/fused.py) against the unfused composition they
replace: x + drop_path(branch) and gelu(linear(x)). Values and every gradient, float32 and float64,
a float64 gradcheck of each Function over every input, and the model's encoder layer against its
unfused forward (the same masks from the same seed)."""
import collections

import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck, manual_seed
from minicct.autograd import function as fnmod
from minicct.kernels import dispatch, fused
from minicct.kernels.fast import fused as fast_fused, gelu as fast_gelu
from minicct.models import create_model
from minicct.models.transformer import TransformerEncoderLayer

MODULES = [fused, fast_fused]
TOL = {np.float32: dict(rtol=2e-6, atol=2e-6), np.float64: dict(rtol=1e-13, atol=1e-13)}


def _grads(y, inputs, w):
    """Gradients of sum(w * y) with respect to ``inputs`` (a random upstream weight, not a plain
    sum: a wrong backward that a sum would hide shows here)."""
    y.backward(Tensor._wrap(w.astype(y.dtype)))
    return [t.grad.numpy() for t in inputs]


def _leaves(rng, dtype, *shapes):
    return [Tensor(rng.standard_normal(s), requires_grad=True, dtype=dtype) for s in shapes]


# ---- x + drop_path(branch) ---------------------------------------------------------------------
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p,training", [(0.5, True), (0.0, True), (0.5, False)])
def test_add_drop_path_equals_the_composition(module, dtype, p, training, rng, force_impl):
    force_impl("add_drop_path", module)
    shape = (12, 5, 3)
    x, b = _leaves(rng, dtype, shape, shape)
    x0, b0 = _leaves(np.random.default_rng(0), dtype, shape, shape)
    x0.data[...], b0.data[...] = x.data, b.data
    w = rng.standard_normal(shape)

    y = F.add_drop_path(x, b, p, training, np.random.default_rng(7))
    y0 = x0 + F.drop_path(b0, p, training, np.random.default_rng(7))
    np.testing.assert_allclose(y.numpy(), y0.numpy(), **TOL[dtype])
    if p and training:   # the seed drops some samples and keeps others: the mask really acts
        dropped = np.all(y.numpy() == x.numpy(), axis=(1, 2))
        assert 0 < dropped.sum() < shape[0]
    for g, g0 in zip(_grads(y, [x, b], w), _grads(y0, [x0, b0], w)):
        np.testing.assert_allclose(g, g0, **TOL[dtype])


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_add_drop_path_gradcheck_both_inputs(module, rng, force_impl):
    force_impl("add_drop_path", module)
    x, b = _leaves(rng, np.float64, (6, 4, 3), (6, 4, 3))
    assert gradcheck(lambda x, b: F.add_drop_path(x, b, 0.5, True, np.random.default_rng(3)),
                     [x, b], names=["x", "branch"])


def test_add_drop_path_needs_one_shape(rng):
    x, b = _leaves(rng, np.float32, (2, 3), (1, 3))
    with pytest.raises(ValueError, match="same shape"):
        F.add_drop_path(x, b, 0.5, True)


# ---- gelu(linear(x)) ---------------------------------------------------------------------------
LINEAR_CASES = [((3, 7, 5), 6, True), ((4, 5), 9, False), ((2, 3, 4, 6), 11, True)]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xshape,out,bias", LINEAR_CASES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("block", [16, 1 << 15], ids=["blocks", "one_step"])
def test_linear_gelu_equals_the_composition(module, dtype, xshape, out, bias, approximate, block,
                                            rng, force_impl, monkeypatch):
    monkeypatch.setattr(fast_gelu, "BLOCK", block)   # 16: several blocks, the last one short
    force_impl("linear_gelu", module)
    shapes = [xshape, (out, xshape[-1])] + ([(out,)] if bias else [])
    leaves = _leaves(rng, dtype, *shapes)
    twins = _leaves(rng, dtype, *shapes)
    for t, t0 in zip(leaves, twins):
        t0.data[...] = t.data
    b, b0 = (leaves[2], twins[2]) if bias else (None, None)
    w = rng.standard_normal(xshape[:-1] + (out,))

    y = F.linear_gelu(leaves[0], leaves[1], b, approximate=approximate)
    y0 = F.gelu(F.linear(twins[0], twins[1], b0), approximate=approximate)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.numpy(), y0.numpy(), **TOL[dtype])
    for g, g0 in zip(_grads(y, leaves, w), _grads(y0, twins, w)):
        np.testing.assert_allclose(g, g0, **TOL[dtype])


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_linear_gelu_gradcheck_every_input(module, approximate, rng, force_impl, monkeypatch):
    monkeypatch.setattr(fast_gelu, "BLOCK", 16)
    force_impl("linear_gelu", module)
    x, w, b = _leaves(rng, np.float64, (2, 5, 4), (6, 4), (6,))
    assert gradcheck(lambda x, w, b: F.linear_gelu(x, w, b, approximate=approximate), [x, w, b],
                     names=["x", "weight", "bias"])


def test_linear_gelu_without_input_gradient(rng):
    """The first layer's input needs no gradient: gx is skipped, gw and gb still right."""
    x = Tensor(rng.standard_normal((3, 4)))
    w, b = _leaves(rng, np.float64, (5, 4), (5,))
    assert gradcheck(lambda w, b: F.linear_gelu(x, w, b), [w, b])


# ---- the choice and the model ------------------------------------------------------------------
def test_dispatch_picks_the_fused_kernels_by_mode():
    a = np.zeros((2, 3), np.float32)
    with dispatch.use_mode("reference"):
        assert dispatch.add_drop_path(a).name == "add_drop_path"
        assert dispatch.linear_gelu(a).name == "linear_gelu"
    with dispatch.use_mode("fast"):
        assert dispatch.add_drop_path(a).name == "add_drop_path_fast"
        assert dispatch.linear_gelu(a).name == "linear_gelu_fast"


def _unfused_layer_forward(layer, x):
    """The encoder layer as it was written before the fusion."""
    x = x + layer.drop_path(layer.self_attn(layer.pre_norm(x)))
    x = layer.norm1(x)
    y = layer.linear2(layer.dropout1(F.gelu(layer.linear1(x))))
    return x + layer.drop_path(layer.dropout2(y))


@pytest.mark.parametrize("drop_path_rate", [0.0, 0.5])
def test_encoder_layer_equals_its_unfused_forward(drop_path_rate, rng, kernel_mode):
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.0, attention_dropout=0.2,
                                    drop_path_rate=drop_path_rate)
    layer.train()
    params = list(layer.parameters())
    xa = rng.standard_normal((10, 4, 8)).astype(np.float32)
    w = rng.standard_normal((10, 4, 8))
    results = []
    for forward in (layer, lambda x: _unfused_layer_forward(layer, x)):
        x = Tensor(xa, requires_grad=True)
        manual_seed(3)       # the same attention-dropout and drop-path masks for both
        y = forward(x)
        for p in params:
            p.grad = None
        results.append([y.numpy()] + _grads(y, [x] + params, w))
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cct_2_applies_36_functions_per_training_forward():
    """CCT-2/3x2 in training: no Dropout (p = 0), DropPath or Gelu left as Functions of their
    own (47 before the fusions)."""
    model = create_model("cct_2_3x2_32")
    model.train()
    counts = collections.Counter()
    with fnmod.observe(lambda cls, args, out: counts.update([cls.__name__])):
        F.cross_entropy(model(Tensor(np.zeros((2, 3, 32, 32), np.float32))), Tensor(np.array([0, 1])))
    assert not {"Dropout", "DropPath", "Gelu"} & set(counts)
    assert counts["LinearGelu"] == 2 and counts["AddDropPath"] == 4
    assert sum(counts.values()) == 36, counts
