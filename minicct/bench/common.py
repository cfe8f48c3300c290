"""Timing helpers shared by the benchmarks.

The machine may be shared: every number is a median over ``repeat`` runs after ``warmup`` runs,
and ratios should be taken within one run (e.g. kernel GFLOP/s over the sgemm measured just before).
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from minicct import backend


def sync(xp):
    """Wait for the GPU to finish queued work (no-op for NumPy), so timings cover the work."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def time_ms(fn, xp=np, warmup=2, repeat=7):
    """Median wall time of fn() in milliseconds, after warm-up calls."""
    for _ in range(warmup):
        fn()
    sync(xp)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(xp)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def time_interleaved_ms(fns, xp=np, warmup=2, repeat=7):
    """Median ms of each fn in a dict, timed round-robin (one call of each per round).

    On a shared machine the load drifts; interleaving makes the ratios between the fns (kernel vs
    sgemm vs torch) fair even when the absolute numbers move.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(xp)
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(xp)
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def sgemm(xp, n=2048):
    """(fn, flops): one large float32 matrix product (n x n x n), the ceiling for GEMM-bound kernels."""
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    b = xp.asarray(rng.standard_normal((n, n), dtype=np.float32))
    out = xp.empty((n, n), dtype=np.float32)
    return (lambda: xp.matmul(a, b, out=out)), 2.0 * n ** 3


def sgemm_gflops(xp, n=2048, warmup=2, repeat=7):
    """GFLOP/s of one large float32 matrix product (n x n x n)."""
    fn, flops = sgemm(xp, n)
    return flops / (time_ms(fn, xp, warmup, repeat) * 1e-3) / 1e9


def device_xp(device):
    return backend.xp_for(device)


def try_torch(device):
    """(torch, torch device string) when torch is importable for this device, else (None, None)."""
    try:
        import torch
    except ImportError:
        return None, None
    if device == "gpu":
        return (torch, "cuda") if torch.cuda.is_available() else (None, None)
    return torch, "cpu"


def torch_sync(torch, tdev):
    if tdev == "cuda":
        torch.cuda.synchronize()


def table_line(cells, widths):
    """One line of a plain-text table: the first column left-aligned, the others right-aligned."""
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def format_table(headers, rows):
    """Rows of strings -> an aligned plain-text table (first column left, others right)."""
    cols = list(zip(*([headers] + rows)))
    widths = [max(len(c) for c in col) for col in cols]
    return "\n".join([table_line(headers, widths), table_line(["-" * w for w in widths], widths)]
                     + [table_line(r, widths) for r in rows])
