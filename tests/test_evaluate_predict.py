"""python -m minicct.evaluate and python -m minicct.predict on a checkpoint these tests train."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("minicct.models", reason="minicct.models not built yet")
pytest.importorskip("minicct.functional", reason="minicct.functional not built yet")

from minicct import evaluate, predict, train  # noqa: E402
from minicct.training.errors import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("generate_datasets_once")  # see conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A toy CCT trained 2 epochs on 384 shapes images (light augmentation)."""
    out = tmp_path_factory.mktemp("run")
    code = run_cli(train.main, ["shapes", "--model-kwargs", "embedding_dim=32", "num_layers=1", "num_heads=2",
                                "mlp_ratio=1", "in_planes=16", "--epochs", "2", "--warmup-epochs", "0",
                                "--cooldown-epochs", "0", "--batch-size", "32", "--lr", "2e-3",
                                "--train-limit", "384", "--test-limit", "200", "--workers", "0",
                                "--output", str(out)])
    assert code == 0
    return out


def test_evaluate_matches_training_evaluation(run_dir, capsys):
    capsys.readouterr()
    code = run_cli(evaluate.main, ["--checkpoint", str(run_dir / "last.npz"), "--limit", "200"])
    out = capsys.readouterr().out
    assert code == 0
    last = (run_dir / "metrics.csv").read_text().splitlines()[-1].split(",")
    top1, top5 = float(last[4]), float(last[5])
    assert f"top-1 {top1:.2f}%" in out and f"top-5 {top5:.2f}%" in out and "200 images" in out


def test_evaluate_command_line(run_dir):
    r = subprocess.run([sys.executable, "-m", "minicct.evaluate", "--checkpoint", str(run_dir / "best.npz"),
                        "shapes", "--limit", "64"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "top-1" in r.stdout and "top-5" in r.stdout


def test_predict_any_size_and_mode(run_dir, tmp_path, capsys):
    from PIL import Image
    from minicct.data import get_dataset
    _, test = get_dataset("shapes")
    files = []
    for i, (size, mode) in enumerate([((32, 32), "RGB"), ((70, 50), "RGB"), ((200, 300), "L"), ((45, 45), "RGBA")]):
        im = Image.fromarray(test.images[i]).resize(size, Image.Resampling.BICUBIC).convert(mode)
        files.append(tmp_path / f"img{i}.png")
        im.save(files[-1])
    capsys.readouterr()
    code = run_cli(predict.main, [*map(str, files), "--checkpoint", str(run_dir / "last.npz")])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4 * 6  # a header line and 5 classes per image
    classes = set(test.classes)
    for block in range(4):
        assert lines[6 * block] == str(files[block])
        probs = []
        for line in lines[6 * block + 1: 6 * block + 6]:
            pct, name = line.split()
            assert name in classes
            probs.append(float(pct.rstrip("%")))
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 100.0 + 1e-6


def test_predict_matches_the_model_on_32px_images(run_dir):
    """predict's preprocessing of a 32x32 image is exactly evaluation's (normalise only), and its
    probabilities are the softmax of the model's logits. The expected values are computed another
    way: (x / 255 - mean) / std by hand in float64, the softmax as exp / sum."""
    from minicct.data import get_dataset
    from minicct.training.checkpoint import load_checkpoint, model_from_checkpoint
    from minicct import Tensor, no_grad
    ck = load_checkpoint(run_dir / "last.npz")
    model = model_from_checkpoint(ck)
    _, test = get_dataset("shapes")
    imgs = test.images[:8]
    probs = predict.predict(model, imgs, ck["data"]["mean"], ck["data"]["std"], "cpu")
    mean, std = np.asarray(ck["data"]["mean"], np.float64), np.asarray(ck["data"]["std"], np.float64)
    x = ((imgs.astype(np.float64) / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    with no_grad():
        logits = model(Tensor(x)).numpy().astype(np.float64)
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
    # a run trained with --tta-flip: the mean of the logits of each image and its mirror image
    flipped = predict.predict(model, imgs, ck["data"]["mean"], ck["data"]["std"], "cpu", flip=True)
    with no_grad():
        logits = 0.5 * (logits + model(Tensor(np.flip(x, axis=3).copy())).numpy().astype(np.float64))
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(flipped, e / e.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_bad_files_are_one_clear_line(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    code = run_cli(predict.main, [str(bad), "--checkpoint", str(run_dir / "last.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.jpg" in err and "Traceback" not in err
    code = run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "missing.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint" in err


def test_predict_reports_bad_files_and_goes_on(run_dir, tmp_path, capsys):
    """A missing file, a folder and a non-image are each reported (without the data loader's
    'delete or replace it'); the good image is still predicted; the exit code says something failed."""
    from PIL import Image
    from minicct.data import get_dataset
    _, test = get_dataset("shapes")
    good = tmp_path / "good.png"
    Image.fromarray(test.images[0]).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    folder = tmp_path / "folder"
    folder.mkdir()
    capsys.readouterr()
    code = run_cli(predict.main, [str(tmp_path / "missing.png"), str(folder), str(bad), str(good),
                                  "--checkpoint", str(run_dir / "last.npz")], prog="minicct.predict")
    out, err = capsys.readouterr()
    assert code == 2
    assert out.splitlines()[0] == str(good) and len(out.splitlines()) == 6
    lines = err.splitlines()
    assert len(lines) == 3 and all(l.startswith("minicct.predict: skipped ") for l in lines)
    assert "missing.png: no such file" in lines[0] and "is a folder" in lines[1] and "bad.jpg could not be read" in lines[2]
    assert "delete or replace" not in err and "Traceback" not in err

