"""AdamW with its learning rate and step count in 0-d arrays (what a CUDA-graph step needs, issue 14):
the same numbers as with Python numbers, on NumPy here and on CuPy with ``pytest --device gpu``."""
import numpy as np
import pytest

import minicct
from minicct.kernels import adamw as adamw_ref
from minicct.optim import AdamW, param_groups_weight_decay


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_reference_update_same_numbers_with_0d_arrays(dtype, weight_decay, rng):
    """lr as a 0-d float64 array and step as a 0-d int64 array give the very bits of Python numbers
    (a float64 scalar would otherwise promote float32 arithmetic and round differently)."""
    n = 257
    plain = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    plain[2] = np.abs(plain[2])
    arrays = [a.copy() for a in plain]
    for t in range(1, 60):
        g = rng.standard_normal(n).astype(dtype)
        lr = float(rng.uniform(1e-5, 1e-2))
        hyper = dict(weight_decay=weight_decay, beta1=0.9, beta2=0.999, eps=1e-8)
        adamw_ref.adamw_update_(plain[0], g, plain[1], plain[2], lr=lr, step=t, **hyper)
        adamw_ref.adamw_update_(arrays[0], g, arrays[1], arrays[2], lr=np.asarray(lr, np.float64),
                                step=np.asarray(t, np.int64), **hyper)
    for a, b in zip(plain, arrays):
        assert b.dtype == dtype
        np.testing.assert_array_equal(a, b)


def _model_and_grads(rng, xp=np):
    """A few parameters (a weight group and a no-decay group) and a fixed gradient draw per step."""
    class Net(minicct.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = minicct.nn.Linear(5, 4)
            self.norm = minicct.nn.LayerNorm(4)
    net = Net()
    params = list(net.parameters())
    for p in params:
        p.data[...] = xp.asarray(rng.standard_normal(p.shape), dtype=p.dtype)
    return net, params


def _run(opt, params, grads, lrs, load_lr):
    for step_grads, lr in zip(grads, lrs):
        for p, g in zip(params, step_grads):
            p.grad = minicct.Tensor(g)
        for group in opt.param_groups:
            group["lr"] = lr
        if load_lr:
            opt.load_lr()
        opt.step()
        opt.zero_grad()


def test_optimizer_with_device_scalars_matches_plain(device, xp, rng):
    """N steps with a changing lr: same parameters, moments and saved steps as the plain AdamW, and
    the saved state continues identically in either mode."""
    net_a, pa = _model_and_grads(np.random.default_rng(1), xp)
    net_b, pb = _model_and_grads(np.random.default_rng(1), xp)
    plain = AdamW(param_groups_weight_decay(net_a, 0.05), lr=1e-3)
    scal = AdamW(param_groups_weight_decay(net_b, 0.05), lr=1e-3)
    scal.use_device_scalars()
    assert scal.device_scalars and not plain.device_scalars
    grads = [[xp.asarray(rng.standard_normal(p.shape), dtype=p.dtype) for p in pa] for _ in range(7)]
    lrs = [1e-3 * (0.7 ** i) for i in range(7)]
    _run(plain, pa, grads, lrs, load_lr=False)
    _run(scal, pb, grads, lrs, load_lr=True)
    tol = dict(rtol=1e-6, atol=1e-7) if device == "gpu" else dict(rtol=0, atol=0)
    for a, b in zip(pa, pb):
        np.testing.assert_allclose(minicct.backend.to_numpy(b.data), minicct.backend.to_numpy(a.data), **tol)
    sa, sb = plain.state_dict(), scal.state_dict()
    assert [s["step"] for s in sa["state"].values()] == [s["step"] for s in sb["state"].values()] == [7] * 4
    for k in sa["state"]:
        np.testing.assert_allclose(sb["state"][k]["exp_avg_sq"], sa["state"][k]["exp_avg_sq"], **tol)
    # Restore the saved state into a fresh device-scalar optimizer: it continues like the plain one.
    net_c, pc = _model_and_grads(np.random.default_rng(1), xp)
    for p, q in zip(pc, pa):
        p.data[...] = q.data
    resumed = AdamW(param_groups_weight_decay(net_c, 0.05), lr=1e-3)
    resumed.use_device_scalars()
    resumed.load_state_dict(sa)
    more = [[xp.asarray(rng.standard_normal(p.shape), dtype=p.dtype) for p in pa] for _ in range(3)]
    _run(plain, pa, more, [2e-4] * 3, load_lr=False)
    _run(resumed, pc, more, [2e-4] * 3, load_lr=True)
    for a, c in zip(pa, pc):
        np.testing.assert_allclose(minicct.backend.to_numpy(c.data), minicct.backend.to_numpy(a.data), **tol)


def test_device_scalar_lr_comes_only_from_load_lr(rng):
    """step() reads the lr array, not param_groups: a changed 'lr' without load_lr() has no effect
    (what makes a captured step safe: the value is read at replay time from memory)."""
    net_a, pa = _model_and_grads(np.random.default_rng(1))
    net_b, pb = _model_and_grads(np.random.default_rng(1))
    a, b = AdamW(net_a.parameters(), lr=1e-3), AdamW(net_b.parameters(), lr=1e-3)
    b.use_device_scalars()
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in pa]]
    _run(a, pa, grads, [1e-3], load_lr=False)
    _run(b, pb, grads, [5.0], load_lr=False)          # 'lr' changed, never loaded: 1e-3 still
    for x, y in zip(pa, pb):
        np.testing.assert_array_equal(x.data, y.data)


def test_device_scalars_need_every_gradient():
    net, params = _model_and_grads(np.random.default_rng(0))
    opt = AdamW(net.parameters())
    opt.use_device_scalars()
    params[0].grad = minicct.Tensor(np.ones(params[0].shape, params[0].dtype))
    with pytest.raises(ValueError, match="gradient for every parameter"):
        opt.step()
