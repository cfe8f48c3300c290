"""CIFAR-10 and CIFAR-100 in their official "python version" format.

Where the data comes from, first match wins:

1. ``<data_dir>/cifar-10-batches-py/`` (or ``cifar-100-python/``) already extracted: used as is
   (``data_dir`` may also be that folder itself).
2. ``<data_dir>/cifar-10-python.tar.gz``: MD5-checked, then extracted.
3. Downloaded from the official URL into ``<data_dir>``, then as 2.

The download is written to a ``.part`` file of its own and only renamed to its real name once its MD5 matches,
so an interrupted download never looks complete. Extraction goes to a scratch folder that is renamed
into place at the end, for the same reason, and refuses archive members that would land outside it.

A batch file is a pickled dict: ``b'data'`` uint8 (N, 3072) holding each image's R, G and B planes
(CHW order, 32x32), and ``b'labels'`` (CIFAR-100: ``b'fine_labels'``) a list of N ints.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from minicct.data.datasets import (DatasetError, ImageDataset, Splits, check_split_counts, default_data_dir,
                                   restricted_pickle_load)

CIFAR = {
    "cifar10": dict(
        title="CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=[f"data_batch_{i}" for i in range(1, 6)],
        test_files=["test_batch"],
        meta_file="batches.meta", names_key=b"label_names", labels_key=b"labels",
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": dict(
        title="CIFAR-100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=["train"],
        test_files=["test"],
        meta_file="meta", names_key=b"fine_label_names", labels_key=b"fine_labels",
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
    ),
}

# Tests replace this to download from a local file without the network.
_urlopen = urllib.request.urlopen


def archive_name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def load_cifar(name: str = "cifar10", data_dir=None, download: bool = True) -> Splits:
    """Splits(train, test) of CIFAR-10 ('cifar10') or CIFAR-100 ('cifar100', fine labels)."""
    spec = CIFAR[name]
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = data_dir / spec["folder"]
    if (data_dir / spec["meta_file"]).is_file() and (data_dir / spec["train_files"][0]).is_file():
        folder = data_dir   # data_dir is the unpacked folder itself (e.g. --data-dir .../cifar-10-batches-py)
    if not folder.is_dir():
        archive = data_dir / archive_name(spec["url"])
        if not archive.is_file():
            if not download:
                raise DatasetError(_missing_message(spec, data_dir, "download=False was asked for"))
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
                download_url(spec["url"], archive, spec["md5"], desc=spec["title"])
            except DatasetError:
                raise
            except (OSError, ValueError) as e:  # URLError, timeouts, DNS failures are all OSErrors
                raise DatasetError(_missing_message(spec, data_dir, f"download failed: {e}")) from None
        else:
            check_file(archive, spec["md5"], f"the official {spec['title']} archive", spec["url"])
        extract_tar(archive, data_dir, spec["folder"])
    return _load_folder(spec, folder)


def _missing_message(spec, data_dir: Path, why: str) -> str:
    d = data_dir.resolve()
    files = ", ".join(spec["train_files"] + spec["test_files"] + [spec["meta_file"]])
    return (f"{spec['title']} is not in {d} and could not be fetched ({why}).\n"
            f"To use it without a network, put ONE of these there and run again:\n"
            f"  * the official archive as {d / archive_name(spec['url'])}\n"
            f"    (download it elsewhere from {spec['url']}, MD5 {spec['md5']}); it is checked and unpacked\n"
            f"  * the unpacked folder as {d / spec['folder']}/  holding {files}\n"
            f"    (e.g. `tar -xzf {archive_name(spec['url'])} -C {d}`)\n"
            f"Or point --data-dir (data_dir= in Python, or the MINICCT_DATA_DIR environment variable) at a "
            f"folder that holds them.")


def _load_folder(spec, folder: Path) -> Splits:
    meta_path = folder / spec["meta_file"]
    meta = _read_pickle(meta_path, spec)
    names = meta.get(spec["names_key"]) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{meta_path} has no {spec['names_key']!r} list of class names; the file is "
                           f"corrupt: {_refetch_hint(spec, folder)}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    splits = []
    for split, files in (("train", spec["train_files"]), ("test", spec["test_files"])):
        parts = [_read_batch(folder / f, spec) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        check_split_counts(classes, labels, str(folder / files[0]))
        splits.append(ImageDataset(images, labels, classes, spec["mean"], spec["std"],
                                   name=f"{spec['title']} {split}", source=str(folder)))
    return Splits(*splits)


def _refetch_hint(spec, folder: Path) -> str:
    return (f"delete {folder} and run again to unpack/download a fresh copy "
            f"(the official archive is {spec['url']}, MD5 {spec['md5']})")


def _read_pickle(path: Path, spec):
    if not path.is_file():
        raise DatasetError(f"{path} is missing: the folder {path.parent} is incomplete; "
                           f"{_refetch_hint(spec, path.parent)}")
    try:
        return restricted_pickle_load(path)
    except Exception as e:  # truncated (EOFError), garbage (UnpicklingError), odd contents (anything else)
        raise DatasetError(f"{path} could not be read ({type(e).__name__}: {e}); it is truncated or corrupt: "
                           f"{_refetch_hint(spec, path.parent)}") from None


def _read_batch(path: Path, spec):
    """One batch file -> images (N, 32, 32, 3) uint8, labels (N,) int64."""
    batch = _read_pickle(path, spec)
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(spec["labels_key"]) if isinstance(batch, dict) else None
    bad = None
    if not isinstance(data, np.ndarray) or labels is None:
        bad = f"expected a dict with b'data' and {spec['labels_key']!r}"
    elif data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        bad = f"b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)"
    elif len(labels) != len(data):
        bad = f"{len(labels)} labels for {len(data)} images"
    if bad:
        raise DatasetError(f"{path} is not a valid CIFAR batch ({bad}): {_refetch_hint(spec, path.parent)}")
    # rows hold the R plane, then G, then B: (N, 3, 32, 32) -> (N, 32, 32, 3)
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, np.asarray(labels, dtype=np.int64)


# --- download, checksum, extraction --------------------------------------------------------------
def file_digest(path: Path, algorithm: str = "md5", chunk: int = 1 << 20) -> str:
    """The hex digest of a file ('md5', 'sha256', ...), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    return file_digest(path, "md5", chunk)


def check_file(path: Path, digest: str, what: str, source: str, algorithm: str = "md5"):
    """DatasetError unless the file at ``path`` has this digest; ``what`` names it ("the official
    CIFAR-10 archive"), ``source`` is where a good copy comes from."""
    if file_digest(path, algorithm) != digest:
        raise DatasetError(f"{path} does not have the {algorithm.upper()} of {what} ({digest}): it is truncated "
                           f"or corrupt. Delete it and run again to download it afresh, or replace it with a "
                           f"good copy from {source}.")


def download_url(url: str, dest: Path, digest: str | None = None, desc: str | None = None, timeout: float = 30,
                 algorithm: str = "md5"):
    """Fetch url to dest atomically: stream into a file of its own beside dest
    (``<name>.<random>.part``, so two runs downloading at once do not write into one file), check its
    digest (MD5 unless ``algorithm`` says otherwise; none if digest is None), then rename.

    Network errors propagate as OSError (the caller turns them into advice); a wrong digest raises
    DatasetError. Either way no file named ``dest`` is left behind.
    """
    from tqdm import tqdm
    dest = Path(dest)
    fd, part = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    part = Path(part)
    h = hashlib.new(algorithm)
    try:
        with open(fd, "wb") as f, _urlopen(url, timeout=timeout) as r:
            total = r.headers.get("Content-Length") if getattr(r, "headers", None) else None
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {desc or dest.name}", leave=False) as bar:
                while block := r.read(1 << 16):
                    f.write(block)
                    h.update(block)
                    bar.update(len(block))
        if digest is not None and h.hexdigest() != digest:
            raise DatasetError(f"the download from {url} has {algorithm.upper()} {h.hexdigest()}, expected "
                               f"{digest}: it was corrupted or cut short (or the file changed upstream). Run "
                               f"again to retry, or fetch it by hand and put it at {dest.resolve()}.")
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()


def _check_member(m: tarfile.TarInfo, root: Path):
    target = (root / m.name).resolve()
    if not (m.isfile() or m.isdir()):
        raise DatasetError(f"refusing to extract {m.name!r}: archive members must be plain files or folders")
    if os.path.isabs(m.name) or ".." in Path(m.name).parts or not target.is_relative_to(root):
        raise DatasetError(f"refusing to extract {m.name!r}: it would land outside {root}")


def extract_tar(archive: Path, data_dir: Path, folder: str):
    """Unpack archive into data_dir, making data_dir/folder appear only once complete."""
    archive, data_dir = Path(archive), Path(data_dir)
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
    try:
        root = scratch.resolve()
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()  # reads the whole archive: a truncated one fails here
                for m in members:
                    _check_member(m, root)
                # the 'data' filter (Python >= 3.11.4) re-checks the same rules inside tarfile itself
                kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                for m in members:
                    tar.extract(m, root, set_attrs=False, **kw)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise DatasetError(f"{archive} could not be unpacked ({type(e).__name__}: {e}); it is truncated "
                               f"or corrupt. Delete it and run again, or replace it with a good copy.") from None
        if not (root / folder).is_dir():
            raise DatasetError(f"{archive} does not contain the folder {folder}/; is it the right archive?")
        os.replace(root / folder, data_dir / folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
