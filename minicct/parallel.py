"""Data parallelism over the CPU's cores: each thread runs forward and backward on a slice of the batch.

    value = parallel.forward_backward(model, F.cross_entropy, x, y)   # the batch's loss; p.grad filled
    optimizer.step(); optimizer.zero_grad()
    logits = parallel.forward(model, x)                               # evaluation, no graph

Why. A NumPy operation runs on one core, so the elementwise half of a training step (GELU, layer
norm, softmax, pooling, dropout, the optimizer) leaves every other core idle. OpenBLAS does spread
one matrix product over threads, but they wait for each other between the blocks of the product,
spinning while they wait; on a machine shared with other work one descheduled thread stalls the
rest, and a step can take several times longer than on a single thread. Splitting the *batch*
instead, as DistributedDataParallel splits it across GPUs, gives each core a whole forward and
backward pass of its own, with a one-thread BLAS: the threads meet once per step, and NumPy lets go
of the GIL inside every large array operation, so they really do run at the same time.

Each thread also walks its slice in micro-batches of 16 images (gradient accumulation): the
activations of 16 images fit in the CPU's cache, so the many elementwise passes of a step (layer
norm, softmax, GELU, pooling...) read and write the cache instead of main memory, and only one
micro-batch's activations per thread exist at a time (a fraction of the memory of a whole batch).

Exact. The loss is a mean over the batch, so the batch's loss is the size-weighted mean of the
slices' losses and its gradient the same weighted sum of theirs: slice i backpropagates with the
upstream gradient n_i / N. Nothing else couples the samples of a batch in these models (layer norm
works per token, SeqPool per image; there is no batch norm). A model that did couple them would
need the whole batch in one thread: pass ``threads=1``.

Reproducible. Gradients come back from ``autograd.grad`` (nothing is written into the shared
parameters while threads run); each thread adds up its pieces in order, and the caller adds the
threads' sums in order. Each piece draws its dropout and drop-path masks from a Philox stream of
its own, handed out in order by the dropout stream of ``minicct.random`` (``random.dropout_generators``:
the run's key, a new stream id per piece), so a run gives the same numbers every time for the same
threads and micro-batch (other settings draw other masks, as another batch size would).

The kernels run in several threads at once: they must not keep scratch buffers between calls.
On the GPU there is one stream of work anyway, and everything runs in the calling thread.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from minicct import backend, random
from minicct.autograd import Tensor, grad, no_grad

_pool = None   # (threads, ThreadPoolExecutor), kept between steps


def default_threads() -> int:
    """$MINICCT_THREADS if set, else the number of CPU cores this process may run on."""
    env = os.environ.get("MINICCT_THREADS", "").strip()
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS, Windows
        return os.cpu_count() or 1


def _executor(threads):
    global _pool
    if _pool is None or _pool[0] != threads:
        if _pool is not None:
            _pool[1].shutdown(wait=True)
        _pool = (threads, ThreadPoolExecutor(threads, thread_name_prefix="minicct-parallel"))
    return _pool[1]


def _raw(a):
    return a.data if isinstance(a, Tensor) else a


def split(n, threads):
    """[(lo, hi), ...]: n samples in ``threads`` contiguous slices, sizes differing by at most one."""
    bounds = [n * i // threads for i in range(threads + 1)]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def _threads_for(x, threads):
    """How many threads to use for a batch x: 1 on the GPU or for a single sample."""
    if backend.is_gpu_array(x):
        return 1
    return max(1, min(default_threads() if threads is None else int(threads), len(x)))


MICRO_BATCH = 16   # images per forward/backward pass in a thread (see forward_backward)


def micro_batches(n, threads, micro_batch=MICRO_BATCH):
    """[[(lo, hi), ...] per thread]: n samples in ``threads`` contiguous ranges, each cut into
    pieces of at most ``micro_batch`` (None: one piece per range)."""
    out = []
    for lo, hi in split(n, threads):
        step = hi - lo if micro_batch is None else max(1, int(micro_batch))
        out.append([(a, min(hi, a + step)) for a in range(lo, hi, step)])
    return out


def forward_backward(model, loss_fn, x, y, threads=None, micro_batch=MICRO_BATCH) -> float:
    """``loss = loss_fn(model(x), y); loss.backward()`` over slices of the batch in parallel threads.

    model: a Module; loss_fn(logits, y) -> a mean over the batch (e.g. ``F.cross_entropy``);
    x: (N, ...) Tensor or array; y: (N, ...) targets. Each parameter's gradient is *added* to its
    ``.grad``, as ``backward()`` does. Returns the batch's loss as a float.
    threads: default ``default_threads()``; 1 runs in the calling thread.
    micro_batch: each thread walks its slice in pieces of this many samples, one forward and
    backward each, adding up their gradients (gradient accumulation). Smaller pieces keep each
    elementwise pass over the activations in the CPU's cache instead of main memory, and only one
    piece's activations per thread exist at a time; below ~16 images the matrix products get too
    small. None: one piece per thread. On the GPU the whole batch is one piece.
    """
    xa, ya = _raw(x), _raw(y)
    n = len(xa)
    threads = _threads_for(xa, threads)
    if backend.is_gpu_array(xa):
        micro_batch = None
    plan = micro_batches(n, threads, micro_batch)
    if threads == 1 and len(plan[0]) == 1:
        loss = loss_fn(model(Tensor._wrap(xa)), Tensor._wrap(ya))
        value = float(loss.item())
        loss.backward()
        return value

    params = [p for p in model.parameters() if p.requires_grad]
    # A dropout stream per piece, handed out here in the calling thread and in order: the run's
    # stream moves on the same way every step, whatever order the threads run in.
    gens = iter(random.dropout_generators(sum(map(len, plan))))
    plan = [[(lo, hi, next(gens)) for lo, hi in pieces] for pieces in plan]

    def work(pieces):
        """One thread: its pieces in order; returns (its share of the loss, its gradient sums)."""
        value, sums = 0.0, [None] * len(params)
        for lo, hi, generator in pieces:
            with random.thread_dropout(generator):
                loss = loss_fn(model(Tensor._wrap(xa[lo:hi])), Tensor._wrap(ya[lo:hi]))
                weight = (hi - lo) / n
                value += float(loss.item()) * weight
                grads = grad(loss, params, grad_output=weight)
            for j, g in enumerate(grads):
                if g is None:
                    continue
                if sums[j] is None:
                    sums[j] = g.data.copy()   # a copy: grad() may hand one array to two inputs
                else:
                    sums[j] += g.data
        return value, sums

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
    """``model(x)`` without a graph (evaluation), over slices of the batch in parallel threads,
    each in pieces of ``micro_batch`` samples (see forward_backward).
    x: (N, ...) Tensor or array -> the outputs of the pieces joined along axis 0 (a Tensor)."""
    xa = _raw(x)
    threads = _threads_for(xa, threads)
    if backend.is_gpu_array(xa):
        micro_batch = None
    plan = micro_batches(len(xa), threads, micro_batch)
    if threads == 1 and len(plan[0]) == 1:
        with no_grad():
            return model(Tensor._wrap(xa))

    def work(pieces):
        with no_grad():   # grad mode is per thread: each worker turns it off for itself
            return [model(Tensor._wrap(xa[lo:hi])).data for lo, hi in pieces]

    if threads == 1:
        outs = work(plan[0])
    else:
        with backend.limit_blas_threads(1):
            outs = [o for part in _executor(threads).map(work, plan) for o in part]
    return Tensor._wrap(backend.get_array_module(outs[0]).concatenate(outs, axis=0))
