"""Every fast kernel (kernels/fast/) against its reference, forward and every gradient, on awkward
sizes and any memory order of the input and of the upstream gradient; and which version
kernels.dispatch picks, per mode and shape."""
import numpy as np
import pytest

from minicct.backend import to_numpy
from minicct.kernels import conv, dispatch, linear, pool
from minicct.kernels.fast import conv_im2col, pool as fast_pool, winograd

# Memory orders of an (N, C, H, W) array; "hwnc" is what the fast convs hand on.
ORDERS = {"nchw": (0, 1, 2, 3), "channels_last": (0, 2, 3, 1), "hwnc": (2, 3, 0, 1), "wchn": (3, 1, 2, 0)}


def in_order(xp, a, order):
    """The same (N, C, H, W) values, laid out in memory in another order ('strided': every second
    element of a wider array)."""
    if order == "strided":
        wide = xp.zeros(a.shape[:3] + (2 * a.shape[3],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    o = ORDERS[order]
    return xp.ascontiguousarray(a.transpose(o)).transpose(tuple(np.argsort(o)))


NEEDS = [(True, True), (True, False), (False, True)]   # (need_gx, need_gw)

# (N, C, H, W), (O, KH, KW), stride, padding
CONV_CASES = [
    ((1, 3, 7, 5), (4, 3, 3), 1, 1),          # batch 1, odd non-square image, 'same'
    ((2, 2, 9, 6), (3, 3, 2), (2, 1), (2, 0)),  # non-square kernel, stride along H only
    ((3, 4, 5, 5), (2, 3, 3), 2, 2),          # stride 2, padding wider than half the kernel
    ((2, 3, 6, 7), (5, 1, 1), 1, 0),          # 1x1 kernel
    ((2, 3, 4, 3), (2, 2, 2), 1, (2, 1)),     # padding >= kernel along H
    ((1, 5, 8, 9), (6, 3, 3), 1, 0),          # 3x3 'valid', odd output width
    ((2, 16, 5, 6), (16, 3, 3), 1, 2),        # 3x3 stride 1, enough channels for Winograd
    ((1, 2, 6, 5), (3, 3, 3), 1, (2, 1)),     # 3x3 stride 1, non-square padding
]


def _conv_pair(fast, xs, ws, stride, padding, x_order, gy_order, bias, rng, xp):
    N, C, H, W = xs
    O, KH, KW = ws
    x = rng.standard_normal(xs)
    w = rng.standard_normal((O, C, KH, KW))
    b = rng.standard_normal(O) if bias else None
    y_ref, c_ref = conv.conv2d_forward(xp.asarray(x), xp.asarray(w), None if b is None else xp.asarray(b),
                                       stride, padding)
    y, c = fast.conv2d_forward(in_order(xp, xp.asarray(x), x_order), xp.asarray(w),
                               None if b is None else xp.asarray(b), stride, padding)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(to_numpy(y), to_numpy(y_ref), rtol=1e-11, atol=1e-11)
    gy = xp.asarray(rng.standard_normal(y.shape))
    for need_gx, need_gw in NEEDS:
        got = fast.conv2d_backward(in_order(xp, gy, gy_order), c, need_gx=need_gx, need_gw=need_gw)
        want = conv.conv2d_backward(gy, c_ref, need_gx=need_gx, need_gw=need_gw)
        for name, g, r, needed in zip(("gx", "gw", "gb"), got, want, (need_gx, need_gw, bias)):
            if not needed:
                assert g is None and r is None, name
                continue
            assert g.shape == r.shape, name
            np.testing.assert_allclose(to_numpy(g), to_numpy(r), rtol=1e-11, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("x_order,gy_order", [("nchw", "nchw"), ("channels_last", "hwnc"),
                                              ("hwnc", "channels_last"), ("strided", "wchn")])
@pytest.mark.parametrize("xs,ws,stride,padding", CONV_CASES)
def test_conv_im2col_flat_equals_reference(xs, ws, stride, padding, x_order, gy_order, rng, xp):
    _conv_pair(conv_im2col, xs, ws, stride, padding, x_order, gy_order, True, rng, xp)


@pytest.mark.parametrize("x_order,gy_order", [("nchw", "nchw"), ("channels_last", "hwnc"),
                                              ("hwnc", "channels_last"), ("strided", "wchn")])
@pytest.mark.parametrize("xs,ws,stride,padding", [c for c in CONV_CASES if c[1][1:] == (3, 3) and c[2] == 1])
def test_conv_winograd_equals_reference(xs, ws, stride, padding, x_order, gy_order, rng, xp):
    _conv_pair(winograd, xs, ws, stride, padding, x_order, gy_order, True, rng, xp)


@pytest.mark.parametrize("fast", [conv_im2col, winograd], ids=["im2col_flat", "winograd"])
def test_conv_fast_without_bias_equals_reference(fast, rng, xp):
    _conv_pair(fast, (1, 3, 5, 4), (2, 3, 3), 1, 1, "nchw", "channels_last", False, rng, xp)


# (N, C, H, W), kernel, stride, padding
POOL_CASES = [
    ((1, 3, 7, 6), 3, 2, 1),                  # CCT's 3/2/1, batch 1, odd height
    ((2, 2, 8, 9), (3, 2), (1, 2), (1, 0)),   # non-square kernel, overlap along H only
    ((3, 2, 5, 5), 2, 2, 0),                  # tiling windows, the last row/column dropped
    ((2, 1, 6, 7), 3, 1, 1),                  # stride 1: every element in up to 9 windows
    ((1, 2, 4, 6), (2, 4), (2, 1), (1, 2)),   # padding exactly half the kernel
]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("x_order,gy_order", [("nchw", "nchw"), ("channels_last", "hwnc"),
                                              ("hwnc", "channels_last"), ("strided", "wchn")])
@pytest.mark.parametrize("shape,kernel,stride,padding", POOL_CASES)
def test_pool_fast_equals_reference(shape, kernel, stride, padding, x_order, gy_order, ties, rng, xp):
    x = xp.asarray(rng.integers(0, 3, shape).astype(float) if ties else rng.standard_normal(shape))
    y_ref, c_ref = pool.max_pool2d_forward(x, kernel, stride, padding)
    y, c = fast_pool.max_pool2d_forward(in_order(xp, x, x_order), kernel, stride, padding)
    np.testing.assert_array_equal(to_numpy(y), to_numpy(y_ref))
    gy = xp.asarray(rng.standard_normal(y.shape))
    gx = fast_pool.max_pool2d_backward(in_order(xp, gy, gy_order), c)
    np.testing.assert_allclose(to_numpy(gx), to_numpy(pool.max_pool2d_backward(gy, c_ref)), rtol=0, atol=1e-15)


def test_pool_float32_fast_equals_reference(rng):
    x = rng.standard_normal((4, 8, 9, 9)).astype(np.float32)
    (y_ref, c_ref), (y, c) = pool.max_pool2d_forward(x, 3, 2, 1), fast_pool.max_pool2d_forward(x, 3, 2, 1)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, y_ref)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(fast_pool.max_pool2d_backward(gy, c), pool.max_pool2d_backward(gy, c_ref))


# ---- dispatch -----------------------------------------------------------------------------------
def _conv_name(shape, wshape, stride):
    x, w = np.zeros(shape, np.float32), np.zeros(wshape, np.float32)
    return dispatch.conv2d(x, w, stride, 1).name


def test_dispatch_reference_mode_picks_the_references():
    x = np.zeros((2, 16, 6, 6), np.float32)
    with dispatch.use_mode("reference"):
        assert dispatch.conv2d(x, np.zeros((16, 16, 3, 3)), 1, 1).forward is conv.conv2d_forward
        assert dispatch.max_pool2d(x).forward is pool.max_pool2d_forward
        assert dispatch.linear(x).forward is linear.linear_forward


def test_dispatch_fast_mode_on_numpy(monkeypatch):
    with dispatch.use_mode("fast"):
        assert _conv_name((2, 16, 6, 6), (16, 16, 3, 3), 1) == "conv2d_winograd"
        assert _conv_name((2, 16, 6, 6), (16, 16, 3, 3), (1, 1)) == "conv2d_winograd"
        assert _conv_name((2, 16, 6, 6), (16, 16, 3, 3), 2) == "conv2d_im2col_flat"         # stride 2
        assert _conv_name((2, 16, 6, 6), (16, 16, 3, 3), (1, 2)) == "conv2d_im2col_flat"
        assert _conv_name((2, 3, 6, 6), (16, 3, 3, 3), 1) == "conv2d_im2col_flat"          # 3 channels in
        assert _conv_name((2, 16, 6, 6), (8, 16, 3, 3), 1) == "conv2d_im2col_flat"         # 8 out
        assert _conv_name((2, 16, 6, 6), (16, 16, 2, 2), 1) == "conv2d_im2col_flat"        # 2x2 kernel
        assert _conv_name((2, 16, 6, 6), (16, 16, 3, 1), 1) == "conv2d_im2col_flat"        # 3x1 kernel
        assert dispatch.conv2d(np.zeros((2, 16, 6, 6)), np.zeros((16, 16, 3, 3)), 1, 1).forward \
            is winograd.conv2d_forward
        assert dispatch.max_pool2d(np.zeros((2, 3, 4, 4))).forward is fast_pool.max_pool2d_forward
        assert dispatch.linear(np.zeros((2, 3))).forward is linear.linear_forward
        monkeypatch.setattr(dispatch, "WINOGRAD_MIN_CHANNELS", 0)                         # switched off
        assert _conv_name((2, 16, 6, 6), (16, 16, 3, 3), 1) == "conv2d_im2col_flat"
        monkeypatch.setattr(dispatch, "WINOGRAD_MIN_CHANNELS", 32)
        assert _conv_name((2, 16, 6, 6), (16, 16, 3, 3), 1) == "conv2d_im2col_flat"


def test_dispatch_fast_mode_on_cupy(monkeypatch):
    """On CuPy, fast-mode conv is the flat im2col whatever the shape (checked with NumPy arrays
    that dispatch is told are on the GPU)."""
    monkeypatch.setattr(dispatch, "on_gpu", lambda x: True)
    with dispatch.use_mode("fast"):       # (its weight gradient as one product: see test_kernels_dispatch)
        assert _conv_name((2, 16, 6, 6), (16, 16, 3, 3), 1) == "conv2d_im2col_flat_one_product"
        assert _conv_name((2, 3, 6, 6), (16, 3, 3, 3), 2) == "conv2d_im2col_flat_one_product"
