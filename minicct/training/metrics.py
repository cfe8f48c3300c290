"""Counting what training reports: top-k accuracy, running means, and the metrics CSV."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from minicct import backend


def topk_correct(logits, labels, ks=(1, 5)):
    """How many rows have their label among the k highest logits, for each k.

    logits: (N, C) array (NumPy or CuPy); labels: (N,) int. k larger than C counts every row.
    Returns a tuple of ints, one per k. Ties are broken by the lower class index.
    """
    logits = backend.to_numpy(logits)
    labels = backend.to_numpy(labels).reshape(-1, 1)
    order = np.argsort(-logits, axis=1, kind="stable")
    return tuple(int((order[:, :min(k, logits.shape[1])] == labels).any(axis=1).sum()) for k in ks)


class Mean:
    """A running (weighted) mean: ``update(value, n)``, then ``.value``."""

    def __init__(self):
        self.total = 0.0
        self.count = 0

    def update(self, value, n=1):
        self.total += float(value) * n
        self.count += n

    @property
    def value(self):
        return self.total / self.count if self.count else float("nan")


class MetricsCSV:
    """``<output>/metrics.csv``: one row per epoch, the header written once.

    ``truncate(epoch)`` drops rows of epochs >= epoch, so a resumed run does not repeat the rows
    of epochs that were logged after the checkpoint it resumes from.
    """

    def __init__(self, path, fields):
        self.path = Path(path)
        self.fields = list(fields)

    def rows(self):
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate(self, epoch):
        if not self.path.is_file():
            return
        keep = [r for r in self.rows() if int(r["epoch"]) < epoch]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(keep)

    def append(self, row: dict):
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k)) for k in self.fields})


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v
