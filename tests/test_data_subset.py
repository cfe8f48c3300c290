"""--train-limit / --test-limit / evaluate --limit: a class-balanced subset chosen with a fixed seed
(the first N files of an image folder are all one class); and --data-dir naming CIFAR's own folder."""
import pickle
from pathlib import Path

import numpy as np
import pytest

from minicct.data import get_dataset
from minicct.data.datasets import ImageDataset, balanced_subset


def sorted_by_class(counts):
    """An image-folder-like dataset: labels in class order; image i holds the value i (to follow rows)."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    images = np.zeros((len(labels), 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels)) % 256
    images[:, 0, 0, 1] = np.arange(len(labels)) // 256
    return ImageDataset(images, labels, [f"c{c}" for c in range(len(counts))], (0.5,) * 3, (0.25,) * 3)


def rows(ds):
    return ds.images[:, 0, 0, 0].astype(int) + 256 * ds.images[:, 0, 0, 1].astype(int)


@pytest.mark.parametrize("n", [4, 12, 10, 31])
def test_every_class_gets_its_share(n):
    ds = sorted_by_class([10, 10, 10, 10])
    sub = balanced_subset(ds, n)
    counts = np.bincount(sub.labels, minlength=4)
    assert len(sub) == n and counts.max() - counts.min() <= 1, counts
    idx = rows(sub)
    assert (np.diff(idx) > 0).all()                      # the dataset's order is kept
    np.testing.assert_array_equal(ds.labels[idx], sub.labels)   # rows and labels stay together
    assert sub.classes == ds.classes and sub.mean == ds.mean


def test_fixed_but_random_choice():
    ds = sorted_by_class([50, 50, 50])
    a, b = balanced_subset(ds, 30), balanced_subset(ds, 30)
    np.testing.assert_array_equal(rows(a), rows(b))      # the same subset every time (train = evaluate)
    first = rows(a)[a.labels == 0]
    assert not np.array_equal(first, np.arange(10))      # not simply each class's first files
    assert not np.array_equal(rows(balanced_subset(ds, 30, seed=1)), rows(a))


def test_small_class_gives_all_it_has_and_others_fill():
    ds = sorted_by_class([2, 20, 20])
    sub = balanced_subset(ds, 20)
    assert list(np.bincount(sub.labels)) == [2, 9, 9]
    assert balanced_subset(ds, 100) is ds                # no limit to apply


def write_cifar10(root: Path, per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"labels": (np.arange(per_batch) % 10).tolist(), b"data": data}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, f, protocol=2)
    return folder


def test_data_dir_may_name_the_cifar_folder_itself(tmp_path):
    folder = write_cifar10(tmp_path)
    a = get_dataset("cifar10", data_dir=tmp_path, download=False)
    b = get_dataset("cifar10", data_dir=folder, download=False)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert sorted(p.name for p in folder.iterdir())[0] == "batches.meta"   # nothing nested created inside
    assert not (folder / "cifar-10-batches-py").exists()


def test_hflip_flag_reaches_the_training_transform():
    """--hflip is the flip probability the loader's TrainTransform uses; the MNIST presets turn it off
    (a mirrored digit is another digit or none)."""
    from minicct.data import get_dataset
    from minicct.training.config import make_config, parse_flags
    from minicct.training.trainer import build_loaders
    train, test = get_dataset("shapes", n_train=64, n_test=32)
    for argv, want in ((["shapes"], 0.5), (["shapes", "--hflip", "0"], 0.0), (["shapes", "--hflip", "0.2"], 0.2)):
        loader, _ = build_loaders(make_config(parse_flags(argv + ["--workers", "0"])), train, test)
        assert loader.pipeline.transform.hflip == want
        loader.close()
    for name in ("mnist", "fashion-mnist"):
        from minicct.training.config import merge
        assert merge(parse_flags([name]))[0]["hflip"] == 0.0
