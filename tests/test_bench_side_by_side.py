"""python -m minicct.bench side-by-side, end to end on a tiny fake CIFAR-10 (a few hundred images,
3 epochs): both sides run, write the CSV and the PNG, follow the same schedule (the lr of every
epoch, the epoch mixing stops) and resume where they stopped. The PyTorch side needs torch,
torchvision and timm; without them those tests skip, saying so."""
import csv
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicct.bench import side_by_side as sbs

ROOT = Path(__file__).resolve().parents[1]
MISSING = sbs.torch_missing()
needs_torch = pytest.mark.skipif(bool(MISSING), reason=f"the PyTorch side needs {', '.join(MISSING)} "
                                                       f"(optional: {sbs.INSTALL})")
EPOCHS = 3


def write_fake_cifar(root, n_train=260, n_test=60, seed=0):
    """root/cifar-10-batches-py in the official format: 5 train batches, a test batch, the meta file.
    Images: one colour per class plus noise (something to learn), labels cycling through the classes."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    colours = rng.integers(0, 256, (10, 3))

    def batch(n, offset):
        labels = [(offset + i) % 10 for i in range(n)]
        img = colours[labels][:, :, None, None] + rng.integers(-40, 41, (n, 3, 32, 32))
        return {b"data": np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072), b"labels": labels}

    for i in range(5):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(batch(n_train // 5, i), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test, 0), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{c}".encode() for c in range(10)]}, f)
    return Path(root)


def run_cmd(*argv, check=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               MINICCT_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "minicct.bench", "side-by-side", *argv], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def table(stdout):
    """The closing table of the command's output."""
    return stdout[stdout.rindex("final top-1"):]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_cifar(tmp_path_factory.mktemp("fake_cifar"))


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "out"
    r = run_cmd("--epochs", str(EPOCHS), "--data-dir", str(data), "--out", str(out), "--threads", "1",
                "--train-limit", "128")
    return out, r.stdout


# ---- the schedule: hand-computed values, not the code's own arithmetic --------------------------------
@pytest.mark.parametrize("n, expected", [
    (310, dict(warmup=10, cosine=300, cooldown=10, mixup_off=175)),   # the paper's run itself
    (20, dict(warmup=1, cosine=19, cooldown=1, mixup_off=11)),        # 10*20/310 = 0.65 -> 1; 175*20/310 = 11.3
    (31, dict(warmup=1, cosine=30, cooldown=1, mixup_off=18)),        # 175*31/310 = 17.5: half rounds up
    (62, dict(warmup=2, cosine=60, cooldown=2, mixup_off=35)),
    (3, dict(warmup=1, cosine=3, cooldown=0, mixup_off=2)),           # at least one warm-up epoch
])
def test_scaled_schedule(n, expected):
    assert sbs.scaled_schedule(n) == dict(expected, epochs=n)


def lr_expected(epoch, cosine=3, base=5.5e-4, low=1e-5):
    """The paper's schedule for the 3-epoch run: epoch 0 the warm-up's start, then timm's cosine
    evaluated at the epoch (the warm-up overwrites the cosine's first epoch), no cooldown."""
    if epoch == 0:
        return low
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * epoch / cosine))


# ---- end to end ---------------------------------------------------------------------------------------
@needs_torch
def test_both_sides_run_the_same_schedule(full_run):
    out, stdout = full_run
    rows = read_csv(out / "side_by_side.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    for e, r in enumerate(rows):
        # the learning rate each side really set, equal to each other and to the paper's formula
        assert float(r["lr_minicct"]) == pytest.approx(lr_expected(e), rel=1e-9), e
        assert float(r["lr_torch"]) == pytest.approx(lr_expected(e), rel=1e-9), e
        # mixing seen in the targets each side trained on: on before epoch 2 (= round(175 * 3 / 310)), off after
        for side in ("minicct", "torch"):
            mixed = float(r[f"mixed_{side}"])
            assert (mixed > 0.5) if e < 2 else (mixed == 0.0), (side, e, mixed)
            assert 0 <= float(r[f"test_top1_{side}"]) <= 100 and float(r[f"train_loss_{side}"]) > 0
            assert float(r[f"seconds_{side}"]) > 0
    png = Image.open(out / "side_by_side.png")
    assert png.format == "PNG" and png.size[0] > png.size[1] > 100
    assert "mixing off from epoch 2" in stdout and "Posterize" in stdout and "paper-era box" in stdout
    table = stdout[stdout.index("final top-1"):]
    assert "minicct " in table and "PyTorch " in table and f"{EPOCHS}/{EPOCHS}" in table
    assert "minicct - PyTorch: final" in table


@needs_torch
def test_stop_and_resume_give_the_uninterrupted_run(full_run, data, tmp_path):
    """Stopped after 2 of 3 epochs, then resumed one side at a time: the same numbers as the
    uninterrupted run (each epoch's randomness is a function of seed and epoch on both sides)."""
    out = tmp_path / "out"
    common = ["--epochs", str(EPOCHS), "--data-dir", str(data), "--out", str(out), "--threads", "1",
              "--train-limit", "128"]
    first = run_cmd(*common, "--stop-epoch", "2")
    assert table(first.stdout).count(" 2/3 ") == 2
    assert len(read_csv(out / "side_by_side.csv")) == 2
    # one side at a time (as across two sessions): the other side's epochs stay in the CSV and the table
    again = run_cmd(*common, "--resume", "--sides", "minicct")
    assert "resumed" in again.stdout
    assert "minicct     3/3" in table(again.stdout) and "PyTorch     2/3" in table(again.stdout)
    rows = read_csv(out / "side_by_side.csv")
    assert len(rows) == 3 and rows[2]["test_top1_torch"] == "" and rows[1]["test_top1_torch"] != ""
    again = run_cmd(*common, "--resume", "--sides", "torch")
    assert "resumed" in again.stdout and table(again.stdout).count(" 3/3 ") == 2
    got, want = read_csv(out / "side_by_side.csv"), read_csv(full_run[0] / "side_by_side.csv")
    assert len(got) == len(want) == EPOCHS
    for a, b in zip(got, want):
        for key in a:
            if key.startswith("seconds"):
                continue
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-6), key


def test_both_sides_start_from_the_same_weights(data, tmp_path):
    """The trainer's model before its first step is the one the PyTorch side copies."""
    train, test, _ = sbs.load_data(data, 20, 20)
    config = sbs.recipe_config(sbs.scaled_schedule(3), 7, 0, data, tmp_path / "m", 20, 20, batch_size=10)
    trainer = sbs._side_trainer(lambda side, recs: None)(config, log=lambda s: None, progress=False)
    args = sbs.recipe_args(sbs.scaled_schedule(3), 7, 0, data, tmp_path / "m2")
    ours = sbs.initial_model(args, train).state_dict()
    theirs = trainer.model.state_dict()
    assert list(ours) == list(theirs)
    for k in ours:
        assert np.array_equal(ours[k], theirs[k]), k
    # ... and the two sides train on the same images
    assert np.array_equal(trainer.train_set.images, train.images)
    assert np.array_equal(trainer.test_set.labels, test.labels)
    trainer.train_loader.close()


# ---- the PyTorch side's deliberate differences from timm 1.0.31 ------------------------------------
@needs_torch
def test_cutmix_box_is_the_paper_era_one():
    """An odd box side (15 = int(32 * 15/32)) gives 2 * (15 // 2) = 14 rows with the paper-era box;
    timm >= 1.0.29 would give 15. The Mixup subclass pastes exactly that box."""
    import torch
    lam = 1 - (15 / 32) ** 2
    np.random.seed(0)
    for _ in range(20):
        (y0, y1, x0, x1), got = sbs.paper_era_box(32, 32, lam)
        if 0 < y0 and y1 < 32 and 0 < x0 and x1 < 32:     # not clipped by the border
            assert (y1 - y0, x1 - x0) == (14, 14)
            assert got == pytest.approx(1 - 14 * 14 / 1024)
    mix = sbs._paper_era_mixup_class()(mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0, num_classes=2)
    mix._params_per_batch = lambda: (lam, True)
    x = torch.zeros(2, 1, 32, 32)
    np.random.seed(1)
    for _ in range(20):
        x[0], x[1] = 0.0, 1.0                      # image 0 gets a box of ones from its partner
        got = mix._mix_batch(x)
        rows = torch.nonzero(x[0, 0].sum(1)).flatten()
        cols = torch.nonzero(x[0, 0].sum(0)).flatten()
        if 0 < rows[0] and rows[-1] < 31 and 0 < cols[0] and cols[-1] < 31:
            assert (len(rows), len(cols)) == (14, 14)
        assert got == pytest.approx(1 - float(x[0].sum()) / 1024)


@needs_torch
def test_posterize_to_zero_bits_gives_black_as_pillow_9():
    sbs._import_timm()
    from timm.data.auto_augment import AugmentOp
    from minicct.data import get_dataset
    img = Image.fromarray(np.full((8, 8, 3), 200, np.uint8))
    assert np.asarray(sbs._posterize_pillow9(img, 0)).max() == 0
    assert np.array_equal(np.asarray(sbs._posterize_pillow9(img, 1)), np.full((8, 8, 3), 128))
    train, _ = get_dataset("shapes", n_train=10, n_test=10)
    recipe = sbs.recipe_args(sbs.scaled_schedule(3), 0, 0, None, "unused")
    ops = [t for t in sbs.train_transform(recipe, train).transforms if hasattr(t, "ops")][0].ops
    posterize = [op for op in ops if op.name.startswith("Posterize")]
    assert posterize and all(op.aug_fn is sbs._posterize_pillow9 for op in posterize)
    op = AugmentOp(posterize[0].name, prob=1.0, magnitude=10, hparams={})
    op.aug_fn = posterize[0].aug_fn
    assert np.asarray(op(img)).max() == 0           # magnitude 10 -> 0 bits, no ValueError


# ---- bad input: one line, no traceback ----------------------------------------------------------------
def test_missing_torch_says_how_to_install(monkeypatch, capsys):
    from minicct.bench.__main__ import main
    monkeypatch.setattr(sbs, "torch_missing", lambda: ["timm"])
    assert main(["side-by-side", "--sides", "minicct,torch"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("minicct.bench side-by-side: error:")
    assert "timm" in err and "pip install --no-deps timm==1.0.31 torchvision==0.28.0" in err


@pytest.mark.parametrize("argv, words", [
    (["--sides", "numpy"], "--sides numpy"),
    (["--epochs", "0"], "--epochs 0"),
    (["--workers", "-1"], "--workers -1"),
    (["--device", "gpu"], "--device gpu"),
    (["--resume"], "--resume"),                     # nothing in --out to continue
    (["--train-limit", "20"], "--train-limit 20"),  # less than one batch of 128
])
def test_bad_flags_one_line(argv, words, data, tmp_path, capsys):
    from minicct.bench.__main__ import main
    rc = main(["side-by-side", "--data-dir", str(data), "--out", str(tmp_path / "o"), "--sides", "minicct", *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and err.startswith("minicct.bench side-by-side: error:"), err
    assert words in err, err


def test_the_second_side_may_start_beside_the_first(tmp_path):
    """One side after the other in one --out: the second starts without --resume when the settings
    match; a side that already ran there, or other settings, is one clear error."""
    from types import SimpleNamespace
    out = tmp_path / "o"
    args = SimpleNamespace(epochs=20, seed=0, train_limit=None, test_limit=None, resume=False)
    sbs._settings(args, out, ["minicct"])
    (out / "minicct").mkdir()
    (out / "minicct" / "last.npz").write_bytes(b"")
    sbs._settings(args, out, ["torch"])                                 # the PyTorch side next: fine
    with pytest.raises(sbs.UsageError, match="already holds the minicct side's run"):
        sbs._settings(args, out, ["minicct"])
    with pytest.raises(sbs.UsageError, match="--epochs 20"):
        sbs._settings(SimpleNamespace(**{**vars(args), "epochs": 10}), out, ["torch"])
    sbs._settings(SimpleNamespace(**{**vars(args), "resume": True}), out, ["minicct"])   # resuming: fine


def test_no_data_one_line(tmp_path, capsys):
    from minicct.bench.__main__ import main
    assert main(["side-by-side", "--data-dir", str(tmp_path), "--sides", "minicct"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--data-dir {tmp_path}" in err and "cifar-10-batches-py" in err


def test_limits_are_class_balanced(data):
    from minicct.data.datasets import balanced_subset
    train, test, _ = sbs.load_data(data, 50, 25)
    assert np.bincount(train.labels, minlength=10).tolist() == [5] * 10
    assert sorted(np.bincount(test.labels, minlength=10).tolist()) == [2] * 5 + [3] * 5
    # the images kept are those the trainer's --train-limit keeps
    full, _, _ = sbs.load_data(data, None, None)
    assert np.array_equal(train.images, balanced_subset(full, 50).images)
