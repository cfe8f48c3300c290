"""Parameter gradients when the input needs none — which is how training always runs.

A training batch is data: it never requires a gradient, so every layer's backward is asked for its
weight gradient alone. Gradient checks, on the other hand, usually make every input require one, so
a backward that mixes up which gradient was asked for (``need_gx`` and ``need_gw`` swapped) passes
them and leaves the weights of a real run without gradients. These tests ask for each gradient
alone and compare with naive references, with the all-inputs case, and with the PyTorch twin.
"""
import numpy as np
import pytest

import minicct
from minicct import functional as F, models
from minicct.kernels import dispatch



def tensor(a, requires_grad):
    return minicct.Tensor(a, requires_grad=requires_grad, dtype=np.float64)


def naive_conv_grads(x, w, gy, stride, padding):
    """Loops over kernel offsets: gw[o, c, i, j] = sum gy[n, o, p, q] xpad[n, c, p*s+i, q*s+j];
    gx scatters gy[n, o, p, q] w[o, c, i, j] back to the same places; gb = sum of gy."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    _, _, OH, OW = gy.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(KH):
        for j in range(KW):
            patch = xp[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]   # (N, C, OH, OW)
            gw[:, :, i, j] = np.einsum("nopq,ncpq->oc", gy, patch)
            gxp[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += np.einsum("nopq,oc->ncpq", gy, w[:, :, i, j])
    return gxp[:, :, padding:padding + H, padding:padding + W], gw, gy.sum(axis=(0, 2, 3))


# 3x3 stride 1 takes Winograd in fast mode (kernel_mode lowers its channel rule); the others im2col
CONVS = [(3, 1, 1), (3, 2, 1), (4, 4, 0), (1, 1, 0)]   # (kernel, stride, padding)


@pytest.mark.parametrize("k,stride,padding", CONVS)
@pytest.mark.parametrize("x_grad,w_grad", [(False, True), (True, False), (True, True)])
def test_conv2d_gives_each_gradient_asked_for(kernel_mode, k, stride, padding, x_grad, w_grad):
    rng = np.random.default_rng(k * 10 + stride)
    x, w, b = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, k, k)), rng.standard_normal(4)
    xt, wt, bt = tensor(x, x_grad), tensor(w, w_grad), tensor(b, True)
    with dispatch.use_mode(kernel_mode):   # (kernel_mode also lowers the fast size rules)
        y = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
        if kernel_mode == "fast" and (k, stride) == (3, 1):
            assert y._ctx.impl.name == "conv2d_winograd"       # the swap is caught in Winograd too
        gy = rng.standard_normal(y.shape)
        y.backward(minicct.Tensor(gy, dtype=np.float64))
    gx, gw, gb = naive_conv_grads(x, w, gy, stride, padding)
    assert (xt.grad is not None) == x_grad and (wt.grad is not None) == w_grad
    if x_grad:
        np.testing.assert_allclose(xt.grad.numpy(), gx, rtol=1e-10, atol=1e-10)
    if w_grad:
        np.testing.assert_allclose(wt.grad.numpy(), gw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(bt.grad.numpy(), gb, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("x_grad,w_grad", [(False, True), (True, False), (True, True)])
def test_linear_gives_each_gradient_asked_for(kernel_mode, x_grad, w_grad):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 5, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    xt, wt, bt = tensor(x, x_grad), tensor(w, w_grad), tensor(b, True)
    gy = rng.standard_normal((2, 5, 3))
    with dispatch.use_mode(kernel_mode):   # (kernel_mode also lowers the fast size rules)
        F.linear(xt, wt, bt).backward(minicct.Tensor(gy, dtype=np.float64))
    assert (xt.grad is not None) == x_grad and (wt.grad is not None) == w_grad
    if x_grad:
        np.testing.assert_allclose(xt.grad.numpy(), gy @ w, rtol=1e-12, atol=1e-12)
    if w_grad:
        np.testing.assert_allclose(wt.grad.numpy(), np.einsum("nlo,nli->oi", gy, x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(bt.grad.numpy(), gy.sum(axis=(0, 1)), rtol=1e-12, atol=1e-12)


TINY = dict(img_size=8, embedding_dim=16, num_layers=2, num_heads=2, mlp_ratio=1, in_planes=8)
NAMES = ["cct_2_3x2_32", "cct_6_3x1_32_sine", "cvt_2_4_32_sine", "vit_2_4_32"]


def model_param_grads(model, x, w, x_grad):
    model.zero_grad()
    y = model(tensor(x, x_grad))
    y.backward(minicct.Tensor(w, dtype=np.float64))
    return {n: None if p.grad is None else p.grad.numpy().copy() for n, p in model.named_parameters()
            if p.requires_grad}


@pytest.mark.parametrize("name", NAMES)
def test_model_parameter_grads_do_not_depend_on_the_input_needing_one(kernel_mode, name):
    minicct.manual_seed(0)
    model = models.create_model(name, **TINY).double().eval()
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 3, 8, 8)), rng.standard_normal((3, 10))
    with dispatch.use_mode(kernel_mode):   # (kernel_mode also lowers the fast size rules)
        as_trained = model_param_grads(model, x, w, x_grad=False)
        as_checked = model_param_grads(model, x, w, x_grad=True)
    assert as_trained.keys() == as_checked.keys()
    for n, g in as_trained.items():
        assert g is not None, f"{n} got no gradient with an input that needs none"
        np.testing.assert_allclose(g, as_checked[n], rtol=1e-10, atol=1e-12, err_msg=n)


@pytest.mark.parametrize("name", NAMES)
def test_model_parameter_grads_match_pytorch_with_an_input_needing_none(name):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the cross-check against it "
                                                "is optional (pip install torch to run it)")
    from test_models_torch import CLOSE, build_pair   # the PyTorch twin of every model
    ours, theirs = build_pair(name, **TINY)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 3, 8, 8)), rng.standard_normal((3, 10))
    (theirs(torch.from_numpy(x)) * torch.from_numpy(w)).sum().backward()
    got = model_param_grads(ours, x, w, x_grad=False)
    want = {k: p.grad for k, p in theirs.named_parameters() if p.requires_grad}
    assert set(got) == set(want)
    for k, g in want.items():
        assert got[k] is not None, f"{k} got no gradient with an input that needs none"
        assert np.allclose(got[k], g.numpy(), **CLOSE), k
