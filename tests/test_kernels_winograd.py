"""Winograd F(2x2, 3x3) (kernels/fast/winograd.py): the fast 3x3 conv against loops, against the
reference and the flat im2col, and by gradcheck through F.conv2d.

The kernel is called directly (any channel count, any array module); the dispatch tests
(test_kernels_fast.py) check that fast mode takes it only where it should (NumPy, 3x3, stride 1,
enough channels).
"""
import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels import conv, dispatch
from minicct.kernels.fast import conv_im2col, winograd
from test_kernels_conv import conv_ref   # the loop reference (tests/ is on the path)

# (N, C, H, W), O, padding
CASES = [
    ((2, 3, 7, 5), 4, (1, 1)),     # odd output sizes: the last tile row/column is cut off
    ((1, 2, 6, 6), 3, (0, 0)),     # no padding, batch 1
    ((2, 3, 5, 4), 2, (2, 1)),     # padding wider than the kernel's half, non-square
    ((3, 1, 3, 3), 1, (1, 0)),     # one input and one output channel, tiny image
    ((2, 4, 8, 8), 5, (1, 1)),     # 'same' conv on an even image (CCT's case)
]


def _inputs(r, xs, O, bias=True):
    return (r.standard_normal(xs), r.standard_normal((O, xs[1], 3, 3)),
            r.standard_normal(O) if bias else None)


def _loop_grads(x, w, b, padding, gy):
    """Gradients of sum(gy * conv(x, w, b)) by the adjoint of the loop conv (loops again)."""
    N, C, H, W = x.shape
    O = w.shape[0]
    ph, pw = padding
    xpad = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    gxpad, gw = np.zeros_like(xpad), np.zeros_like(w)
    for n in range(N):
        for o in range(O):
            for i in range(gy.shape[2]):
                for j in range(gy.shape[3]):
                    g = gy[n, o, i, j]
                    gxpad[n, :, i:i + 3, j:j + 3] += g * w[o]
                    gw[o] += g * xpad[n, :, i:i + 3, j:j + 3]
    return gxpad[:, :, ph:ph + H, pw:pw + W], gw, gy.sum(axis=(0, 2, 3))


@pytest.mark.parametrize("xs,O,padding", CASES)
def test_forward_and_backward_match_loops(xs, O, padding, rng, xp):
    x, w, b = _inputs(rng, xs, O)
    y, cache = winograd.conv2d_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), 1, padding)
    np.testing.assert_allclose(to_numpy(y), conv_ref(x, w, b, (1, 1), padding), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    got = winograd.conv2d_backward(xp.asarray(gy), cache)
    for name, g, ref in zip(("gx", "gw", "gb"), got, _loop_grads(x, w, b, padding, gy)):
        assert g.shape == ref.shape, name
        np.testing.assert_allclose(to_numpy(g), ref, rtol=1e-11, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("xs,O,padding", CASES[:3])
def test_gradcheck_through_conv2d(xs, O, padding, rng, device, force_impl):
    impl = force_impl("conv2d", winograd)           # whatever the channel count and device
    x, w, b = (Tensor(a, requires_grad=True, device=device, dtype=np.float64) for a in _inputs(rng, xs, O))
    y = F.conv2d(x, w, b, 1, padding)
    assert y._ctx.impl is impl
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, 1, padding), [x, w, b], names=["x", "w", "b"])


@pytest.mark.parametrize("other", [conv, conv_im2col], ids=["reference", "im2col_flat"])
def test_float32_matches_im2col_at_cct_size(other, rng, xp):
    """CCT-2's second conv (64 -> 128 channels on 16x16, a micro-batch of 16) in float32: Winograd
    and im2col agree to float32 rounding, forward and every gradient."""
    x = xp.asarray(rng.standard_normal((16, 64, 16, 16)), dtype=np.float32)
    w = xp.asarray(rng.standard_normal((128, 64, 3, 3)) * 0.05, dtype=np.float32)
    b = xp.asarray(rng.standard_normal(128), dtype=np.float32)
    y1, c1 = winograd.conv2d_forward(x, w, b, 1, (1, 1))
    y0, c0 = other.conv2d_forward(x, w, b, 1, 1)
    assert y1.dtype == np.float32
    gy = xp.asarray(rng.standard_normal(y0.shape), dtype=np.float32)
    pairs = [(y1, y0)] + list(zip(winograd.conv2d_backward(gy, c1), other.conv2d_backward(gy, c0)))
    for a, b_ in pairs:
        a, b_ = to_numpy(a), to_numpy(b_)
        assert np.abs(a - b_).max() <= 1e-5 * np.abs(b_).max()


def test_need_flags_and_no_bias(rng, xp):
    x, w, _ = _inputs(rng, (2, 3, 6, 6), 4, bias=False)
    y, cache = winograd.conv2d_forward(xp.asarray(x), xp.asarray(w), None, 1, (1, 1))
    gy = xp.asarray(rng.standard_normal(y.shape))
    gx, gw, gb = winograd.conv2d_backward(gy, cache)
    assert gb is None
    assert winograd.conv2d_backward(gy, cache, need_gx=False)[0] is None
    assert winograd.conv2d_backward(gy, cache, need_gw=False)[1] is None
    np.testing.assert_allclose(to_numpy(winograd.conv2d_backward(gy, cache, need_gx=False)[1]), to_numpy(gw))


def test_any_input_and_gradient_layout(rng):
    """Contiguous, channels-last and strided inputs and upstream gradients give the same numbers."""
    x, w, b = _inputs(rng, (2, 3, 6, 8), 4)
    gy = rng.standard_normal((2, 4, 6, 8))
    ref_y, cache = winograd.conv2d_forward(x, w, b, 1, (1, 1))
    ref_g = winograd.conv2d_backward(gy, cache)
    cl = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    wide = np.zeros((2, 3, 6, 16))
    wide[..., ::2] = x
    for xin, gin in ((cl(x), cl(gy)), (wide[..., ::2], gy.copy(order="F"))):
        y, cache = winograd.conv2d_forward(xin, w, b, 1, (1, 1))
        np.testing.assert_allclose(y, ref_y, atol=1e-12)
        for g, r in zip(winograd.conv2d_backward(gin, cache), ref_g):
            np.testing.assert_allclose(g, r, atol=1e-12)


def test_output_memory_is_pixels_then_images_then_channels():
    """The output is an (N, O, OH, OW) view of (OH, OW, N, O) memory: a slice of rows or columns
    (what pooling reads) is whole (N, O) blocks, and channels stay innermost for the tokens."""
    x = np.ones((2, 16, 8, 8), np.float32)
    y, _ = winograd.conv2d_forward(x, np.ones((32, 16, 3, 3), np.float32), None, 1, (1, 1))
    assert y.strides[1] == y.itemsize and y.strides[0] == 32 * y.itemsize
    assert y.strides[3] == 2 * 32 * y.itemsize


def test_only_3x3_stride_1_is_accepted():
    x = np.zeros((1, 2, 6, 6))
    with pytest.raises(ValueError, match="3x3 kernel and stride 1"):
        winograd.conv2d_forward(x, np.zeros((2, 2, 3, 3)), None, 2, 1)
    with pytest.raises(ValueError, match="3x3 kernel and stride 1"):
        winograd.conv2d_forward(x, np.zeros((2, 2, 2, 2)), None, 1, 1)


def test_gradcheck_catches_a_wrong_transform(rng, monkeypatch):
    """A sign slip in the transposed input transform (one of its eight adds) is caught."""
    monkeypatch.setattr(dispatch, "WINOGRAD_MIN_CHANNELS", 1)    # fast mode takes Winograd here
    real = winograd._input_transform_backward

    def broken(gV, TH, TW, gP):
        gV = gV.copy()
        gV[:, 3] *= -1          # as if "c[3] -= gV[:, 3]" were "+="
        return real(gV, TH, TW, gP)

    monkeypatch.setattr(winograd, "_input_transform_backward", broken)
    x, w, b = (Tensor(a, requires_grad=True, dtype=np.float64) for a in _inputs(rng, (1, 2, 4, 4), 2))
    with dispatch.use_mode("fast"):
        assert F.conv2d(x, w, b, 1, 1)._ctx.impl.name == "conv2d_winograd"
    with dispatch.use_mode("fast"), pytest.raises(AssertionError):
        gradcheck(lambda x, w, b: F.conv2d(x, w, b, 1, 1), [x, w, b], names=["x", "w", "b"])
