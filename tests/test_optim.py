"""minicct.optim: the cosine schedule's values, AdamW against a hand computation (and PyTorch when
installed), timm's no-decay rule, parameters without gradients, state round-trips, the CuPy kernel."""
import math

import numpy as np
import pytest

import minicct
from minicct.optim import AdamW, CosineLRScheduler, adamw_update_, param_groups_weight_decay


def recipe_schedule(**kw):
    return CosineLRScheduler(base_lr=5.5e-4, t_initial=300, min_lr=1e-5, warmup_epochs=10, warmup_lr=1e-5,
                             cooldown_epochs=10, **kw)


# ---- the schedule -------------------------------------------------------------------------------
@pytest.mark.parametrize("epoch, lr", [(0, 1.0e-5), (1, 6.4e-5), (9, 4.96e-4), (10, 5.485e-4),
                                       (150, 2.80e-4), (299, 1.0015e-5)])
def test_schedule_values_from_the_issue(epoch, lr):
    assert recipe_schedule().lr_at(epoch) == pytest.approx(lr, rel=1e-4)


def test_schedule_cooldown_and_length():
    s = recipe_schedule()
    assert s.total_epochs == 310
    assert all(s.lr_at(e) == pytest.approx(1e-5, rel=1e-12) for e in range(300, 310))


def test_schedule_formula_is_timm_cosine_not_shifted_by_warmup():
    s = recipe_schedule()
    for e in (10, 57, 200):
        expected = 1e-5 + 0.5 * (5.5e-4 - 1e-5) * (1 + math.cos(math.pi * e / 300))
        assert s.lr_at(e) == pytest.approx(expected, rel=1e-12)
    shifted = recipe_schedule(warmup_prefix=True)
    assert shifted.lr_at(10) == pytest.approx(5.5e-4) and shifted.total_epochs == 320


def test_schedule_sets_optimizer_lr_and_round_trips():
    p = minicct.Tensor(np.ones(3), requires_grad=True)
    opt = AdamW([p], lr=123.0)
    s = recipe_schedule(optimizer=opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)  # set at construction, like timm
    s.step(150)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.8e-4)
    s2 = recipe_schedule(optimizer=AdamW([p], lr=1.0))
    s2.load_state_dict(s.state_dict())
    assert s2.epoch == 150 and s2.optimizer.param_groups[0]["lr"] == pytest.approx(2.8e-4)


# ---- AdamW --------------------------------------------------------------------------------------
def adamw_by_hand(p, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """The textbook loop, one scalar formula per line, in float64."""
    p = np.array(p, np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        p = p - lr * wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def test_one_adamw_step_by_hand():
    # First step: m̂ = g and v̂ = g², so the step is lr·g/(|g| + eps) = ±lr, after decaying p by lr·wd.
    p0 = np.array([1.0, -2.0, 0.5], np.float64)
    g = np.array([0.3, -0.1, 2.0])
    p = minicct.Tensor(p0, requires_grad=True, dtype="float64")
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = minicct.Tensor(g, dtype="float64")
    opt.step()
    expected = p0 * (1 - 0.1 * 0.5) - 0.1 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(expected, [0.85, -1.8, 0.375], rtol=1e-7)


def test_adamw_several_steps_by_hand(rng):
    p0 = rng.normal(size=(4, 5))
    grads = [rng.normal(size=(4, 5)) for _ in range(5)]
    w = minicct.Tensor(p0, requires_grad=True, dtype="float64")
    b = minicct.Tensor(p0[0], requires_grad=True, dtype="float64")
    opt = AdamW([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=1e-2, weight_decay=0.3)
    for g in grads:
        w.grad = minicct.Tensor(g, dtype="float64")
        b.grad = minicct.Tensor(g[0], dtype="float64")
        opt.step()
    np.testing.assert_allclose(w.numpy(), adamw_by_hand(p0, grads, 1e-2, 0.3), rtol=1e-10)
    np.testing.assert_allclose(b.numpy(), adamw_by_hand(p0[0], [g[0] for g in grads], 1e-2, 0.0), rtol=1e-10)


def test_adamw_matches_torch(rng):
    torch = pytest.importorskip("torch", reason="torch not installed: the PyTorch comparison is optional")
    shapes = [(8, 3, 3, 3), (8,), (16, 8), (1, 5, 16)]
    init = [rng.normal(size=s).astype(np.float32) for s in shapes]
    ours = [minicct.Tensor(a.copy(), requires_grad=True) for a in init]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in init]
    opt = AdamW([{"params": ours[1:2], "weight_decay": 0.0}, {"params": ours[:1] + ours[2:]}],
                lr=5e-3, weight_decay=0.06)
    topt = torch.optim.AdamW([{"params": theirs[1:2], "weight_decay": 0.0},
                              {"params": theirs[:1] + theirs[2:]}], lr=5e-3, weight_decay=0.06)
    for step in range(10):
        grads = [rng.normal(size=s).astype(np.float32) for s in shapes]
        for p, tp, g in zip(ours, theirs, grads):
            p.grad = minicct.Tensor(g)
            tp.grad = torch.tensor(g)
        lr = 5e-3 * (0.9 ** step)  # a schedule changes lr between steps
        for group in opt.param_groups + topt.param_groups:
            group["lr"] = lr
        opt.step()
        topt.step()
    for p, tp in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=2e-6, atol=2e-7)


def test_parameter_without_gradient_is_untouched():
    a = minicct.Tensor(np.ones(3), requires_grad=True)
    b = minicct.Tensor(np.ones(2), requires_grad=True)
    opt = AdamW([a, b], lr=0.1, weight_decay=0.1)
    a.grad = minicct.Tensor(np.ones(3))
    opt.step()  # b has no gradient: no decay, no step, its step count stays 0
    np.testing.assert_array_equal(b.numpy(), np.ones(2))
    assert (a.numpy() < 1).all()
    state = opt.state_dict()["state"]
    assert list(state) == ["0"] and state["0"]["step"] == 1
    a.grad = minicct.Tensor(np.ones(3))
    b.grad = minicct.Tensor(np.ones(2))
    opt.step()  # steps differ now (2 and 1): each is bias-corrected with its own t
    np.testing.assert_allclose(b.numpy(), adamw_by_hand(np.ones(2), [np.ones(2)], 0.1, 0.1), rtol=1e-6)
    np.testing.assert_allclose(a.numpy(), adamw_by_hand(np.ones(3), [np.ones(3)] * 2, 0.1, 0.1), rtol=1e-6)


def test_zero_grad_and_parameters_are_views_of_one_buffer():
    a = minicct.Tensor(np.ones((2, 3)), requires_grad=True)
    b = minicct.Tensor(np.zeros(4), requires_grad=True)
    opt = AdamW([a, b], lr=0.1)
    assert a.shape == (2, 3) and b.shape == (4,)
    flat = opt._buffers[0]
    assert np.shares_memory(a.data, flat.data) and np.shares_memory(b.data, flat.data)
    a.grad = minicct.Tensor(np.ones((2, 3)))
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_replaced_parameter_array_is_repacked():
    """load_state_dict or .to(device) may give a parameter a new array: the update must reach it."""
    a = minicct.Tensor(np.ones(3), requires_grad=True)
    opt = AdamW([a], lr=0.1, weight_decay=0.0)
    a.data = np.full(3, 5.0, np.float32)
    a.grad = minicct.Tensor(np.ones(3))
    opt.step()
    np.testing.assert_allclose(a.numpy(), 5.0 - 0.1, rtol=1e-6)


def test_state_dict_round_trip_continues_identically(rng):
    def make():
        return [minicct.Tensor(rng_init.normal(size=s), requires_grad=True) for s in [(3, 4), (4,)]]

    rng_init = np.random.default_rng(1)
    ps = make()
    opt = AdamW(ps, lr=1e-2, weight_decay=0.05)
    grads = [[rng.normal(size=p.shape) for p in ps] for _ in range(6)]

    def run(opt, ps, gs):
        for g in gs:
            for p, gi in zip(ps, g):
                p.grad = minicct.Tensor(gi)
            opt.step()

    run(opt, ps, grads[:3])
    saved_params = [p.numpy() for p in ps]
    saved = opt.state_dict()
    assert saved["state"]["0"]["exp_avg"].shape == (3, 4) and saved["state"]["1"]["step"] == 3
    run(opt, ps, grads[3:])

    ps2 = [minicct.Tensor(a, requires_grad=True) for a in saved_params]
    opt2 = AdamW(ps2, lr=999.0, weight_decay=999.0)
    opt2.load_state_dict(saved)  # lr and weight decay come back with the state
    assert opt2.param_groups[0]["lr"] == 1e-2
    run(opt2, ps2, grads[3:])
    for p, p2 in zip(ps, ps2):
        np.testing.assert_array_equal(p.numpy(), p2.numpy())


def test_load_state_dict_rejects_wrong_shapes():
    opt = AdamW([minicct.Tensor(np.ones(3), requires_grad=True)])
    other = AdamW([minicct.Tensor(np.ones(4), requires_grad=True)])
    other._buffers[0].steps[:] = 1
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(other.state_dict())


def test_bad_hyperparameters():
    p = minicct.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError):
        AdamW([p], lr=-1)
    with pytest.raises(ValueError):
        AdamW([p], betas=(1.0, 0.999))
    with pytest.raises(ValueError):
        AdamW([])


# ---- the no-decay rule --------------------------------------------------------------------------
class _Named:
    def __init__(self, named):
        self._named = named

    def named_parameters(self):
        return iter(self._named)


def _param(*shape, requires_grad=True):
    return minicct.Tensor(np.zeros(shape), requires_grad=requires_grad)


def test_no_decay_rule_on_names_and_shapes():
    named = [("tokenizer.conv_layers.0.0.weight", _param(64, 3, 3, 3)),
             ("classifier.positional_emb", _param(1, 64, 128)),
             ("classifier.attention_pool.weight", _param(1, 128)),
             ("classifier.attention_pool.bias", _param(1)),
             ("classifier.blocks.0.pre_norm.weight", _param(128)),
             ("classifier.blocks.0.linear1.bias", _param(128)),
             ("classifier.odd.bias", _param(2, 2)),          # named bias: no decay whatever its shape
             ("classifier.fc.weight", _param(10, 128)),
             ("frozen.weight", _param(3, 3, requires_grad=False))]
    no_decay, decay = param_groups_weight_decay(_Named(named), 0.06)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.06
    names = {id(p): n for n, p in named}
    assert [names[id(p)] for p in decay["params"]] == [
        "tokenizer.conv_layers.0.0.weight", "classifier.positional_emb", "classifier.attention_pool.weight",
        "classifier.fc.weight"]
    assert [names[id(p)] for p in no_decay["params"]] == [
        "classifier.attention_pool.bias", "classifier.blocks.0.pre_norm.weight",
        "classifier.blocks.0.linear1.bias", "classifier.odd.bias"]
    no_decay, decay = param_groups_weight_decay(_Named(named), 0.06, ["classifier.positional_emb"])
    assert "classifier.positional_emb" in [names[id(p)] for p in no_decay["params"]]


def test_no_decay_rule_on_the_real_cct():
    models = pytest.importorskip("minicct.models", reason="minicct.models not built yet")
    model = models.create_model("cct_2_3x2_32", num_classes=10)
    no_decay, decay = param_groups_weight_decay(model, 0.06)
    by_id = {id(p): n for n, p in model.named_parameters()}
    decayed = {by_id[id(p)] for p in decay["params"]}
    kept = {by_id[id(p)] for p in no_decay["params"]}
    assert {"classifier.positional_emb", "classifier.attention_pool.weight", "classifier.fc.weight",
            "tokenizer.conv_layers.0.0.weight", "classifier.blocks.0.linear1.weight"} <= decayed
    assert {"classifier.norm.weight", "classifier.norm.bias", "classifier.fc.bias",
            "classifier.blocks.0.pre_norm.weight", "classifier.blocks.0.self_attn.proj.bias"} <= kept
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    assert len(decayed) + len(kept) == len(list(model.parameters()))


# ---- the CuPy kernel ----------------------------------------------------------------------------
def test_adamw_update_same_on_device(device, xp, rng):
    """On a GPU the fused CuPy kernel runs; it must agree with the NumPy lines."""
    n = 10_001
    p, g, m, v = (rng.normal(size=n).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    hyper = dict(lr=1e-3, weight_decay=0.05, beta1=0.9, beta2=0.999, eps=1e-8, step=7)
    ref = [a.copy() for a in (p, m, v)]
    adamw_update_(ref[0], g, ref[1], ref[2], **hyper)
    dev = [xp.asarray(a) for a in (p, m, v)]
    adamw_update_(dev[0], xp.asarray(g), dev[1], dev[2], **hyper)
    for r, d in zip(ref, dev):
        np.testing.assert_allclose(minicct.backend.to_numpy(d), r, rtol=1e-5, atol=1e-7)


# ---- WeightEMA ----------------------------------------------------------------------------------
def _linear_with(value):
    from minicct import nn
    m = nn.Linear(2, 1)
    m.load_state_dict({"weight": np.full((1, 2), value, np.float32), "bias": np.full((1,), value, np.float32)})
    return m


def test_weight_ema_by_hand():
    """Decay of update t: min(decay, (1 + t) / (10 + t)): 0.1, then 2/11, ... Weights 0 -> 1 -> 2:
    the average is 0.1 * 0 + 0.9 * 1 = 0.9, then (2/11) * 0.9 + (9/11) * 2 = 1.8."""
    from minicct.optim import WeightEMA
    m = _linear_with(0.0)
    ema = WeightEMA(m, decay=0.99)
    assert ema.rate() == pytest.approx(0.1)
    m.load_state_dict({"weight": np.ones((1, 2)), "bias": np.ones(1)})
    ema.update()
    np.testing.assert_allclose(ema.average["weight"], 0.9, rtol=1e-6)
    m.load_state_dict({"weight": np.full((1, 2), 2.0), "bias": np.full(1, 2.0)})
    ema.update()
    np.testing.assert_allclose(ema.average["bias"], 1.8, rtol=1e-6)
    assert ema.updates == 2 and ema.rate() == pytest.approx(3 / 12)
    for _ in range(2000):
        ema.update()
    assert ema.rate() == 0.99                      # the cap
    np.testing.assert_allclose(ema.average["weight"], 2.0, rtol=1e-5)


def test_weight_ema_applied_swaps_in_place_and_back():
    from minicct.optim import AdamW, WeightEMA
    m = _linear_with(3.0)
    opt = AdamW(m.parameters(), lr=0.1)
    ema = WeightEMA(m, decay=0.5)
    ema.average["weight"][...] = 7.0
    views = [p.data for p in m.parameters()]
    with ema.applied():
        np.testing.assert_array_equal(m.weight.data, 7.0)
    np.testing.assert_array_equal(m.weight.data, 3.0)
    assert all(p.data is v for p, v in zip(m.parameters(), views))   # the optimizer's views survive
    with pytest.raises(RuntimeError):
        with ema.applied():
            raise RuntimeError("inside")
    np.testing.assert_array_equal(m.weight.data, 3.0)
    assert opt.param_groups[0]["params"][0] is m.weight


def test_weight_ema_state_round_trip_and_bad_decay():
    from minicct.optim import WeightEMA
    a = WeightEMA(_linear_with(1.0), decay=0.9)
    a.average["weight"][...] = 4.0
    a.updates = 17
    b = WeightEMA(_linear_with(0.0), decay=0.9)
    b.load_state_dict(a.state_dict())
    assert b.updates == 17 and b.rate() == a.rate()
    np.testing.assert_array_equal(b.average["weight"], 4.0)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="decay"):
            WeightEMA(_linear_with(0.0), decay=bad)
