"""python -m minicct.bench [step]: one CCT training step, as the trainer runs it, against PyTorch.

By default ``cct_2_3x2_32`` and a data pipeline of 30 batches: about 2 minutes on 2 CPU cores, each
row printed as soon as it is measured. ``--full`` adds ``cct_7_3x1_32`` (fewer repetitions) and a
whole 390-batch epoch of the pipeline: about 12 minutes. For each model, batch 128:

* the training step: ``cross_entropy(model(x), y)``, ``backward()``, ``AdamW.step()``, ``zero_grad()``
  (train mode: attention dropout and drop-path on, soft targets as Mixup makes them), median ms,
  images/s, effective GFLOP/s and that rate as a fraction of a large sgemm measured in the same run;
* evaluation images/s (eval mode, no graph);
* a user's own loop against the trainer's step: the plain ``loss = F.cross_entropy(model(x), y);
  loss.backward()`` (one thread) and the same with ``parallel.forward_backward`` (every core),
  each followed by ``opt.step(); opt.zero_grad()``;
* peak resident memory of training, each framework in a fresh child process;
* on a GPU, the same step as one CUDA graph (``minicct.training.graph_step``: captured once, replayed
  per step, the batch copied into its static buffers each time), with the same attention dropout
  and drop-path as the other rows (their masks drawn on the device, anew at every replay);
* with PyTorch importable, the same network in plain ``torch.nn`` (``minicct.bench.torch_twin``),
  loaded from minicct's ``state_dict`` and timed *alternately* with minicct (step i of one, then step i of
  the other), so both see the same machine load; the ratio minicct / PyTorch. On a GPU also
  ``torch.compile(mode="reduce-overhead")`` (PyTorch's CUDA graphs), when it compiles there.

Then the data pipeline of the paper's recipe (RandAugment, Mixup/CutMix, erasing, 2 worker
processes) on its own, and training fed by it, against the step time (--full: a whole epoch).

FLOPs are counted, not measured: ``minicct.models.count_macs`` (conv and linear MACs, the two
attention products, layer-norm at 5 per element) x 2 FLOP per MAC x 3 for a training step (the
backward pass costs about twice the forward). The machine may be shared: compare within one run.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from minicct import backend
from minicct.cli import non_negative, positive
from minicct.bench.common import sgemm_gflops, sync, table_line, try_torch, torch_sync

DEFAULT_MODELS = ("cct_2_3x2_32",)
FULL_MODELS = ("cct_2_3x2_32", "cct_7_3x1_32")
STEPS_PER_EPOCH = 390   # 50,000 CIFAR-10 images / 128, last partial batch dropped
DEFAULT_EPOCH_STEPS = 30
# What the default and --full take on 2 CPU cores (quiet machine, PyTorch importable); printed by --help.
DURATION = "default: about 2 minutes on 2 CPU cores; --full: about 12 minutes"


def add_arguments(p):
    p.description = (f"{p.description} ({DURATION}; each row is printed as soon as it is measured)")
    p.add_argument("--full", action="store_true",
                   help=f"the long version: models {','.join(FULL_MODELS)} and a whole {STEPS_PER_EPOCH}-batch "
                        f"epoch of the data pipeline (default: {','.join(DEFAULT_MODELS)}, "
                        f"{DEFAULT_EPOCH_STEPS} batches)")
    p.add_argument("--models", default=None,
                   help="comma-separated model names (the first gets --repeat, the others --repeat-large); "
                        "default: %s, --full: %s" % (",".join(DEFAULT_MODELS), ",".join(FULL_MODELS)))
    p.add_argument("--batch", type=positive(int, "--batch 128"), default=128, help="training (and evaluation) batch size")
    p.add_argument("--repeat", type=positive(int, "--repeat 10"), default=10, help="timed steps of the first model (median)")
    p.add_argument("--repeat-large", type=positive(int, "--repeat-large 3"), default=3, help="timed steps of the other models")
    p.add_argument("--warmup", type=non_negative(int, "--warmup 2"), default=2, help="untimed steps first")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement (child processes)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding cifar-10-batches-py (default: data/); synthetic images otherwise")
    p.add_argument("--workers", type=non_negative(int, "--workers 2"), default=2, help="data worker processes (the trainer's default)")
    p.add_argument("--epoch-steps", type=non_negative(int, "--epoch-steps 30"), default=None,
                   help=f"steps of the fed training run (0: skip the data-pipeline measurements); "
                        f"default {DEFAULT_EPOCH_STEPS}, --full: {STEPS_PER_EPOCH}")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run on tiny settings (batch 4, 1 step, a few data batches): for tests")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    p.add_argument("--child", default=None, help=__import__("argparse").SUPPRESS)  # internal: JSON job


# ---- the minicct side -----------------------------------------------------------------------------
def make_batch(batch, num_classes=10, seed=0):
    """Host arrays: images x (batch, 3, 32, 32) float32 ~ N(0, 1) and soft targets y (batch, C), as
    Mixup with label smoothing 0.1 makes them (two classes per row, weights lam and 1 - lam)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
    eps, lam = 0.1, 0.7
    a, b = rng.integers(0, num_classes, batch), rng.integers(0, num_classes, batch)
    y = np.full((batch, num_classes), eps / num_classes, np.float32)
    y[np.arange(batch), a] += lam * (1 - eps)
    y[np.arange(batch), b] += (1 - lam) * (1 - eps)
    return x, y


class MinicctRunner:
    """A model, its AdamW (timm's no-decay groups, the recipe's lr and decay) and one batch on device."""

    def __init__(self, name, batch, device, seed=0):
        import minicct
        from minicct import models
        from minicct.optim import AdamW, param_groups_weight_decay
        minicct.manual_seed(seed)
        self.xp = backend.xp_for(device)
        self.model = models.create_model(name).to(device)
        self.model.train()
        self.opt = AdamW(param_groups_weight_decay(self.model, 0.06), lr=5.5e-4)
        x, y = make_batch(batch, seed=seed)
        self.x = minicct.Tensor(x, device=device)
        self.y = minicct.Tensor(y, device=device)

    def step(self):
        """One training step, as ``minicct.training.trainer.train_one_epoch`` runs it: forward and
        backward over slices of the batch on every core (``minicct.parallel``), then AdamW."""
        from minicct import functional as F, parallel
        value = parallel.forward_backward(self.model, F.cross_entropy, self.x, self.y)
        self.opt.step()
        self.opt.zero_grad()
        sync(self.xp)
        return value

    def user_step(self):
        """A user's own loop as the lessons first teach it: one forward and backward in this thread."""
        from minicct import functional as F
        loss = F.cross_entropy(self.model(self.x), self.y)
        value = float(loss.item())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        sync(self.xp)
        return value

    def user_parallel_step(self):
        """The same loop with its two lines ``loss = ...; loss.backward()`` replaced by the one call
        that uses every core (what the trainer does too)."""
        from minicct import functional as F, parallel
        value = parallel.forward_backward(self.model, F.cross_entropy, self.x, self.y)
        self.opt.step()
        self.opt.zero_grad()
        sync(self.xp)
        return value

    def evaluate(self):
        from minicct import parallel
        self.model.eval()
        logits = parallel.forward(self.model, self.x).data
        sync(self.xp)
        self.model.train()
        return logits


class GraphRunner:
    """minicct's step as one CUDA graph (``training.graph_step.GraphStep``), and evaluation as another,
    fed host batches as the trainer feeds them; the model keeps its attention dropout and drop-path
    (``minicct.random.GraphStreams`` draws their masks inside the graph)."""

    def __init__(self, name, batch, device, seed=0):
        import minicct
        from minicct import functional as F, models
        from minicct.optim import AdamW, param_groups_weight_decay
        from minicct.training.graph_step import WARMUP_STEPS, GraphForward, GraphStep
        minicct.manual_seed(seed)
        self.model = models.create_model(name).to(device)
        self.opt = AdamW(param_groups_weight_decay(self.model, 0.06), lr=5.5e-4)
        self.graph = GraphStep(self.model, self.opt, F.cross_entropy)
        self.forward = GraphForward(self.model)
        self.x, self.y = make_batch(batch, seed=seed)
        for _ in range(WARMUP_STEPS + 1):        # warm-up and capture: not timed
            self.graph(self.x, self.y)

    def step(self):
        return self.graph(self.x, self.y)       # reads the loss back: waits for the replay

    def evaluate(self):
        return self.forward(self.x)             # synchronizes


# ---- the PyTorch side ------------------------------------------------------------------------------
class TorchRunner:
    """The PyTorch twin of a MinicctRunner's model, the same AdamW settings and the same batch."""

    def __init__(self, ours, batch, torch, tdev, seed=0):
        self.torch, self.tdev = torch, tdev
        from minicct.bench import torch_twin   # imports torch: only now that it is known to be there
        torch.manual_seed(seed)
        self.model = torch_twin.from_minicct(ours.model).to(tdev)
        self.model.train()
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        self.opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                      {"params": decay, "weight_decay": 0.06}], lr=5.5e-4)
        x, y = make_batch(batch, seed=seed)
        self.x, self.y = torch.from_numpy(x).to(tdev), torch.from_numpy(y).to(tdev)

    def compile(self):
        """The model through ``torch.compile(mode="reduce-overhead")`` (CUDA graphs in PyTorch); one
        step to compile it. Returns None, or why it could not (then this runner is not used)."""
        try:
            self.model = self.torch.compile(self.model, mode="reduce-overhead")
            for _ in range(3):                  # compiles, then records its graphs
                self.step()
        except Exception as e:                  # no compiler toolchain, unsupported op...
            return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        return None

    def step(self):
        loss = self.torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        value = float(loss.item())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        torch_sync(self.torch, self.tdev)
        return value

    def evaluate(self):
        self.model.eval()
        with self.torch.no_grad():
            logits = self.model(self.x)
        torch_sync(self.torch, self.tdev)
        self.model.train()
        return logits


# ---- timing ---------------------------------------------------------------------------------------
def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_alternately(fns, warmup, repeat):
    """{name: [seconds, ...]}: each repetition runs every fn once, in turn, so load changes on a
    shared machine hit all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    return times


# ---- memory (in a fresh child process per framework) ----------------------------------------------
def _reset_peak_rss():
    """Reset the kernel's peak-RSS mark to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(framework, name, batch, steps, device):
    """Run in a child: set up, then ``steps`` training steps; resident memory in MB:
    before (after imports, model, optimizer and batch), peak (highest RSS during the steps) and the
    difference, which is what training itself needs (activations, gradients, optimizer moments,
    temporaries). On a GPU: the framework's own pool statistics instead."""
    ours = MinicctRunner(name, batch, device)
    runner = ours
    if framework == "torch":
        torch, tdev = try_torch(device)
        runner = TorchRunner(ours, batch, torch, tdev)
        del ours
    import gc
    gc.collect()
    out = {"framework": framework}
    if device == "gpu":
        runner.step()
        for _ in range(steps):
            runner.step()
        if framework == "torch":
            out["gpu_peak_mb"] = runner.torch.cuda.max_memory_reserved() / 2**20
        else:
            out["gpu_peak_mb"] = runner.xp.get_default_memory_pool().total_bytes() / 2**20
    before = backend.status_kb("VmRSS")
    exact = _reset_peak_rss()
    for _ in range(steps):
        runner.step()
    peak = backend.status_kb("VmHWM") if exact else None
    if peak is None:   # no /proc: the lifetime peak (ru_maxrss is kB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    out.update(before_mb=(before or 0) / 1024, peak_mb=peak / 1024, exact=exact)
    out["training_mb"] = out["peak_mb"] - out["before_mb"]
    if framework == "minicct":
        # Worker processes (minicct.parallel on Linux): what each added to the pages it shares with
        # this process counts too, in the peak and in training.
        from minicct.parallel import processes
        workers = processes.worker_memory_mb()
        if workers:
            out["workers_mb"] = sum(peak - start for start, peak in workers)
            out["peak_mb"] += out["workers_mb"]
            out["training_mb"] += out["workers_mb"]
    return out


def run_child(job, device, timeout=1800):
    """Run one measurement (``job``: a dict naming the function and its arguments) in a fresh
    interpreter and return the dict it prints, or {'error': ...}. Fresh: nothing allocated by the
    parent counts, and no worker process is ever forked from a process running PyTorch's threads."""
    cmd = [sys.executable, "-m", "minicct.bench", "step", "--device", device, "--child", json.dumps(job)]
    try:   # the child finds minicct as this process did: installed, or on its PYTHONPATH or cwd
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (r.stderr.strip().splitlines() or ["no output"])[-1]}


def child_main(job, device):
    if device == "cpu":
        backend.keep_freed_memory()   # as the trainer does
    kind = job.pop("kind")
    if kind == "memory":
        out = memory_child(device=device, **job)
    else:
        out = data_epoch(device=device, **job)
    print("RESULT " + json.dumps(out))


# ---- the data pipeline ----------------------------------------------------------------------------
def training_set(data_dir, quick):
    """(dataset, description): CIFAR-10 from data_dir when its python batches are there, else
    synthetic uint8 images of CIFAR's size (noise: the augmentation costs the same per image)."""
    from minicct.data import ImageDataset
    from minicct.data.datasets import default_data_dir
    root = Path(data_dir) if data_dir else default_data_dir()
    if not quick and (root / "cifar-10-batches-py").is_dir():
        from minicct.data import get_dataset
        train, _ = get_dataset("cifar10", data_dir=root, download=False)
        return train, f"CIFAR-10 from {root}"
    n = 512 if quick else 50_000
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    ds = ImageDataset(images, rng.integers(0, 10, n), [str(i) for i in range(10)],
                      mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), name="synthetic CIFAR-size")
    return ds, f"SYNTHETIC images ({n} x 32x32x3 uint8; no cifar-10-batches-py in {root})"


def data_epoch(name, data_dir, batch, workers, steps, quick, device):
    """Time ``steps`` training steps of ``name`` fed by the paper's training pipeline (the
    trainer's loop: the loader's worker processes prepare batches while the model trains), the
    same number of steps on one fixed batch, half before and half after the fed ones so that a
    change of machine load hits both alike, and the pipeline alone. Returns a dict of seconds."""
    import minicct
    from minicct.data import train_loader
    runner = MinicctRunner(name, batch, device)
    ds, what = training_set(data_dir, quick)
    res = {"data": what, "workers": workers}
    device = runner.x.device

    def fixed(n):
        t0 = time.perf_counter()
        for _ in range(n):
            runner.step()
        return time.perf_counter() - t0

    with train_loader(ds, batch_size=batch, seed=0, workers=workers) as loader:
        steps = res["steps"] = min(steps, len(loader))
        x, y = next(iter(loader))         # starts the workers; a real batch for the fixed steps
        loader.set_epoch(0)
        runner.x = minicct.Tensor(backend.to_device(x, device))
        runner.y = minicct.Tensor(backend.to_device(y, device))
        runner.step()
        res["fixed_s"] = fixed(steps // 2)
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            runner.x = minicct.Tensor(backend.to_device(x, device))
            runner.y = minicct.Tensor(backend.to_device(y, device))
            runner.step()
            if i + 1 == steps:
                break
        res["fed_s"] = time.perf_counter() - t0
        res["wait_s"] = loader.wait_time
        res["fixed_s"] += fixed(steps - steps // 2)
        loader.set_epoch(1)
        t0 = time.perf_counter()
        for i, _ in enumerate(loader):      # the pipeline alone
            if i + 1 == steps:
                break
        res["pipeline_s"] = time.perf_counter() - t0
    return res


# ---- the report -----------------------------------------------------------------------------------
def _ms(ts):
    return 1e3 * statistics.median(ts)


def bench_model(name, batch, device, repeat, warmup, torch, tdev, sgemm):
    from minicct import models
    ours = MinicctRunner(name, batch, device)
    macs = models.count_macs(ours.model, (3, 32, 32))
    step_flop = macs * batch * 2 * 3
    fns = {"minicct": ours.step}
    evaluators = {"minicct": ours.evaluate}
    theirs = None
    r = {"model": name, "batch": batch, "macs_per_image": macs, "step_gflop": step_flop / 1e9}
    if device == "gpu":
        graph = GraphRunner(name, batch, device)
        fns["graph"], evaluators["graph"] = graph.step, graph.evaluate
    if torch is not None:
        theirs = TorchRunner(ours, batch, torch, tdev)
        fns["torch"], evaluators["torch"] = theirs.step, theirs.evaluate
        if device == "gpu":
            compiled = TorchRunner(ours, batch, torch, tdev)
            r["torch_compiled_error"] = compiled.compile()
            if r["torch_compiled_error"] is None:
                fns["torch_compiled"], evaluators["torch_compiled"] = compiled.step, compiled.evaluate
    steps = time_alternately(fns, warmup, repeat)
    evals = time_alternately(evaluators, 1, max(2, repeat // 2))
    for k in fns:
        ms = _ms(steps[k])
        r[k] = dict(step_ms=ms, step_ms_all=[1e3 * t for t in steps[k]], img_s=batch / ms * 1e3,
                    gflops=step_flop / ms / 1e6, of_sgemm=step_flop / ms / 1e6 / sgemm,
                    eval_img_s=batch / _ms(evals[k]) * 1e3)
    # A user's own loop, against the trainer's step (alternating, fewer repetitions).
    loops = time_alternately({"trainer": ours.step, "plain": ours.user_step, "parallel": ours.user_parallel_step},
                             1, max(2, repeat // 2))
    r["user_loop"] = {k: _ms(ts) for k, ts in loops.items()}
    if theirs is not None:
        r["ratio"] = r["minicct"]["step_ms"] / r["torch"]["step_ms"]
        r["eval_ratio"] = r["torch"]["eval_img_s"] / r["minicct"]["eval_img_s"]
        if "graph" in r:
            r["graph_ratio"] = r["graph"]["step_ms"] / r["torch"]["step_ms"]
            r["graph_eval_ratio"] = r["torch"]["eval_img_s"] / r["graph"]["eval_img_s"]
    return r, ours


def _row(name, label, fw, d, mem):
    m = mem.get(fw, {})
    peak = f"{m['peak_mb']:.0f}" if "peak_mb" in m else m.get("error", "-")[:30]
    train = f"{m['training_mb']:.0f}" if "training_mb" in m else "-"
    if "gpu_peak_mb" in m:
        peak, train = f"{m['gpu_peak_mb']:.0f} (GPU pool)", "-"
    return [name, label, f"{d['step_ms']:.1f}", f"{d['img_s']:.0f}", f"{d['gflops']:.1f}",
            f"{100 * d['of_sgemm']:.0f}%", f"{d['eval_img_s']:.0f}", peak, train]


def resolve_defaults(args):
    """--models and --epoch-steps not given: the short default, or the long version with --full."""
    if args.models is None:
        args.models = ",".join(FULL_MODELS if args.full else DEFAULT_MODELS)
    if args.epoch_steps is None:
        args.epoch_steps = STEPS_PER_EPOCH if args.full else DEFAULT_EPOCH_STEPS
    return args


def main(args):
    if args.child:
        return child_main(json.loads(args.child), args.device) or 0
    resolve_defaults(args)
    if args.quick:   # every code path once, on the first model only
        args.batch, args.repeat, args.repeat_large, args.warmup = 4, 1, 1, 1
        args.models = args.models.split(",")[0]
        args.epoch_steps = min(args.epoch_steps, 3) if args.epoch_steps else 0
    xp = backend.xp_for(args.device)
    # As the trainer does; in this process PyTorch's CPU tensors get the same malloc settings.
    malloc_kept = args.device == "cpu" and backend.keep_freed_memory()
    torch, tdev = (None, None) if args.no_torch else try_torch(args.device)
    names = [n for n in args.models.split(",") if n]
    n = 512 if args.quick else 2048
    sgemm = sgemm_gflops(xp, n=n, warmup=1 if args.quick else 2, repeat=2 if args.quick else 7)
    print(f"minicct training step, device {args.device}, batch {args.batch}, float32; "
          f"sgemm {n}^3 ({'CuPy' if args.device == 'gpu' else 'NumPy'}): {sgemm:.0f} GFLOP/s; "
          + (f"PyTorch {torch.__version__} on {tdev}, {torch.get_num_threads()} threads"
             if torch is not None else "PyTorch not compared (not installed, or no CUDA for --device gpu)"))
    from minicct import parallel
    threads = 1 if args.device == "gpu" else parallel.default_threads()
    try:
        load = f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
    except OSError:
        load = ""
    if args.device == "gpu":
        how = "CuPy, whole batch per pass"
    else:
        kind = parallel.default_mode() if threads > 1 else "thread"
        how = (f"{threads} {kind} over slices of the batch, micro-batches of {parallel.MICRO_BATCH}, "
               + ("1 BLAS thread each" if threads > 1 else f"{backend.blas_threads()} BLAS threads")
               + " (minicct.parallel)"
               + ("; malloc keeps freed memory (backend.keep_freed_memory), for both frameworks"
                  if malloc_kept else ""))
    print(f"{load}minicct: {how}", flush=True)

    # The table is printed row by row as each model is measured, so its widths are fixed up front.
    headers = ["model", "framework", "step ms", "img/s", "GFLOP/s", "of sgemm", "eval img/s",
               "peak RSS MB", "training MB"]
    widths = [max(len("model"), *map(len, names)), len("minicct/PyTorch")] + [max(8, len(h)) for h in headers[2:]]
    print()
    print(table_line(headers, widths))
    print(table_line(["-" * w for w in widths], widths), flush=True)
    results, notes, first = [], [], None
    for i, name in enumerate(names):
        repeat = args.repeat if i == 0 else args.repeat_large
        frameworks = "minicct and PyTorch alternating" if torch is not None else "minicct"
        # Liveness on stderr (the table stays whole on stdout): a model takes from seconds to minutes.
        print(f"  ... {name}: {args.warmup} + {repeat} training steps ({frameworks}), evaluation"
              + ("" if args.no_memory else ", then memory in fresh processes"), file=sys.stderr, flush=True)
        r, ours = bench_model(name, args.batch, args.device, repeat, args.warmup, torch, tdev, sgemm)
        del ours
        first = first or r
        mem = {}
        if not args.no_memory:
            steps = 1 if args.quick else 3 if i == 0 else 1
            for fw in ["minicct"] + (["torch"] if torch is not None else []):
                mem[fw] = run_child(dict(kind="memory", framework=fw, name=name, batch=args.batch,
                                         steps=steps), args.device)
        r["memory"] = mem
        results.append(r)
        rows = [_row(name, "minicct", "minicct", r["minicct"], mem)]
        if "graph" in r:
            rows.append(_row("", "minicct graph", "graph", r["graph"], mem))
        if "torch" in r:
            rows.append(_row("", "PyTorch", "torch", r["torch"], mem))
            if "torch_compiled" in r:
                rows.append(_row("", "torch.compile", "torch_compiled", r["torch_compiled"], mem))
            elif r.get("torch_compiled_error"):
                notes.append(f"{name}: torch.compile(mode='reduce-overhead') skipped: {r['torch_compiled_error']}")
            rows.append(["", "minicct/PyTorch", f"{r['ratio']:.2f}", "", "", "", f"{r['eval_ratio']:.2f}",
                         *(f"{mem['minicct'][k] / mem['torch'][k]:.2f}"
                           if k in mem.get("minicct", {}) and k in mem.get("torch", {}) else "-"
                           for k in ("peak_mb", "training_mb"))])
            if "graph_ratio" in r:
                rows.append(["", "graph/PyTorch", f"{r['graph_ratio']:.2f}", "", "", "",
                             f"{r['graph_eval_ratio']:.2f}", "-", "-"])
        for row in rows:
            print(table_line(row, widths), flush=True)
        notes.append(f"{name}: {r['step_gflop']:.1f} GFLOP per step ({r['macs_per_image'] / 1e6:.1f} M MACs "
                     f"per image x {args.batch} x 2 FLOP/MAC x 3)")

    print("\na user's own loop (minicct), against the trainer's step, timed alternately:")
    for r in results:
        u = r["user_loop"]
        print(f"  {r['model']}: trainer step {u['trainer']:.1f} ms; `loss = F.cross_entropy(model(x), y); "
              f"loss.backward()` {u['plain']:.1f} ms (x {u['plain'] / u['trainer']:.2f}); "
              f"`parallel.forward_backward(model, F.cross_entropy, x, y)` {u['parallel']:.1f} ms "
              f"(x {u['parallel'] / u['trainer']:.2f}); each + AdamW step + zero_grad")
    print("\n" + "\n".join(notes))
    print(f"step: forward + backward + AdamW at batch {args.batch}, median of {args.repeat} "
          f"(first model) / {args.repeat_large} (others) after {args.warmup} warm-up, the frameworks "
          "alternating step by step.\nGFLOP/s = count_macs x batch x 2 x 3 / step time; 'of sgemm' "
          "against the sgemm above. eval: forward only, eval mode, no graph, same batch. The ratio "
          "row: minicct / PyTorch for step time, eval time (PyTorch img/s over minicct's) and memory."
          "\nmemory: each framework in a fresh "
          "process; 'peak RSS' = the highest resident set during the steps (VmHWM reset after set-up), "
          "'training MB' = peak minus the RSS before the first step (activations, gradients, "
          "optimizer state, temporaries; the interpreter, libraries and weights excluded); "
          "minicct's worker processes add the peak memory each added after its fork to both.")

    data = None
    if args.epoch_steps:
        step_s = first["minicct"]["step_ms"] / 1e3
        print(f"\ndata pipeline, paper recipe (RandomResizedCrop, flip, rand-m9-mstd0.5-inc1, Mixup 0.8 / "
              f"CutMix 1.0, erasing 0.25, smoothing 0.1), {args.workers} workers, {names[0]} "
              f"(in a fresh process):", flush=True)
        data = run_child(dict(kind="data", name=names[0], data_dir=args.data_dir, batch=args.batch,
                              workers=args.workers, steps=args.epoch_steps, quick=args.quick), args.device)
        if "error" in data:
            print(f"  failed: {data['error']}")
        else:
            n, E = data["steps"], STEPS_PER_EPOCH
            print(f"  {data['data']}")
            print(f"  pipeline alone: {n} batches in {data['pipeline_s']:.1f} s "
                  f"({n * args.batch / data['pipeline_s']:.0f} img/s; a {E}-batch epoch "
                  f"{data['pipeline_s'] / n * E:.1f} s) vs {E} x the median step above = {E * step_s:.1f} s")
            print(f"  training fed by it: {n} steps in {data['fed_s']:.1f} s (waited {data['wait_s']:.1f} s "
                  f"for data) vs the same {n} steps on a fixed batch in that process {data['fixed_s']:.1f} s: "
                  f"x {data['fed_s'] / data['fixed_s']:.2f}; vs {n} x the median step above "
                  f"({n * step_s:.1f} s): x {data['fed_s'] / (n * step_s):.2f}"
                  + (f"\n  a whole {E}-step epoch at that rate: {data['fed_s'] / n * E:.1f} s" if n != E else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=args.device, batch=args.batch, sgemm_gflops=sgemm,
                           torch=getattr(torch, "__version__", None), models=results, data=data), f, indent=1)
    return 0
