"""layer_norm against a loop over rows; gradcheck over x, weight and bias."""
import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels import layer_norm_forward, layer_norm_backward


def layer_norm_ref(x, shape, w, b, eps=1e-5):
    """One row at a time: mean, biased variance, normalise, scale, shift."""
    k = len(shape)
    rows = x.reshape((-1,) + shape)
    out = np.empty_like(rows)
    for r in range(rows.shape[0]):
        v = rows[r]
        mu = v.sum() / v.size
        var = ((v - mu) ** 2).sum() / v.size
        out[r] = (v - mu) / np.sqrt(var + eps)
        if w is not None:
            out[r] = out[r] * w
        if b is not None:
            out[r] = out[r] + b
    assert k >= 1
    return out.reshape(x.shape)


CASES = [((4, 7), (7,)), ((2, 3, 5), (5,)), ((2, 3, 4), (3, 4)), ((1, 1, 6), (6,))]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("xshape,nshape", CASES)
def test_forward_matches_loops(xshape, nshape, affine, rng, xp):
    x = rng.standard_normal(xshape) * 3 + 1
    w = rng.standard_normal(nshape) if affine else None
    b = rng.standard_normal(nshape) if affine else None
    y, _ = layer_norm_forward(xp.asarray(x), nshape, None if w is None else xp.asarray(w),
                              None if b is None else xp.asarray(b))
    np.testing.assert_allclose(to_numpy(y), layer_norm_ref(x, nshape, w, b), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("xshape,nshape", CASES)
def test_gradcheck_x_weight_bias(xshape, nshape, rng, device):
    ts = [Tensor(a, requires_grad=True, device=device, dtype=np.float64)
          for a in (rng.standard_normal(xshape), rng.standard_normal(nshape), rng.standard_normal(nshape))]
    assert gradcheck(lambda x, w, b: F.layer_norm(x, nshape, w, b), ts, names=["x", "weight", "bias"])


def test_gradcheck_without_affine(rng, device):
    x = Tensor(rng.standard_normal((3, 5)), requires_grad=True, device=device, dtype=np.float64)
    assert gradcheck(lambda x: F.layer_norm(x, 5), [x])


def test_float32_forward_close_to_float64(rng, xp):
    x, w, b = rng.standard_normal((8, 16, 128)), rng.standard_normal(128), rng.standard_normal(128)
    y64, _ = layer_norm_forward(*(xp.asarray(a) for a in (x,)), 128, xp.asarray(w), xp.asarray(b))
    y32, _ = layer_norm_forward(xp.asarray(x, dtype=np.float32), 128,
                                xp.asarray(w, dtype=np.float32), xp.asarray(b, dtype=np.float32))
    y64, y32 = to_numpy(y64), to_numpy(y32)
    assert y32.dtype == np.float32
    assert np.abs(y32 - y64).max() <= 1e-5 * np.abs(y64).max()


def test_constant_row_gives_bias_not_nan(xp):
    y, _ = layer_norm_forward(xp.full((2, 4), 3.0), 4, None, xp.arange(4.0))
    np.testing.assert_allclose(to_numpy(y), np.tile(np.arange(4.0), (2, 1)))


@pytest.mark.parametrize("xshape,nshape,wshape", [((2, 5), (4,), None), ((2, 5), (5,), (4,)),
                                                   ((5,), (2, 5), None)])
def test_bad_shapes_raise_value_error(xshape, nshape, wshape):
    w = Tensor(np.ones(wshape)) if wshape else None
    with pytest.raises(ValueError, match="layer_norm"):
        F.layer_norm(Tensor(np.zeros(xshape)), nshape, w)


def test_any_memory_order(rng):
    """A transposed x and gy (not row-contiguous) give what their contiguous copies give."""
    x = rng.standard_normal((6, 5, 4)).transpose(2, 1, 0)          # (4, 5, 6), strides reversed
    gy = rng.standard_normal((6, 5, 4)).transpose(2, 1, 0)
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    y, cache = layer_norm_forward(x, 6, w, b)
    yc, cache_c = layer_norm_forward(np.ascontiguousarray(x), 6, w, b)
    np.testing.assert_allclose(y, layer_norm_ref(x, (6,), w, b), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(y, yc)
    for g, gc in zip(layer_norm_backward(gy, cache), layer_norm_backward(np.ascontiguousarray(gy), cache_c)):
        np.testing.assert_allclose(g, gc, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("has_w,has_b", [(True, False), (False, True)])
def test_gradcheck_weight_or_bias_alone_over_two_dims(has_w, has_b, rng, device):
    """Only one of weight and bias, normalising over two dimensions: each gradient keeps its
    parameter's shape (the bias's gradient took the weight's shape, or a flat (D,) without one)."""
    x = Tensor(rng.standard_normal((2, 3, 4)), requires_grad=True, device=device, dtype=np.float64)
    p = Tensor(rng.standard_normal((3, 4)), requires_grad=True, device=device, dtype=np.float64)
    assert gradcheck(lambda x, p: F.layer_norm(x, (3, 4), *((p, None) if has_w else (None, p))), [x, p],
                     names=["x", "weight" if has_w else "bias"])
