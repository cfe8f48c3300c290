"""Every command checks every argument once, up front: a bad value ends it with exactly one line
``minicct.<cmd>: error: ...`` naming the flag, the value and the fix, exit code 2, no traceback, and
nothing created on disk. Also: --help shows each default once and keeps its examples as lines."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("minicct.models", reason="minicct.models not built yet")

from minicct import evaluate, predict, train  # noqa: E402
from minicct.cli import plural, run_cli  # noqa: E402
from minicct.data import __main__ as data_cmd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def one_line_error(main, argv, prog, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    code = run_cli(main, argv, prog=prog)
    _, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == before   # no run folder, no data folder
    return err


@pytest.mark.parametrize("argv, words", [
    (["cifar10", "--lr", "-1"], ["--lr", "-1", "above 0", "e.g. --lr"]),
    (["cifar10", "--lr", "nan"], ["--lr", "nan", "finite"]),
    (["cifar10", "--lr", "abc"], ["--lr", "'abc'", "not a number"]),
    (["cifar10", "--img-size", "0"], ["--img-size", "0", "above 0"]),
    (["cifar10", "--epochs", "0"], ["--epochs", "0"]),
    (["cifar10", "--epochs", "2.5"], ["--epochs", "not an integer"]),
    (["cifar10", "--batch-size", "-5"], ["--batch-size", "-5"]),
    (["cifar10", "--eval-batch-size", "0"], ["--eval-batch-size", "0"]),
    (["cifar10", "--eval-every", "0"], ["--eval-every", "0", "above 0"]),
    (["cifar10", "--eval-every", "2.5"], ["--eval-every", "not an integer"]),
    (["cifar10", "--weight-decay", "-0.1"], ["--weight-decay", "-0.1", "0 or more"]),
    (["cifar10", "--warmup-epochs", "-1"], ["--warmup-epochs", "-1"]),
    (["cifar10", "--cooldown-epochs", "-1"], ["--cooldown-epochs", "-1"]),
    (["cifar10", "--warmup-lr", "-1e-5"], ["--warmup-lr"]),
    (["cifar10", "--min-lr", "inf"], ["--min-lr", "finite"]),
    (["cifar10", "--mixup", "-0.8"], ["--mixup", "-0.8"]),
    (["cifar10", "--cutmix", "nan"], ["--cutmix", "nan"]),
    (["cifar10", "--mixup-prob", "1.5"], ["--mixup-prob", "1.5", "between 0 and 1"]),
    (["cifar10", "--mixup-switch-prob", "-0.5"], ["--mixup-switch-prob", "-0.5"]),
    (["cifar10", "--reprob", "2"], ["--reprob", "2"]),
    (["cifar10", "--hflip", "1.5"], ["--hflip", "1.5", "between 0 and 1"]),
    (["cifar10", "--ema", "1"], ["--ema", "1", "below 1"]),
    (["cifar10", "--ema", "-0.5"], ["--ema", "-0.5"]),
    (["text-synth", "--tta-flip"], ["--tta-flip", "text", "drop --tta-flip"]),
    (["mnist", "--tta-flip"], ["--tta-flip", "--hflip 0", "mirrored"]),
    (["text-synth", "--glove", "no-such-vectors.txt"], ["--glove", "no-such-vectors.txt", "no such file"]),
    (["cifar10", "--glove", "README.md"], ["--glove", "text models"]),
    (["cifar10", "--smoothing", "1.1"], ["--smoothing", "1.1"]),
    (["cifar10", "--mixup-off-epoch", "-1"], ["--mixup-off-epoch"]),
    (["cifar10", "--workers", "-1"], ["--workers", "-1"]),
    (["cifar10", "--seed", "-1"], ["--seed", "-1"]),
    (["cifar10", "--time-limit", "0"], ["--time-limit", "0"]),
    (["cifar10", "--stop-epoch", "0"], ["--stop-epoch", "0"]),
    (["cifar10", "--train-limit", "0"], ["--train-limit", "0"]),
    (["cifar10", "--test-limit", "-3"], ["--test-limit", "-3"]),
    (["cifar10", "--model", "cct2"], ["--model cct2", "unknown model", "cct_2_3x2_32"]),
    (["cifar10", "--model", "cct_2_3x3_32"], ["unknown model", "cct_2_3x2_32"]),
    (["cifar10", "--model-kwargs", "embedding_dim"], ["--model-kwargs", "'embedding_dim'", "KEY=VALUE"]),
    (["cifar10", "--model-kwargs", "embeding_dim=64"], ["--model-kwargs", "embeding_dim", "embedding_dim?"]),
    (["cifar10", "--model-kwargs", "embedding_dim=abc"], ["embedding_dim=abc", "takes a number"]),
    (["cifar10", "--model-kwargs", "num_layers=-1"], ["num_layers=-1", "0 or more"]),
    (["cifar10", "--preset", "fast-cpu", "--model-kwargs", "in_planes=0"], ["in_planes=0", "a size", "in_planes=64"]),
    (["cifar10", "--model-kwargs", "num_heads=0"], ["num_heads=0", "more than 0"]),
    (["cifar10", "--aa", "rand-mX"], ["--aa rand-mX", "RandAugment", "--aa none"]),
    (["cifar10", "--aa", "rnd-m9"], ["--aa rnd-m9"]),
    (["cifar10", "--preset", "fast"], ["--preset", "'fast'", "fast-cpu"]),
    (["cifar10", "--device", "tpu"], ["--device tpu", "--device cpu"]),
    (["cifar10", "--cuda-graph", "on"], ["--cuda-graph on", "GPU", "--device gpu", "--cuda-graph off"]),
    (["cifar10", "--cuda-graph", "yes"], ["--cuda-graph", "'yes'"]),
    (["cifar10", "--data-dir", "no/such/dir"], ["--data-dir", "no/such/dir", "no such folder", "mkdir -p no/such/dir"]),
    (["no/such/folder"], ["'no/such/folder'", "not a directory"]),
    ([], ["no dataset", "--resume"]),
    (["cifar10", "--frob"], ["unrecognized arguments: --frob", "--help"]),
    (["cifar10", "--epochs", "5", "--warmup-epochs", "5"], ["--warmup-epochs 5", "--epochs 5", "--warmup-epochs 4"]),
    (["cifar10", "--preset", "fast-cpu", "--epochs", "1"], ["--warmup-epochs 1 (preset fast-cpu)", "--epochs 1", "--warmup-epochs 0"]),
    (["cifar10", "--resume", "no/such.npz"], ["no checkpoint", "no/such.npz"]),
    (["--resume", "auto"], ["--resume auto needs the dataset", "cifar10 --resume auto"]),
    (["cifar10", "--resume", "auto"], ["--resume auto found no checkpoint", "runs/cifar10-cct_2_3x2_32"]),
])
def test_train_bad_arguments(argv, words, capsys, tmp_path, monkeypatch):
    err = one_line_error(train.main, argv, "minicct.train", capsys, tmp_path, monkeypatch)
    for w in words:
        assert w in err, (w, err)


@pytest.fixture
def not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    return path


@pytest.mark.parametrize("argv, words", [
    ([], ["--checkpoint", "required"]),
    (["--checkpoint", "{text}"], ["notes.txt", "not a minicct checkpoint", "best.npz"]),
    (["--checkpoint", "{dir}"], ["is a folder", "best.npz"]),
    (["--checkpoint", "{dir}/missing.npz"], ["no checkpoint", "missing.npz"]),
    (["--checkpoint", "{text}", "--batch-size", "0"], ["--batch-size", "0"]),
    (["--checkpoint", "{text}", "--limit", "-3"], ["--limit", "-3"]),
    (["--checkpoint", "{text}", "--data-dir", "no/such"], ["--data-dir", "no/such", "no such folder"]),
    (["nosuch", "--checkpoint", "{text}"], ["'nosuch'", "not a directory"]),
    (["--checkpoint", "{text}", "--device", "tpu"], ["--device tpu"]),
    (["--checkpoint", "{text}", "--weights", "ema"], ["--weights", "'ema'", "average", "last"]),
    (["--checkpoint", "{text}", "--flip", "yes"], ["--flip", "'yes'", "on", "off"]),
])
def test_evaluate_bad_arguments(argv, words, capsys, tmp_path, monkeypatch, not_a_checkpoint):
    argv = [a.format(text=not_a_checkpoint, dir=tmp_path) for a in argv]
    err = one_line_error(evaluate.main, argv, "minicct.evaluate", capsys, tmp_path, monkeypatch)
    assert "allow_pickle" not in err    # NumPy's advice to unpickle an unknown file is never passed on
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("argv, words", [
    (["--checkpoint", "{text}"], ["images", "required"]),
    (["x.png"], ["--checkpoint", "required"]),
    (["x.png", "--checkpoint", "{text}"], ["not a minicct checkpoint"]),
    (["x.png", "--checkpoint", "{text}", "--top", "0"], ["--top", "0", "above 0"]),
    (["x.png", "--checkpoint", "{text}", "--device", "tpu"], ["--device tpu"]),
])
def test_predict_bad_arguments(argv, words, capsys, tmp_path, monkeypatch, not_a_checkpoint):
    argv = [a.format(text=not_a_checkpoint) for a in argv]
    err = one_line_error(predict.main, argv, "minicct.predict", capsys, tmp_path, monkeypatch)
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("argv, words", [
    (["--batch-size", "0"], ["--batch-size", "0"]),
    (["--workers", "-1"], ["--workers", "-1"]),
    (["--batches", "x"], ["--batches", "'x'"]),
    (["cifar10", "--data-dir", "no/such"], ["--data-dir", "no/such", "no such folder"]),
    (["no/such/folder"], ["not a directory"]),
    (["--grid", "out.jpeg"], ["--grid out.jpeg", ".png"]),
    (["--frob"], ["unrecognized arguments: --frob"]),
])
def test_data_bad_arguments(argv, words, capsys, tmp_path, monkeypatch):
    err = one_line_error(data_cmd.main, argv, "minicct.data", capsys, tmp_path, monkeypatch)
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("module, argv", [
    ("minicct.train", ["cifar10", "--lr", "-1"]),
    ("minicct.evaluate", ["--limit", "0"]),
    ("minicct.predict", ["x.png"]),
    ("minicct.data", ["--batch-size", "0"]),
])
def test_real_command_line_is_one_line(module, argv, tmp_path):
    r = subprocess.run([sys.executable, "-m", module, *argv], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(module + ": error: ") and "usage:" not in r.stderr


def test_gpu_without_cupy_speaks_flags(capsys, tmp_path, monkeypatch):
    from minicct import backend
    if backend.gpu_available():
        pytest.skip("a GPU is available here")
    err = one_line_error(train.main, ["shapes", "--device", "gpu"], "minicct.train", capsys, tmp_path, monkeypatch)
    assert "CuPy" in err and "--device cpu" in err and "device='cpu'" not in err


def test_help_shows_each_default_once_and_examples_as_lines():
    out = subprocess.run([sys.executable, "-m", "minicct.train", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60).stdout
    entries, current = [], []
    for line in out.splitlines():
        if line.startswith("  -") or line.startswith("  dataset"):
            current = [line]
            entries.append(current)
        elif line.startswith("    ") and current:
            current.append(line)
        else:
            current = []
    assert len(entries) > 30
    for e in entries:
        assert " ".join(e).count("default") <= 1, e
    assert "(default: 300)" in out and "(default: 0.00055)" in out
    assert "\n  python -m minicct.train shapes " in out and "\n  python -m minicct.train cifar10 --resume auto" in out


def test_plural():
    assert plural(1, "epoch") == "1 epoch" and plural(2, "epoch") == "2 epochs" and plural(0, "epoch") == "0 epochs"
    assert plural(1, "class", "classes") == "1 class" and plural(6, "class", "classes") == "6 classes"
