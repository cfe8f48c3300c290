"""Run folders: where a new run writes, and which checkpoint ``--resume`` names (found and read once).

    runs/<dataset>-<model>/            the first run (last.npz, best.npz, metrics.csv, curves.png)
    runs/<dataset>-<model>-2/, -3/ ... later runs with the same dataset and model: a run never
                                       overwrites another; the header says where it went and why

<model> is the model's label: its name, with ``-w<width>`` when --model-kwargs changes the width.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from minicct.errors import RunError
from minicct.training.checkpoint import load_checkpoint


def default_output(dataset, label) -> Path:
    """``runs/<dataset>-<label>``: where runs go when --output is not given."""
    name = Path(str(dataset)).name or "data"
    return Path("runs") / f"{name}-{label}"


def _numbered(base: Path):
    """base, base-2, base-3, ...: the folders successive runs with the same default output use."""
    yield base
    i = 2
    while True:
        yield base.with_name(f"{base.name}-{i}")
        i += 1


def new_run_folder(output, dataset, label):
    """Where a new (not resumed) run writes, and a note for the header when it is not the obvious
    place. Without --output: the first of runs/<dataset>-<label>, ...-2, ...-3 that holds no
    checkpoint. An explicit --output that already holds a checkpoint is an error."""
    if output:
        out = Path(output)
        if (out / "last.npz").is_file():
            raise RunError(f"--output {out} already holds a run (last.npz): continue it with --resume auto, or "
                           f"choose another --output")
        return out, None
    base = default_output(dataset, label)
    folder = next(f for f in _numbered(base) if not (f / "last.npz").is_file())
    note = None
    if folder != base:
        note = f"a new folder, since {base} holds a run; continue that one with --resume {base}"
    return folder, note


class Resume(NamedTuple):
    """The checkpoint a run continues from: its path, its contents, and how --resume auto found it."""
    path: Path
    ckpt: dict
    note: str


def find_resume(resume, output, dataset, label) -> Resume:
    """The checkpoint ``--resume`` names, read: a file, a run folder (its last.npz), or 'auto' (the
    --output folder's last.npz, else the newest runs/<dataset>-<label>[-N] holding one)."""
    if resume == "auto":
        if output:
            path, note = Path(output) / "last.npz", "--resume auto: the --output folder's last.npz"
        else:
            if dataset is None:
                raise RunError("--resume auto needs the dataset to find runs/<dataset>-<model>: e.g. "
                               "python -m minicct.train cifar10 --resume auto; or give --resume PATH or --output DIR")
            base = default_output(dataset, label)
            found = []
            for folder in _numbered(base):
                if not folder.is_dir():
                    break
                if (folder / "last.npz").is_file():
                    found.append(folder / "last.npz")
            if not found:
                raise RunError(f"--resume auto found no checkpoint in {base}: nothing to resume (start the run "
                               f"without --resume, or give --resume PATH or --output DIR)")
            path = found[-1]
            note = (f"--resume auto: the newest of {len(found)} runs, {', '.join(str(p.parent) for p in found)}"
                    if len(found) > 1 else f"--resume auto: the only run in {base}")
    else:
        path = Path(resume)
        if path.is_dir():
            path = path / "last.npz"
        note = ""
    return Resume(path, load_checkpoint(path), note)
