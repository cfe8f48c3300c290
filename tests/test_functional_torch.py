"""Cross-check against PyTorch where it is installed (it is never a dependency of minicct):
same inputs, same weights, same values and gradients."""
import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor

torch = pytest.importorskip("torch", reason="PyTorch not installed: the cross-check is optional")
TF = torch.nn.functional


def _pair(rng, *shapes, ints=False):
    arrays = [rng.standard_normal(s) for s in shapes]
    ours = [Tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    return ours, theirs


def _check(ours_out, theirs_out, ours_in, theirs_in, rng, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(ours_out.numpy(), theirs_out.detach().numpy(), rtol=rtol, atol=atol)
    gy = rng.standard_normal(tuple(theirs_out.shape))
    ours_out.backward(Tensor(gy, dtype=np.float64))
    theirs_out.backward(torch.tensor(gy))
    for a, b in zip(ours_in, theirs_in):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=rtol, atol=atol)


def test_conv2d(rng, kernel_mode):
    o, t = _pair(rng, (2, 3, 9, 7), (4, 3, 3, 2), (4,))
    _check(F.conv2d(*o, (2, 1), (1, 2)), TF.conv2d(*t, stride=(2, 1), padding=(1, 2)), o, t, rng)


def test_conv2d_3x3_with_16_channels(rng, kernel_mode):
    """The shape fast mode runs by Winograd (3x3, stride 1, 16 channels in and out)."""
    o, t = _pair(rng, (2, 16, 7, 6), (16, 16, 3, 3), (16,))
    _check(F.conv2d(*o, 1, 1), TF.conv2d(*t, stride=1, padding=1), o, t, rng)


def test_max_pool2d_with_ties(rng, kernel_mode):
    a = rng.integers(0, 3, (2, 3, 9, 8)).astype(float)
    o, t = Tensor(a, requires_grad=True, dtype=np.float64), torch.tensor(a, requires_grad=True)
    _check(F.max_pool2d(o, 3, 2, 1), TF.max_pool2d(t, 3, 2, 1), [o], [t], rng)


def test_layer_norm_gelu_softmax(rng):
    o, t = _pair(rng, (2, 5, 6), (6,), (6,))
    _check(F.softmax(F.gelu(F.layer_norm(o[0], (6,), o[1], o[2])), 1),
           torch.softmax(TF.gelu(TF.layer_norm(t[0], (6,), t[1], t[2])), 1), o, t, rng,
           rtol=1e-6, atol=1e-6)   # our erf is within 1.5e-7, not exact


@pytest.mark.parametrize("soft", [False, True])
def test_cross_entropy_label_smoothing(soft, rng):
    o, t = _pair(rng, (6, 5))
    target = rng.dirichlet(np.ones(5), 6) if soft else rng.integers(0, 5, 6)
    _check(F.cross_entropy(o[0], Tensor(target, dtype=np.float64 if soft else None), 0.1),
           TF.cross_entropy(t[0], torch.tensor(target), label_smoothing=0.1), o, t, rng)


def test_multi_head_attention_loads_official_cct_weights(rng):
    """The official CCT Attention, written out in torch, with the same qkv / proj weights."""
    N, L, C, H = 2, 5, 8, 2
    o, t = _pair(rng, (N, L, C), (3 * C, C), (C, C), (C,))

    def official(x, wqkv, wproj, bproj):
        qkv = TF.linear(x, wqkv).reshape(N, L, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * (C // H) ** -0.5).softmax(dim=-1)
        return TF.linear((attn @ v).transpose(1, 2).reshape(N, L, C), wproj, bproj)

    _check(F.multi_head_attention(*o, num_heads=H), official(*t), o, t, rng)
