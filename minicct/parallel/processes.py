"""Data parallelism over worker processes: one per core, forked once and kept between calls.

    main process                                  worker k (a fork of the main process: it already
                                                  has the model and the loss function)
    copy the parameters' values, x and y
      into the shared memory
    send ("step", n, its pieces, modes)  ------>  run its pieces in order (common.run_pieces), one
                                                  BLAS thread; sum their gradients into its slot
    <------  ("ok", its share of the loss, which gradients it wrote)
    add the slots, in worker order, into p.grad

Why processes. Threads share one interpreter: the ~5 ms of Python per micro-batch (the autograd
bookkeeping, the layers' code) runs one thread at a time. A process has an interpreter of its own,
so every core runs its own Python as well as its own arrays.

Shared memory: one anonymous mapping, ``mmap.mmap(-1, nbytes)`` (MAP_SHARED | MAP_ANONYMOUS), made
before the fork so every process sees the same pages. It has no name: nothing can be left behind in
/dev/shm, and the kernel frees it when the last process holding it exits, even after ``kill -9``.
It holds the parameters and buffers (the main process copies their current values in at every
call and keeps its own arrays, which AdamW owns as views of its flat buffer; in a worker each
``.data`` is a view of the shared copy), one gradient slot per worker, the batch x and y (room for
the largest batch so far) and the outputs of ``forward``. Messages on the pipes stay small.

Lifetime. A worker ignores Ctrl-C (the main process gets the KeyboardInterrupt and closes the
pool), exits when its pipe reaches end-of-file (the main process closed it, or died), and on Linux
asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``: a worker busy computing
does not read its pipe). An exception in a worker comes back as one ``WorkerError`` carrying the
worker's traceback, and the pool is closed. The pool is closed at exit, and made again when the
model, the loss function, the parameters' shapes or the batch's layout change. The parent of the
workers is the thread that made the pool, for PR_SET_PDEATHSIG: call from the main thread.
"""
from __future__ import annotations

import atexit
import mmap
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
import weakref
from typing import NamedTuple

import numpy as np

from minicct import backend, random
from minicct.autograd import Tensor, no_grad
from minicct.autograd.grad_mode import set_grad_enabled
from minicct.parallel.common import is_training, micro_batches, raw, run_pieces, with_generators

ALIGN = 64             # bytes: each shared array starts on a cache line
PR_SET_PDEATHSIG = 1   # from <linux/prctl.h>

_pool = None           # the _Pool of this process, kept between calls
_parent_ends = set()   # the main process's ends of every worker's pipe (closed in any forked child)


class WorkerError(RuntimeError):
    """A worker process failed: an exception in the model or the loss function (its traceback is
    in the message), or the process died."""


def available() -> bool:
    """Whether this platform can fork (Linux, macOS; not Windows)."""
    return "fork" in mp.get_all_start_methods()


# ---- the shared memory ----------------------------------------------------------------------------
def _shared_arrays(specs):
    """[array, ...]: one zeroed array per (shape, dtype) in ``specs``, all in one anonymous shared
    mapping (inherited by processes forked afterwards: they see and write the same memory)."""
    offsets, end = [], 0
    for shape, dtype in specs:
        end = -(-end // ALIGN) * ALIGN
        offsets.append(end)
        end += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    mm = mmap.mmap(-1, end + ALIGN)   # Unix: MAP_SHARED | MAP_ANONYMOUS; the arrays keep it alive
    return [np.frombuffer(mm, dtype, count=int(np.prod(shape, dtype=np.int64)), offset=off).reshape(shape)
            for (shape, dtype), off in zip(specs, offsets)]


class _Walk(NamedTuple):
    """What a call needs to know of the model, from one walk of its tree."""
    modules: list     # model.modules(), in that order
    params: list      # model.parameters(), in that order (a shared parameter once)
    tensors: list     # every parameter, then every buffer: what the workers must see with our values
    signature: tuple  # what the workers' copy of the model depends on: which tensors and modules,
                      # their shapes and dtypes (a pool whose signature differs is made again)


def _walk(model):
    """The model's _Walk. One pass over the tree, not one per list: the main process used to walk
    CCT-2's ~60 modules seven times a step. Measured (cProfile of the trainer, batch 32): the main
    process's work while the workers wait fell from ~7 ms a step to ~4."""
    modules = list(model.modules())
    params, seen = [], set()
    for m in modules:
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    tensors = params + [b for m in modules for b in m.buffers(recurse=False)]
    signature = (tuple((id(t), t.data.shape, t.data.dtype.str) for t in tensors), tuple(map(id, modules)))
    return _Walk(modules, params, tensors, signature)


def _same_function(a, b):
    """``a is b``, or two closures made by one ``lambda``/``def`` over the same objects (a loss
    written inline in a loop is a new function object every call, but computes the same)."""
    if a is b:
        return True
    code = getattr(a, "__code__", None)
    if code is None or code is not getattr(b, "__code__", None) or a.__defaults__ != b.__defaults__:
        return False
    try:
        return a.__globals__ is b.__globals__ and all(
            x.cell_contents is y.cell_contents for x, y in zip(a.__closure__ or (), b.__closure__ or ()))
    except ValueError:   # an empty cell
        return False


def _set_modes(modules, training):
    for m, mode in zip(modules, training):
        object.__setattr__(m, "training", mode)


def _output_spec(model, sample):
    """(shape of one sample's output, dtype): the model run on ``sample`` (1, ...), the first of the
    batch (any made-up input could be one the model refuses), in evaluation mode (no dropout stream
    drawn from), in the main process, once per pool."""
    modules = list(model.modules())
    before = [m.training for m in modules]
    model.eval()
    try:
        with no_grad():
            out = model(Tensor._wrap(sample)).data
    finally:
        _set_modes(modules, before)
    return out.shape[1:], out.dtype


# ---- a worker -------------------------------------------------------------------------------------
def _die_with_parent(parent_pid):
    """Linux: the kernel sends SIGKILL to this process when its parent dies (even by kill -9)."""
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:   # the parent died before prctl: no signal will ever come
        os._exit(0)


def _worker(pool, rank, conn, model, loss_fn, parent_pid):
    """Worker ``rank``: answer the main process's messages until told to close or its pipe ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the main process's to handle
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent(parent_pid)
    walk = _walk(model)
    params, modules = walk.params, walk.modules
    for t, shared in zip(walk.tensors, pool.state):
        t.data = shared   # the main process copies the current values in before every call
    slot = pool.slots[rank]
    start_kb = backend.status_kb("VmRSS")   # mostly the main process's pages, shared until written
    with backend.limit_blas_threads(1):
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):   # the main process closed our pipe, or died
                return
            if msg[0] == "close":
                return
            if msg[0] == "memory":
                conn.send(("ok", start_kb, backend.status_kb("VmHWM")))
                continue
            try:
                reply = ("ok",) + _work(msg, pool, slot, model, loss_fn, params, modules)
            except Exception:
                reply = ("error", traceback.format_exc())
            try:
                conn.send(reply)
            except OSError:
                return


def _work(msg, pool, slot, model, loss_fn, params, modules):
    """One message: ("step", n, pieces, training, requires_grad) or ("forward", n, pieces, training).
    Returns (this worker's share of the loss, [whether gradient j was written, ...])."""
    op, n, pieces, training = msg[:4]
    _set_modes(modules, training)
    if op == "forward":
        set_grad_enabled(False)   # (the grad mode of the thread that forked us is not ours to keep)
        for lo, hi, generator in pieces:
            with random.thread_dropout(generator):
                pool.out[lo:hi] = model(Tensor._wrap(pool.x[lo:hi])).data
        return 0.0, []
    requires = msg[4]
    for p, r in zip(params, requires):
        p.requires_grad = r
    chosen = [i for i, r in enumerate(requires) if r]
    written = [False] * len(chosen)

    def add(j, g):   # the same arithmetic as the threads' sums: the first copied, the rest added
        s = slot[chosen[j]]
        if written[j]:
            s += g
        else:
            s[...] = g
            written[j] = True
    set_grad_enabled(True)
    value = run_pieces(model, loss_fn, pool.x, pool.y, n, [params[i] for i in chosen], pieces, add)
    return value, written


# ---- the pool -------------------------------------------------------------------------------------
class _Pool:
    """``workers`` forked processes and the shared memory they work in, for one model."""

    def __init__(self, model, loss_fn, workers, capacity, x_spec, y_spec, sample):
        self.owner, self.closed = os.getpid(), False
        walk = _walk(model)
        self.model_ref, self.loss_fn, self.signature = weakref.ref(model), loss_fn, walk.signature
        self.workers, self.capacity, self.x_spec, self.y_spec = workers, capacity, x_spec, y_spec
        tensors, params = walk.tensors, walk.params
        out_shape, out_dtype = _output_spec(model, sample)
        specs = [(t.data.shape, t.data.dtype) for t in tensors]
        specs += [(p.data.shape, p.data.dtype) for _ in range(workers) for p in params]
        specs += [((capacity, *x_spec[0]), x_spec[1]), ((capacity, *out_shape), out_dtype)]
        specs += [((capacity, *y_spec[0]), y_spec[1])] if y_spec else []
        shared = iter(_shared_arrays(specs))
        self.state = [next(shared) for _ in tensors]
        self.slots = [[next(shared) for _ in params] for _ in range(workers)]
        self.x, self.out = next(shared), next(shared)
        self.y = next(shared) if y_spec else None
        self.conns, self.procs = [], []
        ctx = mp.get_context("fork")
        try:
            for rank in range(workers):
                conn, child_end = ctx.Pipe()
                _parent_ends.add(conn)   # a later fork closes it in its child (_forget_in_child)
                self.conns.append(conn)
                proc = ctx.Process(target=_worker, name=f"minicct-parallel-{rank}", daemon=True,
                                   args=(self, rank, child_end, model, loss_fn, os.getpid()))
                # Ctrl-C held back until the child has said it ignores it (then it reaches us alone)
                mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
                try:
                    proc.start()
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                child_end.close()
                self.procs.append(proc)
        except BaseException:
            self.close(kill=True)
            raise

    def fits(self, model, walk, loss_fn, workers, n, x_spec, y_spec):
        return (not self.closed and self.owner == os.getpid() and self.model_ref() is model
                and (loss_fn is None or _same_function(loss_fn, self.loss_fn)) and self.workers == workers
                and self.capacity >= n and self.x_spec == x_spec and (y_spec is None or y_spec == self.y_spec)
                and self.signature == walk.signature)

    def load(self, walk, x, y):
        """The main process's current parameter and buffer values (walk: the model's _Walk), and the
        batch, into shared memory."""
        for t, shared in zip(walk.tensors, self.state):
            np.copyto(shared, t.data)
        self.x[:len(x)] = x
        if y is not None:
            self.y[:len(y)] = y

    def run(self, messages):
        """Send message k to worker k; [reply k[1:], ...] in worker order. Any failure (or Ctrl-C
        while waiting) closes the pool, killing the workers mid-piece, and is raised here."""
        try:
            for k, msg in enumerate(messages):
                try:
                    self.conns[k].send(msg)
                except OSError:
                    raise self._died(k) from None
            replies = []
            for k in range(len(messages)):
                try:
                    reply = self.conns[k].recv()
                except (EOFError, OSError):
                    raise self._died(k) from None
                if reply[0] == "error":
                    raise WorkerError(f"minicct.parallel: worker {k} (pid {self.procs[k].pid}) failed, "
                                      f"and the worker pool was closed. The worker's traceback:\n{reply[1]}")
                replies.append(reply[1:])
            return replies
        except BaseException:
            self.close(kill=True)
            raise

    def _died(self, k):
        proc = self.procs[k]
        proc.join(timeout=1.0)
        return WorkerError(f"minicct.parallel: worker {k} (pid {proc.pid}) died (exit code {proc.exitcode}; "
                           f"-9: killed, perhaps out of memory); the worker pool was closed")

    def close(self, kill=False):
        """Stop the workers: ask them to exit (or kill them), wait, kill whatever is left."""
        if self.closed:
            return
        self.closed = True
        for conn in self.conns:
            if not kill:
                try:
                    conn.send(("close",))
                except OSError:
                    pass
            conn.close()
            _parent_ends.discard(conn)
        deadline = time.monotonic() + 2.0
        for proc in self.procs:
            if kill:
                proc.kill()
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=1.0)
        self.state = self.slots = self.x = self.y = self.out = None   # the mapping goes with them


def _pool_for(model, walk, loss_fn, workers, x, y):
    """The pool for this call: the current one if it fits, else a new one (the old one closed)."""
    global _pool
    x_spec = (x.shape[1:], x.dtype.str)
    y_spec = None if y is None else (y.shape[1:], y.dtype.str)
    old = _pool
    if old is not None and old.fits(model, walk, loss_fn, workers, len(x), x_spec, y_spec):
        return old
    capacity = len(x)
    if old is not None:
        if old.model_ref() is model and old.x_spec == x_spec:
            capacity = max(capacity, old.capacity)   # no new pool when the next batch is smaller
            if loss_fn is None:                      # forward(): keep what training needs too
                loss_fn, y_spec = old.loss_fn, old.y_spec
        old.close()
    _pool = None
    _pool = _Pool(model, loss_fn, workers, capacity, x_spec, y_spec, x[:1])
    return _pool


def close():
    """Close this process's pool of workers, if any (also done at exit)."""
    global _pool
    pool, _pool = _pool, None
    if pool is not None and pool.owner == os.getpid():
        pool.close()


def worker_pids():
    """The process ids of the current pool's workers ([] when there is none)."""
    return [] if _pool is None or _pool.closed else [p.pid for p in _pool.procs]


def worker_memory_mb():
    """[(resident MB when forked, peak resident MB since), ...] of the current pool's workers ([]
    when there is none, or on a system without /proc). What a worker added itself is about the
    difference: at the fork it shares the main process's pages, and counts them as resident."""
    if _pool is None or _pool.closed:
        return []
    out = [(start, peak) for start, peak in _pool.run([("memory",)] * _pool.workers)]
    return [] if any(v is None for pair in out for v in pair) else [(a / 1024, b / 1024) for a, b in out]


def _forget_in_child():
    """In any process forked from this one (our workers, the data loader's): the pool is not its
    own. Close its copies of the pipes' main ends, so a worker sees end-of-file when the main
    process closes its end or dies, whoever else was forked."""
    global _pool
    _pool = None
    for conn in list(_parent_ends):
        try:
            conn.close()
        except OSError:
            pass
    _parent_ends.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(close)


# ---- the two calls --------------------------------------------------------------------------------
def forward_backward(model, loss_fn, x, y, workers, micro_batch) -> float:
    """``minicct.parallel.forward_backward`` over ``workers`` (>= 2) processes (see there)."""
    xa, ya = np.asarray(raw(x)), np.asarray(raw(y))
    n = len(xa)
    walk = _walk(model)
    pool = _pool_for(model, walk, loss_fn, workers, xa, ya)
    plan = with_generators(micro_batches(n, min(workers, n), micro_batch), training=True)
    params = walk.params
    requires = tuple(bool(p.requires_grad) for p in params)
    training = tuple(m.training for m in walk.modules)
    pool.load(walk, xa, ya)
    replies = pool.run([("step", n, pieces, training, requires) for pieces in plan])
    chosen = [i for i, r in enumerate(requires) if r]
    for j, i in enumerate(chosen):   # the workers' slots, added in worker order
        parts = [pool.slots[k][i] for k, (_, written) in enumerate(replies) if written[j]]
        if not parts:
            continue
        total = parts[0].copy()   # a copy: the slot is overwritten by the next call
        for g in parts[1:]:
            total += g
        p = params[i]
        if p.grad is None:
            p.grad = Tensor._wrap(total)
        else:
            p.grad.data += total
    return sum(v for v, _ in replies)


def forward(model, x, workers, micro_batch) -> Tensor:
    """``minicct.parallel.forward`` over ``workers`` (>= 2) processes (see there)."""
    xa = np.asarray(raw(x))
    n = len(xa)
    walk = _walk(model)
    pool = _pool_for(model, walk, None, workers, xa, None)
    plan = with_generators(micro_batches(n, min(workers, n), micro_batch), is_training(model))
    training = tuple(m.training for m in walk.modules)
    pool.load(walk, xa, None)
    pool.run([("forward", n, pieces, training) for pieces in plan])
    return Tensor._wrap(pool.out[:n].copy())
