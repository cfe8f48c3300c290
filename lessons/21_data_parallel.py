"""Lesson 21 — data parallelism over the CPU's cores.

What you will learn
    * why the gradient of a batch is the weighted sum of the gradients of its slices, and why
      that makes one training step splittable over cores (as DistributedDataParallel splits it
      over GPUs);
    * that floating-point addition is not associative, so the slices' gradients must be added
      in a fixed order for a run to give the same bits every time;
    * what breaks the split (anything that couples the samples of a batch, such as batch norm);
    * how each slice gets dropout masks of its own and stays reproducible whatever order the
      threads run in;
    * that ``minicct.parallel.forward_backward`` is exactly this, and gives the whole batch's
      loss and gradients;
    * why the workers are processes on Linux (each has its own Python interpreter), and that a
      training loop of your own gets every core from that one call.

What it builds on
    Lesson 05 (softmax regression and its gradient), lesson 11 (dropout), lesson 17 (the
    training loop, which runs its forward and backward through minicct.parallel on the CPU).

Run it:  python lessons/21_data_parallel.py      (a few seconds)
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import minicct
import minicct.functional as F
from minicct import models, parallel

rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. The batch's gradient is the weighted sum of its slices' gradients")
# Softmax regression (lesson 05): logits = X W, loss = mean over the batch of -log softmax[y].
# Its gradient is gW = X^T (P - Y) / N, a sum over samples divided by N. Cut the batch into
# slices of n_1, n_2, ... samples; slice i alone has gW_i = X_i^T (P_i - Y_i) / n_i, so
#     gW = sum_i (n_i / N) gW_i        and the loss likewise: L = sum_i (n_i / N) L_i.
# Nothing else is needed: each slice's forward and backward is independent of the others.
N, D, K = 10, 5, 3
X, y, W = rng.standard_normal((N, D)), rng.integers(0, K, N), rng.standard_normal((D, K))


def loss_and_grad(X, y, W):
    """Softmax regression on one (slice of a) batch: (mean loss, dL/dW)."""
    z = X @ W
    z = z - z.max(axis=1, keepdims=True)
    P = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    Y = np.eye(K, dtype=X.dtype)[y]                    # in X's precision: float32 stays float32
    return -np.log(P[np.arange(len(y)), y]).mean(), X.T @ (P - Y) / len(y)


def split(n, parts):
    """n samples in `parts` contiguous slices whose sizes differ by at most one."""
    bounds = [n * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


L_whole, g_whole = loss_and_grad(X, y, W)
slices = split(N, 3)                                   # [(0, 3), (3, 6), (6, 10)]: uneven on purpose
L_sum, g_sum = 0.0, np.zeros_like(W)
for lo, hi in slices:
    L_i, g_i = loss_and_grad(X[lo:hi], y[lo:hi], W)
    L_sum += (hi - lo) / N * L_i
    g_sum += (hi - lo) / N * g_i
print(f"   slices {slices}: loss {L_sum:.12f} vs {L_whole:.12f} for the whole batch")
assert np.isclose(L_sum, L_whole, rtol=1e-13) and np.allclose(g_sum, g_whole, rtol=1e-12, atol=1e-15)
# Weighting matters: the plain mean of the slices' gradients weighs the 3-sample slices more.
g_unweighted = sum(loss_and_grad(X[lo:hi], y[lo:hi], W)[1] for lo, hi in slices) / len(slices)
assert not np.allclose(g_unweighted, g_whole)
print("   the plain mean of the slices' gradients (no n_i / N weights) is not the batch's gradient")

# --------------------------------------------------------------------------------------------------
print("\n2. The order of the sum matters, to the last bit")
# (a + b) + c and a + (b + c) are the same number in exact arithmetic, not in floating point:
a, b, c = np.float32(1e8), np.float32(1.0), np.float32(-1e8)
print(f"   float32: (1e8 + 1) - 1e8 = {(a + b) + c}, but (1e8 - 1e8) + 1 = {(a + c) + b}")
assert (a + b) + c != (a + c) + b
# Threads finish in whatever order the operating system runs them. Adding each slice's gradient
# as soon as its thread finishes would make the bits of every step depend on that timing, and
# a run would not repeat. So each thread *returns* its gradient and the caller adds them in the
# slices' order. (ThreadPoolExecutor.map returns results in the order of its inputs.)
# NumPy lets go of Python's lock (the GIL) inside large array operations, so threads really do
# compute at the same time.
X2, y2 = rng.standard_normal((4000, D)).astype(np.float32), rng.integers(0, K, 4000)
W2 = W.astype(np.float32)


def weighted_slice_grad(bounds):
    lo, hi = bounds
    return (hi - lo) / len(X2) * loss_and_grad(X2[lo:hi], y2[lo:hi], W2)[1]


def step_in_threads(threads):
    with ThreadPoolExecutor(threads) as pool:
        return add_in_order(list(pool.map(weighted_slice_grad, split(len(X2), threads))))


def add_in_order(grads):
    total = grads[0].copy()
    for g in grads[1:]:                                 # in the slices' order, whatever finished first
        total += g
    return total


runs = [step_in_threads(4) for _ in range(5)]
assert all(np.array_equal(runs[0], r) for r in runs[1:])
print("   4 threads, 5 runs, gradients added in the slices' order: identical bits every run")
whole = loss_and_grad(X2, y2, W2)[1]
print(f"   against the whole batch in one piece: largest difference {np.abs(runs[0] - whole).max():.1e} "
      f"(float32 rounding: another order of the same sum)")
assert runs[0].dtype == np.float32 and np.allclose(runs[0], whole, rtol=1e-4, atol=1e-6)

# --------------------------------------------------------------------------------------------------
print("\n3. What breaks the split: samples that see each other")
# The CCT models have no such coupling: layer norm normalises each token on its own, attention
# mixes the tokens of one image, SeqPool pools one image. Batch norm, which normalises each
# feature over the *batch*, would give each slice its own statistics, and another result:
bn_whole = (X - X.mean(axis=0)) / X.std(axis=0)
bn_slices = np.concatenate([(X[lo:hi] - X[lo:hi].mean(axis=0)) / X[lo:hi].std(axis=0) for lo, hi in slices])
layer_norm = lambda x: (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
assert not np.allclose(bn_whole, bn_slices)
assert np.array_equal(layer_norm(X), np.concatenate([layer_norm(X[lo:hi]) for lo, hi in slices]))
print("   layer norm per slice = layer norm of the batch; batch norm per slice is something else")

# --------------------------------------------------------------------------------------------------
print("\n4. Dropout masks, one stream per slice")
# Slices drawing their dropout masks from one shared generator would take its numbers in the
# order the threads happen to ask: another mask every run. Instead each slice gets a stream of its
# own before the threads start. minicct's dropout stream is counter-based (Philox4x32-10): block j
# of a stream is a fixed function of (j, stream id, key), four random 32-bit words, so a stream is
# just (key, id, next block). The caller hands the slices the run's key with stream ids not used
# before (1, 2, 3, ... counted in the run's state), so they never share a block, and every step
# and every slice gets masks of its own, whatever order the threads run in:
from minicct.kernels import philox
minicct.manual_seed(0)
key = minicct.random.dropout_generator().key
by_hand = [philox.uniform(np, key, i, 0, (5,), np.float64) for i in (1, 2, 3)]   # stream i, block 0 on
minicct.manual_seed(0)
theirs = [g.random(5) for g in minicct.random.dropout_generators(3)]
assert all(np.array_equal(a, b) for a, b in zip(by_hand, theirs))
assert not np.array_equal(by_hand[0], by_hand[1])
print("   3 slices, 3 Philox streams (the run's key, ids 1..3): the same as minicct.random.dropout_generators(3)")

# --------------------------------------------------------------------------------------------------
print("\n5. minicct.parallel: the same for a CCT")
# forward_backward(model, loss_fn, x, y, threads, micro_batch) runs `threads` slices at once;
# each thread walks its slice in micro-batches (gradient accumulation: section 1 again, inside a
# thread) so that one micro-batch's activations stay in the CPU's cache. Each piece backpropagates
# with the weight n_piece / N, the threads return their sums, and the caller adds them in order.
minicct.manual_seed(0)
model = models.create_model("cct_2_3x2_32", embedding_dim=32, num_layers=2, num_heads=2, mlp_ratio=1,
                            in_planes=16, attention_dropout=0.0, stochastic_depth=0.0)
xb = rng.standard_normal((12, 3, 32, 32)).astype(np.float32)
yb = rng.integers(0, 10, 12)


def grads_of(threads, micro_batch):
    model.zero_grad()
    loss = parallel.forward_backward(model, F.cross_entropy, xb, yb, threads=threads, micro_batch=micro_batch)
    return loss, {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


loss1, g1 = grads_of(threads=1, micro_batch=None)      # loss = F.cross_entropy(model(x), y); loss.backward()
loss3, g3 = grads_of(threads=3, micro_batch=2)         # 3 threads x 2 pieces of 2 samples each
# Our own plain version of section 1 on the same model: the same three slices, each with its own
# autograd graph, weighted and added in order.
named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
ours, ours_loss = {}, 0.0
for lo, hi in split(len(xb), 3):
    loss = F.cross_entropy(model(minicct.Tensor(xb[lo:hi])), minicct.Tensor(yb[lo:hi]))
    ours_loss += (hi - lo) / len(xb) * float(loss.item())
    for (n, _), g in zip(named, minicct.autograd.grad(loss, [p for _, p in named])):
        if g is not None:                              # (a parameter this loss does not reach)
            ours[n] = ours.get(n, 0) + (hi - lo) / len(xb) * g.numpy()
scale = max(np.abs(g).max() for g in g1.values())
for name in g1:
    for other in (g3, ours):
        assert np.abs(other[name] - g1[name]).max() <= 1e-5 * scale, name
assert np.isclose(loss3, loss1, rtol=1e-6) and np.isclose(ours_loss, loss1, rtol=1e-6)
print(f"   loss: one piece {loss1:.6f}, 3 threads x 2 micro-batches {loss3:.6f}, our slices {ours_loss:.6f}; "
      f"gradients equal to float32 rounding")

# With dropout and drop-path on, two runs from one seed still agree bit for bit:
runs = []
for _ in range(2):
    minicct.manual_seed(1)
    model = models.create_model("cct_2_3x2_32", embedding_dim=32, num_layers=2, num_heads=2, mlp_ratio=1,
                                in_planes=16, attention_dropout=0.2, stochastic_depth=0.2)
    runs.append(grads_of(threads=3, micro_batch=2))
(la, ga), (lb, gb) = runs
assert la == lb and all(np.array_equal(ga[n], gb[n]) for n in ga)
print("   with dropout and drop-path: two seeded runs in 3 threads give identical losses and gradients")

# --------------------------------------------------------------------------------------------------
print("\n6. Threads or processes, and your own training loop")
# Threads share one Python interpreter, and only one thread runs Python at a time: the few
# milliseconds of Python per micro-batch (autograd bookkeeping, the layers' code) do not overlap.
# So on Linux the workers are processes, forked once: each is a copy of this process (it already
# has the model), with the parameters, the gradients and the batch in memory they all share. The
# recipe is the one above -- weighted pieces, sums added in a fixed order, a generator per piece --
# so both kinds of worker give the same bits:
outs = {}
for mode in ("threads", "processes"):
    minicct.manual_seed(1)
    model = models.create_model("cct_2_3x2_32", embedding_dim=32, num_layers=2, num_heads=2, mlp_ratio=1,
                                in_planes=16, attention_dropout=0.2, stochastic_depth=0.2)
    loss = parallel.forward_backward(model, F.cross_entropy, xb, yb, threads=2, micro_batch=3, mode=mode)
    outs[mode] = loss, {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
(lt, gt), (lp, gp) = outs["threads"], outs["processes"]
assert lt == lp and all(np.array_equal(gt[n], gp[n]) for n in gt)
print(f"   2 threads and 2 processes, with dropout: loss {lt:.6f} both, gradients identical to the bit")

# A loop of your own: replace the two lines `loss = F.cross_entropy(model(x), y); loss.backward()`
# by the one call; everything else stays (MINICCT_PARALLEL=threads|processes picks the workers).
opt = minicct.optim.AdamW(model.parameters(), lr=1e-3)
for step in range(3):
    model.zero_grad()
    loss = parallel.forward_backward(model, F.cross_entropy, xb, yb)   # every core, the same gradients
    opt.step()
    print(f"   your loop, step {step}: loss {loss:.4f}")

print("\nAll claims of lesson 21 hold.")
