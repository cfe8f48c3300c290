"""The training step as one CUDA graph: captured once, replayed for every batch (issue 14).

A CCT-2 training step at batch 128 is ~27 GFLOP, well under a millisecond of GPU arithmetic, but it
is hundreds of small kernels, each ~10 us of Python and driver work to launch. CUDA can record what
a step launches on a stream (stream capture) into a graph, and one launch then replays all of it.
No Python runs during a replay, so everything the step reads must already sit in device memory:

    * static buffers: each batch is copied (asynchronously, on the graph's stream) into the same
      input and label arrays the capture read, and the loss lands in the same 0-d array;
    * no host values baked into the kernels: the learning rate and step count are device scalars
      (``AdamW.use_device_scalars``; ``load_lr()`` before each replay writes the schedule's lr),
      every matrix product is minicct's own GEMM (CuPy refuses to capture cuBLAS; graph mode), and
      dropout, attention-dropout and drop-path masks come from the run's Philox stream with its
      counter in device memory, advanced by a kernel of the step (``minicct.random.GraphStreams``):
      every replay draws new masks, the very masks the eager step would draw, and none is ever
      frozen into the graph;
    * memory of its own: the capture allocates from a private memory pool that nothing else uses
      while the graph lives, so no other array is ever handed the memory the replays write.

    step = GraphStep(model, optimizer, F.cross_entropy)       # model on the GPU, AdamW
    for x, y in loader:                                        # host arrays
        loss = step(x, y)          # eager warm-up steps, then one capture, then replays

A batch of another shape than the captured one (the last, partial batch of an epoch) runs the
same step eagerly. ``GraphForward`` captures evaluation the same way (eval mode, no gradients).

``Capture`` is the CUDA side. On NumPy ``EagerCapture`` stands in for it (tests): "capturing"
keeps the function and a "replay" calls it again on the same static buffers, which checks the
plumbing (buffers, warm-up, partial batches, the learning rate's path) but not the graph itself;
the GPU tests compare N replayed steps with N eager ones.
"""
from __future__ import annotations

import numpy as np

from minicct import backend, random
from minicct.errors import GraphCaptureError

WARMUP_STEPS = 3    # eager steps before the capture: kernels compiled, memory pools filled


class EagerCapture:
    """The NumPy stand-in for ``Capture``: same interface, no graph (for tests on the CPU)."""

    def copy_in(self, dst, src):
        dst[...] = src

    def capture(self, fn):
        """Returns a 'graph' whose launch() runs fn again. Like a CUDA capture, capturing runs nothing."""
        return _Replay(fn)

    def replay(self, graph):
        graph.launch()

    def run(self, fn):
        return fn()

    def read(self, a):
        return float(a)

    def synchronize(self):
        pass


class _Replay:
    def __init__(self, fn):
        self.launch = fn


class Capture:
    """CUDA stream capture as CuPy offers it (11.0 to 14.2): a non-blocking stream (the legacy
    stream cannot capture), a private memory pool for the capture, relaxed capture mode.

    Every step, copy and replay runs on this one stream, so they are ordered without host syncs;
    ``synchronize()`` before anything on another stream reads what a step wrote."""

    def __init__(self):
        cp = backend.import_cupy()
        self.cp = cp
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.pool = cp.cuda.MemoryPool()     # the graph's memory: used by nothing else while it lives

    def copy_in(self, dst, src):
        """Host array src into the device array dst, asynchronously on the graph's stream."""
        dst.set(np.ascontiguousarray(src, dtype=dst.dtype), stream=self.stream)

    def capture(self, fn):
        cp = self.cp
        with self.stream, cp.cuda.using_allocator(self.pool.malloc):
            self.stream.begin_capture()
            try:
                fn()
            finally:                      # a failed capture must still end, or the stream stays unusable
                graph = self.stream.end_capture()
        return graph

    def replay(self, graph):
        graph.launch(stream=self.stream)

    def run(self, fn):
        with self.stream:
            return fn()

    def read(self, a):
        """A 0-d device array as a Python float (waits for the stream)."""
        with self.stream:
            return float(a.get(stream=self.stream))

    def synchronize(self):
        self.stream.synchronize()


def check_kernel_mode(device):
    """A GPU graph needs the fast kernels: the reference ones (MINICCT_KERNELS=reference) make their
    products with cuBLAS directly, which a capture refuses."""
    from minicct.kernels import dispatch
    if backend.check_device(device) == "gpu" and dispatch.mode() == "reference":
        raise GraphCaptureError("a CUDA graph needs minicct's fast kernels, and MINICCT_KERNELS=reference "
                                "is set (the reference kernels call cuBLAS, which a graph cannot capture): "
                                "unset MINICCT_KERNELS, or use --cuda-graph off")


def default_capture(device):
    """``Capture()`` on the GPU, ``EagerCapture()`` on the CPU."""
    return Capture() if backend.check_device(device) == "gpu" else EagerCapture()


class GraphStep:
    """One training step (forward, loss, backward, AdamW) captured after ``warmup`` eager steps and
    replayed for every batch of the captured shape; other shapes run eagerly.

    model: a Module on the device; optimizer: AdamW (switched here to device scalars); loss_fn(logits,
    y) -> a mean over the batch. Call with host arrays x: (N, ...), y: (N, ...); returns the loss.
    """

    def __init__(self, model, optimizer, loss_fn, capture=None, warmup=WARMUP_STEPS):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device = backend.device_of(next(iter(model.parameters())).data)
        check_kernel_mode(self.device)
        self.capture = capture if capture is not None else default_capture(self.device)
        self.warmup = int(warmup)
        self.x = self.y = self.loss = self.graph = None      # static buffers, the graph's output, the graph
        self.graph_blocks = 0                                 # Philox blocks one replay draws
        self.steps_eager = self.steps_replayed = 0
        if not optimizer.device_scalars:
            optimizer.use_device_scalars()
        # The masks' counter, in device memory (made now, outside any capture's memory pool).
        self.streams = random.GraphStreams(backend.xp_for(self.device))

    def _step(self, x, y):
        """The step itself on device arrays: returns the loss as a 0-d device array. Captured, it
        is the graph: nothing here may leave a value on the host that a replay would need."""
        from minicct import Tensor
        self.streams.begin_step()
        with backend.graph_mode(), random.capturable(self.streams):
            loss = self.loss_fn(self.model(Tensor._wrap(x)), Tensor._wrap(y))
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.streams.end_step()              # the counter past this step's masks, on the device
        return loss.data

    def _static_step(self):
        self.loss = self._step(self.x, self.y)

    def __call__(self, x, y):
        x, y = np.asarray(x), np.asarray(y)
        self.model.train()
        if self.x is None:                       # the first batch sets the shapes the graph will have
            xp = backend.xp_for(self.device)
            self.x = xp.empty(x.shape, dtype=x.dtype)
            self.y = xp.empty(y.shape, dtype=y.dtype)
        # The schedule's lr goes into the device scalar before every step: eager or replayed.
        self.capture.run(self.optimizer.load_lr)
        if x.shape != self.x.shape or y.shape != self.y.shape:
            xp = backend.xp_for(self.device)     # another shape (the partial batch): eager, own arrays
            self.steps_eager += 1
            loss = self.capture.run(lambda: self._step(xp.asarray(x), xp.asarray(y)))
            self.streams.advance_host(self.streams.step_blocks)
            return self.capture.read(loss)
        self.capture.copy_in(self.x, x)
        self.capture.copy_in(self.y, y)
        if self.graph is None and self.steps_eager < self.warmup:
            self.steps_eager += 1
            self.capture.run(self._static_step)
            self.streams.advance_host(self.streams.step_blocks)
        else:
            if self.graph is None:
                self.graph = self.capture.capture(self._static_step)
                self.graph_blocks = self.streams.step_blocks     # what every replay draws
            self.capture.replay(self.graph)
            self.steps_replayed += 1
            self.streams.advance_host(self.graph_blocks)        # the host's counter follows the device's
        return self.capture.read(self.loss)


class GraphForward:
    """The model's forward pass in eval mode, captured for one batch shape: ``logits = f(x)`` with x
    a host array; batches of other shapes run eagerly. Returns a device array that the next call
    overwrites (copy it, or read it at once)."""

    def __init__(self, model, capture=None, warmup=1):
        self.model = model
        self.device = backend.device_of(next(iter(model.parameters())).data)
        check_kernel_mode(self.device)
        self.capture = capture if capture is not None else default_capture(self.device)
        self.warmup = int(warmup)
        self.x = self.out = self.graph = None
        self.calls_eager = 0

    def _forward(self, x):
        from minicct import Tensor, no_grad
        with no_grad(), backend.graph_mode():
            return self.model(Tensor._wrap(x)).data

    def _static_forward(self):
        self.out = self._forward(self.x)

    def __call__(self, x):
        x = np.asarray(x)
        was_training = getattr(self.model, "training", True)
        self.model.eval()
        try:
            if self.x is None:
                self.x = backend.xp_for(self.device).empty(x.shape, dtype=x.dtype)
            if x.shape != self.x.shape:
                self.calls_eager += 1
                xp = backend.xp_for(self.device)
                out = self.capture.run(lambda: self._forward(xp.asarray(x)))
            else:
                self.capture.copy_in(self.x, x)
                if self.graph is None and self.calls_eager < self.warmup:
                    self.calls_eager += 1
                    self.capture.run(self._static_forward)
                else:
                    if self.graph is None:
                        self.graph = self.capture.capture(self._static_forward)
                    self.capture.replay(self.graph)
                out = self.out
            self.capture.synchronize()
            return out
        finally:
            self.model.train(was_training)
