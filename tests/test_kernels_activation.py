"""Activations: erf accuracy, relu, exact and tanh GELU, softmax and log_softmax (values against
loops, stability at large inputs, gradcheck)."""
import math

import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels import (erf, gelu_forward, softmax_forward, log_softmax_forward, relu_forward)
from minicct.kernels.activation import gelu_forward_xp


# ---- erf -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def erf_grid():
    x = np.linspace(-10.0, 10.0, 400_001)            # step 5e-5
    return x, np.array([math.erf(v) for v in x])


def test_erf_max_abs_error_float64(erf_grid, xp):
    x, ref = erf_grid
    err = np.abs(to_numpy(erf(xp.asarray(x))) - ref).max()
    assert err <= 1e-6, f"erf max abs error {err:.3g} on [-10, 10]"


def test_erf_max_abs_error_float32(erf_grid, xp):
    x, ref = erf_grid
    got = to_numpy(erf(xp.asarray(x, dtype=np.float32)))
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-6


def test_erf_is_odd_and_saturates(xp):
    x = xp.asarray([0.0, -0.0, 1e-8, 30.0, -30.0, np.inf, -np.inf])
    e = to_numpy(erf(x))
    assert abs(e[0]) < 1e-8 and e[3] == 1.0 and e[4] == -1.0 and e[5] == 1.0 and e[6] == -1.0
    z = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(to_numpy(erf(xp.asarray(-z))), -to_numpy(erf(xp.asarray(z))))


# ---- relu and gelu ---------------------------------------------------------------------------------
def test_relu_values(xp):
    y, _ = relu_forward(xp.asarray([-2.0, -0.0, 0.0, 3.5]))
    np.testing.assert_array_equal(to_numpy(y), [0.0, 0.0, 0.0, 3.5])


def test_gelu_exact_matches_math_erf(rng, xp):
    x = np.concatenate([rng.standard_normal(500) * 3, [-12.0, -5.0, 0.0, 5.0, 12.0]])
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    for fn in (gelu_forward, gelu_forward_xp):
        y, _ = fn(xp.asarray(x))
        # gelu = x Phi(x): the erf error (<= 1.5e-7) scaled by |x| / 2
        assert np.all(np.abs(to_numpy(y) - ref) <= 1e-6 * np.maximum(1.0, np.abs(x)))


def test_gelu_tanh_formula(rng, xp):
    x = rng.standard_normal(200) * 3
    ref = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    y, _ = gelu_forward(xp.asarray(x), approximate="tanh")
    np.testing.assert_allclose(to_numpy(y), ref, rtol=1e-12, atol=1e-15)


def test_gelu_bad_approximate_raises():
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(Tensor(np.zeros(3)), approximate="fast")


@pytest.mark.parametrize("name,fn", [
    ("relu", F.relu),
    ("gelu", F.gelu),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
    ("softmax_last", F.softmax),
    ("softmax_dim0", lambda x: F.softmax(x, dim=0)),
    ("log_softmax_last", F.log_softmax),
    ("log_softmax_dim1", lambda x: F.log_softmax(x, dim=1)),
])
def test_gradcheck(name, fn, rng, device):
    a = rng.standard_normal((3, 4, 5)) * 2
    if name == "relu":
        a = np.where(np.abs(a) < 1e-3, 0.5, a)          # keep away from the kink
    x = Tensor(a, requires_grad=True, device=device, dtype=np.float64)
    assert gradcheck(fn, [x])


# ---- softmax family ------------------------------------------------------------------------------
def softmax_ref(x, axis):
    x = np.moveaxis(x, axis, -1)
    out = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        row = x[idx]
        e = np.array([math.exp(v - row.max()) for v in row])
        out[idx] = e / e.sum()
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax_match_loops(axis, rng, xp):
    x = rng.standard_normal((3, 4, 5)) * 4
    ref = softmax_ref(x, axis)
    y, _ = softmax_forward(xp.asarray(x), axis)
    z, _ = log_softmax_forward(xp.asarray(x), axis)
    np.testing.assert_allclose(to_numpy(y), ref, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(z), np.log(ref), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_stable_at_large_inputs(dtype, xp):
    x = xp.asarray([[1000.0, 1000.0, 999.0], [-1000.0, 0.0, 1000.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    y, _ = softmax_forward(x)
    z, _ = log_softmax_forward(x)
    y, z = to_numpy(y), to_numpy(z)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(z))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(z[1], [-2000.0, -1000.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(y[2], 1 / 3, rtol=1e-6)


def test_float32_forward_close_to_float64(rng, xp):
    x = rng.standard_normal((16, 128)) * 3
    for fn in (gelu_forward, softmax_forward, log_softmax_forward):
        y64 = to_numpy(fn(xp.asarray(x))[0])
        y32 = to_numpy(fn(xp.asarray(x, dtype=np.float32))[0])
        assert y32.dtype == np.float32
        assert np.abs(y32 - y64).max() <= 1e-5 * np.abs(y64).max(), fn.__name__


def test_gelu_blockwise_equals_whole_array(rng):
    from minicct.kernels.activation import _BLOCK, _gelu_erf, gelu_backward
    x = rng.standard_normal((3, _BLOCK + 7)).astype(np.float32)[:, ::2]     # odd size, not contiguous
    y, cache = gelu_forward_xp(x)
    y_ref, cache_ref = _gelu_erf(x)
    np.testing.assert_array_equal(y, y_ref)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(gelu_backward(gy, cache), gelu_backward(gy, cache_ref))
