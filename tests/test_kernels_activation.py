"""Activations: erf accuracy, relu, exact and tanh GELU, softmax and log_softmax (values against
loops, stability at large inputs, gradcheck in both kernel modes); the fast GELU
(kernels/fast/gelu.py) against the reference, across block boundaries and memory orders."""
import math

import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels import (erf, gelu_forward, gelu_backward, softmax_forward, log_softmax_forward,
                             relu_forward, dispatch)
from minicct.kernels.fast import gelu as fast_gelu


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
    for fn in (gelu_forward, fast_gelu.gelu_forward):
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
def test_gradcheck(name, fn, rng, device, kernel_mode):
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


# ---- the fast GELU against the reference -------------------------------------------------------------
def _awkward(rng, shape, dtype, order):
    """Random values of this shape and dtype in a given memory order: 'C', 'F', or 'strided'
    (every other column of a wider array)."""
    a = rng.standard_normal(shape[:-1] + (2 * shape[-1],)) * 3
    if order == "strided":
        return a.astype(dtype)[..., ::2]
    return np.asarray(a[..., ::2], dtype=dtype, order=order)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape,block", [((7,), None), ((3, 37), 16), ((5, 13, 11), 64), ((2, 3, 5), 1)])
@pytest.mark.parametrize("order", ["C", "F", "strided"])
def test_fast_gelu_equals_reference(approximate, shape, block, order, rng, monkeypatch):
    """Forward and backward, float64 to round-off and float32 to a few ulps, with blocks that do
    not divide the size (block=None: one whole-array pass)."""
    if block is not None:
        monkeypatch.setattr(fast_gelu, "BLOCK", block)
    for dtype, tol in ((np.float64, 1e-14), (np.float32, 2e-6)):
        x = _awkward(rng, shape, dtype, order)
        gy = rng.standard_normal(shape).astype(dtype)
        y_ref, c_ref = gelu_forward(x, approximate)
        y_fast, c_fast = fast_gelu.gelu_forward(x, approximate)
        assert y_fast.dtype == dtype and y_fast.shape == x.shape
        np.testing.assert_allclose(y_fast, y_ref, rtol=tol, atol=tol)
        gx_fast = fast_gelu.gelu_backward(gy, c_fast)
        assert gx_fast.dtype == dtype
        np.testing.assert_allclose(gx_fast, gelu_backward(gy, c_ref), rtol=tol, atol=tol)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fast_gelu_blocks_change_no_bit(approximate, rng, monkeypatch):
    """Blocking is a loop over the same elementwise steps: the same float32 bits as one pass."""
    x = rng.standard_normal((3, 1001)).astype(np.float32)[:, ::2] * 4      # odd size, not contiguous
    gy = rng.standard_normal(x.shape).astype(np.float32)
    runs = []
    for block in (1 << 20, 100):
        monkeypatch.setattr(fast_gelu, "BLOCK", block)
        y, cache = fast_gelu.gelu_forward(x, approximate)
        runs.append((y, fast_gelu.gelu_backward(gy, cache)))
    (y1, g1), (y2, g2) = runs
    np.testing.assert_array_equal(y2, y1)
    np.testing.assert_array_equal(g2, g1)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_fast_gelu_gradcheck_across_blocks(approximate, rng, monkeypatch):
    monkeypatch.setattr(fast_gelu, "BLOCK", 7)
    with dispatch.use_mode("fast"):
        assert dispatch.gelu(np.zeros(1)).forward is fast_gelu.gelu_forward
        x = Tensor(rng.standard_normal((3, 11)) * 2, requires_grad=True, dtype=np.float64)
        assert gradcheck(lambda x: F.gelu(x, approximate=approximate), [x])


def test_fast_gelu_bad_approximate_raises():
    with pytest.raises(ValueError, match="approximate"):
        fast_gelu.gelu_forward(np.zeros(3), approximate="fast")
