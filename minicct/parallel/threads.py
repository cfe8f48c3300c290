"""Data parallelism over threads of this process: the portable path (any platform, and the GPU).

Each thread runs its slice of the batch with a one-thread BLAS; NumPy lets go of the GIL inside
every large array operation, so the threads do compute at the same time, but the Python between
the operations (~5 ms per micro-batch) runs one thread at a time. ``processes.py`` avoids that
where it can fork. Gradients come back from ``autograd.grad`` (nothing is written into the shared
parameters while threads run); each thread adds up its pieces in order and the caller adds the
threads' sums in order, so a run gives the same bits every time.

The kernels run in several threads at once: they must not keep scratch buffers between calls.
On the GPU there is one stream of work anyway, and everything runs in the calling thread.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from minicct import backend, random
from minicct.autograd import Tensor, no_grad
from minicct.parallel.common import (MICRO_BATCH, is_training, micro_batches, raw, run_pieces,
                                     with_generators, workers_for)

_pool = None   # (threads, ThreadPoolExecutor), kept between steps


def _executor(threads):
    global _pool
    if _pool is None or _pool[0] != threads:
        if _pool is not None:
            _pool[1].shutdown(wait=True)
        _pool = (threads, ThreadPoolExecutor(threads, thread_name_prefix="minicct-parallel"))
    return _pool[1]


def forward_backward(model, loss_fn, x, y, threads=None, micro_batch=MICRO_BATCH) -> float:
    """``minicct.parallel.forward_backward`` in threads (see there)."""
    xa, ya = raw(x), raw(y)
    n = len(xa)
    threads = workers_for(xa, threads)
    if backend.is_gpu_array(xa):
        micro_batch = None
    plan = micro_batches(n, threads, micro_batch)
    if threads == 1 and len(plan[0]) == 1:
        loss = loss_fn(model(Tensor._wrap(xa)), Tensor._wrap(ya))
        value = float(loss.item())
        loss.backward()
        return value

    params = [p for p in model.parameters() if p.requires_grad]
    plan = with_generators(plan, training=True)

    def work(pieces):
        """One thread: its pieces in order; returns (its share of the loss, its gradient sums)."""
        sums = [None] * len(params)

        def add(j, g):
            if sums[j] is None:
                sums[j] = g.copy()   # a copy: grad() may hand one array to two inputs
            else:
                sums[j] += g
        return run_pieces(model, loss_fn, xa, ya, n, params, pieces, add), sums

    if threads == 1:
        results = [work(plan[0])]
    else:
        with backend.limit_blas_threads(1):
            results = list(_executor(threads).map(work, plan))

    for j, p in enumerate(params):   # the threads' sums, added in thread order
        parts = [sums[j] for _, sums in results if sums[j] is not None]
        if not parts:
            continue
        total = parts[0]
        for g in parts[1:]:
            total += g
        if p.grad is None:
            p.grad = Tensor._wrap(total)
        else:
            p.grad.data += total
    return sum(v for v, _ in results)


def forward(model, x, threads=None, micro_batch=MICRO_BATCH) -> Tensor:
    """``minicct.parallel.forward`` in threads (see there)."""
    xa = raw(x)
    threads = workers_for(xa, threads)
    if backend.is_gpu_array(xa):
        micro_batch = None
    plan = micro_batches(len(xa), threads, micro_batch)
    if threads == 1 and len(plan[0]) == 1:
        with no_grad():
            return model(Tensor._wrap(xa))
    plan = with_generators(plan, is_training(model))

    def work(pieces):
        outs = []
        with no_grad():   # grad mode is per thread: each worker turns it off for itself
            for lo, hi, generator in pieces:
                with random.thread_dropout(generator):
                    outs.append(model(Tensor._wrap(xa[lo:hi])).data)
        return outs

    if threads == 1:
        outs = work(plan[0])
    else:
        with backend.limit_blas_threads(1):
            outs = [o for part in _executor(threads).map(work, plan) for o in part]
    return Tensor._wrap(backend.get_array_module(outs[0]).concatenate(outs, axis=0))
