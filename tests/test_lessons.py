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
