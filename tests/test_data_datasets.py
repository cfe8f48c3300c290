"""Datasets: CIFAR format, download/MD5/extraction safety, error messages, ImageFolder, shapes.

No test here touches the network: downloads come from file:// URLs or a patched opener.
"""
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicct.data import DatasetError, get_dataset
from minicct.data import cifar
from minicct.data.datasets import channel_stats, restricted_pickle_load
from minicct.data.imagefolder import load_image_folder
from minicct.data.shapes import SHAPE_CLASSES, make_shapes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- a tiny CIFAR-10 in the official format, written by the test ----------------------------------
def write_fake_cifar10(root: Path, per_batch: int = 4, seed: int = 0):
    """root/cifar-10-batches-py with 5 train batches + test batch of per_batch images; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch).tolist()
        data = x.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": y, b"data": data,
                         b"filenames": [b"x.png"] * per_batch}, f, protocol=2)
        images[name], labels[name] = x, y
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072,
                     b"num_cases_per_batch": per_batch}, f, protocol=2)
    return images, labels


def make_archive(src_root: Path, dest: Path) -> str:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return hashlib.md5(dest.read_bytes()).hexdigest()


def test_cifar_format_loads_hwc_images_and_labels(tmp_path):
    images, labels = write_fake_cifar10(tmp_path)
    train, test = get_dataset("cifar10", data_dir=tmp_path)
    assert train.images.shape == (20, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and test.images.shape == (4, 32, 32, 3)
    want = np.concatenate([images[f"data_batch_{i}"] for i in range(1, 6)])
    np.testing.assert_array_equal(train.images, want)  # CHW rows came back as the same HWC images
    np.testing.assert_array_equal(test.images, images["test_batch"])
    assert test.labels.tolist() == labels["test_batch"]
    assert train.classes == CLASSES
    assert train.mean == pytest.approx((0.4914, 0.4822, 0.4465)) and train.std == pytest.approx((0.2470, 0.2435, 0.2616))


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 6), ("test", 2)):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": [99 - i for i in range(n)], b"coarse_labels": [0] * n}, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                     b"coarse_label_names": [b"x"] * 20}, f, protocol=2)
    train, test = get_dataset("cifar100", data_dir=tmp_path)
    assert train.labels.tolist() == [99, 98, 97, 96, 95, 94] and train.num_classes == 100
    assert train.mean == pytest.approx((0.5071, 0.4865, 0.4409))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "missing", "evil_pickle"])
def test_broken_cifar_batch_names_the_file(tmp_path, damage):
    write_fake_cifar10(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    if damage == "garbage":
        bad.write_bytes(b"this is not a pickle at all")
    elif damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:500])
    elif damage == "wrong_shape":
        with open(bad, "wb") as f:
            pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f, protocol=2)
    elif damage == "missing":
        bad.unlink()
    else:  # a pickle that would run a command when loaded without restrictions
        bad.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    with pytest.raises(DatasetError) as e:
        get_dataset("cifar10", data_dir=tmp_path)
    msg = str(e.value)
    assert str(bad) in msg and "delete" in msg
    if damage == "evil_pickle":
        assert "refusing" in msg


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_pickle_reads_numpy_arrays(tmp_path, protocol):
    p = tmp_path / "b"
    with open(p, "wb") as f:
        pickle.dump({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"n": np.int64(3)}, f, protocol=protocol)
    got = restricted_pickle_load(p)
    np.testing.assert_array_equal(got[b"data"], np.arange(6).reshape(2, 3))
    assert got[b"n"] == 3


# --- download, MD5, extraction ---------------------------------------------------------------------
@pytest.fixture
def local_cifar(tmp_path, monkeypatch):
    """An archive of the fake CIFAR-10 served from a file:// URL, patched in as the official one."""
    src = tmp_path / "src"
    images, _ = write_fake_cifar10(src)
    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    md5 = make_archive(src, archive)
    spec = dict(cifar.CIFAR["cifar10"], url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(cifar.CIFAR, "cifar10", spec)
    return spec, images, archive


def test_download_checks_md5_and_extracts(tmp_path, local_cifar):
    spec, images, _ = local_cifar
    data = tmp_path / "data"
    train, test = get_dataset("cifar10", data_dir=data)
    np.testing.assert_array_equal(test.images, images["test_batch"])
    assert (data / "cifar-10-python.tar.gz").is_file() and (data / "cifar-10-batches-py").is_dir()
    assert sorted(p.name for p in data.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no leftovers
    assert cifar.md5_file(data / "cifar-10-python.tar.gz") == spec["md5"]


def test_bad_md5_download_leaves_nothing(tmp_path, local_cifar, monkeypatch):
    spec, _, _ = local_cifar
    monkeypatch.setitem(cifar.CIFAR, "cifar10", dict(spec, md5="0" * 32))
    data = tmp_path / "data"
    with pytest.raises(DatasetError, match="MD5"):
        get_dataset("cifar10", data_dir=data)
    assert list(data.iterdir()) == []  # neither the archive nor a .part file


def test_interrupted_download_is_never_complete(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        headers = {"Content-Length": "1000000"}

        def read(self, n=-1):
            if self.tell() > 1000:
                raise ConnectionResetError("connection reset by peer")
            return super().read(min(n, 600))

    monkeypatch.setattr(cifar, "_urlopen", lambda url, timeout: Broken(b"x" * 100000))
    with pytest.raises(DatasetError) as e:
        get_dataset("cifar10", data_dir=tmp_path)
    assert "connection reset" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_two_downloads_of_one_file_at_once_do_not_collide(tmp_path, monkeypatch):
    """Two runs may fetch the same archive at the same time: each streams into a file of its own.
    Here a second download of the same file runs to completion while the first is half way."""
    import hashlib
    payload = bytes(range(256)) * 400
    digest = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "archive.tar.gz"
    started = []

    class Slow(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

        def read(self, n=-1):
            if self.tell() > 0 and not started:      # the first download, half way: a second one runs
                started.append(1)
                cifar.download_url("http://x/archive", dest, digest)
            return super().read(min(n, 4096))

    monkeypatch.setattr(cifar, "_urlopen", lambda url, timeout: Slow(payload))
    cifar.download_url("http://x/archive", dest, digest)
    assert started and dest.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["archive.tar.gz"]   # no .part left behind


def test_offline_error_says_where_to_put_the_data(tmp_path, monkeypatch):
    def no_network(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(cifar, "_urlopen", no_network)
    with pytest.raises(DatasetError) as e:
        get_dataset("cifar10", data_dir=tmp_path)
    msg = str(e.value)
    assert isinstance(e.value, RuntimeError)
    assert str(tmp_path.resolve() / "cifar-10-python.tar.gz") in msg
    assert str(tmp_path.resolve() / "cifar-10-batches-py") in msg
    assert "c58f30108f718f92721af3b95e74349a" in msg and "name resolution" in msg
    with pytest.raises(DatasetError, match="download=False"):
        get_dataset("cifar10", data_dir=tmp_path, download=False)


def test_existing_archive_is_md5_checked(tmp_path, local_cifar):
    _, _, archive = local_cifar
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(archive.read_bytes()[:-100])  # truncated copy
    with pytest.raises(DatasetError) as e:
        get_dataset("cifar10", data_dir=data)
    assert "truncated or corrupt" in str(e.value) and str(data / "cifar-10-python.tar.gz") in str(e.value)


def test_truncated_archive_fails_to_extract_cleanly(tmp_path, local_cifar):
    _, _, archive = local_cifar
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DatasetError, match="truncated"):
        cifar.extract_tar(cut, out, "cifar-10-batches-py")
    assert list(out.iterdir()) == []  # no half-extracted folder


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_extraction_refuses_members_escaping_the_folder(tmp_path, kind):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo({"dotdot": "cifar-10-batches-py/../../evil.txt", "absolute": "/tmp/evil.txt",
                                "symlink": "cifar-10-batches-py/link"}[kind])
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DatasetError, match="refusing"):
        cifar.extract_tar(archive, out, "cifar-10-batches-py")
    assert not (tmp_path / "evil.txt").exists() and list(out.iterdir()) == []


# --- ImageFolder -------------------------------------------------------------------------------------
def _save(path: Path, img: Image.Image):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def test_image_folder_reads_any_mode_and_size(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        for cls in ("zebra", "ant"):  # sorted: ant = 0, zebra = 1
            for i in range(n):
                arr = rng.integers(0, 256, (10 + i, 14, 3), dtype=np.uint8)
                img = Image.fromarray(arr)
                img = [img, img.convert("L"), img.convert("RGBA"), img.convert("P")][i % 4]
                _save(tmp_path / split / cls / f"{i}.png", img)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image, ignored")
    train, test = get_dataset(str(tmp_path), img_size=8)
    assert train.classes == ["ant", "zebra"]
    assert train.images.shape == (6, 8, 8, 3) and test.images.shape == (2, 8, 8, 3)
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1] and test.labels.tolist() == [0, 1]
    assert train.mean == pytest.approx(channel_stats(train.images)[0]) and test.mean == train.mean


def test_image_folder_resizes_shorter_side_then_centre_crops(tmp_path):
    arr = np.zeros((8, 16, 3), np.uint8)
    arr[:, :4] = (255, 0, 0)    # only the outer quarters are coloured:
    arr[:, 12:] = (0, 0, 255)   # a centre crop to 8 x 8 must drop them
    arr[:, 4:12] = (0, 200, 0)
    _save(tmp_path / "train" / "a" / "0.png", Image.fromarray(arr))
    _save(tmp_path / "test" / "a" / "0.png", Image.fromarray(arr))
    train, _ = load_image_folder(tmp_path, img_size=8)
    assert (train.images[0] == (0, 200, 0)).all()


@pytest.mark.parametrize("problem", ["empty_class", "bad_image", "no_test"])
def test_image_folder_errors_name_the_path(tmp_path, problem):
    img = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "train" / "a" / "0.png", img)
    _save(tmp_path / "test" / "a" / "0.png", img)
    if problem == "empty_class":
        (tmp_path / "train" / "b").mkdir()
        culprit = tmp_path / "train" / "b"
    elif problem == "bad_image":
        culprit = tmp_path / "train" / "a" / "1.jpg"
        culprit.write_bytes(b"\xff\xd8 not really a jpeg")
    else:
        for f in (tmp_path / "test" / "a").iterdir():
            f.unlink()
        (tmp_path / "test" / "a").rmdir()
        (tmp_path / "test").rmdir()
        culprit = tmp_path
    with pytest.raises(DatasetError) as e:
        get_dataset(str(tmp_path), img_size=4)
    assert str(culprit) in str(e.value)


def test_unknown_dataset_name():
    with pytest.raises(DatasetError, match="cifar10"):
        get_dataset("not-a-dataset-or-folder")


# --- shapes ------------------------------------------------------------------------------------------
def test_shapes_is_deterministic_and_balanced():
    a_train, a_test = make_shapes(n_train=600, n_test=120, seed=3)
    b_train, _ = make_shapes(n_train=600, n_test=120, seed=3)
    c_train, _ = make_shapes(n_train=600, n_test=120, seed=4)
    np.testing.assert_array_equal(a_train.images, b_train.images)
    np.testing.assert_array_equal(a_train.labels, b_train.labels)
    assert not np.array_equal(a_train.images, c_train.images)
    assert not np.array_equal(a_train.images[:120], a_test.images)  # test is a different stream
    assert a_train.images.shape == (600, 32, 32, 3) and a_train.images.dtype == np.uint8
    assert np.bincount(a_train.labels).tolist() == [100] * 6 and np.bincount(a_test.labels).tolist() == [20] * 6
    assert a_train.classes == list(SHAPE_CLASSES)
    assert a_train.images.std() > 40  # not blank: varied colours


def test_shapes_via_get_dataset_options():
    train, test = get_dataset("shapes", n_train=40, n_test=8, num_classes=4, seed=1)
    assert train.num_classes == 4 and set(train.labels.tolist()) == {0, 1, 2, 3} and len(test) == 8
    assert all(0.2 < m < 0.8 for m in train.mean) and all(0.1 < s < 0.4 for s in train.std)
    clean, _ = get_dataset("shapes", n_train=40, n_test=8, seed=1, noise=(0, 0), line_prob=0.0)
    noisy, _ = get_dataset("shapes", n_train=40, n_test=8, seed=1, noise=(20, 20))
    rough = lambda imgs: np.abs(np.diff(imgs.astype(int), axis=2)).mean()
    assert rough(clean.images) < rough(noisy.images)
    with pytest.raises(ValueError, match="unknown difficulty"):
        make_shapes(n_train=6, n_test=6, blur=1)


# --- the real data, when this machine has it -----------------------------------------------------------
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real CIFAR-10 copy not found at {SHARED} (only on the dev machine)")
@pytest.mark.skipif(os.environ.get("MINICCT_SLOW_TESTS") != "1",
                    reason="slow (~20 s): rebuilds CIFAR-10 from ../shared/datasets; set MINICCT_SLOW_TESTS=1")
def test_real_cifar10_from_shared_copy(tmp_path):
    subprocess.run([sys.executable, str(SHARED / "make_cifar10_batches.py"), str(tmp_path)], check=True,
                   capture_output=True)
    train, test = get_dataset("cifar10", data_dir=tmp_path, download=False)
    assert train.images.shape == (50000, 32, 32, 3) and test.images.shape == (10000, 32, 32, 3)
    assert np.bincount(train.labels).tolist() == [5000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
    mean, std = channel_stats(train.images)
    assert mean == pytest.approx(train.mean, abs=0.003) and std == pytest.approx(train.std, abs=0.003)
