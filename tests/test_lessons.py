"""Every lesson runs, in its default mode, and every claim it asserts holds.

Each file ``lessons/NN_*.py`` is run as a learner would run it — ``python lessons/NN_topic.py`` from
the repository root — in a fresh interpreter, so a lesson cannot lean on state left by another.
The list is found on disk, so a new lesson is tested the moment it is added.
"""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))
TIMEOUT_S = 600  # a lesson takes <= 60 s on 2 free cores; a busy shared machine can be several times slower


def test_lessons_are_found():
    assert LESSONS, "no lessons/NN_*.py files found"
    numbers = [int(p.name[:2]) for p in LESSONS]
    assert len(set(numbers)) == len(numbers), "two lessons share a number"


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs(lesson):
    # PYTHONPATH: the repository's minicct, whether or not it is installed (`pip install -e .`)
    env = dict(os.environ, MINICCT_DEVICE="cpu", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run([sys.executable, str(lesson.relative_to(ROOT))], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{lesson.name} did not finish in {TIMEOUT_S} s")
    assert proc.returncode == 0, (f"{lesson.name} exited with {proc.returncode}\n--- stdout (tail) ---\n"
                                  f"{proc.stdout[-3000:]}\n--- stderr (tail) ---\n{proc.stderr[-3000:]}")
    # The promise of lessons/README.md: every lesson ends by saying its claims held.
    assert proc.stdout.rstrip().endswith(f"All claims of lesson {lesson.name[:2]} hold.") or \
        f"All claims of lesson {lesson.name[:2]} hold (" in proc.stdout.splitlines()[-1], proc.stdout[-500:]


def _run(args, **extra_env):
    env = dict(os.environ, MINICCT_DEVICE="cpu", PYTHONUNBUFFERED="1", **extra_env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def test_lesson_19_opens_a_checkpoint_of_the_training_command(tmp_path):
    """Lesson 19 tells the reader to train longer and come back with --checkpoint: a file written by
    `python -m minicct.train` (not only lesson 17's) must open."""
    run = _run(["-m", "minicct.train", "shapes", "--epochs", "1", "--train-limit", "256", "--test-limit", "128",
                "--workers", "0", "--output", str(tmp_path / "run")])
    assert run.returncode == 0, run.stderr[-2000:]
    proc = _run(["lessons/19_inside_the_model.py", "--checkpoint", str(tmp_path / "run" / "best.npz")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "All claims of lesson 19 hold." in proc.stdout


@pytest.mark.parametrize("content", [None, b"not an npz file\n"], ids=["missing", "text-file"])
def test_lesson_19_bad_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "x.npz"
    if content is not None:
        path.write_bytes(content)
    proc = _run(["lessons/19_inside_the_model.py", "--checkpoint", str(path)])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "allow_pickle" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "--checkpoint" in proc.stderr


def test_lesson_17_without_cifar_data_says_what_to_do(tmp_path):
    # A proxy that refuses at once: the download fails here even on a machine with a network.
    proc = _run(["lessons/17_training_cct.py", "--cifar10", "--data-dir", str(tmp_path / "none")],
                http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "lesson 17: error:" in proc.stderr
