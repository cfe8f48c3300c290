"""MNIST / Fashion-MNIST (IDX files), Flowers-102 (MAT v5 split files + JPEGs), and grey images through
the data pipeline, the model, training, evaluation and prediction.

Every file is written by the test itself: small IDX files (good, truncated, wrong magic, bad MD5),
MAT v5 files from a tiny writer below (plain and zlib-compressed, little- and big-endian), JPEGs.
No test touches the network: downloads come from file:// URLs.
"""
import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicct.data import DatasetError, Normalize, get_dataset, train_loader
from minicct.data import cifar, flowers, mnist
from minicct.data.matfile import MatFileError, read_mat
from minicct.data.randaugment import OPS, apply_op
from minicct.data.transforms import TrainTransform

REPO = Path(__file__).resolve().parents[1]


# --- IDX files --------------------------------------------------------------------------------------
IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
             np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(a: np.ndarray) -> bytes:
    """The IDX encoding of a, written independently of the reader: magic, big-endian dims, big-endian data."""
    code = IDX_CODES[a.dtype.newbyteorder("=")]
    head = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx_set(folder: Path, n_train=40, n_test=12, seed=0, gz=True):
    """The four MNIST files for random images/labels; returns the arrays and each file's MD5."""
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test).astype(np.uint8)}
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for key, a in arrays.items():
        data = idx_bytes(a)
        path = folder / (mnist.FILES[key] + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        md5[key] = hashlib.md5(path.read_bytes()).hexdigest()
    return arrays, md5


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    arrays, md5 = write_idx_set(tmp_path / "mnist")
    monkeypatch.setitem(mnist.IDX_DATASETS, "mnist", dict(mnist.IDX_DATASETS["mnist"], md5=md5))
    return arrays


def test_mnist_loads_grey_hwc_images_labels_and_stats(tmp_path, fake_mnist):
    train, test = get_dataset("mnist", data_dir=tmp_path)
    assert train.images.shape == (40, 28, 28, 1) and train.images.dtype == np.uint8 and train.channels == 1
    np.testing.assert_array_equal(train.images[..., 0], fake_mnist["train_images"])
    np.testing.assert_array_equal(test.images[..., 0], fake_mnist["test_images"])
    np.testing.assert_array_equal(train.labels, fake_mnist["train_labels"].astype(np.int64))
    assert train.labels.dtype == np.int64 and train.classes == [str(d) for d in range(10)]
    x = fake_mnist["train_images"] / 255.0
    assert train.mean == pytest.approx((x.mean(),), abs=1e-9) and train.std == pytest.approx((x.std(),), abs=1e-9)
    assert test.mean == train.mean  # the test split is normalised with the training statistics


def test_unpacked_idx_files_load_without_md5(tmp_path):
    arrays, _ = write_idx_set(tmp_path / "fashion-mnist", gz=False)
    train, test = get_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(test.images[..., 0], arrays["test_images"])
    assert train.classes[0] == "T-shirt/top" and len(train.classes) == 10 and train.name == "Fashion-MNIST train"


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_idx_every_type_any_rank(tmp_path, dtype):
    sign = 1 if dtype.startswith("u") else -1  # negative values where the type has them: sign handling is read too
    a = (sign * np.arange(24).reshape(2, 3, 4)).astype(dtype)
    p = tmp_path / "x.idx"
    p.write_bytes(idx_bytes(a))
    got = mnist.read_idx(p)
    assert got.dtype == np.dtype(dtype) and got.shape == (2, 3, 4) and got.dtype.isnative
    np.testing.assert_array_equal(got, a)


def test_idx_header_is_big_endian(tmp_path):
    # 300 = 0x0000012C: read little-endian it would be 0x2C010000, a gross size mismatch
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 8, 1]) + (300).to_bytes(4, "big") + bytes(range(256)) + bytes(44))
    assert mnist.read_idx(p).shape == (300,)


@pytest.mark.parametrize("damage, words", [
    ("truncated", "truncated"),          # the header promises more images than the file holds
    ("cut_gzip", "truncated or corrupt"),  # the gzip stream itself is cut short
    ("magic", "not an IDX file"),
    ("type", "type code 0x07"),
    ("extra", "corrupt"),
])
def test_broken_idx_file_names_the_file(tmp_path, monkeypatch, damage, words):
    arrays, md5 = write_idx_set(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    data = idx_bytes(arrays["train_images"])
    if damage == "truncated":
        path.write_bytes(gzip.compress(data[:-100]))
    elif damage == "cut_gzip":
        path.write_bytes(path.read_bytes()[:-500])
    elif damage == "magic":
        path.write_bytes(gzip.compress(b"\x08\x03" + data[2:]))
    elif damage == "type":
        path.write_bytes(gzip.compress(data[:2] + b"\x07" + data[3:]))
    else:
        path.write_bytes(gzip.compress(data + b"\x00" * 28))
    md5["train_images"] = hashlib.md5(path.read_bytes()).hexdigest()  # get past the MD5 to the format checks
    monkeypatch.setitem(mnist.IDX_DATASETS, "mnist", dict(mnist.IDX_DATASETS["mnist"], md5=md5))
    with pytest.raises(DatasetError, match=words) as e:
        get_dataset("mnist", data_dir=tmp_path)
    assert str(path) in str(e.value)


def test_wrong_shape_and_label_range_are_named(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    arrays, md5 = write_idx_set(folder, gz=False)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(12, 10, np.uint8)))
    with pytest.raises(DatasetError, match="labels run from 10 to 10"):
        get_dataset("mnist", data_dir=tmp_path)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(DatasetError, match="expected 12 labels"):
        get_dataset("mnist", data_dir=tmp_path)
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((12, 32, 32), np.uint8)))
    with pytest.raises(DatasetError, match=r"\(N, 28, 28\)"):
        get_dataset("mnist", data_dir=tmp_path)


def test_bad_md5_of_an_official_file_is_an_error(tmp_path):
    write_idx_set(tmp_path / "mnist")  # our own files: not the official MD5s
    with pytest.raises(DatasetError, match="MD5 of the official MNIST file") as e:
        get_dataset("mnist", data_dir=tmp_path, download=False)
    assert "train-images-idx3-ubyte.gz" in str(e.value) and "Delete it" in str(e.value)


def test_download_tries_the_mirrors_and_checks_md5(tmp_path, monkeypatch):
    served = tmp_path / "served"
    arrays, md5 = write_idx_set(served)
    mirrors = ["https://nowhere.invalid/mnist/", served.as_uri() + "/"]
    monkeypatch.setitem(mnist.IDX_DATASETS, "mnist", dict(mnist.IDX_DATASETS["mnist"], md5=md5, mirrors=mirrors))
    real = cifar._urlopen

    def opener(url, timeout):
        if "nowhere" in url:
            raise OSError("no route to host")
        return real(url, timeout=timeout)
    monkeypatch.setattr(cifar, "_urlopen", opener)
    data = tmp_path / "data"
    train, _ = get_dataset("mnist", data_dir=data)
    np.testing.assert_array_equal(train.images[..., 0], arrays["train_images"])
    assert sorted(p.name for p in (data / "mnist").iterdir()) == sorted(f + ".gz" for f in mnist.FILES.values())


def test_download_with_wrong_md5_everywhere_leaves_nothing(tmp_path, monkeypatch):
    served = tmp_path / "served"
    _, md5 = write_idx_set(served)
    monkeypatch.setitem(mnist.IDX_DATASETS, "mnist", dict(mnist.IDX_DATASETS["mnist"], md5=dict(md5, train_images="0" * 32),
                                                          mirrors=[served.as_uri() + "/"]))
    data = tmp_path / "data"
    with pytest.raises(DatasetError, match="could not be fetched") as e:
        get_dataset("mnist", data_dir=data)
    assert "MD5" in str(e.value) and "put them in" in str(e.value)
    assert list((data / "mnist").iterdir()) == []  # neither the file nor a .part


def test_offline_message_lists_files_and_md5s(tmp_path):
    with pytest.raises(DatasetError) as e:
        get_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    msg = str(e.value)
    for key in mnist.FILES:
        assert mnist.FILES[key] + ".gz" in msg and mnist.IDX_DATASETS["fashion-mnist"]["md5"][key] in msg


def test_official_md5s_are_the_published_ones():
    # A typo here would reject every good download; these are the values torchvision and the
    # data sets' own pages publish (checked by hand, not recomputed).
    assert mnist.IDX_DATASETS["mnist"]["md5"]["train_images"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert mnist.IDX_DATASETS["fashion-mnist"]["md5"]["test_labels"] == "bb300cfdad3c16e7a12a480ee83cd310"
    assert flowers.FILES["102flowers.tgz"] == "52808999861908f626f3c1f4e79d11fa"
    assert all(len(m) == 32 for spec in mnist.IDX_DATASETS.values() for m in spec["md5"].values())


# --- MAT v5 files: a tiny writer, independent of the reader ---------------------------------------
MI = {"i1": 1, "u1": 2, "i2": 3, "u2": 4, "i4": 5, "u4": 6, "f4": 7, "f8": 9}
MX = {"f8": 6, "f4": 7, "i1": 8, "u1": 9, "i2": 10, "u2": 11, "i4": 12, "u4": 13}


def mat_element(mtype: int, data: bytes, order: str) -> bytes:
    """One element: the small form for <= 4 bytes, else tag + data padded to 8 bytes."""
    if len(data) <= 4:
        return struct.pack(order + "HH", mtype, len(data)) + data.ljust(4, b"\0") if order == "<" else \
            struct.pack(order + "HH", len(data), mtype) + data.ljust(4, b"\0")
    return struct.pack(order + "II", mtype, len(data)) + data + b"\0" * (-len(data) % 8)


def mat_matrix(name: str, a: np.ndarray, stored: str, order: str, cls: int | None = None) -> bytes:
    """An miMATRIX element: array a of class a.dtype, its data written as `stored` (e.g. double as uint8)."""
    cls = MX[a.dtype.str[1:]] if cls is None else cls
    body = (mat_element(6, struct.pack(order + "II", cls, 0), order)
            + mat_element(5, np.asarray(a.shape, order + "i4").tobytes(), order)
            + mat_element(1, name.encode(), order)
            + mat_element(MI[stored], a.astype(order + stored).tobytes(order="F"), order))
    return struct.pack(order + "II", 14, len(body)) + body


def write_mat(path: Path, variables: dict, compress=False, order="<"):
    """variables: {name: (array, stored dtype)}. compress: each variable in an miCOMPRESSED element."""
    text = b"MATLAB 5.0 MAT-file, written by minicct's tests".ljust(116, b" ")
    header = text + b"\0" * 8 + struct.pack(order + "H", 0x0100) + (b"IM" if order == "<" else b"MI")
    out = header
    for name, (a, stored) in variables.items():
        m = mat_matrix(name, a, stored, order)
        out += struct.pack(order + "II", 15, len(zlib.compress(m))) + zlib.compress(m) if compress else m
    path.write_bytes(out)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("order", ["<", ">"])
def test_read_mat_numeric_classes_and_storage(tmp_path, compress, order):
    rng = np.random.default_rng(0)
    v = {"ids": (np.arange(1, 8, dtype=np.float64)[None, :], "u1"),          # double stored as uint8
         "labels": (rng.integers(1, 103, (1, 9)).astype(np.float64), "u2"),  # double stored as uint16
         "x": (rng.standard_normal((2, 3)), "f8"),                           # 2x3: column-major on disk
         "small": (np.array([[5.0]]), "u1"),                                 # 1 byte: the small element form
         "counts": (np.array([[1, 70000]], np.uint32), "u4"),
         "z": (np.array([[-3, 4]], np.int16), "i2")}
    p = tmp_path / "v.mat"
    write_mat(p, v, compress=compress, order=order)
    got = read_mat(p)
    assert sorted(got) == sorted(v)
    for name, (a, _) in v.items():
        assert got[name].shape == a.shape and got[name].dtype == a.dtype, name
        np.testing.assert_array_equal(got[name], a)


@pytest.mark.parametrize("damage, words", [
    ("short", "shorter than a MAT-file header"),
    ("endian", "not a MAT v5 file"),
    ("version", "MAT version 0x0200"),
    ("cut", "runs past the end"),
    ("zlib", "could not be unpacked"),
    ("cell", "cell array"),
    ("hdf5", "v7.3"),
])
def test_read_mat_errors_say_why(tmp_path, damage, words):
    p = tmp_path / "v.mat"
    write_mat(p, {"ids": (np.arange(1, 30, dtype=np.float64)[None, :], "f8")}, compress=damage == "zlib")
    b = p.read_bytes()
    if damage == "short":
        b = b[:100]
    elif damage == "endian":
        b = b[:126] + b"XX" + b[128:]
    elif damage == "version":
        b = b[:124] + struct.pack("<H", 0x0200) + b[126:]
    elif damage == "cut":
        b = b[:-40]
    elif damage == "zlib":
        b = b[:136] + bytes(len(b) - 136)  # the compressed bytes zeroed
    elif damage == "cell":
        b = b[:128] + mat_matrix("c", np.zeros((1, 1)), "f8", "<", cls=1)
    else:
        b = b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + b[38:]
    p.write_bytes(b)
    with pytest.raises(MatFileError, match=words) as e:
        read_mat(p)
    assert str(p) in str(e.value)


# --- Flowers-102 on a tiny stand-in ------------------------------------------------------------------
def write_fake_flowers(root: Path, n=14, compress=True):
    """root/flowers-102 with imagelabels.mat, setid.mat and jpg/image_%05d.jpg of assorted sizes.

    Image i is a flat grey of value 10 * i, so a photo can be traced back to its number after loading.
    Returns (labels 1..102 for images 1..n, {'trnid': ids, 'valid': ids, 'tstid': ids}).
    """
    folder = root / "flowers-102"
    (folder / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(1)
    labels = rng.integers(1, 103, n)
    perm = rng.permutation(np.arange(1, n + 1))
    ids = {"trnid": np.sort(perm[:4]), "valid": np.sort(perm[4:7]), "tstid": np.sort(perm[7:])}
    write_mat(folder / "imagelabels.mat", {"labels": (labels[None, :].astype(np.float64), "u1")}, compress)
    write_mat(folder / "setid.mat", {k: (v[None, :].astype(np.float64), "u2") for k, v in ids.items()}, compress)
    for i in range(1, n + 1):
        w, h = [(50, 40), (40, 60), (33, 33)][i % 3]
        Image.new("RGB", (w, h), (10 * i, 10 * i, 10 * i)).save(folder / "jpg" / f"image_{i:05d}.jpg", quality=95)
    return labels, ids


@pytest.fixture
def fake_flowers(tmp_path, monkeypatch):
    labels, ids = write_fake_flowers(tmp_path)
    folder = tmp_path / "flowers-102"
    md5 = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in ("imagelabels.mat", "setid.mat")}
    monkeypatch.setattr(flowers, "FILES", dict(flowers.FILES, **md5))
    return labels, ids


@pytest.mark.parametrize("name, key", [("flowers102", "tstid"), ("flowers102-valid", "valid")])
def test_flowers_split_labels_and_images(tmp_path, fake_flowers, name, key):
    labels, ids = fake_flowers
    train, test = get_dataset(name, data_dir=tmp_path, img_size=16, download=False, check_counts=False)
    for ds, k in ((train, "trnid"), (test, key)):
        assert ds.images.shape == (len(ids[k]), 16, 16, 3)
        np.testing.assert_array_equal(ds.labels, labels[ids[k] - 1] - 1)  # 1-based ids and labels -> 0-based
        # each photo is the one its id names (its flat grey encodes the id), JPEG-rounded
        np.testing.assert_allclose(ds.images.reshape(len(ds), -1).mean(1), 10.0 * ids[k], atol=2)
    assert train.num_classes == 102 and train.classes[0] == "1" and train.classes[-1] == "102"
    assert train.mean == flowers.MEAN


def test_flowers_official_counts_are_checked(tmp_path, fake_flowers):
    with pytest.raises(DatasetError, match="not the official Flowers-102 files") as e:
        get_dataset("flowers102", data_dir=tmp_path, img_size=16, download=False)
    assert "1020" in str(e.value) and "6149" in str(e.value)
    assert sum(flowers.COUNTS.values()) == flowers.NUM_IMAGES == 8189


def test_flowers_archive_is_unpacked_when_jpg_is_missing(tmp_path, fake_flowers, monkeypatch):
    import shutil
    import tarfile
    folder = tmp_path / "flowers-102"
    with tarfile.open(folder / "102flowers.tgz", "w:gz") as tar:
        tar.add(folder / "jpg", arcname="jpg")
    shutil.rmtree(folder / "jpg")
    monkeypatch.setattr(flowers, "FILES", dict(flowers.FILES, **{
        "102flowers.tgz": hashlib.md5((folder / "102flowers.tgz").read_bytes()).hexdigest()}))
    train, _ = get_dataset("flowers102", data_dir=tmp_path, img_size=8, download=False, check_counts=False)
    assert (folder / "jpg" / "image_00001.jpg").is_file() and train.images.shape[1:] == (8, 8, 3)


def test_flowers_bad_files_are_clear_errors(tmp_path, fake_flowers, monkeypatch):
    folder = tmp_path / "flowers-102"
    (folder / "jpg" / f"image_{fake_flowers[1]['trnid'][0]:05d}.jpg").unlink()
    with pytest.raises(DatasetError, match="missing"):
        get_dataset("flowers102", data_dir=tmp_path, img_size=8, download=False, check_counts=False)
    (folder / "setid.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="MD5") as e:  # the MD5 catches it first
        get_dataset("flowers102", data_dir=tmp_path, img_size=8, download=False, check_counts=False)
    assert "setid.mat" in str(e.value)
    monkeypatch.setattr(flowers, "FILES", dict(flowers.FILES, **{"setid.mat": hashlib.md5(b"not a mat file").hexdigest()}))
    with pytest.raises(DatasetError, match="shorter than a MAT-file header"):
        get_dataset("flowers102", data_dir=tmp_path, img_size=8, download=False, check_counts=False)


def test_real_flowers_split_if_present():
    folder = REPO / "data" / "flowers-102"
    if not (folder / "setid.mat").is_file() or not (folder / "imagelabels.mat").is_file():
        pytest.skip("the official setid.mat / imagelabels.mat are not in data/flowers-102")
    labels, ids = flowers.read_split(folder, download=False)
    assert {k: len(v) for k, v in ids.items()} == {"train": 1020, "valid": 1020, "test": 6149}
    assert len(labels) == 8189 and labels.min() == 0 and labels.max() == 101
    # every class has 10 training and 10 validation images in the official split
    assert (np.bincount(labels[ids["train"] - 1], minlength=102) == 10).all()
    assert (np.bincount(labels[ids["valid"] - 1], minlength=102) == 10).all()


# --- grey images through the pipeline ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OPS))
def test_every_randaugment_op_on_grey_equals_the_op_on_grey_rgb(name):
    # A grey image is an RGB image with R = G = B; every op must treat its one channel as it treats each
    # of those three, so the two results agree exactly (Color, which desaturates, leaves both alone).
    rng = np.random.default_rng(3)
    g = rng.integers(0, 256, (20, 24, 1), dtype=np.uint8)
    rgb = np.repeat(g, 3, axis=-1)
    for mag, neg in ((9.0, False), (5.0, True)):
        a = apply_op(g, name, mag, neg, fill=(77,), interpolation="bicubic")
        b = apply_op(rgb, name, mag, neg, fill=(77, 77, 77), interpolation="bicubic")
        assert a.shape == (20, 24, 1) and a.dtype == np.uint8
        np.testing.assert_array_equal(a[..., 0], b[..., 0], err_msg=name)


def test_train_transform_on_grey_matches_rgb_channel():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    t1 = TrainTransform(24, mean=(0.3,))
    t3 = TrainTransform(24, mean=(0.3, 0.3, 0.3))
    a = t1.batch(g, np.random.default_rng(5))
    b = t3.batch(np.repeat(g, 3, axis=-1), np.random.default_rng(5))
    assert a.shape == (6, 24, 24, 1)
    np.testing.assert_array_equal(a[..., 0], b[..., 0])


def test_normalize_one_channel():
    x = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 1), dtype=np.uint8)
    y = Normalize((0.1307,), (0.3081,))(x)
    assert y.shape == (3, 1, 5, 7) and y.dtype == np.float32
    np.testing.assert_allclose(y[:, 0], (x[..., 0] / 255.0 - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(Normalize((0.1307,), (0.3081,)).inverse(y), x)
    with pytest.raises(ValueError, match="1-channel statistics"):
        Normalize((0.5,), (0.5,))(np.zeros((2, 4, 4, 3), np.uint8))


def test_grey_loader_batches_and_model(tmp_path, fake_mnist):
    from minicct import Tensor, models
    train, _ = get_dataset("mnist", data_dir=tmp_path)
    x, y = next(iter(train_loader(train, batch_size=8, seed=0)))
    assert x.shape == (8, 1, 28, 28) and y.shape == (8, 10)
    model = models.create_model("cct_7_3x1_32", img_size=28, n_input_channels=1, num_layers=1)
    # one 3x3 conv (stride 1, pad 1) keeps 28; the 3x3/2 max-pool (pad 1) halves it: 14 x 14 tokens
    assert model.tokenizer.sequence_length(28, 28) == 196
    assert model(Tensor(x[:2])).shape == (2, 10)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(Tensor(np.zeros((2, 3, 28, 28), np.float32)))


def test_train_evaluate_predict_on_grey_idx_data(tmp_path, fake_mnist, capsys):
    from minicct import evaluate, predict, train
    from minicct.training import checkpoint as ckpt_io
    from minicct.training.errors import run_cli
    out = tmp_path / "run"
    code = run_cli(train.main, ["mnist", "--data-dir", str(tmp_path), "--model", "cct_2_3x2_32",
                                "--model-kwargs", "embedding_dim=16", "num_layers=1", "num_heads=2", "in_planes=8",
                                "--epochs", "1", "--warmup-epochs", "0", "--cooldown-epochs", "0",
                                "--batch-size", "8", "--workers", "0", "--output", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "preset mnist" in text and "28px" in text
    ck = ckpt_io.load_checkpoint(out / "last.npz")
    assert ck["model"]["data_kwargs"]["n_input_channels"] == 1 and ck["model"]["img_size"] == 28
    assert run_cli(evaluate.main, ["--checkpoint", str(out / "last.npz"), "--data-dir", str(tmp_path)]) == 0
    assert "12 images" in capsys.readouterr().out
    png = tmp_path / "digit.png"
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(png)  # any size and mode: made grey, 28 px
    assert run_cli(predict.main, [str(png), "--checkpoint", str(out / "last.npz")]) == 0
    assert "digit.png" in capsys.readouterr().out


def test_paper_presets_apply_by_dataset_name():
    from minicct.training.config import PRESETS, merge, parse_flags

    def settings(argv):
        return merge(parse_flags(argv))[0]
    v = settings(["flowers102"])
    assert (v["model"], v["img_size"], v["batch_size"], v["lr"], v["mixup_off_epoch"]) == \
        ("cct_7_7x2_224_sine", 224, 96, 5e-4, 0)
    assert settings(["flowers102-valid"])["preset"] == "flowers102"
    v = settings(["cifar100"])
    assert v["preset"] == "cifar100" and v["lr"] == 6e-4 and v["warmup_lr"] == 1e-6
    assert settings(["Fashion_MNIST"])["preset"] == "fashion-mnist"
    assert settings(["fashion-mnist", "--preset", "fast-cpu"])["preset"] == "fast-cpu"  # an explicit preset wins
    v = settings(["cifar10"])
    assert v["preset"] is None and v["lr"] == 5.5e-4  # CIFAR-10's recipe is the defaults
    assert {"cifar100", "flowers102", "mnist", "fashion-mnist"} <= set(PRESETS)


def test_flowers102_trains_from_one_command_on_a_stand_in(tmp_path, fake_flowers, capsys, monkeypatch):
    """python -m minicct.train flowers102 (its preset: CCT-7/7x2 at 224 px) on the tiny stand-in,
    shrunk to a few pixels and one layer so it runs in seconds; the official split is used."""
    from minicct import train
    from minicct.training import checkpoint as ckpt_io
    from minicct.training.errors import run_cli
    _, ids = fake_flowers
    monkeypatch.setattr(flowers, "COUNTS", {"train": 4, "valid": 3, "test": 7})
    monkeypatch.setattr(flowers, "NUM_IMAGES", 14)
    out = tmp_path / "run"
    code = run_cli(train.main, ["flowers102", "--data-dir", str(tmp_path), "--img-size", "28",
                                "--model-kwargs", "embedding_dim=16", "num_layers=1", "num_heads=2",
                                "--epochs", "1", "--warmup-epochs", "0", "--cooldown-epochs", "0",
                                "--batch-size", "4", "--workers", "0", "--output", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "preset flowers102" in text and "cct_7_7x2_224_sine" in text
    ck = ckpt_io.load_checkpoint(out / "last.npz")
    assert ck["model"]["num_classes"] == 102 and ck["history"][0]["epoch"] == 0
    assert len(ck["data"]["classes"]) == 102
