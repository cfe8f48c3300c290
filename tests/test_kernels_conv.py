"""conv2d: the reference (kernels/conv.py) and the flat-buffer im2col (kernels/fast/conv_im2col.py)
against naive loops; every gradient of each by gradcheck in float64. Winograd (3x3 stride 1 only):
test_kernels_winograd.py; each fast version against the reference: test_kernels_fast.py."""
import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels import conv
from minicct.kernels.fast import conv_im2col, winograd

IMPLS = {"reference": conv, "im2col_flat": conv_im2col}


@pytest.fixture(params=list(IMPLS))
def impl(request):
    """The conv module under test: its conv2d_forward / conv2d_backward."""
    return IMPLS[request.param]


def conv_ref(x, w, b, stride, padding):
    """Cross-correlation by four nested loops over (n, o, oh, ow); x, w: numpy float64."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    OH, OW = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
    y = np.zeros((N, O, OH, OW))
    for n in range(N):
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    patch = xp[n, :, i * sh:i * sh + KH, j * sw:j * sw + KW]
                    y[n, o, i, j] = np.sum(patch * w[o]) + (b[o] if b is not None else 0.0)
    return y


# (N, C, H, W), (O, KH, KW), stride, padding
CASES = [
    ((2, 3, 7, 5), (4, 3, 2), (1, 1), (1, 0)),    # odd sizes, non-square image and kernel
    ((1, 2, 9, 8), (3, 3, 3), (2, 1), (1, 2)),    # batch 1, stride 2 along H only
    ((2, 3, 6, 6), (2, 2, 3), (2, 3), (0, 1)),    # strides that do not divide the input
    ((2, 1, 5, 5), (2, 5, 5), (1, 1), (3, 3)),    # padding wider than half the kernel
    ((1, 2, 4, 4), (2, 1, 1), (1, 1), (0, 0)),    # 1x1 kernel
    ((3, 2, 5, 7), (3, 3, 3), (2, 2), (1, 1)),    # 3x3 stride 2 'same'
    ((2, 2, 3, 4), (2, 2, 2), (1, 1), (3, 2)),    # padding >= kernel: outputs reach the next image
]


def _inputs(r, xs, ws, bias=True):
    N, C, H, W = xs
    O, KH, KW = ws
    return (r.standard_normal(xs), r.standard_normal((O, C, KH, KW)),
            r.standard_normal(O) if bias else None)


@pytest.mark.parametrize("xs,ws,stride,padding", CASES)
def test_forward_matches_loops(xs, ws, stride, padding, impl, rng, xp):
    x, w, b = _inputs(rng, xs, ws)
    y, _ = impl.conv2d_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), stride, padding)
    np.testing.assert_allclose(to_numpy(y), conv_ref(x, w, b, stride, padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xs,ws,stride,padding", CASES)
def test_gradcheck_x_w_b(xs, ws, stride, padding, impl, rng, device, force_impl):
    force_impl("conv2d", impl)
    x, w, b = (Tensor(a, requires_grad=True, device=device, dtype=np.float64) for a in _inputs(rng, xs, ws))
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride, padding), [x, w, b], names=["x", "w", "b"])


def test_backward_without_bias_and_without_gx(impl, rng, xp):
    x, w, _ = _inputs(rng, (2, 3, 6, 5), (4, 3, 3), bias=False)
    y, cache = impl.conv2d_forward(xp.asarray(x), xp.asarray(w), None, 1, 1)
    gy = xp.asarray(rng.standard_normal(y.shape))
    gx, gw, gb = impl.conv2d_backward(gy, cache)
    gx2, gw2, gb2 = impl.conv2d_backward(gy, cache, need_gx=False)
    assert gb is None and gb2 is None and gx2 is None
    np.testing.assert_allclose(to_numpy(gw2), to_numpy(gw))
    # gx against the adjoint identity <gy, conv(x)> = <gx, x> (conv is linear in x without bias).
    assert np.isclose(float((to_numpy(gy) * to_numpy(y)).sum()), float((to_numpy(gx) * x).sum()))


def test_float32_forward_close_to_float64(impl, rng, xp):
    x, w, b = _inputs(rng, (2, 8, 9, 9), (6, 3, 3))
    y64, _ = impl.conv2d_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), 1, 1)
    y32, _ = impl.conv2d_forward(*(xp.asarray(a, dtype=np.float32) for a in (x, w, b)), 1, 1)
    assert y32.dtype == np.float32
    y64, y32 = to_numpy(y64), to_numpy(y32)
    assert np.abs(y32 - y64).max() <= 1e-5 * np.abs(y64).max()


def test_any_input_layout(impl, rng, xp):
    """Transposed / channels-last / sliced inputs give the same result as contiguous ones."""
    x, w, b = _inputs(rng, (2, 3, 8, 6), (4, 3, 3))
    ref = conv_ref(x, w, b, (1, 1), (1, 1))
    cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    wide = np.zeros((2, 3, 8, 12))
    wide[..., ::2] = x
    for xin in (cl, wide[..., ::2]):
        y, _ = impl.conv2d_forward(xp.asarray(xin), xp.asarray(w), xp.asarray(b), 1, 1)
        np.testing.assert_allclose(to_numpy(y), ref, atol=1e-12)


def test_output_is_channels_last_so_tokens_are_a_view(impl):
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = np.ones((16, 3, 3, 3), np.float32)
    y, _ = impl.conv2d_forward(x, w, None, 1, 1)
    assert y.strides[1] == y.itemsize            # channels vary fastest in memory
    tokens = y.transpose(0, 2, 3, 1)             # (N, H, W, C): C contiguous
    assert tokens.strides[-1] == y.itemsize


def test_im2col_backward_takes_a_channels_last_gradient_without_a_copy(rng):
    """fast/conv_im2col's GEMM output is (OH, OW, N, O) memory; a gy in that order (what max-pooling's
    backward and the token reshape hand back) is the weight GEMM's operand as it is, not a copy."""
    x, w, _ = _inputs(rng, (2, 3, 8, 8), (4, 3, 3))
    for stride in (1, 2):
        y, cache = conv_im2col.conv2d_forward(x, w, None, stride, 1)
        gy = np.ascontiguousarray(rng.standard_normal(y.shape).transpose(2, 3, 0, 1)).transpose(2, 3, 0, 1)
        assert np.shares_memory(cache.g.output_grads(gy), gy)
        assert not np.shares_memory(cache.g.output_grads(np.ascontiguousarray(gy)), gy)   # NCHW: one copy


@pytest.mark.parametrize("xshape,wshape,kw,match", [
    ((2, 3, 8), (4, 3, 3, 3), {}, "4-D"),
    ((2, 3, 8, 8), (4, 2, 3, 3), {}, "channels"),
    ((2, 3, 4, 4), (4, 3, 7, 3), {"padding": 1}, "larger than the padded input"),
    ((2, 3, 8, 8), (4, 3, 3, 3), {"stride": 0}, "stride"),
    ((2, 3, 8, 8), (4, 3, 3, 3), {"padding": -1}, "padding"),
])
def test_bad_input_raises_value_error(xshape, wshape, kw, match, kernel_mode):
    x, w = Tensor(np.zeros(xshape)), Tensor(np.zeros(wshape))
    with pytest.raises(ValueError, match=match):
        F.conv2d(x, w, **kw)
    for module in (conv, conv_im2col, winograd):      # every version checks its arguments
        with pytest.raises(ValueError, match=match):
            module.conv2d_forward(x.numpy(), w.numpy(), **kw)


def test_weight_grad_blocks_add_up_to_one_product(rng, monkeypatch):
    """The blocked product of fast/conv_im2col (_GW_BLOCK columns at a time) equals one product,
    with a block size that leaves a short last block; and through conv2d_backward, the reference's gw."""
    monkeypatch.setattr(conv_im2col, "_GW_BLOCK", 7)
    cols, gY = rng.standard_normal((5, 7 * 4 + 3)), rng.standard_normal((7 * 4 + 3, 6))
    np.testing.assert_allclose(conv_im2col._weight_grad(cols, gY, 7), cols @ gY, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv_im2col._weight_grad(cols, gY, None), cols @ gY, rtol=1e-12, atol=1e-12)
    x, w, b = _inputs(rng, (2, 3, 5, 4), (4, 3, 3))          # M = 5 rows * 4 columns * 2 images = 40
    y, cache = conv_im2col.conv2d_forward(x, w, b, 1, 1)
    gy = rng.standard_normal(y.shape)
    y_ref, cache_ref = conv.conv2d_forward(x, w, b, 1, 1)
    assert cache.cols.shape[1] % 7 != 0
    np.testing.assert_allclose(conv_im2col.conv2d_backward(gy, cache)[1],       # _GW_BLOCK, read now: 7
                               conv.conv2d_backward(gy, cache_ref)[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv_im2col.conv2d_backward(gy, cache, gw_block=None)[1],   # the GPU's way
                               conv.conv2d_backward(gy, cache_ref)[1], rtol=1e-12, atol=1e-12)
