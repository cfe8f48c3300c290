"""minicct.parallel: the batch split over threads gives the serial step's loss and gradients.
And backend.keep_freed_memory, the other CPU set-up of a training step."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minicct
from minicct import backend, functional as F, models, parallel

REPO = Path(__file__).resolve().parents[1]


def tiny(**kw):
    minicct.manual_seed(0)
    return models.create_model("cct_2_3x2_32", embedding_dim=32, num_layers=2, num_heads=2, **kw)


def batch(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32), dtype=np.float32), rng.integers(0, 10, n)


def grads(model):
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


def test_split_covers_the_batch_evenly():
    assert parallel.split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert parallel.split(2, 4) == [(0, 1), (1, 2)]


def test_micro_batches_cover_each_slice_in_order():
    assert parallel.micro_batches(10, 2, 3) == [[(0, 3), (3, 5)], [(5, 8), (8, 10)]]
    assert parallel.micro_batches(10, 2, None) == [[(0, 5)], [(5, 10)]]


@pytest.mark.parametrize("threads,micro_batch", [(2, None), (3, None), (1, 3), (2, 2)])
def test_same_loss_and_gradients_as_one_pass(threads, micro_batch):
    model = tiny(attention_dropout=0.0, stochastic_depth=0.0)   # no random masks: must match exactly
    x, y = batch()
    v1 = parallel.forward_backward(model, F.cross_entropy, x, y, threads=1, micro_batch=None)
    g1 = grads(model)
    model.zero_grad()
    v2 = parallel.forward_backward(model, F.cross_entropy, x, y, threads=threads, micro_batch=micro_batch)
    g2 = grads(model)
    assert v2 == pytest.approx(v1, rel=1e-6)
    assert g1.keys() == g2.keys()
    # SeqPool's bias has a zero gradient in exact arithmetic (the softmax cancels it): float32
    # noise there is judged against the size of the other gradients.
    floor = 1e-7 * max(np.abs(g).max() for g in g1.values())
    for name in g1:
        scale = np.abs(g1[name]).max()
        assert np.abs(g1[name] - g2[name]).max() <= 1e-5 * scale + floor, name


def test_gradients_add_to_grad_like_backward():
    model = tiny(attention_dropout=0.0, stochastic_depth=0.0)
    x, y = batch()
    parallel.forward_backward(model, F.cross_entropy, x, y, threads=2)
    once = grads(model)
    parallel.forward_backward(model, F.cross_entropy, x, y, threads=2)
    for name, g in grads(model).items():
        np.testing.assert_allclose(g, 2 * once[name], rtol=1e-5, atol=1e-8)


def test_dropout_masks_are_reproducible():
    x, y = batch()
    runs = []
    for _ in range(2):
        model = tiny(attention_dropout=0.3, stochastic_depth=0.3)
        minicct.manual_seed(7)
        v = parallel.forward_backward(model, F.cross_entropy, x, y, threads=2, micro_batch=3)
        runs.append((v, grads(model), minicct.random.dropout_generator().random()))
    (v1, g1, r1), (v2, g2, r2) = runs
    assert v1 == v2 and r1 == r2       # same loss; the dropout stream advanced the same way
    for name in g1:
        np.testing.assert_array_equal(g1[name], g2[name])


def test_forward_matches_the_model():
    model = tiny().eval()
    x, _ = batch(7)
    with minicct.no_grad():
        want = model(minicct.Tensor(x)).numpy()
    got = parallel.forward(model, x, threads=3, micro_batch=2)
    assert not got.requires_grad
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_blas_threads_limited_and_restored():
    before = backend.blas_threads()
    if before is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS minicct can talk to")
    with backend.limit_blas_threads(1):
        assert backend.blas_threads() == 1
    assert backend.blas_threads() == before


def test_thread_dropout_is_per_thread():
    import threading
    g = np.random.default_rng(1)
    seen = {}
    with minicct.random.thread_dropout(g):
        t = threading.Thread(target=lambda: seen.setdefault("other", minicct.random.dropout_generator()))
        t.start()
        t.join()
        assert minicct.random.dropout_generator() is g
    assert seen["other"] is not g and minicct.random.dropout_generator() is not g


_FAULTS = """
import resource, sys, numpy as np
from minicct import backend
applied = backend.keep_freed_memory() if sys.argv[1] == "keep" else None
a = np.ones(12 << 20, np.float32); del a          # a 48 MB array, once, to settle the allocator
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = np.ones(12 << 20, np.float32)             # 48 MB: glibc always mmaps these by default
    del a
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_keep_freed_memory_ends_the_page_faults():
    """20 allocations of a 48 MB array: by default each is a fresh mmap (glibc's adaptive
    threshold stops at 32 MB) whose ~12,000 pages fault on first touch; with keep_freed_memory()
    the same heap memory is reused without faults. (A CCT-2 step's arrays are smaller, but their
    mix of sizes defeats the adaptive threshold: ~5,000 faults per step by default, none kept.)"""
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    runs = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                             cwd=REPO, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert out.returncode == 0, out.stderr
        applied, faults = out.stdout.split()
        runs[mode] = (applied, int(faults))
    assert runs["keep"][0] == "True"
    # (How many faults the default takes depends on the kernel: transparent huge pages fault
    # 2 MB at a time. Thousands either way; none once the memory is kept.)
    assert runs["default"][1] > 2_000 and runs["keep"][1] < runs["default"][1] / 20, runs
