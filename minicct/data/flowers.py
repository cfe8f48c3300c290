"""Oxford Flowers-102 with its official split: 1020 training, 1020 validation and 6149 test images.

Three files from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/, kept in ``<data_dir>/flowers-102/``:

    102flowers.tgz    the 8189 photos, jpg/image_00001.jpg ... image_08189.jpg (unpacked to jpg/)
    imagelabels.mat   labels: (1, 8189), the class (1..102) of image i in column i
    setid.mat         trnid, valid, tstid: the 1-based image numbers of each split

Each is MD5-checked, downloaded when missing (atomically, with ``cifar.download_url``), and the
archive unpacked with ``cifar.extract_tar`` (scratch folder renamed into place). The two .mat files
are MATLAB v5 files, read by ``minicct.data.matfile``.

The photos come in many sizes; each is brought to ``img_size`` (224 for the paper's recipe) as image
folders are: shorter side resized (bicubic), centre square cropped -- what timm's evaluation
transform does with crop_pct 1.0, the official config's. ``get_dataset('flowers102')`` returns the
official training split and, as the test split, the 6149 test images (``eval_split='valid'`` gives
the 1020 validation images instead; the official config validated on those). The classes are
named by their official number, '1' to '102'; mean and std are the official config's.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from minicct.data.datasets import DatasetError, ImageDataset, Splits, default_data_dir

URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
FILES = {"102flowers.tgz": "52808999861908f626f3c1f4e79d11fa",
         "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
         "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c"}
FOLDER = "flowers-102"
SPLITS = {"train": "trnid", "valid": "valid", "test": "tstid"}
COUNTS = {"train": 1020, "valid": 1020, "test": 6149}
NUM_IMAGES, NUM_CLASSES = 8189, 102
# configs/datasets/flowers102.yml of the official repository
MEAN, STD = (0.4353, 0.3773, 0.2872), (0.2966, 0.2455, 0.2698)


def load_flowers102(data_dir=None, img_size: int = 224, download: bool = True, eval_split: str = "test",
                    check_counts: bool = True) -> Splits:
    """Splits(train, test): the official training split, and the test (or 'valid') split, images
    (N, img_size, img_size, 3) uint8, labels 0..101.

    check_counts: the official files give 1020/1020/6149 images and 8189 labels; a mismatch means
    the wrong files (tests with a small stand-in turn this off).
    """
    if eval_split not in ("test", "valid"):
        raise ValueError(f"eval_split must be 'test' or 'valid', got {eval_split!r}")
    folder = (Path(data_dir) if data_dir is not None else default_data_dir()) / FOLDER
    labels, ids = read_split(folder, download, check_counts)
    jpg = folder / "jpg"
    if not jpg.is_dir():
        from minicct.data.cifar import extract_tar
        extract_tar(_fetch(folder, "102flowers.tgz", download), folder, "jpg")
    out = []
    for split in ("train", eval_split):
        idx = ids[split]
        images = _load_images([jpg / f"image_{i:05d}.jpg" for i in idx], img_size)
        out.append(ImageDataset(images, labels[idx - 1], [str(c) for c in range(1, NUM_CLASSES + 1)], MEAN, STD,
                                name=f"Flowers-102 {split}", source=str(folder)))
    return Splits(*out)


def read_split(folder: Path, download: bool = True, check_counts: bool = True):
    """(labels (8189,) int64 0..101, {'train': ids, 'valid': ids, 'test': ids}) with 1-based image ids."""
    from minicct.data.matfile import MatFileError, read_mat
    mats = {}
    for name in ("imagelabels.mat", "setid.mat"):
        path = _fetch(folder, name, download)
        try:
            mats[name] = read_mat(path)
        except MatFileError as e:
            raise DatasetError(f"{e}. Delete {path} and run again to fetch it afresh") from None
    labels = _variable(mats["imagelabels.mat"], "labels", folder / "imagelabels.mat")
    ids = {s: _variable(mats["setid.mat"], key, folder / "setid.mat") for s, key in SPLITS.items()}
    if labels.size and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        raise DatasetError(f"{folder / 'imagelabels.mat'}: labels run from {labels.min()} to {labels.max()}, "
                           f"expected 1..{NUM_CLASSES}; the file is corrupt")
    for split, i in ids.items():
        if i.size and (i.min() < 1 or i.max() > len(labels)):
            raise DatasetError(f"{folder / 'setid.mat'}: {SPLITS[split]} names images {i.min()}..{i.max()} "
                               f"but there are {len(labels)} labels; the files do not belong together")
    if check_counts:
        found = {s: len(i) for s, i in ids.items()}
        if found != COUNTS or len(labels) != NUM_IMAGES:
            raise DatasetError(f"{folder}: the split has {found} images and {len(labels)} labels, expected "
                               f"{COUNTS} and {NUM_IMAGES}: these are not the official Flowers-102 files")
    return labels - 1, ids


def _variable(mat: dict, key: str, path: Path) -> np.ndarray:
    """A (1, N) or (N, 1) variable as a flat int64 array of whole numbers."""
    if key not in mat:
        raise DatasetError(f"{path} has no variable {key!r} (it has {sorted(mat)}); is it the right file?")
    v = np.asarray(mat[key]).ravel()
    if v.ndim != 1 or not np.all(v == np.round(v)):
        raise DatasetError(f"{path}: {key} is not a list of whole numbers; the file is corrupt")
    return v.astype(np.int64)


def _fetch(folder: Path, name: str, download: bool) -> Path:
    """folder/name, MD5-checked; downloaded first when missing."""
    from minicct.data.cifar import check_file, download_url
    path, md5 = folder / name, FILES[name]
    if path.is_file():
        check_file(path, md5, "the official Flowers-102 file", URL + name)
        return path
    if download:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            download_url(URL + name, path, md5, desc=f"Flowers-102 {name}")
            return path
        except DatasetError:
            raise
        except (OSError, ValueError) as e:
            why = f"download failed: {e}"
    else:
        why = "download=False was asked for"
    d = folder.resolve()
    files = "\n".join(f"    {n}  MD5 {m}" for n, m in FILES.items())
    raise DatasetError(f"Flowers-102's {name} is not in {d} and could not be fetched ({why}).\n"
                       f"To use it without a network, download these three files from {URL} elsewhere\n"
                       f"{files}\nand put them in {d}/ (or the archive's jpg/ folder, unpacked, as {d}/jpg/). "
                       f"Or point --data-dir (or MINICCT_DATA_DIR) at a folder whose {FOLDER}/ holds them.")


def _load_images(paths, img_size: int) -> np.ndarray:
    """Decode and resize the photos on every core (Pillow releases the GIL while it decodes)."""
    from minicct.data.imagefolder import load_image
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} photos of the split are missing from {missing[0].parent} (e.g. "
                           f"{missing[0].name}); delete that folder and run again to unpack 102flowers.tgz afresh")
    with ThreadPoolExecutor() as pool:
        return np.stack(list(pool.map(lambda p: load_image(p, img_size), paths)))
