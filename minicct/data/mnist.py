"""MNIST and Fashion-MNIST: 28x28 grey images in the IDX format, as ImageDataset (N, 28, 28, 1).

Where the data comes from, per file, first match wins (``<data_dir>/mnist/`` or
``<data_dir>/fashion-mnist/``; both sets use the same four file names):

1. ``train-images-idx3-ubyte.gz`` (and the three others): MD5-checked against the official file.
2. ``train-images-idx3-ubyte`` already unpacked: read as is (its MD5 is unknown, the format is checked).
3. Downloaded from the mirrors below in turn, written atomically (``.part``, renamed once the MD5
   matches: ``cifar.download_url``), then as 1.

An IDX file is a 4-byte magic number -- two zero bytes, a type code (0x08 = uint8, ...), the number
of dimensions -- then each dimension as a big-endian uint32, then the values, big-endian, C order.
The images are ``idx3`` (N, 28, 28) uint8 and the labels ``idx1`` (N,) uint8.

Mean and std are measured on the training images (one channel); MNIST gives 0.1307 / 0.3081.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from minicct.data.datasets import DatasetError, ImageDataset, Splits, channel_stats, default_data_dir

FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}

# MD5 of each official .gz file; the same values torchvision and the data sets' own pages list.
IDX_DATASETS = {
    "mnist": dict(
        title="MNIST", folder="mnist",
        # yann.lecun.com often refuses downloads now; PyTorch's copy of the same files comes first
        mirrors=["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
        md5={"train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873", "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
             "test_images": "9fb629c4189551a2d022fa330f9573f3", "test_labels": "ec29112dd5afa0611ce80d1b7f02629c"},
        classes=[str(d) for d in range(10)],
        counts=(60000, 10000),
    ),
    "fashion-mnist": dict(
        title="Fashion-MNIST", folder="fashion-mnist",
        mirrors=["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"],
        md5={"train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
             "test_images": "bef4ecab320f06d8554ea6380940ec79", "test_labels": "bb300cfdad3c16e7a12a480ee83cd310"},
        classes=["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"],
        counts=(60000, 10000),
    ),
}

# IDX type code -> NumPy dtype (big-endian, as stored)
IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """An IDX file (gzip'd when its name ends in .gz) -> its array, in native byte order.

    Raises DatasetError naming the file for a bad magic number, an unknown type, or a length that
    does not match the dimensions (a truncated or padded file).
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut gzip stream an EOFError
        raise DatasetError(f"{path} could not be read ({type(e).__name__}: {e}); it is truncated or corrupt: "
                           f"delete it and run again to fetch it afresh") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path} is not an IDX file: it starts with {raw[:4].hex() or 'nothing'}, expected "
                           f"two zero bytes, a type code and the number of dimensions (e.g. 00000803)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DatasetError(f"{path} has IDX type code 0x{code:02x}, which is not one of "
                           f"{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}: the file is corrupt")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path} ends inside its header ({len(raw)} bytes for {ndim} dimensions): it is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(f"{path} holds {len(raw)} bytes, but its header says {dims} values of {dtype.name}: "
                           f"{expected} bytes; it is {'truncated' if len(raw) < expected else 'corrupt'}. "
                           f"Delete it and run again to fetch it afresh")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def load_idx_dataset(name: str = "mnist", data_dir=None, download: bool = True) -> Splits:
    """Splits(train, test) of 'mnist' or 'fashion-mnist': images (N, 28, 28, 1) uint8, labels (N,) int64."""
    spec = IDX_DATASETS[name]
    folder = (Path(data_dir) if data_dir is not None else default_data_dir()) / spec["folder"]
    arrays = {key: read_idx(_find_or_fetch(spec, folder, key, download)) for key in FILES}
    splits = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        where = folder / FILES[f"{split}_images"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DatasetError(f"{where}: expected uint8 images (N, 28, 28), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetError(f"{folder / FILES[f'{split}_labels']}: expected {len(images)} labels (N,) for the "
                               f"{len(images)} images, got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(spec["classes"])):
            raise DatasetError(f"{folder / FILES[f'{split}_labels']}: labels run from {labels.min()} to "
                               f"{labels.max()}, expected 0..{len(spec['classes']) - 1}; the file is corrupt")
        splits.append((images[..., None], labels))
    mean, std = channel_stats(splits[0][0])
    return Splits(*(ImageDataset(x, y, list(spec["classes"]), mean, std, name=f"{spec['title']} {split}",
                                 source=str(folder))
                    for (x, y), split in zip(splits, ("train", "test"))))


def _find_or_fetch(spec, folder: Path, key: str, download: bool) -> Path:
    """The path of one of the four files: the .gz (MD5-checked), the unpacked file, or a download."""
    from minicct.data.cifar import check_file, download_url
    gz = folder / (FILES[key] + ".gz")
    raw = folder / FILES[key]
    md5 = spec["md5"][key]
    if gz.is_file():
        check_file(gz, md5, f"the official {spec['title']} file", spec["mirrors"][0] + gz.name)
        return gz
    if raw.is_file():
        return raw
    if not download:
        raise DatasetError(_missing_message(spec, folder, "download=False was asked for"))
    failures = []
    folder.mkdir(parents=True, exist_ok=True)
    for mirror in spec["mirrors"]:
        try:
            download_url(mirror + gz.name, gz, md5, desc=f"{spec['title']} {gz.name}")
            return gz
        except (OSError, ValueError, DatasetError) as e:  # network errors, or a wrong MD5 from that mirror
            failures.append(f"{mirror}: {e}")
    raise DatasetError(_missing_message(spec, folder, "download failed: " + "; ".join(failures)))


def _missing_message(spec, folder: Path, why: str) -> str:
    d = folder.resolve()
    files = "\n".join(f"    {FILES[k]}.gz  MD5 {spec['md5'][k]}" for k in FILES)
    return (f"{spec['title']} is not in {d} and could not be fetched ({why}).\n"
            f"To use it without a network, download these four files elsewhere (e.g. from {spec['mirrors'][0]})\n"
            f"{files}\n"
            f"and put them in {d}/ (gzip'd as they come, or unpacked). Or point --data-dir (data_dir= in "
            f"Python, or the MINICCT_DATA_DIR environment variable) at a folder whose {spec['folder']}/ holds them.")
