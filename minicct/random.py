"""Every random generator minicct draws from: one owner, one seeding policy, one saved state.

    minicct.random.manual_seed(0)           # (same as minicct.manual_seed) a whole run from one seed
    state = minicct.random.get_state()      # plain data (dicts, lists, ints), for a checkpoint
    minicct.random.set_state(state)         # ...and every stream continues where it was

The generators, by role:

    init       weight initialisation (``nn.init``): a NumPy ``Generator``. Drawn on the host in
               float64 and copied to the device, so a seed gives the same weights on NumPy and CuPy.
    dropout    dropout, attention-dropout and drop-path masks: a ``Philox`` stream, counter-based
               (Philox4x32-10, ``kernels/philox.py``). Its numbers are made where the mask is
               needed, on the CPU or on the GPU, and are the same numbers on both: for one seed a
               mask is the same on NumPy and on CuPy, and its whole state is a few integers.

A Philox stream is a key (2 x 32 bits, from the seed), a stream id (64 bits) and a counter (64
bits, the next block): block j of the stream is philox4x32((j, id), key), four 32-bit words. A
draw of n numbers takes the next ceil(n / 4) blocks for float32 (one word a number), ceil(n / 2)
for float64 (two words), and moves the counter past them. Nothing else changes, so the state to
save is plain ints, and a GPU run resumed from a checkpoint draws the masks it would have drawn
(as a CPU run always did). The first block of a draw is an argument (``kernels/philox.py``): a step
captured as a CUDA graph keeps the counter in device memory and advances it itself (``GraphStreams``,
at the end of this module).

The data pipeline has no generator here, on purpose: batch b of epoch e is drawn from a Generator
made afresh from (seed, e, b) (``minicct.data.loader``), so the loader has no state to save and its
worker processes need none handed to them.

Seeding policy. ``manual_seed(seed)`` gives role r the stream of ``SeedSequence(seed,
spawn_key=(r,))`` (init r=0, dropout 1; key 2 seeded CuPy's generator before the dropout masks
moved to Philox and is no longer used): init is a PCG64 of that sequence, dropout a Philox keyed by
its first two 32-bit words, stream id 0, counter 0. (The loader's keys, (epoch, 0) and (epoch, 1,
batch), are longer, so they never coincide with these.) It also seeds NumPy's and Python's global
generators with ``seed``, for code that uses them (minicct itself does not). Until
``manual_seed`` is called the roles stand as if seeded with 0 (the globals are left alone).

Pieces of a step. ``minicct.parallel`` runs pieces of a batch in several threads (or processes).
Pieces sharing one stream would take its numbers in whatever order they happen to run, and masks
would change from run to run. So the caller asks for one stream per piece, in order
(``dropout_generators(n)``): the dropout stream's key with stream ids it has not handed out before
(1, 2, 3, ...: the ids are counted in its state), each counter at 0. Streams with distinct ids
never share a block, whatever they draw; they are plain objects, so they pickle to a worker
process. Each piece draws its masks from its own (``thread_dropout(stream)``, which
``dropout_generator()`` then returns in that thread alone). Only the run's stream (id 0) hands out
ids, so a piece's stream cannot make more.

``generator=``: a kernel given a NumPy ``Generator`` draws its numbers from it on the host (and
copies them to the device), as it always did; given a ``Philox`` stream, from that stream.

Checkpoints. ``get_state()`` holds the init and dropout streams and the two global generators, under
the keys the trainer has always written ('init', 'dropout', 'numpy_global', 'python'). A run
resumed from it, on the CPU or the GPU, is bit-identical to one never interrupted. A checkpoint
written before the dropout stream was Philox holds a PCG64 state under 'dropout': it still loads,
and the dropout stream is then keyed from that saved state (the same key every time it is loaded,
counter 0): masks reproducible from the checkpoint, but not the ones the old generator would have
drawn.
"""
from __future__ import annotations

import contextlib
import math
import random as _python_random
import threading

import numpy as np

from minicct import backend as _backend
from minicct.errors import GraphCaptureError
from minicct.kernels import philox as _philox

ROLES = {"init": 0, "dropout": 1}   # role -> its spawn key in the seeding policy

MASK64 = 2**64 - 1


class Philox:
    """A Philox4x32-10 stream: key (k0, k1) 32 bits each, stream id (64 bits), counter (64 bits:
    the next block). Plain ints only: it pickles, and ``state`` is checkpoint data.

        g = Philox((k0, k1)); g.random(5)      # five float64 in [0, 1), on the host
        g.uniform(cupy, (N, L), np.float32)    # numbers on a GPU: the same as on NumPy
    """

    def __init__(self, key, stream=0, counter=0, spawned=0):
        self.key = (int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF)
        self.stream = int(stream) & MASK64
        self.counter = int(counter) & MASK64
        self.spawned = int(spawned)          # stream ids handed out so far (the run's stream only)

    def __repr__(self):
        return (f"Philox(key=({self.key[0]:#010x}, {self.key[1]:#010x}), stream={self.stream}, "
                f"counter={self.counter})")

    def take(self, blocks):
        """Reserve the next ``blocks`` blocks: returns the first one's number, moves the counter on."""
        base = self.counter
        self.counter = (base + int(blocks)) & MASK64
        return base

    def uniform(self, xp, shape, dtype=np.float32):
        """Numbers in [0, 1) of ``shape`` and dtype (float32: 24 random bits, float64: 53), made on
        the device of xp: the same numbers on NumPy and CuPy."""
        shape = tuple(shape)
        base = self.take(_philox.blocks_for(math.prod(shape), dtype))
        return _draws(xp).uniform(xp, self.key, self.stream, base, shape, dtype)

    def keep_mask(self, xp, shape, p, dtype=np.float32):
        """Booleans of ``shape``, True with probability 1 - p: exactly ``uniform(...) >= p`` (the
        same blocks), compared as integers."""
        shape = tuple(shape)
        base = self.take(_philox.blocks_for(math.prod(shape), dtype))
        return _draws(xp).keep_mask(xp, self.key, self.stream, base, shape, p, dtype)

    def random(self, size=None, dtype=np.float64):
        """As ``numpy.random.Generator.random``: on the host; size None gives one float."""
        if size is None:
            return float(self.uniform(np, (1,), dtype)[0])
        return self.uniform(np, (size,) if isinstance(size, int) else size, dtype)

    def spawn(self, n):
        """n new streams: this key, the next n unused stream ids, counters at 0."""
        if self.stream != 0:
            raise RuntimeError(f"{self!r}: only the run's stream (id 0) hands out stream ids")
        first = self.spawned + 1
        self.spawned += int(n)
        return [Philox(self.key, first + i) for i in range(int(n))]

    @property
    def state(self):
        return {"bit_generator": "Philox4x32-10", "key": list(self.key), "stream": self.stream,
                "counter": self.counter, "spawned": self.spawned}

    @classmethod
    def from_state(cls, state):
        """The stream a ``state`` dict describes; a PCG64 state (a checkpoint written before the
        dropout masks were Philox) gives the stream keyed from it (see the module's docstring)."""
        if state.get("bit_generator") == "Philox4x32-10":
            return cls(state["key"], state["stream"], state["counter"], state.get("spawned", 0))
        inner = state["state"]
        key = np.random.SeedSequence([int(inner["state"]), int(inner["inc"])]).generate_state(2, np.uint32)
        return cls(key)


def _draws(xp):
    """The Philox implementation for xp, as ``kernels.dispatch`` picks it. (Imported here, not at
    the top: dispatch imports every kernel, and the dropout kernels import this module.)"""
    from minicct.kernels import dispatch
    return dispatch.philox(xp)


_generators: dict = {}             # role -> its generator (init: numpy Generator; dropout: Philox)
_thread = threading.local()        # .dropout: this thread's own dropout stream (thread_dropout)


def _role_sequence(seed: int, role: str) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(ROLES[role],))


def _seed_roles(seed: int):
    _generators["init"] = np.random.default_rng(_role_sequence(seed, "init"))
    _generators["dropout"] = Philox(_role_sequence(seed, "dropout").generate_state(2, np.uint32))


def manual_seed(seed: int) -> None:
    """Seed every generator: each role from ``seed`` by the policy above, and NumPy's and Python's
    global generators with ``seed`` itself."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"manual_seed: the seed must be a non-negative integer, got {seed}")
    _seed_roles(seed)
    np.random.seed(seed % 2**32)
    _python_random.seed(seed)


def init_generator() -> np.random.Generator:
    """The generator weight initialisation draws from (``nn.init``, when no ``generator=``)."""
    return _generators["init"]


def dropout_generator():
    """The stream masks are drawn from when no ``generator=`` is passed: this thread's own inside
    ``thread_dropout``, else the run's dropout stream (a ``Philox``)."""
    return getattr(_thread, "dropout", None) or _generators["dropout"]


def dropout_generators(n: int) -> list:
    """n streams of their own, for n pieces of one step (threads or processes): the dropout
    stream's key with n stream ids not handed out before, in order (so every step and every piece
    draws differently, and the same way whatever order the pieces then run in). Picklable."""
    return dropout_generator().spawn(n)


@contextlib.contextmanager
def thread_dropout(generator):
    """Within the block, masks drawn *in this thread* without a ``generator=`` come from this one
    (a ``Philox`` stream, or a NumPy ``Generator``); other threads are not affected."""
    before = getattr(_thread, "dropout", None)
    _thread.dropout = generator
    try:
        yield generator
    finally:
        _thread.dropout = before


# ---- masks inside a CUDA graph (issue 14) ------------------------------------------------------------
# A graph replays the kernels it captured with the arguments they had: a mask drawn by cupy.random
# (cuRAND, which CuPy will not capture anyway) or made from host numbers would be the same mask at
# every replay, a silent bug. So a step that runs in ``backend.graph_mode()`` draws only from the
# generator plugged in here (``capturable``), and refuses to draw while there is none.
_capturable = None    # a GraphStreams (or anything with its uniform / keep_mask), or None


class GraphStreams:
    """The dropout masks of a step captured as a CUDA graph: the masks the eager step draws.

    On the GPU the eager step is one piece, and draws its masks from the run's stream: blocks
    counter, counter + 1, ... in the order of the draws, the counter moving on by each draw. In a
    graph the counter lives in device memory (``self.counter``, one uint64): each draw's kernel
    reads it there at every replay and adds the draw's place within the step (a plain argument,
    the same at every replay), and a kernel at the end of the step adds the step's blocks to it.

        streams = GraphStreams(cupy)           # after any restore: from the run's counter
        streams.begin_step()                   # (Python) places within the step from 0
        with capturable(streams), backend.graph_mode():
            ... the step's forward and backward draw masks ...
            streams.end_step()                 # (device) counter += the step's blocks: captured
        streams.advance_host(blocks)           # after the step ran, eagerly or as a replay

    The run's stream keeps the host copy of the counter: ``advance_host`` moves it on by the blocks
    of each step that ran (``step_blocks`` after an eager step or a capture; a graph's is fixed), so a
    checkpoint (``get_state``) holds the counter without reading the device, and a run resumed from
    it, with or without a graph, draws the same masks. ``device_counter()`` reads the device copy (a
    sync; for checks). The key and stream id are read when a step is captured: make the
    GraphStreams after the run's state is restored.
    """

    def __init__(self, xp):
        self.xp = xp
        self.counter = xp.full((1,), self._run().counter, dtype=xp.uint64)
        self.offset = 0                       # blocks drawn so far in this step (host, static)
        self.step_blocks = 0                  # blocks the last step drew

    @staticmethod
    def _run():
        run = dropout_generator()
        if not isinstance(run, Philox):
            raise GraphCaptureError("a CUDA graph draws its masks from minicct's Philox dropout stream, "
                                    f"and this one is a {type(run).__name__}")
        return run

    def begin_step(self):
        self.offset = 0

    def _take(self, shape, dtype):
        offset = self.offset
        self.offset += _philox.blocks_for(math.prod(shape), dtype)
        return offset

    def uniform(self, xp, shape, dtype):
        shape, run = tuple(shape), self._run()
        offset = self._take(shape, dtype)
        return _draws(xp).uniform(xp, run.key, run.stream, self.counter, shape, dtype, offset=offset)

    def keep_mask(self, xp, shape, p, dtype):
        shape, run = tuple(shape), self._run()
        offset = self._take(shape, dtype)
        return _draws(xp).keep_mask(xp, run.key, run.stream, self.counter, shape, p, dtype, offset=offset)

    def end_step(self):
        """On the device, inside the step (so a graph captures it): the counter moves past the
        step's blocks."""
        self.step_blocks = self.offset
        if self.offset:
            self.xp.add(self.counter, self.xp.uint64(self.offset), out=self.counter)

    def advance_host(self, blocks):
        """On the host, after a step ran (eager or replayed): the run's counter moves on by its blocks."""
        run = self._run()
        run.counter = (run.counter + int(blocks)) & MASK64

    def device_counter(self) -> int:
        """The counter the next step will draw from, read from the device."""
        return int(_backend.to_numpy(self.counter)[0])


@contextlib.contextmanager
def capturable(streams):
    """Within the block, graph mode draws its masks from ``streams`` (a ``GraphStreams``; None:
    none, so graph mode refuses to draw)."""
    global _capturable
    before, _capturable = _capturable, streams
    try:
        yield streams
    finally:
        _capturable = before


def has_capturable_generator() -> bool:
    """True while a generator a CUDA graph can capture is plugged in (``capturable``)."""
    return _capturable is not None


def _graph_generator():
    if _capturable is None:
        raise GraphCaptureError(
            "this step draws dropout / drop-path masks in graph mode with no capturable generator "
            "plugged in (minicct.random.capturable(GraphStreams(xp)), as GraphStep does): draw outside "
            "backend.graph_mode(), or plug one in")
    return _capturable


def dropout_uniform(xp, shape, dtype, generator=None):
    """Uniform [0, 1) numbers for a mask, on the device of xp: from ``generator`` when one is
    given, else from this thread's dropout stream. A NumPy ``Generator`` draws on the host (then
    copied to the device); a ``Philox`` stream makes them on the device, the same on both."""
    if _backend.in_graph_mode():        # inside a CUDA graph: only a capturable generator will do
        return _graph_generator().uniform(xp, shape, dtype)
    g = generator if generator is not None else dropout_generator()
    if isinstance(g, np.random.Generator):
        u = g.random(shape, dtype=dtype)
        return u if xp is np else xp.asarray(u)
    return g.uniform(xp, shape, dtype)


def dropout_keep(xp, shape, p, dtype, generator=None):
    """Booleans of ``shape`` on the device of xp, True (keep) with probability 1 - p: exactly
    ``dropout_uniform(xp, shape, dtype, generator) >= p``, from the same numbers; a ``Philox``
    stream compares integers and makes no float array."""
    if _backend.in_graph_mode():
        return _graph_generator().keep_mask(xp, shape, p, dtype)
    g = generator if generator is not None else dropout_generator()
    if isinstance(g, np.random.Generator):
        return dropout_uniform(xp, shape, dtype, g) >= p
    return g.keep_mask(xp, shape, p, dtype)


def get_state() -> dict:
    """Every saved stream as plain data: {'init': a PCG64 state, 'dropout': the Philox state
    ({'bit_generator', 'key', 'stream', 'counter', 'spawned'}), 'numpy_global': NumPy's global
    state, 'python': Python's ({'version', 'internal', 'gauss'})}."""
    state = {"init": _generators["init"].bit_generator.state, "dropout": _generators["dropout"].state}
    state["numpy_global"] = np.random.get_state(legacy=False)
    version, internal, gauss = _python_random.getstate()
    state["python"] = {"version": version, "internal": list(internal), "gauss": gauss}
    return state


def set_state(state: dict) -> None:
    """Put every stream back where ``get_state()`` found it (keys missing from ``state`` are left
    as they are)."""
    if "init" in state:
        _generators["init"].bit_generator.state = state["init"]
    if "dropout" in state:
        _generators["dropout"] = Philox.from_state(state["dropout"])
    if "numpy_global" in state:
        np.random.set_state(state["numpy_global"])
    if "python" in state:
        p = state["python"]
        _python_random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


_seed_roles(0)
