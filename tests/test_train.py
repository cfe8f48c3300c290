"""python -m minicct.train: a smoke run on shapes, resume = uninterrupted bit for bit, the NaN stop,
one-line errors for bad input, atomic checkpoints, metrics.csv and the curves PNG.

The runs use a toy CCT (width 32, two layers, so drop-path is active) on a few hundred shapes images, so each takes a second or two.
"""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("minicct.models", reason="minicct.models not built yet")
pytest.importorskip("minicct.functional", reason="minicct.functional not built yet")

from minicct import train  # noqa: E402
from minicct.training import checkpoint as ckpt_io  # noqa: E402
from minicct.errors import RunError  # noqa: E402
from minicct.training.config import PRESETS, parse_args  # noqa: E402
from minicct.training.errors import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model-kwargs", "embedding_dim=32", "num_layers=2", "num_heads=2", "mlp_ratio=1", "in_planes=16"]


pytestmark = pytest.mark.usefixtures("generate_datasets_once")  # see conftest.py


def tiny_args(out, *extra, epochs=3, limit=192):
    """A toy shapes run: 192 train / 96 test images, batch 32, full paper augmentation (so every
    random generator is exercised), warmup 1, cooldown 0."""
    return ["shapes", *TINY, "--epochs", str(epochs), "--warmup-epochs", "1", "--cooldown-epochs", "0",
            "--batch-size", "32", "--eval-batch-size", "64", "--train-limit", str(limit),
            "--test-limit", "96", "--aa", "rand-m9-mstd0.5-inc1", "--mixup", "0.8", "--cutmix", "1.0",
            "--mixup-off-epoch", "2", "--reprob", "0.25", "--workers", "0", "--output", str(out), *extra]


def run(argv, capsys):
    code = run_cli(train.main, argv, prog="minicct.train")
    out, err = capsys.readouterr()
    return code, out, err


def weights(path):
    return ckpt_io.load_checkpoint(path)["model"]["state"]


# ---- settings ----------------------------------------------------------------------------------
def test_defaults_are_the_paper_recipe():
    c = parse_args(["cifar10"])
    assert (c.model.name, c.optim.batch_size, c.optim.lr, c.optim.weight_decay) == ("cct_2_3x2_32", 128, 5.5e-4, 0.06)
    s = c.schedule
    assert (s.epochs, s.warmup_epochs, s.warmup_lr, s.cooldown_epochs, s.min_lr, s.total_epochs) == (
        300, 10, 1e-5, 10, 1e-5, 310)
    a = c.augment
    assert (a.aa, a.mixup, a.cutmix, a.mixup_off_epoch, a.reprob, a.smoothing) == (
        "rand-m9-mstd0.5-inc1", 0.8, 1.0, 175, 0.25, 0.1)
    assert c.run.preset is None and c.notes == ()


def test_presets_apply_and_flags_win():
    c = parse_args(["shapes"])
    assert c.run.preset == "shapes" and c.schedule.epochs == PRESETS["shapes"]["epochs"] and c.augment.mixup == 0.0
    c = parse_args(["shapes", "--epochs", "2"])
    assert c.schedule.epochs == 2 and "epochs" in c.explicit
    assert parse_args(["shapes"]).model.kwargs == {"embedding_dim": 64, "in_planes": 32,
                                                   "attention_dropout": 0.0, "stochastic_depth": 0.0}
    assert parse_args(["shapes"]).model.label == "cct_2_3x2_32-w64-c32"   # the narrow model says so
    assert parse_args(["shapes", "--model", "cct_7_3x1_32"]).model.kwargs == {}  # the preset's toy sizes go too
    c = parse_args(["cifar10", "--preset", "fast-cpu"])
    assert c.schedule.epochs == PRESETS["fast-cpu"]["epochs"] and c.schedule.time_limit == 30
    # fast-cpu's tokenizer has 32 inner filters (issue 13, session 6), and its run folder says so
    assert c.model.kwargs == {"attention_dropout": 0.0, "stochastic_depth": 0.0, "in_planes": 32}
    assert c.model.label == "cct_2_3x2_32-c32"
    assert parse_args(["cifar10"]).model.label == "cct_2_3x2_32"       # the paper's model: its own name


def test_fast_cpu_preset_flips_at_test_time_unless_a_mirror_is_another_class():
    """fast-cpu: batch 32, test-time flip, an evaluation every 4th epoch (issue 13's measurements).
    Where a mirror image is not of the same class (--hflip 0) the preset's flip is off with a note;
    --tta-flip given there is refused; --no-tta-flip turns it off."""
    c = parse_args(["cifar10", "--preset", "fast-cpu"])
    assert (c.optim.batch_size, c.run.tta_flip, c.run.eval_every, c.optim.ema) == (32, True, 4, 0.0)
    c = parse_args(["cifar10", "--preset", "fast-cpu", "--hflip", "0"])
    assert c.run.tta_flip is False and any("--tta-flip is off: --hflip 0 says" in n for n in c.notes), c.notes
    with pytest.raises(RunError, match="drop --tta-flip"):
        parse_args(["cifar10", "--preset", "fast-cpu", "--hflip", "0", "--tta-flip"])
    c = parse_args(["cifar10", "--preset", "fast-cpu", "--no-tta-flip"])
    assert c.run.tta_flip is False and not any("tta-flip" in n for n in c.notes)
    assert parse_args(["cifar10", "--tta-flip"]).run.tta_flip is True
    assert parse_args(["cifar10"]).run.tta_flip is False


def test_explicit_epochs_turn_a_presets_time_limit_off():
    """fast-cpu sizes its run to 30 minutes; --epochs 7 asks for 7 epochs, so the preset's time limit
    (which would re-size the run after its first epoch) is off, and a note says so. Both flags:
    the time limit stays (--epochs is then the plan it re-sizes)."""
    c = parse_args(["cifar10", "--preset", "fast-cpu", "--epochs", "7"])
    assert c.schedule.epochs == 7 and c.schedule.time_limit is None
    assert any("--time-limit 30 is off" in n for n in c.notes), c.notes
    c = parse_args(["cifar10", "--preset", "fast-cpu", "--epochs", "7", "--time-limit", "20"])
    assert c.schedule.time_limit == 20 and not any("is off" in n for n in c.notes)
    c = parse_args(["cifar10", "--preset", "fast-cpu", "--time-limit", "20"])
    assert c.schedule.time_limit == 20 and c.schedule.epochs == PRESETS["fast-cpu"]["epochs"]


def test_help_documents_every_flag():
    """Every setting in DEFAULTS has a flag, and every flag is in --help with a sentence of its own
    (the list comes from the parser, so a new flag is covered without editing this test)."""
    from minicct.training.config import DEFAULTS, build_parser
    out = subprocess.run([sys.executable, "-m", "minicct.train", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60).stdout
    actions = [a for a in build_parser()._actions if a.dest != "help"]
    assert {a.dest for a in actions} == set(DEFAULTS)
    for a in actions:
        assert a.help and len(a.help) > 10, a.dest
        for name in a.option_strings or [a.dest]:
            assert name in out, name
    assert "--hflip" in out and "--glove" in out and "--preset" in out and "--cuda-graph" in out   # the parser really was read


def test_short_epochs_scale_the_recipe_and_say_so():
    """--epochs 1 alone used to run 11 epochs (10 of them warming up at 1e-5)."""
    c = parse_args(["cifar10", "--epochs", "1"])
    s = c.schedule
    assert (s.epochs, s.warmup_epochs, s.cooldown_epochs, s.total_epochs) == (1, 0, 0, 1)
    assert "warm-up 10 -> 0, cooldown 10 -> 0" in c.notes[0] and "--warmup-epochs" in c.notes[0]
    s = parse_args(["cifar10", "--epochs", "30"]).schedule
    assert (s.warmup_epochs, s.cooldown_epochs, s.total_epochs) == (1, 1, 31)
    s = parse_args(["cifar10", "--epochs", "150"]).schedule
    assert (s.warmup_epochs, s.cooldown_epochs) == (5, 5)
    s = parse_args(["cifar10", "--epochs", "30", "--warmup-epochs", "3"]).schedule   # given: kept
    assert (s.warmup_epochs, s.cooldown_epochs) == (3, 1)
    c = parse_args(["cifar10", "--epochs", "600"])                       # longer: the recipe's own
    assert (c.schedule.warmup_epochs, c.schedule.cooldown_epochs, c.notes) == (10, 10, ())
    assert parse_args(["cifar10"]).schedule.total_epochs == 310          # no --epochs: the recipe
    s = parse_args(["shapes", "--epochs", "3"]).schedule                 # a preset's own warm-up stays
    assert (s.warmup_epochs, s.cooldown_epochs) == (0, 0)
    saved = parse_args(["cifar10", "--epochs", "30"]).flags()            # --resume: the saved 1/1 stay
    s = parse_args(["--resume", "x", "--epochs", "20"], saved=saved).schedule
    assert (s.epochs, s.warmup_epochs, s.cooldown_epochs) == (20, 1, 1)


def test_data_workers_default_by_device():
    """2 beside a CPU step (1 on one core); every core but one beside a GPU step; a flag wins."""
    from minicct.parallel import default_threads
    from minicct.training.config import default_workers
    assert [default_workers("cpu", n) for n in (1, 2, 16)] == [1, 2, 2]
    assert [default_workers("gpu", n) for n in (1, 2, 16)] == [1, 1, 15]
    assert parse_args(["cifar10"]).run.workers == min(2, default_threads())
    assert parse_args(["cifar10", "--workers", "0"]).run.workers == 0


def test_config_is_frozen_and_time_limit_makes_a_new_one():
    import dataclasses
    c = parse_args(["cifar10"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.schedule.epochs = 3
    d = c.with_epochs(12)
    assert (c.schedule.epochs, d.schedule.epochs, d.schedule.total_epochs, d.optim) == (300, 12, 22, c.optim)
    assert d.flags()["epochs"] == 12 and c.flags()["epochs"] == 300


# ---- a run --------------------------------------------------------------------------------------
def test_shapes_smoke_run_writes_everything(tmp_path, capsys):
    code, out, err = run(tiny_args(tmp_path, epochs=2), capsys)
    assert code == 0, err
    assert "epoch   0/2" in out and "epoch   1/2" in out and "top-1" in out and "data wait" in out
    assert "to go" in out  # the time estimate after the first epoch
    # the header: the narrow model's label, every part of the schedule, plurals
    assert "cct_2_3x2_32-w32-c16 (cct_2_3x2_32 with embedding_dim=32" in out
    assert "2 epochs (cosine 2 with a warm-up of 1 from lr 1e-05 inside it, then a cooldown of 0" in out
    assert "6 classes" in out and "0 data workers" in out
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss,test_loss,test_top1,test_top5") and len(rows) == 3
    from PIL import Image
    with Image.open(tmp_path / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100
    ck = ckpt_io.load_checkpoint(tmp_path / "last.npz")
    assert ck["epoch"] == 2 and ck["data"]["classes"][0] == "circle" and len(ck["history"]) == 2
    assert (tmp_path / "best.npz").is_file()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_resume_ends_bit_identical(tmp_path, capsys):
    """3 epochs straight == 2 epochs, stop, --resume auto for the last one (dropout, drop-path,
    RandAugment, Mixup/CutMix, erasing and the mixing switch-off at epoch 2 all in play)."""
    code, _, err = run(tiny_args(tmp_path / "straight"), capsys)
    assert code == 0, err
    code, _, err = run(tiny_args(tmp_path / "split", "--stop-epoch", "2"), capsys)
    assert code == 0, err
    assert ckpt_io.load_checkpoint(tmp_path / "split" / "last.npz")["epoch"] == 2
    # the resumed run takes every setting from the checkpoint; only the folder is named
    code, out, err = run(["--resume", str(tmp_path / "split" / "last.npz"), "--workers", "1"], capsys)
    assert code == 0, err
    assert "resumed from" in out and "schedule differs" not in out
    a, b = weights(tmp_path / "straight" / "last.npz"), weights(tmp_path / "split" / "last.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    oa = ckpt_io.load_checkpoint(tmp_path / "straight" / "last.npz")["optimizer"]["state"]
    ob = ckpt_io.load_checkpoint(tmp_path / "split" / "last.npz")["optimizer"]["state"]
    for k in oa:
        np.testing.assert_array_equal(oa[k]["exp_avg_sq"], ob[k]["exp_avg_sq"])
    rows = (tmp_path / "split" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]


def test_resume_with_another_schedule_says_so(tmp_path, capsys):
    """The checkpoint keeps the schedule it trained with; a resume whose flags change it says what
    changed, in one line, and goes on with the new one."""
    code, _, err = run(tiny_args(tmp_path, "--stop-epoch", "1", "--aa", "none", "--mixup", "0", "--cutmix", "0",
                                 epochs=2), capsys)
    assert code == 0, err
    code, out, err = run(["--resume", str(tmp_path / "last.npz"), "--epochs", "3", "--stop-epoch", "2"], capsys)
    assert code == 0, err
    note = [line for line in out.splitlines() if "schedule differs" in line]
    assert len(note) == 1 and "t_initial 2 -> 3" in note[0], out


def test_ema_and_flip_resume_bit_identical_and_evaluate_agrees(tmp_path, capsys):
    """--ema and --tta-flip: each epoch evaluates the weight average on images and their mirrors; a
    resumed run continues the same average bit for bit; evaluate and the checkpoint's model use the
    average, so evaluate's top-1 is the run's."""
    extra = ("--ema", "0.9", "--tta-flip")
    code, out, err = run(tiny_args(tmp_path / "straight", *extra), capsys)
    assert code == 0, err
    assert "evaluated on a moving average of the weights (--ema 0.9) and on each image and its mirror" in out
    code, _, err = run(tiny_args(tmp_path / "split", *extra, "--stop-epoch", "2"), capsys)
    assert code == 0, err
    code, _, err = run(["--resume", str(tmp_path / "split" / "last.npz"), "--workers", "1"], capsys)
    assert code == 0, err
    a = ckpt_io.load_checkpoint(tmp_path / "straight" / "last.npz")
    b = ckpt_io.load_checkpoint(tmp_path / "split" / "last.npz")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 3 * 192 // 32
    for k in a["ema"]["average"]:
        np.testing.assert_array_equal(a["ema"]["average"][k], b["ema"]["average"][k], err_msg=k)
    rows = [r.split(",")[3:5] for r in (tmp_path / "straight" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(rows) == 3
    assert rows == [r.split(",")[3:5] for r in (tmp_path / "split" / "metrics.csv").read_text().splitlines()[1:]]
    # the checkpoint's model is the average (not the last step's weights), and evaluate says so
    model = ckpt_io.model_from_checkpoint(a)
    live = ckpt_io.model_from_checkpoint(a, average=False)
    name = next(iter(a["ema"]["average"]))
    np.testing.assert_array_equal(model.state_dict()[name], a["ema"]["average"][name])
    assert not np.array_equal(live.state_dict()[name], model.state_dict()[name])
    from minicct import evaluate
    code = run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "straight" / "last.npz"), "--limit", "96"])
    out = capsys.readouterr().out
    assert code == 0 and "weight average --ema 0.9, test-time flip" in out
    loss, top1 = map(float, rows[-1])
    assert f"top-1 {top1:.2f}%" in out and f"loss {loss:.4f}" in out, (rows[-1], out)


def test_evaluate_weights_last_and_flip_off_undo_ema_and_tta(tmp_path, capsys):
    """evaluate --weights last --flip off on a run trained with --ema and --tta-flip gives what a run
    without them (the same training: neither changes a step) evaluated itself; --weights average on
    a checkpoint without an average is one clear error."""
    code, _, err = run(tiny_args(tmp_path / "both", "--ema", "0.9", "--tta-flip"), capsys)
    assert code == 0, err
    code, _, err = run(tiny_args(tmp_path / "plain"), capsys)
    assert code == 0, err
    a = ckpt_io.load_checkpoint(tmp_path / "both" / "last.npz")
    b = ckpt_io.load_checkpoint(tmp_path / "plain" / "last.npz")
    for k in b["model"]["state"]:      # the same training
        np.testing.assert_array_equal(a["model"]["state"][k], b["model"]["state"][k], err_msg=k)
    from minicct import evaluate
    loss, top1 = map(float, (tmp_path / "plain" / "metrics.csv").read_text().splitlines()[-1].split(",")[3:5])
    code = run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "both" / "last.npz"), "--limit", "96",
                                   "--weights", "last", "--flip", "off"])
    out = capsys.readouterr().out
    assert code == 0 and "(last weights, not the average)" in out, out
    assert f"top-1 {top1:.2f}%" in out and f"loss {loss:.4f}" in out, out
    # each flag alone changes only its own half: the average without the flip, the flip on the last weights
    outs = {}
    for flags in (("--weights", "average", "--flip", "off"), ("--weights", "last", "--flip", "on")):
        code = run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "both" / "last.npz"), "--limit", "96", *flags])
        outs[flags[1]] = capsys.readouterr().out
        assert code == 0
    assert "(weight average --ema 0.9)" in outs["average"]
    assert "(last weights, not the average, test-time flip)" in outs["last"]
    losses = {out.split("loss ")[1].split()[0] for out in [out, *outs.values()]}
    assert len(losses) == 3, (out, outs)
    code = run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "plain" / "last.npz"), "--weights", "average"],
                   prog="minicct.evaluate")
    err = capsys.readouterr().err
    assert code == 2 and "--weights average" in err and "no moving average" in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_with_flip_averages_the_mirror_images_logits():
    """evaluate(flip=True)'s loss is the cross-entropy of the mean of the logits of x and of x
    mirrored left-right (the last axis), computed here by hand."""
    from minicct import Tensor, manual_seed, no_grad
    from minicct.models import create_model
    from minicct.training.evaluation import evaluate
    manual_seed(0)
    model = create_model("cct_2_3x2_32", num_classes=4, img_size=16, embedding_dim=16, num_heads=2,
                         in_planes=8)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 0, 1])
    with no_grad():
        model.eval()
        z = 0.5 * (model(Tensor(x)).numpy() + model(Tensor(np.flip(x, axis=3).copy())).numpy())
    z = z.astype(np.float64)
    expected = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(6), y])
    got = evaluate(model, [(x, y)], "cpu", flip=True)
    assert got["test_loss"] == pytest.approx(expected, rel=1e-6)
    plain = evaluate(model, [(x, y)], "cpu")
    assert plain["test_loss"] != pytest.approx(expected, rel=1e-6)   # the flip changes something here


def test_sched_on_updates_sets_the_lr_before_every_update(tmp_path, monkeypatch):
    """With --sched-on-updates the optimizer sees the schedule at fractional epochs: within the
    warm-up epoch the lr climbs step by step (6 steps of 32 images here), then follows the cosine."""
    from minicct.optim import AdamW
    from minicct.optim.scheduler import CosineLRScheduler
    from minicct.training.trainer import Trainer
    seen = []
    real = AdamW.step

    def record(self):
        seen.append(self.param_groups[0]["lr"])
        return real(self)

    monkeypatch.setattr(AdamW, "step", record)
    c = parse_args(tiny_args(tmp_path, "--sched-on-updates", "--aa", "none", "--mixup", "0",
                             "--cutmix", "0", epochs=2))
    Trainer(c, log=lambda *a: None, progress=False).fit()
    s = c.schedule
    ref = CosineLRScheduler(c.optim.lr, 2, min_lr=s.min_lr, warmup_epochs=1, warmup_lr=s.warmup_lr)
    assert np.allclose(seen, [ref.lr_at(e + s / 6) for e in range(2) for s in range(6)])
    assert all(a < b for a, b in zip(seen[:6], seen[1:6])) and seen[5] < c.optim.lr   # climbing within epoch 0


def test_epochs_within_a_time_limit():
    from minicct.training.trainer import epochs_within
    # 30 min, 10 s set-up + a first epoch of 150 s: 1746 - 160 = 1586 s left -> 10 more epochs
    assert epochs_within(1800, 160, 150) == 11
    assert epochs_within(1800, 160, 150, cooldown_epochs=2) == 9          # the cooldown fits inside
    assert epochs_within(1800, 160, 135) == 12                             # 1586 s / 135 = 11.7
    assert epochs_within(1800, 160, 135, margin=0.0) == 13                 # 1640 s / 135 = 12.1
    assert epochs_within(60, 160, 150) == 1                                # over already: stop
    assert epochs_within(60, 160, 150, warmup_epochs=2) == 3               # never shorter than the warmup + 1
    # --eval-every: the last evaluation (135 s) kept aside: 1451 s / 135 = 10.7 -> 10 more epochs
    assert epochs_within(1800, 160, 135, final_s=135) == 11


def test_eval_every_evaluates_every_nth_epoch_and_the_last(tmp_path, capsys):
    """--eval-every 2 over 5 epochs, stopped after 3 and resumed: evaluated after epochs 1, 2 (the
    last of the first invocation), 3 and 4 (the last); the others are blank in metrics.csv, say so
    in the log, and are never the best."""
    code, out, err = run(tiny_args(tmp_path, "--eval-every", "2", "--stop-epoch", "3", "--aa", "none", epochs=5),
                         capsys)
    assert code == 0, err
    assert "(not evaluated: --eval-every 2)" in out and "--eval-every 2)" in out.split("epoch   0")[0]
    code, out, err = run(["--resume", str(tmp_path / "last.npz")], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [bool(r["test_top1"]) for r in rows] == [False, True, True, True, True]
    best = ckpt_io.load_checkpoint(tmp_path / "last.npz")["best"]
    assert best["test_top1"] == pytest.approx(max(float(r["test_top1"]) for r in rows[1:]), abs=1e-3)
    assert (tmp_path / "curves.png").is_file()


def test_time_limit_with_eval_every_plans_with_a_share_of_the_evaluation(tmp_path, capsys, monkeypatch):
    """With --time-limit the first epoch is evaluated (to time it), and the run is sized with a
    1/N share of an evaluation per epoch plus one whole one kept for the end."""
    from minicct.training import trainer
    seen = {}
    real_fit, real_within = trainer.Trainer._fit_to_time_limit, trainer.epochs_within

    def fit(self, train_s, eval_s):
        seen["train_s"], seen["eval_s"] = train_s, eval_s
        return real_fit(self, train_s, eval_s)

    def within(limit_s, elapsed_s, per_epoch_s, *args, **kw):
        seen["per_epoch_s"], seen["final_s"] = per_epoch_s, kw.get("final_s")
        return real_within(limit_s, elapsed_s, per_epoch_s, *args, **kw)

    monkeypatch.setattr(trainer.Trainer, "_fit_to_time_limit", fit)
    monkeypatch.setattr(trainer, "epochs_within", within)
    code, out, err = run(tiny_args(tmp_path, "--time-limit", "600", "--stop-epoch", "1", "--eval-every", "4",
                                   "--aa", "none", "--mixup", "0", "--cutmix", "0", epochs=2), capsys)
    assert code == 0, err
    assert seen["eval_s"] > 0 and seen["final_s"] == seen["eval_s"]
    assert seen["per_epoch_s"] == pytest.approx(seen["train_s"] + seen["eval_s"] / 4)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert rows[0]["test_top1"]                     # epoch 0 evaluated, though 1 % 4 != 0


def test_estimate_after_the_first_epoch_counts_the_evaluations_ahead(tmp_path, capsys, monkeypatch):
    """The time-to-go line after the first epoch: that epoch's training time for each epoch ahead,
    plus its evaluation time for each epoch ahead that --eval-every evaluates (here 2 and 3 of 1-3),
    not the first epoch's whole time (training + evaluation) for every one."""
    from minicct.training import trainer
    real = trainer.Trainer.train_epoch

    def train_epoch(self, epoch):
        row = real(self, epoch)
        self._times = (100.0, 40.0)          # as if: 100 s of training, 40 s of evaluation
        return row

    monkeypatch.setattr(trainer.Trainer, "train_epoch", train_epoch)
    code, out, err = run(tiny_args(tmp_path, "--eval-every", "3", "--aa", "none", epochs=4), capsys)
    assert code == 0, err
    # 3 x 100 s of training + 2 x 40 s of evaluation (epochs 2 and 3) = 380 s
    assert "about 1m40s per epoch and 40s per evaluation: 3 more epochs, about 6m20s to go" in out, out
    # the first epoch not evaluated: its evaluations ahead are counted, not guessed at 0 s
    def untimed(self, epoch):
        row = real(self, epoch)
        self._times = (100.0, 0.0)
        return row

    monkeypatch.setattr(trainer.Trainer, "train_epoch", untimed)
    code, out, err = run(tiny_args(tmp_path / "b", "--eval-every", "3", "--aa", "none", epochs=4), capsys)
    assert code == 0, err
    assert "about 1m40s per epoch: 3 more epochs, about 5m00s and 2 evaluations to go" in out, out


def test_time_limit_sizes_the_run_and_resume_keeps_it(tmp_path, capsys):
    """A generous limit makes a 2-epoch plan much longer (bounded here by --stop-epoch); the new
    --epochs is in the checkpoint and a resumed run keeps it."""
    code, out, err = run(tiny_args(tmp_path, "--time-limit", "600", "--stop-epoch", "2", "--aa", "none",
                                   "--mixup", "0", "--cutmix", "0", epochs=2), capsys)
    assert code == 0, err
    assert "time limit 600 min" in out and "sized to" in out
    sized = ckpt_io.load_checkpoint(tmp_path / "last.npz")["args"]["epochs"]
    assert sized > 2
    code, out, err = run(["--resume", str(tmp_path / "last.npz"), "--stop-epoch", "3"], capsys)
    assert code == 0, err
    assert f"epoch   2/{sized}" in out and "sized to" not in out
    assert ckpt_io.load_checkpoint(tmp_path / "last.npz")["args"]["epochs"] == sized
    # epochs 1 and 2 followed the new, longer cosine (not the 2-epoch one planned at the start)
    from minicct.optim.scheduler import CosineLRScheduler
    ref = CosineLRScheduler(PRESETS["shapes"]["lr"], sized, min_lr=1e-5, warmup_epochs=1, warmup_lr=1e-5)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()[1:]
    lrs = [float(r.split(",")[1]) for r in rows]
    assert np.allclose(lrs, [ref.lr_at(e) for e in range(3)], rtol=1e-5) and lrs[2] > 1e-3


def test_time_limit_that_leaves_no_room_ends_after_one_epoch(tmp_path, capsys):
    code, out, err = run(tiny_args(tmp_path, "--time-limit", "0.0001", "--aa", "none", epochs=5), capsys)
    assert code == 0, err
    assert "sized to 2 epochs" in out or "sized to 1 epoch " in out
    assert ckpt_io.load_checkpoint(tmp_path / "last.npz")["args"]["epochs"] <= 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings on the way to NaN
def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, capsys):
    code, _, err = run(tiny_args(tmp_path, "--stop-epoch", "1", epochs=2), capsys)
    assert code == 0, err
    before = (tmp_path / "last.npz").read_bytes()
    # an absurd learning rate from epoch 1 on: the weights overflow and the loss becomes NaN/inf
    code, out, err = run(["--resume", "auto", "--output", str(tmp_path), "--lr", "1e38", "--warmup-epochs", "0",
                          "--workers", "2"],  # workers busy when the run stops: they must shut down
                         capsys)
    assert code == 3
    assert "epoch 1, step" in err and "last good checkpoint" in err and "Traceback" not in err
    assert (tmp_path / "last.npz").read_bytes() == before


# ---- bad input: one line, no traceback -----------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["shapes", "--model", "cct_2_3x3_32"], "unknown model"),
    (["cifar10", "--data-dir", "{empty}", "--model", "cct_2_3x3_32"], "unknown model"),  # before any download
    (["/no/such/folder"], "not a directory"),
    (["shapes", "--resume", "/no/such/ckpt.npz"], "no checkpoint"),
    (["shapes", "--aa", "rand-mX", "--train-limit", "256"], "RandAugment"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, argv, words):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{empty}", str(tmp_path / "empty")) for a in argv]
    code, out, err = run(argv + ["--output", str(tmp_path / "o")], capsys)
    assert code == 2 and words in err and "Traceback" not in err


def test_gpu_without_cupy_is_one_clear_line(tmp_path, capsys):
    from minicct import backend
    if backend.gpu_available():
        pytest.skip("a GPU is available here")
    code, out, err = run(["shapes", "--device", "gpu", "--output", str(tmp_path)], capsys)
    assert code == 2 and "CuPy" in err and "Traceback" not in err


def test_existing_run_folder_is_not_overwritten(tmp_path, capsys):
    code, _, err = run(tiny_args(tmp_path, "--stop-epoch", "1", epochs=2), capsys)
    assert code == 0, err
    code, _, err = run(tiny_args(tmp_path, epochs=2), capsys)
    assert code == 2 and "--resume auto" in err
    code, _, err = run(["--resume", str(tmp_path), "--model", "cct_7_3x1_32"], capsys)   # another model
    assert code == 2 and "holds a cct_2_3x2_32 model, but --model cct_7_3x1_32" in err and err.count("\n") == 1


def test_runs_go_to_numbered_folders_and_resume_auto_says_which(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a for a in tiny_args("x", "--stop-epoch", "1", epochs=2) if a not in ("--output", "x")]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    first = Path("runs/shapes-cct_2_3x2_32-w32-c16")
    assert (first / "last.npz").is_file() and f"output: {first}\n" in out
    code, out, err = run(argv, capsys)
    assert code == 0, err
    second = Path("runs/shapes-cct_2_3x2_32-w32-c16-2")
    assert (second / "last.npz").is_file()
    assert f"output: {second} (a new folder, since {first} holds a run; continue that one with --resume {first})" in out
    code, out, err = run(["shapes", *TINY, "--resume", "auto"], capsys)
    assert code == 0, err
    assert f"resumed from {second / 'last.npz'} after epoch 0, 1 epoch to go (--resume auto: the newest of 2 " \
           f"runs, {first}, {second})" in out
    assert ckpt_io.load_checkpoint(second / "last.npz")["epoch"] == 2
    assert ckpt_io.load_checkpoint(first / "last.npz")["epoch"] == 1


def test_resume_remembers_the_data_folder(tmp_path, capsys, monkeypatch):
    """A CIFAR run from --data-dir (here CIFAR's own folder) resumes with --resume PATH alone, from
    another working directory."""
    from test_data_subset import write_cifar10
    folder = write_cifar10(tmp_path / "data", per_batch=16)
    argv = ["cifar10", *TINY, "--epochs", "2", "--stop-epoch", "1", "--warmup-epochs", "0", "--batch-size", "16",
            "--aa", "none", "--mixup", "0", "--cutmix", "0", "--workers", "0", "--data-dir", str(folder),
            "--output", str(tmp_path / "run")]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    saved = ckpt_io.load_checkpoint(tmp_path / "run" / "last.npz")["args"]["data_dir"]
    assert saved == str(folder.resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, err = run(["--resume", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert "resumed from" in out and ckpt_io.load_checkpoint(tmp_path / "run" / "last.npz")["epoch"] == 2


# ---- checkpoints --------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_atomic_write(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    rng = np.random.default_rng(3)
    tree = {"model": {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}, "epoch": 4,
            "rng": rng.bit_generator.state, "history": [{"x": 1.5}], "none": None}
    ckpt_io.save_checkpoint(path, tree)
    back = ckpt_io.load_checkpoint(path)
    np.testing.assert_array_equal(back["model"]["a.weight"], tree["model"]["a.weight"])
    assert back["epoch"] == 4 and back["rng"] == tree["rng"] and back["history"] == [{"x": 1.5}]
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        ckpt_io.save_checkpoint(path, tree)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.npz"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ckpt_io.CheckpointError, match="bad.npz"):
        ckpt_io.load_checkpoint(bad)
    np.savez(tmp_path / "other.npz", x=np.ones(2))
    with pytest.raises(ckpt_io.CheckpointError, match="not a minicct checkpoint"):
        ckpt_io.load_checkpoint(tmp_path / "other.npz")


def test_topk_and_csv(tmp_path):
    from minicct.training.metrics import MetricsCSV, topk_correct
    logits = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.0, 0.1, 0.2]])
    assert topk_correct(logits, np.array([1, 2, 0]), ks=(1, 2, 5)) == (1, 2, 3)
    csv = MetricsCSV(tmp_path / "m.csv", ["epoch", "loss"])
    for e in range(4):
        csv.append({"epoch": e, "loss": 1.0 / (e + 1)})
    csv.truncate(2)
    assert [r["epoch"] for r in csv.rows()] == ["0", "1"]


def test_a_known_dataset_name_is_kept_in_its_one_spelling():
    """'Fashion_MNIST' gets fashion-mnist's preset and is loaded and labelled as fashion-mnist."""
    from minicct.training.config import make_config, parse_flags
    for given, key in (("Fashion_MNIST", "fashion-mnist"), ("CIFAR-10", "cifar10"), ("text_synth", "text-synth")):
        assert make_config(parse_flags([given])).run.dataset == key


def test_another_seed_on_resume_is_refused():
    from minicct.errors import RunError
    from minicct.training.config import make_config, parse_flags
    saved = make_config(parse_flags(["shapes", "--seed", "3"])).flags()
    assert make_config(parse_flags(["--seed", "3"]), saved).run.seed == 3          # the same: fine
    with pytest.raises(RunError, match="--seed 4 with --resume"):
        make_config(parse_flags(["--seed", "4"]), saved)
