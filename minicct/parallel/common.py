"""What the threads and the processes share: the plan of a batch (who computes which samples) and
the work of one worker (its pieces, in order, with their gradients added up)."""
from __future__ import annotations

import os

from minicct import backend, random
from minicct.autograd import Tensor, grad

MICRO_BATCH = 16   # images per forward/backward pass in a worker (see forward_backward)


def default_threads() -> int:
    """$MINICCT_THREADS if set, else the number of CPU cores this process may run on."""
    env = os.environ.get("MINICCT_THREADS", "").strip()
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS, Windows
        return os.cpu_count() or 1


def raw(a):
    return a.data if isinstance(a, Tensor) else a


def split(n, threads):
    """[(lo, hi), ...]: n samples in ``threads`` contiguous slices, sizes differing by at most one."""
    bounds = [n * i // threads for i in range(threads + 1)]
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]


def workers_for(x, threads):
    """How many workers to use for a batch x: 1 on the GPU or for a single sample."""
    if backend.is_gpu_array(x):
        return 1
    return max(1, min(default_threads() if threads is None else int(threads), len(x)))


def micro_batches(n, threads, micro_batch=MICRO_BATCH):
    """[[(lo, hi), ...] per worker]: n samples in ``threads`` contiguous ranges, each cut into
    pieces of at most ``micro_batch`` (None: one piece per range)."""
    out = []
    for lo, hi in split(n, threads):
        step = hi - lo if micro_batch is None else max(1, int(micro_batch))
        out.append([(a, min(hi, a + step)) for a in range(lo, hi, step)])
    return out


def with_generators(plan, training):
    """The plan with a dropout generator per piece: [[(lo, hi, generator), ...] per worker].

    The generators are drawn here, in the calling thread and in the pieces' order, so the dropout
    stream advances the same way whatever order the workers then run in. Without dropout to draw
    (``training`` False: evaluation) the stream is left alone and each piece gets None."""
    count = sum(map(len, plan))
    gens = iter(random.dropout_generators(count) if training else [None] * count)
    return [[(lo, hi, next(gens)) for lo, hi in pieces] for pieces in plan]


def run_pieces(model, loss_fn, x, y, n, params, pieces, add):
    """One worker's share of ``loss = loss_fn(model(x), y); loss.backward()``.

    x: (N, ...), y: (N, ...) arrays of the whole batch (N = n); pieces: [(lo, hi, generator), ...].
    Each piece backpropagates with the weight (hi - lo) / n, so the pieces of all workers add up to
    the batch's mean loss. ``add(j, g)`` receives the gradient g of ``params[j]`` from each piece, in
    the pieces' order (never called for a parameter the loss does not reach).
    Returns this worker's share of the loss (a float).
    """
    value = 0.0
    for lo, hi, generator in pieces:
        with random.thread_dropout(generator):
            loss = loss_fn(model(Tensor._wrap(x[lo:hi])), Tensor._wrap(y[lo:hi]))
            weight = (hi - lo) / n
            value += float(loss.item()) * weight
            grads = grad(loss, params, grad_output=weight)
        for j, g in enumerate(grads):
            if g is not None:
                add(j, g.data)
    return value


def is_training(model) -> bool:
    """Whether any module of ``model`` is in training mode (so dropout may draw masks)."""
    return any(m.training for m in model.modules()) if hasattr(model, "modules") else False
