"""The training step as a CUDA graph (minicct/training/graph_step.py, issue 14).

Here, on NumPy, ``EagerCapture`` stands in for CUDA's capture: the same static buffers, warm-up,
partial batches and learning-rate path, with "replay" running the step again. That checks the
plumbing, not the graph. With ``pytest --device gpu`` the real capture is compared with the eager
step (those tests are written and skipped here: no GPU has run them yet).
"""
import numpy as np
import pytest

import minicct
from minicct import backend, functional as F, models
from minicct.errors import GraphCaptureError
from minicct.kernels import dropout as dropout_kernels
from minicct.optim import AdamW, param_groups_weight_decay
from minicct.training.graph_step import EagerCapture, GraphForward, GraphStep


def tiny_model(device="cpu", seed=0, **kw):
    minicct.manual_seed(seed)
    kw = {"embedding_dim": 32, "in_planes": 8, "attention_dropout": 0.0, "stochastic_depth": 0.0, **kw}
    return models.create_model("cct_2_3x2_32", num_classes=5, img_size=16, **kw).to(device)


def batches(n_full, batch, rng, partial=3):
    """n_full batches of ``batch`` images and one partial batch of ``partial`` (the epoch's last)."""
    sizes = [batch] * n_full + ([partial] if partial else [])
    out = []
    for n in sizes:
        x = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
        y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, n)] * 0.9 + 0.02    # soft targets
        out.append((x, y))
    return out


def eager_reference(data, lrs, device="cpu"):
    """The plain loop: loss = cross_entropy(model(x), y); backward; AdamW with Python floats."""
    model = tiny_model(device)
    opt = AdamW(param_groups_weight_decay(model, 0.05), lr=1e-3)
    losses = []
    for (x, y), lr in zip(data, lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(model(minicct.Tensor(backend.to_device(x, device))),
                               minicct.Tensor(backend.to_device(y, device)))
        losses.append(float(loss.item()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return losses, model, opt


def graph_steps(data, lrs, capture=None, warmup=2, device="cpu"):
    model = tiny_model(device)
    opt = AdamW(param_groups_weight_decay(model, 0.05), lr=1e-3)
    step = GraphStep(model, opt, F.cross_entropy, capture=capture or EagerCapture(), warmup=warmup)
    losses = []
    for (x, y), lr in zip(data, lrs):
        for g in opt.param_groups:          # the schedule writes the lr into the groups, as set_lr does
            g["lr"] = lr
        losses.append(step(x, y))
    return losses, model, opt, step


def test_static_buffer_step_equals_the_eager_step(rng):
    """N steps through the static-buffer structure (warm-up, 'capture', replays, an eager partial
    batch) give the losses, parameters and optimizer state of the plain loop, with a changing lr."""
    data = batches(6, 8, rng)
    lrs = [1e-3 * 0.8 ** i for i in range(len(data))]
    want, m_ref, o_ref = eager_reference(data, lrs)
    got, m, o, step = graph_steps(data, lrs)
    assert (step.steps_eager, step.steps_replayed) == (2 + 1, 6 - 2)   # warm-up + partial; replays
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for (name, a), (_, b) in zip(m_ref.named_parameters(), m.named_parameters()):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-5, atol=1e-7, err_msg=name)
    s_ref, s = o_ref.state_dict(), o.state_dict()
    assert [v["step"] for v in s["state"].values()] == [v["step"] for v in s_ref["state"].values()] == [7] * len(s["state"])


def test_partial_batch_first_and_every_shape(rng):
    """A batch of another shape never goes into the static buffers (it would not fit the graph)."""
    data = batches(3, 8, rng, partial=5)
    data = [data[-1]] + data        # the odd shape first: it must not fix the graph's shape either
    lrs = [1e-3] * len(data)
    want, *_ = eager_reference(data, lrs)
    got, _, _, step = graph_steps(data, lrs, warmup=1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert step.x.shape == (5, 3, 16, 16)     # the first batch set the shape...
    assert step.steps_eager == 1 + 3          # ...so the three full ones ran eagerly


def test_model_with_masks_is_refused_not_captured_with_a_frozen_mask(rng):
    """A replayed graph repeats every argument it captured: a dropout mask drawn from the host or
    cuRAND would be the same mask at every step, a silent bug. Without a capturable generator the
    step refuses, with one line naming the way out."""
    model = tiny_model(attention_dropout=0.1, stochastic_depth=0.1)
    step = GraphStep(model, AdamW(model.parameters()), F.cross_entropy, capture=EagerCapture())
    (x, y), = batches(1, 4, rng, partial=0)
    with pytest.raises(GraphCaptureError, match="--cuda-graph off") as e:
        step(x, y)
    assert "\n" not in str(e.value)
    with backend.graph_mode(), pytest.raises(GraphCaptureError):
        dropout_kernels.dropout_forward(np.ones((4, 4), np.float32), 0.5)
    # Outside graph mode the same layer draws as ever.
    y_out, mask = dropout_kernels.dropout_forward(np.ones((4, 4), np.float32), 0.5)
    assert mask is not None


def test_graph_mode_draws_masks_from_the_capturable_seam():
    """With a generator plugged into the seam, graph mode draws every mask from it (a stand-in here:
    a counter in a 0-d array that each draw advances, as a device-resident Philox counter would)."""
    counter = np.zeros((), np.int64)

    def draw(xp, shape, dtype):
        counter[...] += 1
        return np.random.default_rng(int(counter)).random(shape, dtype=dtype)

    before = minicct.random.set_capturable_generator(draw)
    try:
        with backend.graph_mode():
            _, m1 = dropout_kernels.dropout_forward(np.ones((64,), np.float32), 0.5)
            _, m2 = dropout_kernels.dropout_forward(np.ones((64,), np.float32), 0.5)
        assert int(counter) == 2 and not np.array_equal(m1, m2)
    finally:
        minicct.random.set_capturable_generator(before)


def test_graph_forward_matches_eval_forward(rng):
    """Evaluation as a graph: eval mode (no masks: this model has dropout and drop-path, which would
    be refused in training mode), the same logits as the eval forward, the training mode restored."""
    model = tiny_model(attention_dropout=0.1, stochastic_depth=0.1)
    model.train()
    fwd = GraphForward(model, capture=EagerCapture(), warmup=1)
    for x, _ in batches(3, 8, rng, partial=3):
        model.eval()
        with minicct.no_grad():
            want = model(minicct.Tensor(x)).data
        model.train()
        got = np.array(fwd(x))               # copy: the next call overwrites the static output
        assert model.training                # put back in training mode
        np.testing.assert_array_equal(got, want)
    assert fwd.graph is not None and fwd.calls_eager == 1 + 1


# ---- on a GPU: the real capture (skipped here) --------------------------------------------------------
@pytest.fixture
def gpu(device):
    if device != "gpu":
        pytest.skip("CUDA graphs need a GPU: use `pytest --device gpu` on a CUDA machine")
    return device


def test_graph_steps_equal_eager_steps_on_gpu(gpu, rng):
    """N captured-and-replayed steps == N eager steps (cuBLAS, Python-float AdamW): same losses, same
    parameters to float tolerance, with a changing lr and a partial last batch."""
    from minicct.training.graph_step import Capture
    data = batches(8, 16, rng, partial=5)
    lrs = [1e-3 * 0.8 ** i for i in range(len(data))]
    want, m_ref, _ = eager_reference(data, lrs, device="gpu")
    got, m, _, step = graph_steps(data, lrs, capture=Capture(), warmup=2, device="gpu")
    assert step.graph is not None and step.steps_replayed == 8 - 2
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for (name, a), (_, b) in zip(m_ref.named_parameters(), m.named_parameters()):
        np.testing.assert_allclose(backend.to_numpy(b.data), backend.to_numpy(a.data), rtol=1e-3, atol=1e-5,
                                   err_msg=name)


def test_graph_forward_equals_eager_forward_on_gpu(gpu, rng):
    from minicct.training.graph_step import Capture
    model = tiny_model("gpu")
    fwd = GraphForward(model, capture=Capture(), warmup=1)
    for x, _ in batches(3, 16, rng, partial=5):
        got = backend.to_numpy(fwd(x))
        model.eval()
        with minicct.no_grad():
            want = backend.to_numpy(model(minicct.Tensor(backend.to_device(x, "gpu"))).data)
        model.train()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_graph_masks_equal_eager_masks_on_gpu(gpu, rng):
    """With the capturable (Philox) generator: every replay draws new masks, the same ones the eager
    step draws from the same counter. Waits for the generator (branch philox)."""
    if minicct.random._capturable is None:
        pytest.skip("no capturable generator plugged into minicct.random yet (Philox, issue 14)")
    from minicct.training.graph_step import Capture
    data = batches(6, 16, rng, partial=0)
    lrs = [1e-3] * len(data)
    losses = []
    for capture in (None, Capture()):
        minicct.random.manual_seed(0)
        model = tiny_model("gpu", attention_dropout=0.1, stochastic_depth=0.1)
        opt = AdamW(model.parameters(), lr=1e-3)
        step = None if capture is None else GraphStep(model, opt, F.cross_entropy, capture=capture, warmup=2)
        run = []
        for (x, y), lr in zip(data, lrs):
            if step is not None:
                run.append(step(x, y))
            else:
                with backend.graph_mode():       # the same generator, eagerly
                    loss = F.cross_entropy(model(minicct.Tensor(backend.to_device(x, "gpu"))),
                                           minicct.Tensor(backend.to_device(y, "gpu")))
                    run.append(float(loss.item()))
                    loss.backward()
                opt.step()
                opt.zero_grad()
        losses.append(run)
    assert len(set(np.round(losses[1], 6))) == len(losses[1])       # not one frozen mask
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


class ListLoader(list):
    wait_time = 0.0


def test_train_one_epoch_with_a_graph_step(rng, monkeypatch):
    """The trainer's loop hands each host batch to the graph step (--cuda-graph on): same mean loss
    and weights as its eager loop (one thread: the same sums); a NaN loss still stops the epoch."""
    from minicct.training.trainer import train_one_epoch
    monkeypatch.setenv("MINICCT_THREADS", "1")
    data = ListLoader(batches(4, 8, rng))
    want_model = tiny_model()
    want_opt = AdamW(want_model.parameters(), lr=1e-3)
    want = train_one_epoch(want_model, data, want_opt, "cpu", 0, 1, 1e-3, progress=False)
    model = tiny_model()
    opt = AdamW(model.parameters(), lr=1e-3)
    step = GraphStep(model, opt, F.cross_entropy, capture=EagerCapture(), warmup=1)
    got = train_one_epoch(model, data, opt, "cpu", 0, 1, 1e-3, progress=False, graph_step=step)
    assert step.steps_replayed == 3
    assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
    for a, b in zip(want_model.parameters(), model.parameters()):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-5, atol=1e-7)
    from minicct.training.errors import NonFiniteLoss
    bad = ListLoader([(np.full((8, 3, 16, 16), np.nan, np.float32), data[0][1])])
    with pytest.raises(NonFiniteLoss):
        train_one_epoch(model, bad, opt, "cpu", 1, 2, 1e-3, progress=False, graph_step=step)


def test_gpu_graph_refuses_the_reference_kernels():
    """The reference kernels call cuBLAS directly: a GPU graph asks for the fast ones, in one line."""
    from minicct.kernels import dispatch
    from minicct.training.graph_step import check_kernel_mode
    with dispatch.use_mode("reference"):
        with pytest.raises(GraphCaptureError, match="MINICCT_KERNELS=reference"):
            check_kernel_mode("gpu")
        check_kernel_mode("cpu")             # NumPy: no capture, nothing to refuse
    check_kernel_mode("gpu")
