"""Datasets: whole splits held in memory as uint8 arrays.

Every dataset here is small enough to hold in RAM (CIFAR-10's 50,000 training images are 150 MB), so
a dataset is simply two arrays plus a little metadata:

    images  (N, H, W, C) uint8, HWC: C = 3 (RGB) or C = 1 (grey: MNIST, Fashion-MNIST)
    labels  (N,)         int64, class indices 0..K-1
    classes [K names]
    mean, std            C per-channel statistics in [0, 1], used by ``Normalize``

``get_dataset(name_or_path)`` returns both splits as ``Splits(train, test)``:

    train, test = get_dataset("cifar10")            # downloads to data/ once
    train, test = get_dataset("shapes")             # offline synthetic data, generated in ~1 s
    train, test = get_dataset("mnist")              # 28x28 grey; also "fashion-mnist"
    train, test = get_dataset("flowers102")         # the official split, 224 px unless img_size says
    train, test = get_dataset("path/to/folder", img_size=64)   # root/train/<class>/*, root/test/<class>/*

Anything that goes wrong with the data (no network, a bad checksum, a truncated file) raises one
``DatasetError`` whose message says which file is at fault and what to do; the training command prints
that message without a traceback.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from minicct.errors import DatasetError  # the one definition; raised from here
from minicct.formats.pickles import NUMPY_ARRAYS, load_restricted


@dataclass
class ImageDataset:
    """One split: ``images`` (N, H, W, C) uint8 (C = 3 or 1) and ``labels`` (N,) int64, plus class names
    and C-channel stats."""
    images: np.ndarray
    labels: np.ndarray
    classes: list
    mean: tuple
    std: tuple
    name: str = ""
    source: str = field(default="", repr=False)  # where it was read from, for messages

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3) or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, C) uint8 with C = 3 (RGB) or 1 (grey), got "
                             f"{self.images.shape} {self.images.dtype}")
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must be ({len(self.images)},), got {self.labels.shape}")
        self.labels = self.labels.astype(np.int64, copy=False)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need one value per channel ({self.channels}), got {self.mean}, {self.std}")

    def __len__(self):
        return len(self.images)

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def img_size(self):
        return self.images.shape[1]

    @property
    def channels(self):
        """C: 3 for RGB images, 1 for grey ones (the model's n_input_channels)."""
        return self.images.shape[-1]

    @property
    def model_kwargs(self):
        """What a model needs from the data beyond its size: the number of input channels."""
        return {"n_input_channels": self.channels}

    def __repr__(self):
        return (f"ImageDataset({self.name!r}, images={self.images.shape}, classes={self.num_classes}, "
                f"mean={tuple(round(m, 4) for m in self.mean)}, std={tuple(round(s, 4) for s in self.std)})")


class Splits(NamedTuple):
    """``train, test = get_dataset(...)``; ``test`` shares ``train``'s mean and std."""
    train: ImageDataset
    test: ImageDataset


def balanced_subset(dataset, n: int, seed: int = 0):
    """``n`` images (or sentences) of ``dataset`` with every class as equally represented as it can be (counts
    differ by at most one, unless a class runs out), chosen at random with a fixed ``seed``, kept in
    the dataset's order. The first n files of an image folder would all be one class.

    The same (dataset, n, seed) always gives the same subset: --test-limit in training and --limit
    in evaluation see the same images. n >= len(dataset) returns the dataset itself."""
    if n >= len(dataset):
        return dataset
    rng = np.random.default_rng(seed)
    labels = dataset.labels
    # rank of each image within its class (in a shuffled order), then classes in a shuffled order:
    # sorting by (rank, class position) deals the images out one class at a time
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[rng.permutation(idx)] = np.arange(len(idx))
    class_pos = rng.permutation(int(labels.max()) + 1)[labels]
    chosen = np.sort(np.lexsort((class_pos, rank))[:n])
    rows = {f: getattr(dataset, f)[chosen] for f in ("images", "tokens") if hasattr(dataset, f)}
    return dataclasses.replace(dataset, labels=labels[chosen], **rows)


def channel_stats(images: np.ndarray, chunk: int = 4096):
    """Per-channel mean and std in [0, 1] of images (N, H, W, C) uint8, in chunks to bound memory."""
    C = images.shape[-1]
    n_px = images.shape[0] * images.shape[1] * images.shape[2]
    s = np.zeros(C, np.float64)
    s2 = np.zeros(C, np.float64)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].reshape(-1, C).astype(np.float64)
        s += x.sum(0)
        s2 += (x * x).sum(0)
    mean = s / n_px
    std = np.sqrt(np.maximum(s2 / n_px - mean ** 2, 0.0))
    return tuple(float(m) for m in mean / 255.0), tuple(float(s) for s in std / 255.0)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, size, size, C) uint8, bicubic; a no-op when already that size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image
    from minicct.data.randaugment import pil_array, pil_image
    out = np.empty((len(images), size, size, images.shape[-1]), np.uint8)
    for i, img in enumerate(images):
        out[i] = pil_array(pil_image(img).resize((size, size), Image.Resampling.BICUBIC))
    return out


def default_data_dir() -> Path:
    """``$MINICCT_DATA_DIR`` if set, else ``data/`` at the repository root."""
    env = os.environ.get("MINICCT_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data"


DATASET_NAMES = ("cifar10", "cifar100", "mnist", "fashion-mnist", "flowers102", "flowers102-valid", "shapes")


def get_dataset(name_or_path: str, data_dir=None, img_size: int | None = None, download: bool = True,
                **kwargs) -> Splits:
    """Both splits of a dataset by name or folder path.

    name_or_path: 'cifar10', 'cifar100', 'mnist', 'fashion-mnist', 'flowers102', 'shapes', a text set
        ('text-synth', 'agnews', 'trec': minicct.data.text), or a path to an ImageFolder root (``root/train/<class>/*`` and ``root/test/<class>/*`` or ``root/val/<class>/*``).
    data_dir: where downloads live (default: ``data/`` at the repo root, or ``$MINICCT_DATA_DIR``).
    img_size: side of the square images returned (CIFAR and shapes: 32 unless given; MNIST and
        Fashion-MNIST: 28; Flowers-102: 224; ImageFolder: required unless all its images already share
        one square size).
    download: the downloadable sets; False raises DatasetError instead of fetching.
    kwargs: passed on (shapes: ``n_train``, ``n_test``, ``seed``, ``num_classes``; flowers102:
        ``eval_split='valid'`` to test on the validation split, which the name 'flowers102-valid' also asks for).
    Returns Splits(train, test) of ImageDataset (TextDataset for a text set).
    """
    key = str(name_or_path).lower()
    from minicct.data.text import TEXT_DATASET_NAMES, load_text_dataset
    if key in TEXT_DATASET_NAMES:   # text: word ids, not images (minicct.data.text)
        return load_text_dataset(key, data_dir=data_dir, download=download, **kwargs)
    if key in ("cifar10", "cifar-10", "cifar100", "cifar-100"):
        from minicct.data.cifar import load_cifar
        splits = load_cifar(key.replace("-", ""), data_dir=data_dir, download=download)
        if img_size is not None and img_size != splits.train.img_size:
            for ds in splits:
                ds.images = resize_images(ds.images, img_size)
        return splits
    if key in ("mnist", "fashion-mnist", "fashion_mnist", "fashionmnist"):
        from minicct.data.mnist import load_idx_dataset
        splits = load_idx_dataset("mnist" if key == "mnist" else "fashion-mnist", data_dir=data_dir,
                                  download=download)
        if img_size is not None and img_size != splits.train.img_size:
            for ds in splits:
                ds.images = resize_images(ds.images, img_size)
        return splits
    if key in ("flowers102", "flowers-102", "flowers102-valid"):
        from minicct.data.flowers import load_flowers102
        if key == "flowers102-valid":  # evaluate on the validation split, as the official config does
            kwargs["eval_split"] = "valid"
        return load_flowers102(data_dir=data_dir, img_size=img_size or 224, download=download, **kwargs)
    if key == "shapes":
        from minicct.data.shapes import make_shapes
        return make_shapes(img_size=img_size or 32, **kwargs)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        from minicct.data.imagefolder import load_image_folder
        return load_image_folder(path, img_size=img_size)
    raise DatasetError(f"unknown dataset {name_or_path!r}: expected one of "
                       f"{', '.join(DATASET_NAMES + TEXT_DATASET_NAMES)} "
                       f"or the path of an image folder (root/train/<class>/*.jpg, root/test/<class>/*.jpg); "
                       f"{str(path.resolve())!r} is not a directory")


def restricted_pickle_load(path: Path):
    """Load a CIFAR batch: a pickle that may only contain plain containers, bytes, numbers and NumPy
    arrays (anything else could run code while it loads; see minicct.formats.pickles)."""
    # encoding='bytes': the official batches were pickled by Python 2, whose str keys become bytes
    return load_restricted(path, NUMPY_ARRAYS, "a CIFAR batch", encoding="bytes")


def check_split_counts(classes: Sequence[str], labels: np.ndarray, where: str):
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetError(f"{where}: labels run from {labels.min()} to {labels.max()} but there are "
                           f"{len(classes)} classes; the file is corrupt, delete it and fetch it again")
