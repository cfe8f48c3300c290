"""Attention with a key mask (padding): the kernel against attention over the real keys alone,
padded keys are invisible (values and gradients), gradchecks with masks cut at a different length
in every sample, and the errors."""
import math

import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels.fast import attention as fast_attention
from minicct.kernels import sdpa_backward, sdpa_forward


def masked_attention_loops(q, k, v, key_mask):
    """One query at a time, over the real keys only (the padded ones are simply left out)."""
    N, H, L, D = q.shape
    out = np.zeros((N, H, L, v.shape[-1]))
    for n in range(N):
        real = np.flatnonzero(key_mask[n])
        for h in range(H):
            for i in range(L):
                s = np.array([q[n, h, i] @ k[n, h, j] for j in real]) / math.sqrt(D)
                p = np.exp(s - s.max())
                p /= p.sum()
                out[n, h, i] = sum(pj * v[n, h, j] for pj, j in zip(p, real))
    return out


def _mask(lengths, S):
    """(N, S) booleans: sample n's first lengths[n] keys are real."""
    return np.arange(S)[None, :] < np.asarray(lengths)[:, None]


def _qkv(rng, N=3, H=2, L=5, S=6, D=4, Dv=3, device="cpu"):
    return [Tensor(rng.standard_normal(s), requires_grad=True, device=device, dtype=np.float64)
            for s in ((N, H, L, D), (N, H, S, D), (N, H, S, Dv))]


def test_masked_forward_matches_loops_over_real_keys(rng, xp):
    q, k, v = (rng.standard_normal(s) for s in ((3, 2, 5, 4), (3, 2, 7, 4), (3, 2, 7, 3)))
    mask = _mask([7, 3, 1], 7)
    mask[0, 2] = False                      # not only a prefix: a hole in the middle
    y, _ = sdpa_forward(xp.asarray(q), xp.asarray(k), xp.asarray(v), key_mask=xp.asarray(mask))
    np.testing.assert_allclose(to_numpy(y), masked_attention_loops(q, k, v, mask), rtol=1e-12, atol=1e-12)


def test_all_true_mask_is_plain_attention(rng, xp):
    q, k, v = (xp.asarray(rng.standard_normal(s)) for s in ((2, 2, 4, 3), (2, 2, 5, 3), (2, 2, 5, 3)))
    a, _ = sdpa_forward(q, k, v)
    b, _ = sdpa_forward(q, k, v, key_mask=xp.ones((2, 5), dtype=bool))
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_padded_keys_are_invisible_and_get_no_gradient(rng, device, kernel_mode):
    q, k, v = _qkv(rng, device=device)
    mask = _mask([6, 4, 2], 6)
    gy = Tensor(rng.standard_normal((3, 2, 5, 3)), device=device, dtype=np.float64)
    y = F.scaled_dot_product_attention(q, k, v, key_mask=mask)
    y.backward(gy)
    # Change what sits under the padding: nothing comes out different.
    pad = ~mask[:, None, :, None]            # (N, 1, S, 1) against (N, H, S, D)
    k2 = k.numpy() + np.where(pad, 100.0, 0.0)
    v2 = v.numpy() - np.where(pad, 50.0, 0.0)
    y2 = F.scaled_dot_product_attention(q, Tensor(k2, device=device, dtype=np.float64),
                                        Tensor(v2, device=device, dtype=np.float64),
                                        key_mask=mask)
    np.testing.assert_allclose(y.numpy(), y2.numpy(), rtol=1e-12, atol=1e-12)
    for g in (k.grad.numpy(), v.grad.numpy()):
        assert np.all(np.where(pad, g, 0.0) == 0.0)
        assert np.all(np.abs(np.where(pad, 0.0, g)).max(axis=(1, 3))[mask] > 0)   # real keys learn


@pytest.mark.parametrize("lengths", [[6, 3, 1], [2, 6, 5]])
def test_gradcheck_masked_sdpa(rng, device, lengths, kernel_mode):
    mask = _mask(lengths, 6)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, key_mask=mask)
    assert gradcheck(fn, _qkv(rng, device=device), names=["q", "k", "v"])


def test_gradcheck_masked_sdpa_with_dropout(rng, device, kernel_mode):
    mask = _mask([6, 2, 4], 6)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, 0.3, True, np.random.default_rng(3),
                                                        key_mask=mask)
    assert gradcheck(fn, _qkv(rng, device=device))


@pytest.mark.parametrize("dropout_p", [0.0, 0.4])
def test_masked_fast_sdpa_in_blocks_matches_the_reference(rng, dropout_p):
    # Small blocks force the blocked NumPy path: each block must get its own rows of the mask.
    q, k, v = (rng.standard_normal(s) for s in ((5, 2, 4, 3), (5, 2, 6, 3), (5, 2, 6, 3)))
    mask = _mask([6, 1, 3, 5, 2], 6)
    draw = lambda: np.random.default_rng(7)
    ref, ref_cache = sdpa_forward(q, k, v, dropout_p, True, draw(), key_mask=mask)
    y, cache = fast_attention.sdpa_forward(q, k, v, dropout_p, True, draw(), key_mask=mask,
                                           block=2 * 4 * 6)        # one image per block
    assert len(cache.blocks) == 5
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-13)
    gy = rng.standard_normal(y.shape)
    for g_fast, g_ref in zip(fast_attention.sdpa_backward(gy, cache), sdpa_backward(gy, ref_cache)):
        np.testing.assert_allclose(g_fast, g_ref, rtol=1e-11, atol=1e-12)
    gk = fast_attention.sdpa_backward(gy, cache)[1]
    assert np.all(np.where(~mask[:, None, :, None], gk, 0.0) == 0.0)


def test_gradcheck_multi_head_attention_with_mask(rng, device, kernel_mode):
    N, L, C, heads = 3, 5, 8, 2
    mask = _mask([5, 2, 4], L)
    x = Tensor(rng.standard_normal((N, L, C)), requires_grad=True, device=device)
    wqkv = Tensor(rng.standard_normal((3 * C, C)) * 0.3, requires_grad=True, device=device)
    wp = Tensor(rng.standard_normal((C, C)) * 0.3, requires_grad=True, device=device)
    bp = Tensor(rng.standard_normal(C), requires_grad=True, device=device)
    fn = lambda x, a, b, c: F.multi_head_attention(x, a, b, c, heads, key_mask=mask)
    assert gradcheck(fn, [x, wqkv, wp, bp], names=["x", "qkv_weight", "proj_weight", "proj_bias"])


def test_key_mask_errors(rng):
    q, k, v = (rng.standard_normal(s) for s in ((2, 1, 3, 4), (2, 1, 5, 4), (2, 1, 5, 4)))
    with pytest.raises(ValueError, match="key_mask must be"):
        sdpa_forward(q, k, v, key_mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="all False"):
        sdpa_forward(q, k, v, key_mask=_mask([5, 0], 5))


def test_multi_head_attention_real_tokens_ignore_padding(rng):
    N, L, C, heads = 2, 6, 8, 2
    mask = _mask([6, 3], L)
    w = [Tensor(rng.standard_normal(s) * 0.3) for s in ((3 * C, C), (C, C), (C,))]
    x = rng.standard_normal((N, L, C))
    x2 = x + np.where(~mask[..., None], 10.0, 0.0)        # other junk under the padding
    y = F.multi_head_attention(Tensor(x, dtype=np.float64), *w, heads, key_mask=mask).numpy()
    y2 = F.multi_head_attention(Tensor(x2, dtype=np.float64), *w, heads, key_mask=mask).numpy()
    np.testing.assert_allclose(y[mask], y2[mask], rtol=1e-12, atol=1e-12)
