"""minicct.parallel over worker processes: the same bits as the threads path, and a pool that never
outlives its main process (Ctrl-C, an exception, kill -9, exit), tested with real processes."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minicct
from minicct import functional as F, parallel
from minicct.errors import RunError
from minicct.optim import AdamW
from minicct.parallel import processes
from test_parallel import batch, grads, tiny   # the same toy model, batch and gradient copy

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not processes.available(), reason="no fork on this platform")




def step(mode, n, threads, micro_batch, seed=3, train=True, **kw):
    """A fresh model's loss and gradients for one batch, with the dropout stream seeded."""
    model = tiny(**kw).train(train)
    x, y = batch(n)
    minicct.manual_seed(seed)
    v = parallel.forward_backward(model, F.cross_entropy, x, y, threads=threads, micro_batch=micro_batch,
                                  mode=mode)
    return v, grads(model), minicct.random.dropout_generator().random()


def assert_same_bits(a, b):
    (va, ga, ra), (vb, gb, rb) = a, b
    assert va == vb and ra == rb   # same loss; the dropout stream advanced the same way
    assert ga.keys() == gb.keys()
    for name in ga:
        np.testing.assert_array_equal(ga[name], gb[name], err_msg=name)


def gone(pid):
    """The process has exited (a zombie not yet reaped by whoever adopted it counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_gone(pids, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(map(gone, pids)):
        time.sleep(0.05)
    return [p for p in pids if not gone(p)]


# ---- the same numbers ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,threads,micro_batch", [(10, 2, 3), (7, 3, 2), (2, 3, 16), (16, 2, None)])
def test_processes_give_the_threads_bits_with_dropout(n, threads, micro_batch):
    """Dropout and drop-path on, in training mode: the same masks, loss and gradient bits.
    (7: odd; 2 samples for 3 workers: fewer slices than workers.)"""
    kw = dict(attention_dropout=0.3, stochastic_depth=0.3)
    assert_same_bits(step("processes", n, threads, micro_batch, **kw), step("threads", n, threads, micro_batch, **kw))


def test_processes_match_one_serial_backward():
    model = tiny(attention_dropout=0.0, stochastic_depth=0.0)
    x, y = batch(11)
    loss = F.cross_entropy(model(minicct.Tensor(x)), minicct.Tensor(y))
    want_v, _ = float(loss.item()), loss.backward()
    want = grads(model)
    model.zero_grad()
    v = parallel.forward_backward(model, F.cross_entropy, x, y, threads=3, micro_batch=2, mode="processes")
    got = grads(model)
    assert v == pytest.approx(want_v, rel=1e-6) and got.keys() == want.keys()
    floor = 1e-7 * max(np.abs(g).max() for g in want.values())   # SeqPool's bias: zero up to rounding
    for name in want:
        assert np.abs(got[name] - want[name]).max() <= 1e-5 * np.abs(want[name]).max() + floor, name


def test_eval_mode_is_sent_to_the_workers():
    """model.eval() in the main process: no dropout in the workers either, so the loss is the
    serial eval-mode loss (with training masks it would differ by far more than rounding)."""
    kw = dict(attention_dropout=0.5, stochastic_depth=0.5)
    a = step("processes", 10, 2, 3, train=False, **kw)
    assert_same_bits(a, step("threads", 10, 2, 3, train=False, **kw))
    model = tiny(**kw).eval()
    x, y = batch(10)
    with minicct.no_grad():
        want = float(F.cross_entropy(model(minicct.Tensor(x)), minicct.Tensor(y)).item())
    assert a[0] == pytest.approx(want, rel=1e-6)


def test_forward_matches_threads_and_the_model():
    model = tiny(attention_dropout=0.3, stochastic_depth=0.3).eval()
    x, _ = batch(9)
    with minicct.no_grad():
        want = model(minicct.Tensor(x)).numpy()
    got = parallel.forward(model, x, threads=2, micro_batch=4, mode="processes")
    assert not got.requires_grad and got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.numpy(), parallel.forward(model, x, threads=2, micro_batch=4,
                                                                mode="threads").numpy())
    # In training mode each piece draws its masks from its own generator, as in threads.
    model.train()
    outs = []
    for mode in ("processes", "threads"):
        minicct.manual_seed(4)
        outs.append(parallel.forward(model, x, threads=2, micro_batch=4, mode=mode).numpy())
    np.testing.assert_array_equal(*outs)
    assert np.abs(outs[0] - want).max() > 1e-3   # masks were drawn


def test_updated_parameters_reach_the_workers():
    """Three AdamW steps: the workers must compute with the parameters of each step."""
    x, y = batch(10)
    runs = {}
    for mode in ("processes", "threads"):
        model = tiny(attention_dropout=0.0, stochastic_depth=0.0)
        opt = AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(3):
            losses.append(parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode=mode))
            opt.step()
            opt.zero_grad()
        runs[mode] = (losses, {n: p.numpy().copy() for n, p in model.named_parameters()})
    assert runs["processes"][0] == runs["threads"][0] and runs["processes"][0][0] != runs["processes"][0][2]
    for name, w in runs["threads"][1].items():
        np.testing.assert_array_equal(runs["processes"][1][name], w, err_msg=name)


def test_frozen_parameters_get_no_gradient():
    model = tiny(attention_dropout=0.0, stochastic_depth=0.0)
    x, y = batch(10)
    parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode="processes")   # pool made
    model.zero_grad()
    frozen = [n for n, p in model.named_parameters() if "tokenizer" in n]
    assert frozen
    for n, p in model.named_parameters():
        p.requires_grad = n not in frozen
    parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode="processes")
    got = grads(model)
    model.zero_grad()
    parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode="threads")
    want = grads(model)
    assert not set(frozen) & set(got) and got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_gradients_add_to_grad_like_backward():
    model = tiny(attention_dropout=0.0, stochastic_depth=0.0)
    x, y = batch()
    parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode="processes")
    once = grads(model)
    parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode="processes")
    for name, g in grads(model).items():
        np.testing.assert_allclose(g, 2 * once[name], rtol=1e-5, atol=1e-8)


# ---- the choice -----------------------------------------------------------------------------------
def test_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv("MINICCT_PARALLEL", "threads")
    assert parallel.default_mode() == "threads"
    monkeypatch.setenv("MINICCT_PARALLEL", "Processes")
    assert parallel.default_mode() == "processes"
    monkeypatch.setenv("MINICCT_PARALLEL", "forks")
    with pytest.raises(RunError, match=r"\$MINICCT_PARALLEL='forks'.*'processes' or 'threads'"):
        parallel.forward_backward(tiny(), F.cross_entropy, *batch(4), threads=2)
    with pytest.raises(RunError, match="mode='gpus'"):
        parallel.forward(tiny(), batch(4)[0], mode="gpus")
    monkeypatch.delenv("MINICCT_PARALLEL")
    assert parallel.default_mode() == ("processes" if sys.platform.startswith("linux") else "threads")


# ---- the pool's life ------------------------------------------------------------------------------
def test_one_walk_lists_what_the_models_own_walks_list():
    """processes._walk walks the tree once for the main process's per-call lists: they must be
    model.modules(), model.parameters() (a parameter shared by two modules once) and the parameters
    then model.buffers(), in those orders, and its signature must change with a tensor's shape."""
    from minicct import Tensor, nn
    model = tiny()
    model.classifier.fc.weight = model.classifier.fc.weight            # (re-registered: still one)
    extra = nn.Linear(32, 10)
    extra.weight = model.classifier.fc.weight                          # a shared parameter
    model.add_module("extra", extra)
    model.register_buffer("counts", Tensor(np.zeros(3, np.float32)))
    walk = processes._walk(model)
    assert walk.modules == list(model.modules())
    assert walk.params == list(model.parameters()) and len(walk.params) == len({id(p) for p in walk.params})
    assert walk.tensors == list(model.parameters()) + list(model.buffers())
    assert any(t is model.counts for t in walk.tensors)
    before = walk.signature
    model.register_buffer("counts", Tensor(np.zeros(4, np.float32)))
    assert processes._walk(model).signature != before


def test_a_changed_model_gets_new_workers():
    """The same model object with a layer replaced (other shapes) after a call: a new pool."""
    from minicct import nn
    x, y = batch(6)
    a = tiny(attention_dropout=0.0, stochastic_depth=0.0)
    parallel.forward_backward(a, F.cross_entropy, x, y, threads=2, mode="processes")
    first = processes.worker_pids()
    a.classifier.fc = nn.Linear(32, 10)                                  # new parameters, same shapes
    parallel.forward_backward(a, F.cross_entropy, x, y, threads=2, mode="processes")
    second = processes.worker_pids()
    assert len(second) == 2 and not set(first) & set(second) and not wait_gone(first)


def test_new_model_new_workers_and_the_old_ones_exit():
    x, y = batch(6)
    a = tiny(attention_dropout=0.0, stochastic_depth=0.0)
    parallel.forward_backward(a, F.cross_entropy, x, y, threads=2, mode="processes")
    first = processes.worker_pids()
    parallel.forward(a, x, threads=2, mode="processes")
    parallel.forward_backward(a, F.cross_entropy, x[:3], y[:3], threads=2, mode="processes")
    assert processes.worker_pids() == first            # evaluation and a smaller batch: same pool
    b = tiny(attention_dropout=0.0, stochastic_depth=0.0)
    parallel.forward_backward(b, F.cross_entropy, x, y, threads=2, mode="processes")
    second = processes.worker_pids()
    assert len(second) == 2 and not set(first) & set(second) and not wait_gone(first)


def test_an_exception_in_a_worker_is_one_error_and_closes_the_pool():
    main = os.getpid()

    def loss_fn(logits, y):
        if os.getpid() != main:
            raise ValueError("a loss that fails in the workers")
        return F.cross_entropy(logits, y)

    model = tiny()
    with pytest.raises(parallel.WorkerError, match=r"(?s)worker 0 .*failed.*ValueError: a loss that fails"):
        parallel.forward_backward(model, loss_fn, *batch(4), threads=2, mode="processes")
    pool = processes._pool
    assert pool.closed and processes.worker_pids() == [] and wait_gone([w.pid for w in pool.procs]) == []
    parallel.forward_backward(model, F.cross_entropy, *batch(4), threads=2, mode="processes")   # new pool
    assert len(processes.worker_pids()) == 2


def test_a_worker_exits_when_its_pipe_ends_even_with_other_forks_around():
    """A process forked from the main one after the pool (a data loader's worker) must not keep the
    pool's pipes open: the worker sees end-of-file when the main process closes its end."""
    import multiprocessing as mp
    model = tiny()
    parallel.forward(model.eval(), batch(4)[0], threads=2, mode="processes")
    pool = processes._pool
    other = mp.get_context("fork").Process(target=time.sleep, args=(30,), daemon=True)
    other.start()
    try:
        pool.conns[0].close()
        pool.procs[0].join(timeout=5.0)
        assert gone(pool.procs[0].pid) and pool.procs[1].is_alive()
    finally:
        other.kill()
        processes.close()


def test_workers_ignore_ctrl_c():
    """Ctrl-C goes to the whole process group: the workers leave it to the main process."""
    model = tiny()
    x, y = batch(6)
    parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode="processes")
    pids = processes.worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    time.sleep(0.2)
    parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode="processes")
    assert processes.worker_pids() == pids and not any(map(gone, pids))


SCRIPT = """
import os, subprocess, sys, time
import numpy as np
import minicct
from minicct import functional as F, models, parallel
from minicct.parallel import processes
minicct.manual_seed(0)
model = models.create_model("cct_2_3x2_32", embedding_dim=32, num_layers=2, num_heads=2)
rng = np.random.default_rng(0)
x, y = rng.standard_normal((8, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, 8)
parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode="processes")
extra = ""
if sys.argv[1] == "hold":   # another process holds the pipes' main ends: only PR_SET_PDEATHSIG can act
    fds = [os.dup(c.fileno()) for c in processes._pool.conns]
    extra = " %d" % subprocess.Popen(["sleep", "60"], pass_fds=fds).pid
print("PIDS", *processes.worker_pids(), extra, flush=True)
if sys.argv[1] == "loop":
    while True:
        parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, mode="processes")
elif sys.argv[1] != "exit":
    time.sleep(60)
"""


def run_script(how):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = proc.stdout.readline()
    assert line.startswith("PIDS"), proc.communicate(timeout=60)[1]
    pids = [int(p) for p in line.split()[1:]]
    return proc, pids


def shm():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG: Linux")
@pytest.mark.parametrize("how", ["sleep", "hold"])
def test_kill_9_of_the_main_process_leaves_no_worker_and_nothing_in_dev_shm(how):
    """'hold': a third process keeps the pipes open, so the workers see no end-of-file and only
    PR_SET_PDEATHSIG ends them; 'sleep': either way out does."""
    before = shm()
    proc, pids = run_script(how)
    workers, holder = pids[:2], pids[2:]
    try:
        assert len(workers) == 2 and not any(map(gone, workers))
        proc.kill()
        proc.wait(timeout=10)
        assert wait_gone(workers) == [], "orphan workers after kill -9 of their main process"
        assert shm() - before == set()
    finally:
        for pid in workers + holder:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux")
def test_ctrl_c_reaches_the_main_process_alone_and_it_closes_the_pool():
    proc, workers = run_script("loop")
    try:
        time.sleep(0.5)                          # in the middle of steps
        os.killpg(proc.pid, signal.SIGINT)       # as a terminal does: the whole process group
        _, err = proc.communicate(timeout=30)
        assert "KeyboardInterrupt" in err and "WorkerError" not in err and "minicct-parallel" not in err, err
        assert wait_gone(workers, 2.0) == []
    finally:
        proc.kill()
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux")
def test_the_pool_closes_at_exit():
    proc, workers = run_script("exit")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert wait_gone(workers, 1.0) == []


def test_an_inline_lambda_loss_keeps_the_pool():
    """A loss written inline is a new function object every step: the same code over the same
    objects keeps the workers; another function makes new ones."""
    model = tiny(attention_dropout=0.0, stochastic_depth=0.0)
    x, y = batch(6)
    values = []
    for _ in range(2):
        values.append(parallel.forward_backward(model, lambda z, t: F.cross_entropy(z, t), x, y, threads=2,
                                                mode="processes"))
        if len(values) == 1:
            pids = processes.worker_pids()
    assert processes.worker_pids() == pids and values[0] == values[1]
    scale = 2.0
    parallel.forward_backward(model, lambda z, t: F.cross_entropy(z, t) * scale, x, y, threads=2, mode="processes")
    assert processes.worker_pids() != pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc: Linux")
def test_workers_report_their_memory():
    """For the benchmark: each worker's resident memory at the fork and its peak since."""
    model = tiny()
    parallel.forward_backward(model, F.cross_entropy, *batch(6), threads=2, mode="processes")
    mem = processes.worker_memory_mb()
    assert len(mem) == 2 and all(0 < start <= peak for start, peak in mem), mem
