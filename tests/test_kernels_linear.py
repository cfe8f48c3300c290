"""linear: x @ W.T + b with PyTorch's (out, in) weight, any leading dims; gradcheck."""
import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels import linear_backward, linear_forward


def linear_ref(x, w, b):
    x2 = x.reshape(-1, x.shape[-1])
    y = np.array([[sum(x2[r, i] * w[o, i] for i in range(w.shape[1])) + (b[o] if b is not None else 0.0)
                   for o in range(w.shape[0])] for r in range(x2.shape[0])])
    return y.reshape(x.shape[:-1] + (w.shape[0],))


@pytest.mark.parametrize("xshape", [(5,), (3, 5), (2, 3, 5), (2, 1, 3, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_loops(xshape, bias, rng, xp):
    x, w = rng.standard_normal(xshape), rng.standard_normal((4, 5))
    b = rng.standard_normal(4) if bias else None
    y, _ = linear_forward(xp.asarray(x), xp.asarray(w), None if b is None else xp.asarray(b))
    np.testing.assert_allclose(to_numpy(y), linear_ref(x, w, b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xshape", [(3, 5), (2, 3, 5)])
def test_gradcheck_x_weight_bias(xshape, rng, device):
    ts = [Tensor(rng.standard_normal(s), requires_grad=True, device=device, dtype=np.float64)
          for s in (xshape, (4, 5), (4,))]
    assert gradcheck(F.linear, ts, names=["x", "weight", "bias"])


def test_only_the_gradients_asked_for(rng):
    x, w, b, gy = (rng.standard_normal(s) for s in ((2, 3, 5), (4, 5), (4,), (2, 3, 4)))
    _, cache = linear_forward(x, w, b)
    gx, gw, gb = linear_backward(gy, cache)
    no_gx, no_gw = linear_backward(gy, cache, need_gx=False), linear_backward(gy, cache, need_gw=False)
    assert no_gx[0] is None and no_gw[1] is None
    np.testing.assert_array_equal(no_gx[1], gw)
    np.testing.assert_array_equal(no_gw[0], gx)
    np.testing.assert_array_equal(no_gx[2], gb)
    assert linear_backward(gy, linear_forward(x, w)[1])[2] is None


def test_non_contiguous_input(rng):
    x = rng.standard_normal((5, 3, 2)).transpose(2, 1, 0)     # (2, 3, 5), not contiguous
    w = rng.standard_normal((4, 5))
    y, _ = linear_forward(x, w)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-12)


def test_float32_forward_close_to_float64(rng, xp):
    x, w, b = rng.standard_normal((64, 128)), rng.standard_normal((384, 128)), rng.standard_normal(384)
    y64 = to_numpy(linear_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b))[0])
    y32 = to_numpy(linear_forward(*(xp.asarray(a, dtype=np.float32) for a in (x, w, b)))[0])
    assert np.abs(y32 - y64).max() <= 1e-5 * np.abs(y64).max()


@pytest.mark.parametrize("wshape,bshape", [((4, 6), (4,)), ((4, 5), (3,)), ((5,), None)])
def test_bad_shapes_raise_value_error(wshape, bshape):
    b = Tensor(np.zeros(bshape)) if bshape else None
    with pytest.raises(ValueError, match="linear"):
        F.linear(Tensor(np.zeros((2, 5))), Tensor(np.zeros(wshape)), b)
