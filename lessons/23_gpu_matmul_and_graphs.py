"""Lesson 23 — a matrix multiply for a GPU, and why one graph launch beats hundreds of launches.

What you will learn
    * the tiled matrix product a GPU kernel computes (minicct/kernels/cuda/gemm.py), built here in
      NumPy: C in 64 x 64 tiles, K in steps of 16, each step's slices of A and B loaded once into
      fast memory and used 64 times; edges padded with zeros, so any size works;
    * split-K: a product with few tiles and a long K (a weight gradient) cut along K, so that it
      still keeps every multiprocessor busy;
    * why a training step that is mostly tiny kernels is limited by launching them, not by
      arithmetic, and how a CUDA graph replays a whole captured sequence with one launch;
    * on a GPU: minicct's GEMM against cuBLAS, and 300 small kernels launched one by one against
      one replay of a graph holding them, both measured on your GPU.

What it builds on
    Lessons 05 (linear layers: three GEMMs), 06 (conv as one GEMM), 18 (CuPy).

Without a GPU the NumPy parts run and the lesson says in one line what it would measure.

Run it:  python lessons/23_gpu_matmul_and_graphs.py
"""
import time

import numpy as np

import minicct
from minicct import backend

rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. The tiled product, in NumPy")
# A GPU thread block computes one BM x BN tile of C. Global memory is slow and far; shared memory is
# fast and next to the multiprocessor. So the block walks K in steps of BK: it copies a BM x BK slice
# of A and a BK x BN slice of B into shared memory once, and every value there is used BN (or BM)
# times before the next step. Tiles that stick out over an edge read zeros and write nothing.
BM, BN, BK = 64, 64, 16


def tiled_matmul(A, B):
    M, K = A.shape
    N = B.shape[1]
    C = np.zeros((M, N), dtype=np.result_type(A, B))
    for m0 in range(0, M, BM):                     # on a GPU: one thread block per (m0, n0), in parallel
        for n0 in range(0, N, BN):
            acc = np.zeros((BM, BN), dtype=C.dtype)                  # the block's registers
            for k0 in range(0, K, BK):
                As = np.zeros((BM, BK), dtype=C.dtype)               # shared memory, zero-padded
                Bs = np.zeros((BK, BN), dtype=C.dtype)
                a = A[m0:m0 + BM, k0:k0 + BK]
                b = B[k0:k0 + BK, n0:n0 + BN]
                As[:a.shape[0], :a.shape[1]] = a
                Bs[:b.shape[0], :b.shape[1]] = b
                acc += As @ Bs                                       # 64 * 64 * 16 multiply-adds
            C[m0:m0 + BM, n0:n0 + BN] = acc[:min(BM, M - m0), :min(BN, N - n0)]   # edge: write less
    return C


A, B = rng.standard_normal((130, 45)), rng.standard_normal((45, 77))       # odd sizes on purpose
C = tiled_matmul(A, B)
assert np.allclose(C, A @ B, rtol=1e-12, atol=1e-12)
M, K, N = 8192, 128, 384                          # CCT-2's qkv projection at batch 128: (N*L, d) @ (d, 3d)
naive_reads = 2 * M * N * K                       # every multiply-add reads one a and one b
tiled_reads = M * K * (N // BN) + K * N * (M // BM)   # each tile reads its slices of A and B once
print(f"   tiled == A @ B on 130x45 @ 45x77 (edges padded); for {M}x{K} @ {K}x{N}: "
      f"{naive_reads / 1e9:.2f} G reads naively, {tiled_reads / 1e6:.0f} M tiled ({naive_reads / tiled_reads:.0f}x fewer)")
assert naive_reads / tiled_reads == 2 / (1 / BN + 1 / BM) == 64

# --------------------------------------------------------------------------------------------------
print("\n2. Split-K: when there are too few tiles")
# A weight gradient gw = gyᵀ @ x is (OUT, IN) = 128 x 128: only 4 tiles, each walking K = 8,192 tokens
# alone, on 4 of a GPU's ~130 multiprocessors. Cutting K into pieces makes more, smaller blocks, whose
# partial products are summed at the end.
from minicct.kernels.cuda import gemm  # noqa: E402  (imports without CuPy: nothing runs until called)

gy, x = rng.standard_normal((8192, 128)), rng.standard_normal((8192, 128))
pieces = gemm.split_k(128, 128, 8192, 1)
chunk = -(-8192 // pieces)
parts = [gy[k:k + chunk].T @ x[k:k + chunk] for k in range(0, 8192, chunk)]
assert np.allclose(sum(parts), gy.T @ x, rtol=1e-10, atol=1e-9)
print(f"   gw (128 x 128, K = 8192): 4 tiles -> cut into {pieces} pieces of K ~ {chunk}: "
      f"{4 * pieces} blocks, partial products summed: same gw")

# --------------------------------------------------------------------------------------------------
print("\n3. Launches, not arithmetic")
# A CCT-2 training step at batch 128 is ~27 GFLOP: on a GPU doing ~50 TFLOP/s in float32 that is about
# half a millisecond. But it is hundreds of kernels (every add, every norm, every product, forward and
# backward), and each costs ~10 µs of Python and driver work to launch, whatever its size.
flops, rate, kernels, per_launch = 27e9, 50e12, 800, 10e-6        # round numbers, for the idea
print(f"   say: arithmetic {flops / rate * 1e3:.2f} ms vs launching ~{kernels} kernels {kernels * per_launch * 1e3:.0f} ms: "
      f"the step waits on the launches")
# A CUDA graph: CUDA records what a stream would run (stream capture) instead of running it; the
# recorded graph is then launched as one unit, as often as we like, with no Python in between. What it
# reads must stay where it was (static buffers), and what changes per step (the learning rate, the
# dropout masks' Philox counter) must be read from device memory, and moved on by the graph itself:
# minicct/training/graph_step.py and minicct.random.GraphStreams.

# --------------------------------------------------------------------------------------------------
print("\n4. On your GPU")
if not minicct.gpu_available():
    print("   No GPU here: on one, this part times minicct's tiled GEMM against cuBLAS (8192x128 @ 128x384) "
          "and 300 small kernels launched one by one against one CUDA-graph replay of them.")
    print("\nAll claims of lesson 23 hold (its GPU parts were skipped: there is no GPU here).")
    raise SystemExit(0)
cp = backend.xp_for("gpu")


def gpu_time(fn, repeat=20):
    fn()                                        # compile, warm the memory pool
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    cp.cuda.Device().synchronize()
    return (time.perf_counter() - t0) / repeat


a = cp.asarray(rng.standard_normal((M, K)), dtype=np.float32)
b = cp.asarray(rng.standard_normal((K, N)), dtype=np.float32)
assert np.allclose(backend.to_numpy(gemm.matmul(a, b)), backend.to_numpy(a @ b), rtol=1e-4, atol=1e-4)
t_ours, t_cublas = gpu_time(lambda: gemm.matmul(a, b)), gpu_time(lambda: a @ b)
print(f"   {M}x{K} @ {K}x{N} float32: minicct's GEMM {t_ours * 1e6:.0f} µs, cuBLAS {t_cublas * 1e6:.0f} µs "
      f"({2 * M * N * K / t_ours / 1e12:.1f} vs {2 * M * N * K / t_cublas / 1e12:.1f} TFLOP/s)")

v = cp.zeros(4096, dtype=np.float32)


def many_small_kernels():
    for _ in range(300):
        cp.add(v, 1.0, out=v)                   # one tiny kernel each


stream = cp.cuda.Stream(non_blocking=True)      # the legacy stream cannot capture
with stream:
    many_small_kernels()                        # warm-up: compile the kernel
    stream.synchronize()
    stream.begin_capture()
    many_small_kernels()                        # recorded, not run
    graph = stream.end_capture()
    v.fill(0)
    graph.launch(stream)
    stream.synchronize()
    assert float(v[0].get()) == 300.0           # the replay did all 300 adds
    t_eager = gpu_time(many_small_kernels, repeat=10)
    t_graph = gpu_time(lambda: graph.launch(stream), repeat=10)
print(f"   300 tiny kernels: launched one by one {t_eager * 1e3:.2f} ms, one graph replay {t_graph * 1e3:.3f} ms "
      f"({t_eager / t_graph:.0f}x)")
assert t_graph < t_eager

print("\nAll claims of lesson 23 hold.")
