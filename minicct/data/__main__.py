"""Measure (or look at) the training data pipeline on its own, without a model.

    python -m minicct.data shapes                       # images/s with 0, 1 and 2 workers
    python -m minicct.data cifar10 --workers 2 --batches 100
    python -m minicct.data cifar10 --grid batch.png     # save one augmented, mixed batch as a picture
    python -m minicct.data --list                       # the datasets by name, and where they are kept
"""
from __future__ import annotations

import sys
import time

from pathlib import Path

import numpy as np

from minicct.cli import ArgumentParser, existing_folder, non_negative, positive, run_cli
from minicct.errors import RunError


def main(argv=None):
    from minicct.data import Normalize, get_dataset, train_loader

    p = ArgumentParser(prog="python -m minicct.data", description=__doc__)
    p.add_argument("dataset", nargs="?", default="shapes",
                   help="cifar10, cifar100, mnist, fashion-mnist, flowers102, shapes or an image folder"
                        " (default: shapes)")
    p.add_argument("--list", action="store_true", help="list the datasets by name and stop")
    p.add_argument("--data-dir", default=None, type=existing_folder("give the folder that holds the data, or "
                                                                    "leave --data-dir out to use data/"), help="an existing folder where CIFAR is (default: data/)")
    p.add_argument("--workers", type=non_negative(int, "--workers 0 1 2"), nargs="+", default=[0, 1, 2],
                   help="worker counts to measure (default: 0 1 2)")
    p.add_argument("--batch-size", type=positive(int, "--batch-size 128"), default=128,
                   help="batch size (default: 128)")
    p.add_argument("--batches", type=positive(int, "--batches 100"), default=None,
                   help="batches per measurement (default: one epoch)")
    p.add_argument("--grid", default=None, help="save the first batch (de-normalised) to this PNG and stop")
    a = p.parse_args(argv)
    if a.list:
        list_datasets(a.data_dir)
        return 0
    if a.grid is not None and (Path(a.grid).suffix.lower() != ".png" or not Path(a.grid).parent.is_dir()):
        raise RunError(f"--grid {a.grid}: give a .png path in an existing folder, e.g. --grid batch.png")
    from minicct.data.text import TEXT_DATASET_NAMES
    if str(a.dataset).lower() in TEXT_DATASET_NAMES:
        raise RunError(f"{a.dataset} is a text dataset: this command measures and draws image batches "
                       f"(python -m minicct.train {a.dataset} trains on it)")
    train, _ = get_dataset(a.dataset, data_dir=a.data_dir)
    print(train)

    if a.grid:
        from PIL import Image
        x, _ = next(iter(train_loader(train, batch_size=min(a.batch_size, 64))))
        imgs = Normalize(train.mean, train.std).inverse(np.clip(x, -3, 3))  # erased noise is clipped for display
        if imgs.shape[-1] == 1:
            imgs = imgs[..., 0]  # grey: (N, H, W) for Pillow's 'L' mode
        rows = [np.concatenate(list(imgs[r * 8:(r + 1) * 8]), axis=1) for r in range(len(imgs) // 8)]
        Image.fromarray(np.concatenate(rows, axis=0)).resize(
            (rows[0].shape[1] * 3, len(rows) * rows[0].shape[0] * 3), Image.Resampling.NEAREST).save(a.grid)
        print(f"wrote {a.grid}")
        return 0

    for w in a.workers:
        with train_loader(train, batch_size=a.batch_size, workers=w) as loader:
            n_batches = min(a.batches or len(loader), len(loader))
            t0, n = time.perf_counter(), 0
            for i, (x, _) in enumerate(loader):
                n += len(x)
                if i + 1 == n_batches:
                    break
            dt = time.perf_counter() - t0
        print(f"workers={w}: {n} images in {dt:.2f} s = {n / dt:,.0f} images/s "
              f"(a {len(train):,}-image epoch: {len(train) / (n / dt):.1f} s)")
    return 0


def list_datasets(data_dir=None):
    """Print each named dataset, what it is, and the folder it is read from or downloaded to."""
    from minicct.data.datasets import default_data_dir
    root = default_data_dir() if data_dir is None else data_dir
    rows = [("cifar10", "CIFAR-10: 50,000 + 10,000 RGB 32x32, 10 classes", "cifar-10-batches-py/"),
            ("cifar100", "CIFAR-100: 50,000 + 10,000 RGB 32x32, 100 classes", "cifar-100-python/"),
            ("mnist", "MNIST: 60,000 + 10,000 grey 28x28 digits", "mnist/"),
            ("fashion-mnist", "Fashion-MNIST: 60,000 + 10,000 grey 28x28, 10 classes", "fashion-mnist/"),
            ("flowers102", "Flowers-102: 1,020 train / 1,020 valid / 6,149 test photos, 102 classes",
             "flowers-102/"),
            ("flowers102-valid", "Flowers-102 tested on its validation split (the official config's)",
             "flowers-102/"),
            ("shapes", "synthetic shapes, generated in memory (offline)", None),
            ("text-synth", "text: synthetic sentences, a topic word and a 'not' (offline)", None),
            ("agnews", "text: AG News, 120,000 + 7,600 news items, 4 classes", "ag_news/"),
            ("trec", "text: TREC, 5,452 + 500 questions, 6 classes", "trec/")]
    for name, what, folder in rows:
        where = f"{root}/{folder}" if folder else "(not stored)"
        print(f"{name:14s} {what}\n{'':14s} {where}")


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="minicct.data"))
