"""python -m minicct.bench kernels: every kernel at the CCT-2 shapes (batch 128, float32).

CCT-2/3x2 on 32x32 images: conv 3->64 3x3 s1 p1 on 32x32, max-pool 3/2/1, conv 64->128 on 16x16,
max-pool, then 64 tokens x 128 wide, 2 heads, MLP ratio 1, 10 classes. For each kernel: median
forward and backward ms, GFLOP/s for the GEMM-bound ones beside the sgemm measured in the same run,
"x copy" (forward time over a copy of the output into a new array: ~memory passes) for elementwise ones, and,
when torch is importable, torch's times for the same op and the ratio minicct / torch.
Inputs have the memory layout they have inside the model (conv outputs are channels-last).
The layer-norm, attention, activation and cross-entropy rows time the version ``kernels.dispatch``
picks (device and MINICCT_KERNELS mode), as the model runs them.
Each kernel runs on the whole batch in one call with all of BLAS's threads, not as a training step
runs it (micro-batches of 16 per core, one BLAS thread each): conv2's Winograd path (its 16 smaller
GEMMs and single-threaded transforms) only about matches im2col here, and pays off in the step.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np

from minicct import backend, kernels as K
from minicct.cli import non_negative, positive
from minicct.kernels import dispatch
from minicct.bench.common import (device_xp, format_table, sgemm, sgemm_gflops,
                                  time_interleaved_ms, try_torch, torch_sync)


def add_arguments(p):
    p.add_argument("--batch", type=positive(int, "--batch 128"), default=128, help="batch size (default 128)")
    p.add_argument("--repeat", type=positive(int, "--repeat 7"), default=7, help="timed runs per measurement (median)")
    p.add_argument("--warmup", type=non_negative(int, "--warmup 2"), default=2, help="untimed runs first")
    p.add_argument("--no-torch", action="store_true", help="skip the torch comparison")
    p.add_argument("--only", default="", help="comma-separated kernel names to run")
    p.add_argument("--json", default="", help="also write the results to this JSON file")


def _channels_last(xp, a):
    """The same values with channels fastest in memory (how our conv hands data on)."""
    return xp.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _cases(B):
    """name -> (description, builder). A builder gets (xp, rng) and returns a dict with
    ours_fwd / ours_bwd closures, the output (for x copy), flops (fwd, bwd) or None, and a
    torch builder (torch, device) -> (fwd, bwd) closures."""
    f32 = np.float32

    def conv(C, O, H, x_channels_last):
        def build(xp, rng):
            x = xp.asarray(rng.standard_normal((B, C, H, H), dtype=f32))
            if x_channels_last:
                x = _channels_last(xp, x)
            w = xp.asarray(rng.standard_normal((O, C, 3, 3), dtype=f32) * 0.1)
            impl = dispatch.conv2d(x, w, 1, 1)          # what training runs (MINICCT_KERNELS)
            y, cache = impl.forward(x, w, None, 1, 1)
            gy = _channels_last(xp, xp.asarray(rng.standard_normal(y.shape, dtype=f32)))
            flops = 2.0 * B * H * H * O * C * 9

            def torch_build(torch, dev):
                xt = torch.tensor(np.asarray(_np(x)), device=dev, requires_grad=True)
                wt = torch.tensor(_np(w), device=dev, requires_grad=True)
                fwd = lambda: torch.nn.functional.conv2d(xt, wt, None, 1, 1)
                yt, gyt = fwd(), torch.tensor(_np(gy), device=dev)
                return fwd, lambda: torch.autograd.grad(yt, (xt, wt), gyt, retain_graph=True)
            return dict(fwd=lambda: impl.forward(x, w, None, 1, 1),
                        bwd=lambda: impl.backward(gy, cache), out=y,
                        flops=(flops, 2 * flops), torch=torch_build)
        return build

    def pool(C, H):
        def build(xp, rng):
            x = _channels_last(xp, xp.asarray(rng.standard_normal((B, C, H, H), dtype=f32)))
            impl = dispatch.max_pool2d(x)
            y, cache = impl.forward(x, 3, 2, 1)
            gy = xp.asarray(rng.standard_normal(y.shape, dtype=f32))

            def torch_build(torch, dev):
                xt = torch.tensor(_np(x), device=dev, requires_grad=True)
                fwd = lambda: torch.nn.functional.max_pool2d(xt, 3, 2, 1)
                yt, gyt = fwd(), torch.tensor(_np(gy), device=dev)
                return fwd, lambda: torch.autograd.grad(yt, (xt,), gyt, retain_graph=True)
            return dict(fwd=lambda: impl.forward(x, 3, 2, 1),
                        bwd=lambda: impl.backward(gy, cache), out=y, torch=torch_build)
        return build

    def unary(shape, select, torch_fn, channels_last=False):
        def build(xp, rng):
            x = xp.asarray(rng.standard_normal(shape, dtype=f32))
            if channels_last:
                x = _channels_last(xp, x)
            impl = select(x)             # what the model runs: dispatch's pick for this device and mode
            ours_fwd, ours_bwd = impl.forward, impl.backward
            y, cache = ours_fwd(x)
            gy = xp.empty_like(y)       # the upstream gradient has the output's memory order
            gy[...] = xp.asarray(rng.standard_normal(y.shape, dtype=f32))

            def torch_build(torch, dev):
                xt = torch.tensor(_np(x), device=dev, requires_grad=True)
                fwd = lambda: torch_fn(torch, xt)
                yt, gyt = fwd(), torch.tensor(_np(gy), device=dev)
                return fwd, lambda: torch.autograd.grad(yt, (xt,), gyt, retain_graph=True)
            return dict(fwd=lambda: ours_fwd(x), bwd=lambda: ours_bwd(gy, cache), out=y,
                        elementwise=True, torch=torch_build)
        return build

    def layer_norm(xp, rng):
        x = xp.asarray(rng.standard_normal((B, 64, 128), dtype=f32))
        w, b = xp.ones(128, dtype=f32), xp.zeros(128, dtype=f32)
        ln = dispatch.layer_norm(x)
        y, cache = ln.forward(x, 128, w, b)
        gy = xp.asarray(rng.standard_normal(y.shape, dtype=f32))

        def torch_build(torch, dev):
            xt, wt, bt = (torch.tensor(_np(a), device=dev, requires_grad=True) for a in (x, w, b))
            fwd = lambda: torch.nn.functional.layer_norm(xt, (128,), wt, bt)
            yt, gyt = fwd(), torch.tensor(_np(gy), device=dev)
            return fwd, lambda: torch.autograd.grad(yt, (xt, wt, bt), gyt, retain_graph=True)
        return dict(fwd=lambda: ln.forward(x, 128, w, b), bwd=lambda: ln.backward(gy, cache),
                    out=y, elementwise=True, torch=torch_build)

    def linear(xp, rng):
        x = xp.asarray(rng.standard_normal((B, 64, 128), dtype=f32))
        w = xp.asarray(rng.standard_normal((384, 128), dtype=f32) * 0.1)
        y, cache = K.linear_forward(x, w)
        gy = xp.asarray(rng.standard_normal(y.shape, dtype=f32))
        flops = 2.0 * B * 64 * 128 * 384

        def torch_build(torch, dev):
            xt, wt = (torch.tensor(_np(a), device=dev, requires_grad=True) for a in (x, w))
            fwd = lambda: torch.nn.functional.linear(xt, wt)
            yt, gyt = fwd(), torch.tensor(_np(gy), device=dev)
            return fwd, lambda: torch.autograd.grad(yt, (xt, wt), gyt, retain_graph=True)
        return dict(fwd=lambda: K.linear_forward(x, w), bwd=lambda: K.linear_backward(gy, cache), out=y,
                    flops=(flops, 2 * flops), torch=torch_build)

    def attention(xp, rng):
        q, k, v = (xp.asarray(rng.standard_normal((B, 2, 64, 64), dtype=f32)) for _ in range(3))
        sdpa = dispatch.sdpa(q)
        y, cache = sdpa.forward(q, k, v)
        gy = xp.asarray(rng.standard_normal(y.shape, dtype=f32))
        flops = 4.0 * B * 2 * 64 * 64 * 64

        def torch_build(torch, dev):
            qt, kt, vt = (torch.tensor(_np(a), device=dev, requires_grad=True) for a in (q, k, v))
            fwd = lambda: torch.softmax(qt @ kt.transpose(-2, -1) * 64 ** -0.5, -1) @ vt
            yt, gyt = fwd(), torch.tensor(_np(gy), device=dev)
            return fwd, lambda: torch.autograd.grad(yt, (qt, kt, vt), gyt, retain_graph=True)
        return dict(fwd=lambda: sdpa.forward(q, k, v), bwd=lambda: sdpa.backward(gy, cache), out=y,
                    flops=(flops, 2 * flops), torch=torch_build)

    def cross_entropy(xp, rng):
        z = xp.asarray(rng.standard_normal((B, 10), dtype=f32))
        t = xp.asarray(rng.integers(0, 10, B))
        xent = dispatch.cross_entropy(z)
        loss, cache = xent.forward(z, t, 0.1)
        gy = xp.asarray(np.float32(1.0))

        def torch_build(torch, dev):
            zt = torch.tensor(_np(z), device=dev, requires_grad=True)
            tt = torch.tensor(_np(t), device=dev)
            fwd = lambda: torch.nn.functional.cross_entropy(zt, tt, label_smoothing=0.1)
            lt = fwd()
            return fwd, lambda: torch.autograd.grad(lt, (zt,), retain_graph=True)
        return dict(fwd=lambda: xent.forward(z, t, 0.1), bwd=lambda: xent.backward(gy, cache),
                    out=None, torch=torch_build)

    return {
        "conv1": ("x (B,3,32,32) w (64,3,3,3) s1 p1", conv(3, 64, 32, False)),
        "relu1": ("(B,64,32,32) channels-last", unary((B, 64, 32, 32), dispatch.relu,
                                                      lambda torch, x: torch.relu(x), channels_last=True)),
        "pool1": ("(B,64,32,32) k3 s2 p1", pool(64, 32)),
        "conv2": ("x (B,64,16,16) w (128,64,3,3) s1 p1", conv(64, 128, 16, True)),
        "pool2": ("(B,128,16,16) k3 s2 p1", pool(128, 16)),
        "layer_norm": ("(B,64,128) over 128", layer_norm),
        "linear_qkv": ("(B,64,128) @ (384,128).T", linear),
        "attention": ("q,k,v (B,2,64,64)", attention),
        "softmax": ("(B,2,64,64) last axis", unary((B, 2, 64, 64), dispatch.softmax,
                                                   lambda torch, x: torch.softmax(x, -1))),
        "gelu": ("(B,64,128) exact (erf)", unary((B, 64, 128), dispatch.gelu,
                                                 lambda torch, x: torch.nn.functional.gelu(x))),
        "cross_entropy": ("(B,10) labels, smoothing 0.1", cross_entropy),
    }


def _np(a):
    from minicct.backend import to_numpy
    return np.ascontiguousarray(to_numpy(a))


def _torch_child(device, batch, only, warmup, repeat):
    """In a child process: torch's fwd / bwd ms for each row, printed as one JSON line.

    torch runs in its own process because its thread pools and NumPy's OpenBLAS threads in one
    process slow each other down badly on a small shared machine (seen: a 10 ms GEMM taking 2.5 s
    right after a torch op), which would time the interference, not the kernels.
    """
    if device == "cpu":
        backend.keep_freed_memory()   # as on our side (main): both frameworks with the same malloc settings
    torch, tdev = try_torch(device)
    if torch is None:
        print("null")
        return
    rng = np.random.default_rng(0)
    out = {"version": torch.__version__, "threads": torch.get_num_threads(), "device": tdev, "rows": {}}
    for name, (desc, build) in _cases(batch).items():
        if only and name not in only:
            continue
        tf, tb = build(np, rng)["torch"](torch, tdev)
        t = time_interleaved_ms({"fwd": lambda: (tf(), torch_sync(torch, tdev)),
                                 "bwd": lambda: (tb(), torch_sync(torch, tdev))}, np, warmup, repeat)
        out["rows"][name] = t
    print(json.dumps(out))


def _torch_times(args, only):
    """Run _torch_child in a fresh interpreter; None when torch is missing or it fails."""
    if args.no_torch or importlib.util.find_spec("torch") is None:   # look, but don't import here
        return None
    code = ("from minicct.bench.kernels import _torch_child; "
            f"_torch_child({args.device!r}, {args.batch}, {sorted(only)!r}, {args.warmup}, {args.repeat})")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        print(f"torch comparison failed:\n{p.stderr[-2000:]}")
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(args):
    xp = device_xp(args.device)
    if args.device == "cpu":
        backend.keep_freed_memory()   # as the trainer does (see backend.py); the torch child too
    rng = np.random.default_rng(0)
    only = {s for s in args.only.split(",") if s}
    tt = _torch_times(args, only)      # first, in a child process (see _torch_child)
    sg_fn, sg_flops = sgemm(xp)
    sg = sgemm_gflops(xp, warmup=args.warmup, repeat=args.repeat)
    print(f"device {args.device}, batch {args.batch}, float32; sgemm 2048^3: {sg:.0f} GFLOP/s"
          + (f"; torch {tt['version']} on {tt['device']} ({tt['threads']} threads, own process)" if tt
             else "; torch not compared"))

    rows, results = [], []
    for name, (desc, build) in _cases(args.batch).items():
        if only and name not in only:
            continue
        case = build(xp, rng)
        # Everything this row compares is timed round-robin, so load changes hit all alike.
        fns = {"fwd": case["fwd"], "bwd": case["bwd"]}
        if case.get("flops"):
            fns["sgemm"] = sg_fn
        if case.get("elementwise"):
            out = case["out"]
            # Reference pass: a copy into a new array, as every out-of-place op must make one
            # (on a CPU a fresh large array costs page faults, which a kernel pays too).
            fns["copy"] = lambda: xp.array(out, copy=True)    # keeps the memory order ('K')
        t = time_interleaved_ms(fns, xp, args.warmup, args.repeat)
        r = dict(kernel=name, shape=desc, fwd_ms=t["fwd"], bwd_ms=t["bwd"])
        if "sgemm" in t:
            f, b = case["flops"]
            r["gflops"] = (f + b) / ((t["fwd"] + t["bwd"]) * 1e-3) / 1e9
            r["sgemm_gflops"] = sg_flops / (t["sgemm"] * 1e-3) / 1e9
            r["of_sgemm"] = r["gflops"] / r["sgemm_gflops"]
        if "copy" in t:
            r["x_copy"] = t["fwd"] / t["copy"]
        if tt and name in tt["rows"]:
            r["torch_fwd_ms"], r["torch_bwd_ms"] = tt["rows"][name]["fwd"], tt["rows"][name]["bwd"]
            r["vs_torch"] = (t["fwd"] + t["bwd"]) / (r["torch_fwd_ms"] + r["torch_bwd_ms"])
        results.append(r)
        del case, fns
        rows.append([name, desc, f"{r['fwd_ms']:.2f}", f"{r['bwd_ms']:.2f}",
                     f"{r['gflops']:.0f}" if "gflops" in r else "",
                     f"{r['sgemm_gflops']:.0f}" if "gflops" in r else "",
                     f"{100 * r['of_sgemm']:.0f}%" if "of_sgemm" in r else "",
                     f"{r['x_copy']:.1f}" if "x_copy" in r else "",
                     f"{r['torch_fwd_ms']:.2f}" if "vs_torch" in r else "-",
                     f"{r['torch_bwd_ms']:.2f}" if "vs_torch" in r else "-",
                     f"{r['vs_torch']:.2f}x" if "vs_torch" in r else "-"])
        print(f"  {name}: fwd {r['fwd_ms']:.2f} ms, bwd {r['bwd_ms']:.2f} ms", flush=True)

    print()
    print(format_table(["kernel", "shape", "fwd ms", "bwd ms", "GFLOP/s", "sgemm", "of sgemm",
                        "fwd x copy", "torch fwd", "torch bwd", "ours/torch"], rows))
    print("\nGFLOP/s: useful FLOPs of forward + backward over their time; 'sgemm': GFLOP/s of a 2048^3"
          "\nfloat32 matmul timed round-robin with that kernel; 'fwd x copy': forward time over copying its"
          "\noutput into a new array (~ memory passes). Medians of "
          f"{args.repeat} rounds; ratios are within a row's rounds.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=args.device, batch=args.batch, sgemm_gflops=sg, results=results), f, indent=1)
    return 0
