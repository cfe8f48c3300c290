"""Every random generator minicct draws from: one owner, one seeding policy, one saved state.

    minicct.random.manual_seed(0)           # (same as minicct.manual_seed) a whole run from one seed
    state = minicct.random.get_state()      # plain data (dicts, lists, ints), for a checkpoint
    minicct.random.set_state(state)         # ...and every stream continues where it was

The generators, by role (each a NumPy ``Generator``):

    init       weight initialisation (``nn.init``). Drawn on the host in float64 and copied to the
               device, so a seed gives the same weights on NumPy and on CuPy.
    dropout    dropout, attention-dropout and drop-path masks on the CPU (``kernels.dropout``).
               On the GPU the masks are drawn there, by ``cupy.random``, which ``manual_seed``
               seeds too (at the first draw: CuPy may not be imported yet).

The data pipeline has no generator here, on purpose: batch b of epoch e is drawn from a Generator
made afresh from (seed, e, b) (``minicct.data.loader``), so the loader has no state to save and its
worker processes need none handed to them.

Seeding policy. ``manual_seed(seed)`` gives role r the stream of ``SeedSequence(seed,
spawn_key=(r,))`` (init r=0, dropout 1, cupy 2): streams that do not overlap, however long a run
draws. (The loader's keys, (epoch, 0) and (epoch, 1, batch), are longer, so they never coincide with
these.) It also seeds NumPy's and Python's global generators with ``seed``, for code that uses
them (minicct itself does not). Until ``manual_seed`` is called the roles stand as if seeded with 0
(the globals are left alone).

Threads. ``minicct.parallel`` runs pieces of a batch in several threads. Threads sharing one
generator would take its numbers in whatever order they happen to run, and masks would change from
run to run. So the calling thread draws one seed per piece from the dropout stream, in order
(``dropout_generators(n)``), and each piece draws its masks from its own generator
(``thread_dropout(generator)``, which ``dropout_generator()`` then returns in that thread alone).
The dropout stream advances the same way every step, whatever the threads do.

Checkpoints. ``get_state()`` holds the init and dropout streams and the two global generators, under
the keys the trainer has always written ('init', 'dropout', 'numpy_global', 'python'), so older
checkpoints load. On the CPU a resumed run is bit-identical to one never interrupted. CuPy's
generator is not saved (its state lives on the GPU): a resumed GPU run draws other masks.
"""
from __future__ import annotations

import contextlib
import random as _python_random
import threading

import numpy as np

from minicct import backend as _backend
from minicct.errors import GraphCaptureError

ROLES = {"init": 0, "dropout": 1, "cupy": 2}   # role -> its spawn key in the seeding policy

_generators: dict[str, np.random.Generator] = {}
_cupy_seed = None                  # a seed not yet given to cupy.random (None: already given)
_thread = threading.local()        # .dropout: this thread's own dropout generator (thread_dropout)


def _role_sequence(seed: int, role: str) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(ROLES[role],))


def _seed_roles(seed: int):
    global _cupy_seed
    _generators["init"] = np.random.default_rng(_role_sequence(seed, "init"))
    _generators["dropout"] = np.random.default_rng(_role_sequence(seed, "dropout"))
    _cupy_seed = int(_role_sequence(seed, "cupy").generate_state(1, np.uint32)[0])


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


def dropout_generator() -> np.random.Generator:
    """The generator CPU masks are drawn from when no ``generator=`` is passed: this thread's own
    inside ``thread_dropout``, else the dropout stream."""
    return getattr(_thread, "dropout", None) or _generators["dropout"]


def dropout_generators(n: int) -> list[np.random.Generator]:
    """n generators of their own, for n pieces of one step run in threads: seeded by n numbers drawn
    from ``dropout_generator()`` in the calling thread, in order (so the stream advances the same
    way whatever order the threads then run in, and every step and every piece draws differently)."""
    return [np.random.default_rng(s) for s in dropout_generator().integers(0, 2**63, size=n)]


@contextlib.contextmanager
def thread_dropout(generator: np.random.Generator):
    """Within the block, masks drawn *in this thread* without a ``generator=`` come from this one
    (other threads are not affected)."""
    before = getattr(_thread, "dropout", None)
    _thread.dropout = generator
    try:
        yield generator
    finally:
        _thread.dropout = before


def device_random(xp):
    """``xp.random`` for drawing on a GPU (xp = cupy), given the pending ``manual_seed`` first."""
    global _cupy_seed
    if _cupy_seed is not None:
        xp.random.seed(_cupy_seed)
        _cupy_seed = None
    return xp.random


# ---- masks inside a CUDA graph (issue 14) ------------------------------------------------------------
# A graph replays the kernels it captured with the arguments they had: a mask drawn by cupy.random
# (cuRAND, which CuPy will not capture anyway) or copied from the host would be the same mask at every
# replay, a silent bug. A step that runs in ``backend.graph_mode()`` therefore draws from a
# counter-based generator whose counter lives in device memory and is advanced by the draw itself
# (Philox4x32-10, being built on the ``philox`` branch). This is its seam: ``capturable_uniform``.
_capturable = None    # (xp, shape, dtype) -> uniforms, advancing a counter on the device; None: none yet


def set_capturable_generator(draw):
    """Plug in the generator a CUDA graph can capture: ``draw(xp, shape, dtype)`` -> uniforms in
    [0, 1), drawn on the array's device from a counter held there (None: unplug). Returns the old one."""
    global _capturable
    before, _capturable = _capturable, draw
    return before


def has_capturable_generator() -> bool:
    """True once a generator a CUDA graph can capture is plugged in (``set_capturable_generator``)."""
    return _capturable is not None


def capturable_uniform(xp, shape, dtype):
    """Uniform [0, 1) numbers a captured graph draws anew at every replay (see above). Raises
    GraphCaptureError while no such generator is plugged in: never a mask frozen into the graph."""
    if _capturable is None:
        raise GraphCaptureError(
            "this model draws dropout / drop-path masks, and minicct has no random generator a CUDA "
            "graph can capture yet (a counter-based Philox stream, issue 14): use --cuda-graph off, "
            "or set the model's dropout, attention_dropout and stochastic_depth to 0")
    return _capturable(xp, shape, dtype)


def dropout_uniform(xp, shape, dtype, generator=None):
    """Uniform [0, 1) numbers for a dropout or drop-path mask, on the device of xp: from
    ``generator`` when one is given (on a GPU: drawn on the host, then copied, so reproducible),
    else from this thread's dropout stream on the CPU or CuPy's generator on a GPU. In graph mode
    (``backend.graph_mode``) always from ``capturable_uniform``."""
    if _backend.in_graph_mode():
        return capturable_uniform(xp, shape, dtype)
    if xp is np:
        return (generator or dropout_generator()).random(shape, dtype=dtype)
    if generator is not None:
        return xp.asarray(generator.random(shape, dtype=dtype))
    return device_random(xp).random_sample(shape, dtype=dtype)


def get_state() -> dict:
    """Every saved stream as plain data: {'init', 'dropout': PCG64 states, 'numpy_global': NumPy's
    global state, 'python': Python's ({'version', 'internal', 'gauss'})}."""
    state = {role: g.bit_generator.state for role, g in _generators.items()}
    state["numpy_global"] = np.random.get_state(legacy=False)
    version, internal, gauss = _python_random.getstate()
    state["python"] = {"version": version, "internal": list(internal), "gauss": gauss}
    return state


def set_state(state: dict) -> None:
    """Put every stream back where ``get_state()`` found it (keys missing from ``state`` are left
    as they are)."""
    for role, g in _generators.items():
        if role in state:
            g.bit_generator.state = state[role]
    if "numpy_global" in state:
        np.random.set_state(state["numpy_global"])
    if "python" in state:
        p = state["python"]
        _python_random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


_seed_roles(0)
