"""minicct.random: one seed fixes every stream, the state round-trips through a checkpoint and the
streams continue, the roles and the threads of a parallel step draw different numbers."""
import random as python_random
import pickle
import threading

import numpy as np
import pytest

import minicct
from minicct import nn
from minicct import random as mr
from minicct.kernels import dropout_forward, drop_path_forward, philox
from minicct.training.checkpoint import load_checkpoint, save_checkpoint


def draws():
    """A few numbers from every stream a seed fixes."""
    return (mr.init_generator().random(4).tolist(), mr.dropout_generator().random(4).tolist(),
            np.random.random(4).tolist(), [python_random.random() for _ in range(4)])


def test_manual_seed_reproduces_every_stream():
    minicct.manual_seed(11)
    a = draws()
    mr.manual_seed(11)             # minicct.manual_seed is this one
    assert draws() == a
    mr.manual_seed(12)
    b = draws()
    assert all(x != y for x, y in zip(a, b))


def test_roles_draw_different_streams():
    mr.manual_seed(0)
    init, drop = mr.init_generator().random(8), mr.dropout_generator().random(8)
    assert not np.allclose(init, drop)
    # ...and independent ones: masks drawn in between do not change the weights a seed gives
    mr.manual_seed(5)
    w1 = nn.Linear(6, 4).weight.numpy()
    mr.manual_seed(5)
    dropout_forward(np.ones((100, 100), np.float32), 0.5)
    w2 = nn.Linear(6, 4).weight.numpy()
    np.testing.assert_array_equal(w1, w2)


def test_kernels_and_init_draw_from_their_role():
    mr.manual_seed(3)
    mask = dropout_forward(np.ones((20, 30), np.float32), 0.25)[0] != 0
    mr.manual_seed(3)
    np.testing.assert_array_equal(mask, mr.dropout_generator().random((20, 30), dtype=np.float32) >= 0.25)
    mr.manual_seed(3)
    w = nn.init.normal_(nn.Parameter(np.zeros((5, 7), np.float32))).numpy()
    mr.manual_seed(3)
    np.testing.assert_array_equal(w, mr.init_generator().normal(0.0, 1.0, (5, 7)).astype(np.float32))


def test_state_round_trips_through_a_checkpoint_and_continues(tmp_path):
    mr.manual_seed(21)
    draws()                                        # somewhere in the middle of every stream
    save_checkpoint(tmp_path / "rng.npz", {"rng": mr.get_state()})
    want = draws()
    mr.manual_seed(99)                             # elsewhere entirely
    draws()
    mr.set_state(load_checkpoint(tmp_path / "rng.npz")["rng"])
    assert draws() == want


def test_state_keys_are_those_old_checkpoints_hold():
    # the trainer wrote these keys before minicct.random existed; set_state reads each of them
    assert set(mr.get_state()) == {"init", "dropout", "numpy_global", "python"}
    mr.manual_seed(1)
    old = {"dropout": mr.get_state()["dropout"]}
    want = mr.dropout_generator().random(3)
    mr.manual_seed(2)
    mr.set_state(old)
    np.testing.assert_array_equal(mr.dropout_generator().random(3), want)


def test_a_checkpoint_from_before_philox_still_loads_and_resumes_the_same_way():
    # such a checkpoint holds a PCG64 state under 'dropout': the stream is keyed from it
    pcg = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(1,))).bit_generator.state
    masks = []
    for seed in (5, 6):
        mr.manual_seed(seed)
        mr.set_state({"dropout": pcg})
        masks.append(dropout_forward(np.ones((30, 30), np.float32), 0.5)[0])
    np.testing.assert_array_equal(masks[0], masks[1])
    other = dict(pcg, state=dict(pcg["state"], state=pcg["state"]["state"] + 1))
    mr.set_state({"dropout": other})
    assert not np.array_equal(dropout_forward(np.ones((30, 30), np.float32), 0.5)[0], masks[0])
    assert mr.get_state()["dropout"]["bit_generator"] == "Philox4x32-10"


def test_dropout_generators_are_distinct_reproducible_and_new_each_step():
    def step():
        return [g.random(6) for g in mr.dropout_generators(4)]
    mr.manual_seed(8)
    first, second = step(), step()
    mr.manual_seed(8)
    again = step()
    for a, b in zip(first, again):                 # same seed: the same pieces
        np.testing.assert_array_equal(a, b)
    rows = [tuple(r) for r in first + second]
    assert len(set(rows)) == len(rows)             # every piece, every step: its own numbers


def test_thread_dropout_gives_each_thread_its_stream():
    def masks(gens):
        """Each generator's masks, drawn by kernels in a thread of their own, without generator=."""
        out = [None] * len(gens)

        def work(i):
            with mr.thread_dropout(gens[i]):
                out[i] = dropout_forward(np.ones((8, 8), np.float32), 0.5)[0]
        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(gens))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out
    mr.manual_seed(4)
    a = masks(mr.dropout_generators(3))
    mr.manual_seed(4)
    b = masks(mr.dropout_generators(3))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    mr.manual_seed(4)
    serial = [dropout_forward(np.ones((8, 8), np.float32), 0.5, True, g)[0] for g in mr.dropout_generators(3)]
    for x, y in zip(a, serial):
        np.testing.assert_array_equal(x, y)


def test_the_dropout_stream_is_philox_keyed_by_the_seed_and_advances_by_the_blocks_drawn():
    mr.manual_seed(9)
    key = tuple(int(k) for k in np.random.SeedSequence(9, spawn_key=(1,)).generate_state(2, np.uint32))
    g = mr.dropout_generator()
    assert (g.key, g.stream, g.counter) == (key, 0, 0)
    a = dropout_forward(np.ones((5, 7), np.float32), 0.3)[0] != 0        # 35 numbers: 9 blocks
    assert g.counter == 9
    b = dropout_forward(np.ones((5, 7), np.float64), 0.3)[0] != 0        # 70 words: 18 blocks
    assert g.counter == 27
    u32 = philox.uniform(np, key, 0, 0, (5, 7), np.float32)             # by hand, block 0 on
    u64 = philox.uniform(np, key, 0, 9, (5, 7), np.float64)             # ...then block 9 on
    np.testing.assert_array_equal(a, u32 >= 0.3)
    np.testing.assert_array_equal(b, u64 >= 0.3)
    assert not np.array_equal(a, b)


def test_masks_reproducible_from_the_state():
    mr.manual_seed(2)
    dropout_forward(np.ones(13, np.float32), 0.5)                       # somewhere in the stream
    state = mr.get_state()
    want = [dropout_forward(np.ones((6, 6), np.float32), 0.5)[0], drop_path_forward(np.ones((8, 3)), 0.5)[0]]
    mr.manual_seed(3)
    mr.set_state(state)
    got = [dropout_forward(np.ones((6, 6), np.float32), 0.5)[0], drop_path_forward(np.ones((8, 3)), 0.5)[0]]
    for x, y in zip(want, got):
        np.testing.assert_array_equal(x, y)


def test_piece_streams_are_distinct_ids_of_one_key_independent_and_picklable():
    mr.manual_seed(8)
    root = mr.dropout_generator()
    first, second = mr.dropout_generators(3), mr.dropout_generators(2)
    ids = [g.stream for g in first + second]
    assert ids == [1, 2, 3, 4, 5] and all(g.key == root.key and g.counter == 0 for g in first + second)
    assert root.counter == 0                                              # handing out ids draws nothing
    # independent: a piece's numbers do not depend on what the others (or the run's stream) drew
    mr.manual_seed(8)
    a = mr.dropout_generators(3)
    a[0].random(100)
    mr.dropout_generator().random(100)
    np.testing.assert_array_equal(a[1].random(6), mr.Philox(root.key, 2).random(6))
    # picklable, and the copy continues exactly where the stream was
    g = first[2]
    g.random(5)
    h = pickle.loads(pickle.dumps(g))
    np.testing.assert_array_equal(h.random(7), g.random(7))
    with pytest.raises(RuntimeError, match="only the run's stream"):
        g.spawn(2)


# ---- dropout masks in the parallel step ------------------------------------------------------------
class MaskSpy(minicct.nn.Module):
    """y = dropout(x * w): records, for every piece of a step, its sample ids and its dropout mask.
    Sample i of the batch is the row filled with i + 1, so a piece's ids are its first column."""
    def __init__(self, d):
        super().__init__()
        self.w = minicct.nn.Parameter(np.ones(d, np.float32))
        self.seen = []

    def forward(self, x):
        y = minicct.functional.dropout(x * self.w, 0.5, True)
        self.seen.append((tuple(x.numpy()[:, 0].astype(int)), y.numpy() != 0))   # list.append: thread-safe
        return y


def parallel_masks(seed, steps=2, n=8, d=64, threads=2, micro_batch=2):
    """[{piece's sample ids: its mask} per step] of ``steps`` parallel steps after manual_seed(seed)."""
    from minicct import parallel
    mr.manual_seed(seed)
    model = MaskSpy(d)
    x = np.repeat(np.arange(1, n + 1, dtype=np.float32)[:, None], d, axis=1)
    out = []
    for _ in range(steps):
        model.seen = []
        parallel.forward_backward(model, lambda y, t: (y * y).mean(), x, np.zeros(n),
                                  threads=threads, micro_batch=micro_batch, mode="threads")   # seen here
        out.append(dict(model.seen))
    return out


def test_parallel_step_masks_differ_by_step_and_piece_but_repeat_by_seed():
    for threads in (1, 2):
        first = parallel_masks(3, threads=threads)
        again = parallel_masks(3, threads=threads)
        pieces = list(first[0])
        assert len(pieces) == 4 and all(set(s) == set(pieces) for s in first + again)
        for a, b in zip(first, again):            # two runs from one seed: the same masks
            for p in pieces:
                np.testing.assert_array_equal(a[p], b[p])
        for p in pieces:                          # the next step draws new masks for every piece
            assert not np.array_equal(first[0][p], first[1][p]), (threads, p)
        masks = [first[0][p] for p in pieces]     # and the pieces of one step differ from each other
        assert all(not np.array_equal(masks[0], m) for m in masks[1:]), threads
        assert not np.array_equal(parallel_masks(4, threads=threads)[0][pieces[0]], first[0][pieces[0]])
