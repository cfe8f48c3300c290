"""max_pool2d, the reference (kernels/pool.py) and the NumPy fast version (kernels/fast/pool.py),
each against naive loops: overlapping windows, padding, ties (first max in row-major window order
gets the gradient, as PyTorch), and gradcheck. Fast against reference: test_kernels_fast.py."""
import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels import pool
from minicct.kernels.fast import pool as fast_pool

IMPLS = {"reference": pool, "fast": fast_pool}


@pytest.fixture(params=list(IMPLS))
def impl(request):
    """The pooling module under test: its max_pool2d_forward / max_pool2d_backward."""
    return IMPLS[request.param]


def pool_ref(x, gy_seed, kernel, stride, padding):
    """Loops over every window; returns y, the gradient of sum(gy * y) and gy."""
    N, C, H, W = x.shape
    (KH, KW), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.full((N, C, H + 2 * ph, W + 2 * pw), -np.inf)
    xp[:, :, ph:ph + H, pw:pw + W] = x
    OH, OW = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
    y = np.zeros((N, C, OH, OW))
    gy = np.random.default_rng(gy_seed).standard_normal(y.shape)
    gxp = np.zeros_like(xp)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    win = xp[n, c, i * sh:i * sh + KH, j * sw:j * sw + KW]
                    first = int(np.argmax(win))           # np.argmax: first max, row-major
                    a, b = divmod(first, KW)
                    y[n, c, i, j] = win[a, b]
                    gxp[n, c, i * sh + a, j * sw + b] += gy[n, c, i, j]
    return y, gxp[:, :, ph:ph + H, pw:pw + W], gy


# (N, C, H, W), kernel, stride, padding
CASES = [
    ((2, 3, 7, 6), (3, 3), (2, 2), (1, 1)),    # CCT's 3/2/1: overlapping windows, padding
    ((1, 2, 8, 9), (3, 2), (1, 2), (1, 0)),    # batch 1, non-square kernel, overlap along H
    ((2, 2, 5, 5), (2, 2), (2, 2), (0, 0)),    # tiling windows, odd size (last row dropped)
    ((1, 1, 6, 7), (3, 3), (1, 1), (0, 1)),    # stride 1: every element in up to 9 windows
    ((2, 2, 4, 6), (2, 4), (2, 1), (1, 2)),    # padding exactly half the kernel
]


_ORDERS = {"nchw": (0, 1, 2, 3), "channels_last": (0, 2, 3, 1), "hwnc": (2, 3, 0, 1)}


def _in_layout(a, layout):
    """The same (N, C, H, W) values with another memory order: 'hwnc' is what our convs return on
    NumPy (each pixel's channels of every image together)."""
    order = _ORDERS[layout]
    return np.ascontiguousarray(a.transpose(order)).transpose(np.argsort(order))


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "hwnc"])
def test_fast_output_and_gradient_keep_the_input_memory_order(layout, rng):
    """The fast version's y, and gx, come back in x's memory order (NCHW input: channels-last,
    where pooling is fast); an upstream gradient in another order gives the same numbers."""
    from minicct.backend import memory_order
    x = _in_layout(rng.standard_normal((2, 4, 6, 6)), layout)
    y, cache = fast_pool.max_pool2d_forward(x, 3, 2, 1)
    want = (0, 2, 3, 1) if layout == "nchw" else _ORDERS[layout]
    assert memory_order(y) == want
    gy = rng.standard_normal(y.shape)
    gx = fast_pool.max_pool2d_backward(_in_layout(gy, layout), cache)
    assert memory_order(gx) == want
    for other in _ORDERS:
        np.testing.assert_array_equal(fast_pool.max_pool2d_backward(_in_layout(gy, other), cache), gx)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "hwnc"])
@pytest.mark.parametrize("shape,kernel,stride,padding", CASES)
def test_forward_and_backward_match_loops(shape, kernel, stride, padding, layout, ties, impl, rng, xp):
    x = rng.integers(0, 3, shape).astype(float) if ties else rng.standard_normal(shape)
    y_ref, gx_ref, gy = pool_ref(x, 1, kernel, stride, padding)
    xin = _in_layout(x, layout)
    y, cache = impl.max_pool2d_forward(xp.asarray(xin), kernel, stride, padding)
    gx = impl.max_pool2d_backward(xp.asarray(gy), cache)
    np.testing.assert_array_equal(to_numpy(y), y_ref)
    np.testing.assert_allclose(to_numpy(gx), gx_ref, rtol=0, atol=1e-15)


def test_tie_gradient_goes_to_first_max_row_major(impl, xp):
    # One 3x3 window whose maximum 5 appears three times: (0, 2), (1, 0), (2, 1).
    x = np.array([[1, 2, 5],
                  [5, 0, 1],
                  [2, 5, 3]], float)[None, None]
    y, cache = impl.max_pool2d_forward(xp.asarray(x), 3)
    gx = to_numpy(impl.max_pool2d_backward(xp.ones_like(y), cache))[0, 0]
    assert to_numpy(y).item() == 5
    expected = np.zeros((3, 3))
    expected[0, 2] = 1.0            # first in row-major order, not (1, 0) (first in column order)
    np.testing.assert_array_equal(gx, expected)


def test_overlapping_windows_accumulate(impl, xp):
    # A single large value in the middle of a 5x5 image is the max of all four 3x3/stride-2 windows.
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 9.0
    y, cache = impl.max_pool2d_forward(xp.asarray(x), 3, 2, 0)
    gy = np.array([[1.0, 2.0], [3.0, 4.0]])[None, None]
    gx = to_numpy(impl.max_pool2d_backward(xp.asarray(gy), cache))
    assert gx[0, 0, 2, 2] == 10.0 and np.count_nonzero(gx) == 1


def test_padding_never_wins(impl, xp):
    x = -np.ones((1, 1, 3, 3)) * 7.0            # all negative: zero padding would win, -inf does not
    y, cache = impl.max_pool2d_forward(xp.asarray(x), 3, 2, 1)
    assert np.all(to_numpy(y) == -7.0)
    gx = to_numpy(impl.max_pool2d_backward(xp.ones_like(y), cache))
    assert gx.sum() == y.size


@pytest.mark.parametrize("shape,kernel,stride,padding", CASES[:3])
def test_gradcheck(shape, kernel, stride, padding, impl, rng, device, force_impl):
    force_impl("max_pool2d", impl)
    # Distinct values (a random permutation) so no window has a near-tie that eps could flip.
    x = Tensor(rng.permutation(np.prod(shape)).reshape(shape) / 7.0, requires_grad=True, device=device,
               dtype=np.float64)
    assert gradcheck(lambda x: F.max_pool2d(x, kernel, stride, padding), [x])


def test_float32_equals_float64(impl, rng, xp):
    x = rng.standard_normal((2, 4, 9, 9))
    y64, _ = impl.max_pool2d_forward(xp.asarray(x), 3, 2, 1)
    y32, _ = impl.max_pool2d_forward(xp.asarray(x, dtype=np.float32), 3, 2, 1)
    np.testing.assert_allclose(to_numpy(y32), to_numpy(y64), rtol=1e-7)


def test_stride_defaults_to_kernel_size(rng):
    x = Tensor(rng.standard_normal((1, 1, 6, 6)))
    assert F.max_pool2d(x, 2).shape == (1, 1, 3, 3)


@pytest.mark.parametrize("shape,kw,match", [
    ((2, 3, 8), {"kernel_size": 2}, "4-D"),
    ((1, 1, 4, 4), {"kernel_size": 3, "padding": 2}, "at most half"),
    ((1, 1, 4, 4), {"kernel_size": 3, "stride": 0}, "stride"),
    ((1, 1, 2, 2), {"kernel_size": 5, "padding": 1}, "larger than the padded input"),
])
def test_bad_input_raises_value_error(shape, kw, match, kernel_mode):
    with pytest.raises(ValueError, match=match):
        F.max_pool2d(Tensor(np.zeros(shape)), **kw)


def test_a_nan_comes_out_of_every_version_alike():
    """A NaN in a window makes that output NaN (PyTorch's max-pool), in the reference and the fast
    version alike: a run must not show or hide a NaN depending on MINICCT_KERNELS."""
    from minicct.kernels import pool
    from minicct.kernels.fast import pool as fast_pool
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.nan
    ref, _ = pool.max_pool2d_forward(x, 2)
    fast, _ = fast_pool.max_pool2d_forward(x, 2)
    assert np.isnan(ref[0, 0, 0, 0]) and np.isnan(fast[0, 0, 0, 0])
    np.testing.assert_array_equal(ref, fast)
