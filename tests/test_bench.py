"""The benchmarks run end to end on tiny settings, so they cannot rot. No timing is asserted: the
machine may be shared, and a benchmark's numbers are read by people, not by tests."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(*argv):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-m", "minicct.bench", *argv], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_step_quick(tmp_path):
    out = run_bench("--quick", "--json", str(tmp_path / "step.json"))
    assert "GFLOP per step" in out and "of sgemm" in out and "data pipeline" in out
    result = json.loads((tmp_path / "step.json").read_text())
    model = result["models"][0]
    assert model["model"] == "cct_2_3x2_32"
    assert model["minicct"]["step_ms"] > 0 and model["minicct"]["eval_img_s"] > 0
    assert "a user's own loop" in out and all(model["user_loop"][k] > 0 for k in ("trainer", "plain", "parallel"))
    assert model["memory"]["minicct"]["peak_mb"] > 0, model["memory"]
    assert result["data"]["steps"] > 0 and "SYNTHETIC" in result["data"]["data"]


def test_default_is_short_and_full_is_long():
    """The default run (what a newcomer types first) is one model and 30 pipeline batches; --full is
    both models and a whole epoch; --help says how long each takes."""
    from minicct.bench.__main__ import build_parser
    from minicct.bench.step import resolve_defaults
    parser = build_parser()
    short = resolve_defaults(parser.parse_args(["step"]))
    assert short.models == "cct_2_3x2_32" and short.epoch_steps == 30
    full = resolve_defaults(parser.parse_args(["step", "--full"]))
    assert full.models == "cct_2_3x2_32,cct_7_3x1_32" and full.epoch_steps == 390
    chosen = resolve_defaults(parser.parse_args(["step", "--full", "--models", "vit_2_4_32", "--epoch-steps", "0"]))
    assert chosen.models == "vit_2_4_32" and chosen.epoch_steps == 0
    helptext = parser._subparsers._group_actions[0].choices["step"].format_help()
    assert "--full" in helptext and "about 2 minutes" in helptext and "about 12 minutes" in helptext


def test_torch_twin_computes_what_minicct_computes():
    """The benchmark's PyTorch network must be the same function, or its ratio means nothing."""
    import pytest
    torch = pytest.importorskip("torch", reason="PyTorch is optional (the benchmark's comparison only)")
    import minicct
    from minicct.bench.step import MinicctRunner, TorchRunner
    ours = MinicctRunner("cct_2_3x2_32", 4, "cpu")
    theirs = TorchRunner(ours, 4, torch, "cpu")
    a = ours.evaluate()
    b = theirs.evaluate().numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_graph_runner_steps_and_says_what_it_trains():
    """The GPU benchmark's graph row, run here with graph_step's NumPy stand-in for the capture: it
    steps (loss finite, falling on one batch) with the model's attention dropout and drop-path on,
    and evaluates."""
    from minicct.bench.step import GraphRunner
    runner = GraphRunner("cct_2_3x2_32", 4, "cpu")
    last = runner.model.classifier.blocks[-1]              # the paper's model, masks and all
    assert last.drop_path.p > 0 and last.self_attn.attn_drop.p > 0
    assert runner.graph.graph is not None            # warm-up and capture happened in set-up
    losses = [runner.step() for _ in range(3)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert runner.evaluate().shape == (4, 10)


def test_kernels_quick():
    out = run_bench("kernels", "--batch", "2", "--repeat", "1", "--warmup", "1", "--no-torch")
    assert "conv2" in out


@pytest.mark.parametrize("argv,flag", [
    (["step", "--batch", "0"], "--batch"),
    (["step", "--repeat", "-2"], "--repeat"),
    (["step", "--models", "cct2"], "--models"),
    (["kernels", "--warmup", "-1"], "--warmup"),
    (["kernels", "--device", "tpu"], "--device"),
    (["nonsense"], "nonsense"),
])
def test_bad_benchmark_flags_are_one_line(argv, flag, capsys):
    from minicct.bench.__main__ import main
    from minicct.cli import run_cli
    assert run_cli(main, argv, prog="minicct.bench") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("minicct.bench: error:") and err.count("\n") == 0 and flag in err
