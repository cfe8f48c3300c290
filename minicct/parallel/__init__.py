"""Data parallelism over the CPU's cores: each worker runs forward and backward on a slice of the batch.

    value = parallel.forward_backward(model, F.cross_entropy, x, y)   # the batch's loss; p.grad filled
    optimizer.step(); optimizer.zero_grad()
    logits = parallel.forward(model, x)                               # evaluation, no graph

The first line is ``loss = F.cross_entropy(model(x), y); loss.backward()`` with the same loss and
gradients, on every core: the one call a training loop of your own needs to use them all.

Why. A NumPy operation runs on one core, so the elementwise half of a training step (GELU, layer
norm, softmax, pooling, dropout, the optimizer) leaves every other core idle. OpenBLAS does spread
one matrix product over threads, but they wait for each other between the blocks of the product,
spinning while they wait; on a machine shared with other work one descheduled thread stalls the
rest. Splitting the *batch* instead, as DistributedDataParallel splits it across GPUs, gives each
core a whole forward and backward pass of its own, with a one-thread BLAS: the workers meet once
per step.

Each worker also walks its slice in micro-batches of 16 images (gradient accumulation): the
activations of 16 images fit in the CPU's cache, so the many elementwise passes of a step (layer
norm, softmax, GELU, pooling...) read and write the cache instead of main memory, and only one
micro-batch's activations per worker exist at a time (a fraction of the memory of a whole batch).

Exact. The loss is a mean over the batch, so the batch's loss is the size-weighted mean of the
slices' losses and its gradient the same weighted sum of theirs: slice i backpropagates with the
upstream gradient n_i / N. Nothing else couples the samples of a batch in these models (layer norm
works per token, SeqPool per image; there is no batch norm). A model that did couple them would
need the whole batch in one worker: pass ``threads=1``.

Reproducible. Gradients come back from ``autograd.grad``; each worker adds up its pieces in order,
and the caller adds the workers' sums in order. Each piece draws its dropout and drop-path masks
from a Philox stream of its own, handed out in order by the dropout stream of ``minicct.random``
(``random.dropout_generators``: the run's key, a new stream id per piece; a few integers that
pickle, so a worker process gets its piece's stream in the command), so a run gives the same numbers every time for the same workers
and micro-batch, in threads or in processes alike (other settings draw other masks, as another
batch size would).

Threads or processes. The workers are processes (``processes.py``: forked once, parameters,
gradients and the batch in shared memory) on Linux, and threads of this process elsewhere
(``threads.py``: no fork needed, but the Python between the array operations runs one thread at
a time). ``MINICCT_PARALLEL=processes|threads``, or ``mode=``, chooses. With one worker (one core,
or a single sample) everything runs in the calling thread, and on the GPU too (one stream of work).
"""
from __future__ import annotations

import os
import sys

from minicct import backend
from minicct.errors import RunError
from minicct.parallel import processes, threads as _threads
from minicct.parallel.common import MICRO_BATCH, default_threads, micro_batches, raw, split, workers_for
from minicct.parallel.processes import WorkerError, close

MODES = ("processes", "threads")
ENV = "MINICCT_PARALLEL"


def check_mode(mode, where="mode="):
    """``mode`` if it is one of MODES (and possible here), else one clear error naming ``where``."""
    value = str(mode).strip().lower()
    if value not in MODES:
        raise RunError(f"{where}{mode!r} is not a way to run the workers: use 'processes' or 'threads'")
    if value == "processes" and not processes.available():
        raise RunError(f"{where}{mode!r}: this platform cannot fork worker processes; use 'threads'")
    return value


def default_mode() -> str:
    """$MINICCT_PARALLEL if set, else 'processes' on Linux and 'threads' elsewhere."""
    env = os.environ.get(ENV, "").strip()
    if env:
        return check_mode(env, f"${ENV}=")
    return "processes" if sys.platform.startswith("linux") and processes.available() else "threads"


def _use_processes(model, x, workers, mode):
    """Processes for a CPU batch over two workers or more, unless threads are asked for."""
    mode = default_mode() if mode is None else check_mode(mode)
    return (mode == "processes" and workers > 1 and not backend.is_gpu_array(x)
            and hasattr(model, "parameters") and hasattr(model, "modules"))


def forward_backward(model, loss_fn, x, y, threads=None, micro_batch=MICRO_BATCH, mode=None) -> float:
    """``loss = loss_fn(model(x), y); loss.backward()`` over slices of the batch on every core.

    model: a Module; loss_fn(logits, y) -> a mean over the batch (e.g. ``F.cross_entropy``). The
    worker processes hold the model and loss_fn they were forked with: another model, another
    function (not one more ``lambda`` from the same line) or other parameter shapes make new workers;
    x: (N, ...) Tensor or array; y: (N, ...) targets. Each parameter's gradient is *added* to its
    ``.grad``, as ``backward()`` does; a parameter with ``requires_grad`` False gets none.
    Returns the batch's loss as a float.
    threads: how many workers (threads or processes); default ``default_threads()``; 1 runs in
    the calling thread.
    micro_batch: each worker walks its slice in pieces of this many samples, one forward and
    backward each, adding up their gradients (gradient accumulation). Smaller pieces keep each
    elementwise pass over the activations in the CPU's cache instead of main memory, and only one
    piece's activations per worker exist at a time; below ~16 images the matrix products get too
    small. None: one piece per worker. On the GPU the whole batch is one piece.
    mode: 'processes' or 'threads' (default ``default_mode()``).
    """
    xa = raw(x)
    workers = 1 if backend.is_gpu_array(xa) else (default_threads() if threads is None else max(1, int(threads)))
    if _use_processes(model, xa, workers_for(xa, workers), mode):
        return processes.forward_backward(model, loss_fn, x, y, workers, micro_batch)
    return _threads.forward_backward(model, loss_fn, x, y, threads, micro_batch)


def forward(model, x, threads=None, micro_batch=MICRO_BATCH, mode=None):
    """``model(x)`` without a graph (evaluation), over slices of the batch on every core, each in
    pieces of ``micro_batch`` samples (see forward_backward).
    x: (N, ...) Tensor or array -> the outputs of the pieces joined along axis 0 (a Tensor)."""
    xa = raw(x)
    workers = 1 if backend.is_gpu_array(xa) else (default_threads() if threads is None else max(1, int(threads)))
    if _use_processes(model, xa, workers_for(xa, workers), mode):
        return processes.forward(model, x, workers, micro_batch)
    return _threads.forward(model, x, threads, micro_batch)


__all__ = ["forward_backward", "forward", "default_threads", "default_mode", "check_mode", "close",
           "micro_batches", "split", "MICRO_BATCH", "MODES", "WorkerError"]
