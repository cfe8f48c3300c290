"""The package as installed: pyproject.toml agrees with the requirements files, and nothing finds
minicct by rewriting sys.path (the editable install, `-e .` in requirements.txt, does that)."""
import pathlib
import re

import pytest

import minicct

ROOT = pathlib.Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def requirement_lines(name):
    lines = (ROOT / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_pyproject_agrees_with_the_requirements_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = requirement_lines("requirements.txt")
    assert reqs[-1] == "-e .", "requirements.txt should end by installing minicct itself"
    assert project["dependencies"] + project["optional-dependencies"]["test"] == reqs[:-1]
    gpu = [r for r in requirement_lines("requirements-gpu.txt") if not r.startswith("-r")]
    assert project["optional-dependencies"]["gpu"] == gpu
    assert project["dynamic"] == ["version"] and minicct.__version__


def test_nothing_rewrites_sys_path_or_pythonpath():
    for path in list((ROOT / "lessons").glob("*.py")) + list((ROOT / "minicct").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"sys\.path\.(insert|append)|PYTHONPATH=", text), path
