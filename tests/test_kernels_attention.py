"""Attention: the fused sdpa kernel against loops and against the same math composed from
primitive Tensor ops (values and gradients); gradcheck in both kernel modes; the fast version
(kernels/fast/attention.py) against the reference, with dropout and across image blocks; the
multi-head wrapper with the official CCT weight layout."""
import math

import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels import sdpa_forward, sdpa_backward, dispatch
from minicct.kernels.fast import attention as fast_attention


def sdpa_loops(q, k, v):
    """Attention one query at a time."""
    *lead, L, D = q.shape
    out = np.zeros(tuple(lead) + (L, v.shape[-1]))
    for idx in np.ndindex(*lead):
        for i in range(L):
            s = np.array([q[idx][i] @ k[idx][j] for j in range(k.shape[-2])]) / math.sqrt(D)
            p = np.exp(s - s.max())
            p /= p.sum()
            out[idx][i] = sum(p[j] * v[idx][j] for j in range(len(p)))
    return out


def sdpa_composed(q, k, v):
    """The reference on the Tensor engine: matmul, max, exp, sum, div, each with its own backward."""
    s = (q @ k.swapaxes(-1, -2)) * (q.shape[-1] ** -0.5)
    s = s - s.max(axis=-1, keepdims=True).detach()      # shift only for stability: no gradient
    e = s.exp()
    return (e / e.sum(axis=-1, keepdims=True)) @ v


def _qkv(rng, N=2, H=3, L=5, S=4, D=6, Dv=3, device="cpu"):
    return [Tensor(rng.standard_normal(s), requires_grad=True, device=device, dtype=np.float64)
            for s in ((N, H, L, D), (N, H, S, D), (N, H, S, Dv))]


def test_forward_matches_loops(rng, xp):
    q, k, v = (rng.standard_normal(s) for s in ((2, 2, 5, 4), (2, 2, 7, 4), (2, 2, 7, 3)))
    y, _ = sdpa_forward(xp.asarray(q), xp.asarray(k), xp.asarray(v))
    np.testing.assert_allclose(to_numpy(y), sdpa_loops(q, k, v), rtol=1e-12, atol=1e-12)


def test_fused_equals_composed_values_and_gradients(rng, device, kernel_mode):
    fused_in = _qkv(rng, device=device)
    comp_in = [Tensor(t.data.copy(), requires_grad=True, dtype=np.float64) for t in fused_in]
    gy = rng.standard_normal((2, 3, 5, 3))
    yf = F.scaled_dot_product_attention(*fused_in)
    yc = sdpa_composed(*comp_in)
    np.testing.assert_allclose(yf.numpy(), yc.numpy(), rtol=1e-12, atol=1e-13)
    yf.backward(Tensor(gy, device=device, dtype=np.float64))
    yc.backward(Tensor(gy, device=device, dtype=np.float64))
    for a, b, name in zip(fused_in, comp_in, "qkv"):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_gradcheck_q_k_v(rng, device, kernel_mode):
    assert gradcheck(F.scaled_dot_product_attention, _qkv(rng, device=device), names=["q", "k", "v"])


def test_gradcheck_with_attention_dropout(rng, device, kernel_mode):
    # A fresh generator with the same seed for every call: the same mask in every forward.
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, 0.3, True, np.random.default_rng(7))
    assert gradcheck(fn, _qkv(rng, N=1, H=2, device=device))


def test_dropout_only_while_training(rng):
    q, k, v = _qkv(rng)
    a = F.scaled_dot_product_attention(q, k, v, dropout_p=0.9, training=False)
    b = F.scaled_dot_product_attention(q, k, v)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_float32_forward_close_to_float64(rng, xp):
    q, k, v = (rng.standard_normal((2, 2, 64, 64)) for _ in range(3))
    y64 = to_numpy(sdpa_forward(*(xp.asarray(a) for a in (q, k, v)))[0])
    y32 = to_numpy(sdpa_forward(*(xp.asarray(a, dtype=np.float32) for a in (q, k, v)))[0])
    assert y32.dtype == np.float32
    assert np.abs(y32 - y64).max() <= 1e-5 * np.abs(y64).max()


def test_bad_shapes_raise_value_error():
    q = Tensor(np.zeros((2, 2, 5, 4)))
    with pytest.raises(ValueError, match="do not fit"):
        F.scaled_dot_product_attention(q, Tensor(np.zeros((2, 2, 5, 3))), Tensor(np.zeros((2, 2, 5, 4))))


# ---- multi-head attention ---------------------------------------------------------------------------
def mha_composed(x, wqkv, wproj, bproj, heads):
    """The official CCT Attention.forward, line by line, on Tensor ops."""
    N, L, C = x.shape
    qkv = (x @ wqkv.T).reshape(N, L, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    y = sdpa_composed(q, k, v).transpose(1, 2).reshape(N, L, C)
    return y @ wproj.T + bproj


def _mha_inputs(rng, N=2, L=5, C=6, device="cpu"):
    shapes = ((N, L, C), (3 * C, C), (C, C), (C,))
    return [Tensor(rng.standard_normal(s) * (0.4 if i else 1.0), requires_grad=True, device=device,
                   dtype=np.float64) for i, s in enumerate(shapes)]


def test_mha_equals_composed_reference(rng, device, kernel_mode):
    ins = _mha_inputs(rng, device=device)
    ref_ins = [Tensor(t.data.copy(), requires_grad=True, dtype=np.float64) for t in ins]
    y = F.multi_head_attention(*ins, num_heads=2)
    yr = mha_composed(*ref_ins, 2)
    np.testing.assert_allclose(y.numpy(), yr.numpy(), rtol=1e-11, atol=1e-12)
    gy = Tensor(rng.standard_normal(y.shape), device=device, dtype=np.float64)
    y.backward(gy)
    yr.backward(gy)
    for a, b in zip(ins, ref_ins):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_mha_gradcheck_every_input(rng, device, kernel_mode):
    fn = lambda x, wq, wp, bp: F.multi_head_attention(x, wq, wp, bp, 3)
    assert gradcheck(fn, _mha_inputs(rng, device=device), names=["x", "qkv_weight", "proj_weight", "proj_bias"])


@pytest.mark.parametrize("heads,wshape,match", [(4, (18, 6), "divide"), (2, (12, 6), "qkv_weight")])
def test_mha_bad_arguments_raise_value_error(heads, wshape, match):
    x = Tensor(np.zeros((1, 3, 6)))
    with pytest.raises(ValueError, match=match):
        F.multi_head_attention(x, Tensor(np.zeros(wshape)), Tensor(np.zeros((6, 6))), None, heads)


def test_dropout_keeps_expected_value_and_drops_everything_at_p_one(rng):
    q, k, v = (rng.standard_normal((2, 2, 6, 4)) for _ in range(3))
    plain, _ = sdpa_forward(q, k, v)
    gen = np.random.default_rng(0)
    mean = sum(sdpa_forward(q, k, v, 0.5, True, gen)[0] for _ in range(4000)) / 4000
    np.testing.assert_allclose(mean, plain, atol=0.05)        # inverted dropout: unbiased
    y, cache = sdpa_forward(q, k, v, 1.0, True, gen)
    assert not np.any(y)
    for g in sdpa_backward(np.ones_like(y), cache):
        assert np.all(np.isfinite(g))


# ---- the fast attention against the reference -------------------------------------------------------
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("shape,block", [
    ((5, 3, 7, 4, 7, 3), None),           # (N, H, L, D, S, Dv); None: one block
    ((5, 3, 7, 4, 7, 3), 2 * 3 * 7 * 7),  # 2 images per block: blocks 2, 2, 1
    ((3, 2, 5, 3, 9, 6), 1),              # one image per block (the smallest block)
    ((4, 5, 3, 2), 1 << 18),              # no head axis, S != L
    ((6, 4), 10)])                        # 2-D: always one block
def test_fast_equals_reference(shape, block, p, rng):
    """Values and every gradient, float64; with dropout the same generator seed gives the same masks
    (blocks draw them in the same order as one whole draw)."""
    if len(shape) == 6:
        N, H, L, D, S, Dv = shape
        qs, ks, vs = (N, H, L, D), (N, H, S, D), (N, H, S, Dv)
    elif len(shape) == 4:
        N, L, D, S = shape
        qs, ks, vs = (N, L, D), (N, S, D), (N, S, D + 1)
    else:
        qs, ks, vs = shape, (shape[0] + 3, shape[1]), (shape[0] + 3, 2)
    q, k, v = (rng.standard_normal(s) for s in (qs, ks, vs))
    q = np.asfortranarray(q)                                        # any memory order
    gy = rng.standard_normal(qs[:-1] + vs[-1:])
    y_ref, c_ref = sdpa_forward(q, k, v, p, True, np.random.default_rng(5))
    y_fast, c_fast = fast_attention.sdpa_forward(q, k, v, p, True, np.random.default_rng(5), block=block)
    if len(shape) == 6 and block == 2 * 3 * 7 * 7:
        assert [b for b, _ in c_fast.blocks] == [slice(0, 2), slice(2, 4), slice(4, 6)]
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    for a, b, name in zip(fast_attention.sdpa_backward(gy, c_fast), sdpa_backward(gy, c_ref), "qkv"):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)


def test_fast_blocks_change_no_bit_in_float32(rng, monkeypatch):
    """Blocking only splits the images: float32 values, masks and gradients are bit for bit those of
    one block."""
    q, k, v = (rng.standard_normal((5, 3, 7, 4)).astype(np.float32) for _ in range(3))
    gy = rng.standard_normal((5, 3, 7, 4)).astype(np.float32)
    runs = []
    for block in (None, 2 * 3 * 7 * 7):
        y, cache = fast_attention.sdpa_forward(q, k, v, 0.3, True, np.random.default_rng(1), block=block)
        runs.append((y, fast_attention.sdpa_backward(gy, cache)))
    (y1, g1), (y2, g2) = runs
    np.testing.assert_array_equal(y2, y1)
    for a, b in zip(g2, g1):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_blocks_draw_the_reference_masks_from_the_philox_stream(dtype, rng):
    """Without a generator= the masks come from the Philox dropout stream, which draws whole blocks
    of 4 numbers: 3 * 7 * 7 = 147 scores an image, and blocks of 2 images still give the masks of
    one whole draw (the reference's), and move the stream as far."""
    from minicct import random as mr
    q, k, v = (rng.standard_normal((5, 3, 7, 4)).astype(dtype) for _ in range(3))
    runs = []
    for f in (sdpa_forward, lambda *a: fast_attention.sdpa_forward(*a, block=2 * 3 * 7 * 7),
              lambda *a: fast_attention.sdpa_forward(*a, block=None)):
        mr.manual_seed(4)
        y, cache = f(q, k, v, 0.4, True)
        keep = cache.keep if hasattr(cache, "keep") else np.concatenate([c.keep for _, c in cache.blocks])
        runs.append((keep, mr.dropout_generator().counter))
    assert len(cache.blocks) == 1
    for keep, counter in runs[1:]:
        np.testing.assert_array_equal(keep, runs[0][0])
        assert counter == runs[0][1] > 0


def test_fast_float32_close_to_reference(rng):
    q, k, v = (rng.standard_normal((3, 2, 33, 16)).astype(np.float32) for _ in range(3))
    gy = rng.standard_normal((3, 2, 33, 16)).astype(np.float32)
    y_ref, c_ref = sdpa_forward(q, k, v, 0.2, True, np.random.default_rng(2))
    y_fast, c_fast = fast_attention.sdpa_forward(q, k, v, 0.2, True, np.random.default_rng(2), block=2000)
    assert y_fast.dtype == np.float32 and len(c_fast.blocks) == 3
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(fast_attention.sdpa_backward(gy, c_fast), sdpa_backward(gy, c_ref)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fast_gradcheck_across_blocks_with_dropout(rng, monkeypatch):
    # F's attention runs the fast version with blocks of 2 images (2, then 1). The block size is an
    # argument (its default is read once, at import), so it is bound here rather than patched.
    blocks = []

    def forward(*args, **kwargs):
        y, cache = fast_attention.sdpa_forward(*args, block=2 * 2 * 5 * 4, **kwargs)
        blocks.append(len(cache.blocks))
        return y, cache
    impl = dispatch.Impl("sdpa_fast_small_blocks", forward, fast_attention.sdpa_backward)
    monkeypatch.setattr(dispatch, "sdpa", lambda q, k=None: impl)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, 0.3, True, np.random.default_rng(7))
    assert gradcheck(fn, _qkv(rng, N=3, H=2), names=["q", "k", "v"])
    assert blocks and set(blocks) == {2}


def test_fast_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="do not fit"):
        fast_attention.sdpa_forward(np.zeros((2, 5, 4)), np.zeros((2, 5, 3)), np.zeros((2, 5, 4)))
