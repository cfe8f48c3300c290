""".npz and .pth checkpoints: round trips, the official layout, torch compatibility (optional),
positional embeddings of another size, and refusing pickles that would run code."""
import io
import pickle
import pickletools
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

import minicct
from minicct import models, nn
from minicct import formats as ckpt
from minicct.models import create_model

TINY = dict(img_size=8, embedding_dim=16, num_layers=2, num_heads=2, mlp_ratio=1, in_planes=8)

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed: the checks against "
                                                       "torch.save/torch.load are optional")


def logits(model, seed=0, size=8):
    x = minicct.Tensor(np.random.default_rng(seed).standard_normal((2, 3, size, size)))
    with minicct.no_grad():
        return model.eval()(x).numpy()


# ---- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npz", ".pth"])
def test_save_load_round_trip(tmp_path, suffix):
    minicct.manual_seed(0)
    a = create_model("cct_2_3x2_32", **TINY)
    minicct.manual_seed(1)
    b = create_model("cct_2_3x2_32", **TINY)
    assert not np.allclose(logits(a), logits(b))
    models.save_weights(a, tmp_path / f"w{suffix}")
    assert models.load_weights(b, tmp_path / f"w{suffix}") == ([], [])
    assert np.array_equal(logits(a), logits(b))
    back = models.read_state_dict(tmp_path / f"w{suffix}")
    assert list(back) == list(a.state_dict())      # order kept


def test_sine_table_travels_in_the_state_dict(tmp_path):
    m = create_model("cvt_2_4_32_sine", **TINY)
    models.save_weights(m, tmp_path / "s.npz")
    assert "classifier.positional_emb" in models.read_state_dict(tmp_path / "s.npz")


def test_pth_writer_reader_dtypes_shapes_and_wrapping(tmp_path):
    arrays = OrderedDict([
        ("f32", np.arange(6, dtype=np.float32).reshape(2, 3)),
        ("f64", np.linspace(0, 1, 5)),
        ("f16", np.array([1.5, -2.0], np.float16)),
        ("i64", np.arange(4)),
        ("i32", np.array([[1], [2]], np.int32)),
        ("u8", np.array([0, 255], np.uint8)),
        ("bool", np.array([True, False])),
        ("scalar", np.array(3.25, np.float32)),
        ("empty", np.zeros((0, 3), np.float32)),
        ("strided", np.arange(12, dtype=np.float32).reshape(3, 4).T),   # not contiguous
    ])
    ckpt.write_pth({"state_dict": arrays, "epoch": 7, "lr": 1e-3, "name": "x", "tags": [1, (2, None)]},
                   tmp_path / "a.pth")
    obj = ckpt.read_pth(tmp_path / "a.pth")
    assert obj["epoch"] == 7 and obj["lr"] == 1e-3 and obj["name"] == "x" and obj["tags"] == [1, (2, None)]
    for k, v in arrays.items():
        got = obj["state_dict"][k]
        assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v), k
    sd = models.read_state_dict(tmp_path / "a.pth")          # unwrapped from 'state_dict'
    assert list(sd) == list(arrays)


def test_checkpoint_wrappers_and_dataparallel_prefix():
    sd = OrderedDict(w=np.zeros(2))
    assert list(ckpt.extract_state_dict({"model": sd, "epoch": 1})) == ["w"]
    assert list(ckpt.extract_state_dict({"state_dict": {"module.w": np.ones(1)}})) == ["w"]
    with pytest.raises(ckpt.CheckpointError, match="no state_dict"):
        ckpt.extract_state_dict({"epoch": 1, "args": "x"})


def test_pth_records_are_64_byte_aligned(tmp_path):
    ckpt.write_pth(OrderedDict(a=np.ones(3, np.float32), b=np.zeros(5)), tmp_path / "a.pth")
    raw = (tmp_path / "a.pth").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.pth") as zf:
        for info in zf.infolist():
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename


# ---- the official layout --------------------------------------------------------------------------
def test_load_reports_wrong_architecture_by_name(tmp_path):
    models.save_weights(create_model("cct_2_3x2_32", **TINY), tmp_path / "w.npz")
    other = create_model("cct_2_3x2_32", **dict(TINY, num_layers=1, embedding_dim=8))
    with pytest.raises(nn.StateDictError) as e:
        models.load_weights(other, tmp_path / "w.npz")
    msg = str(e.value)
    assert "classifier.blocks.1.pre_norm.weight" in msg          # unexpected
    assert "classifier.fc.weight: checkpoint (10, 16), model (10, 8)" in msg


# ---- positional embeddings of another length --------------------------------------------------------
def test_learnable_embedding_of_another_length_is_an_error_or_resized(tmp_path):
    small = create_model("vit_2_4_32", **TINY)                   # 2x2 patches + class token
    models.save_weights(small, tmp_path / "w.pth")
    big = create_model("vit_2_4_32", **dict(TINY, img_size=16))  # 4x4 patches + class token
    with pytest.raises(nn.StateDictError, match="resize_pos_embed=True"):
        models.load_weights(big, tmp_path / "w.pth")
    models.load_weights(big, tmp_path / "w.pth", resize_pos_embed=True)
    pe_small = small.classifier.positional_emb.numpy()
    pe_big = big.classifier.positional_emb.numpy()
    assert pe_big.shape == (1, 17, 16)
    assert np.array_equal(pe_big[:, 0], pe_small[:, 0])          # the class token's row is kept
    assert np.array_equal(big.classifier.fc.weight.numpy(), small.classifier.fc.weight.numpy())


def test_sine_table_of_another_length_is_rebuilt(tmp_path):
    models.save_weights(create_model("cct_2_3x2_32_sine", **TINY), tmp_path / "w.npz")
    big = create_model("cct_2_3x2_32_sine", **dict(TINY, img_size=16))
    before = big.classifier.positional_emb.numpy()
    models.load_weights(big, tmp_path / "w.npz")
    assert np.array_equal(big.classifier.positional_emb.numpy(), before)


def test_resize_pos_embed_bilinear():
    grid = np.arange(4, dtype=np.float64).reshape(1, 4, 1)          # 2x2 grid [[0, 1], [2, 3]]
    out = models.resize_pos_embed(grid, 16)[0, :, 0].reshape(4, 4)
    # align_corners=False: output pixel centres at -0.25, 0.25, 0.75, 1.25 of the input (clamped)
    assert np.allclose(out[0], [0, 0.25, 0.75, 1])
    assert np.allclose(out[:, 0], [0, 0.5, 1.5, 2])
    same = np.random.default_rng(0).standard_normal((1, 1 + 9, 3))
    assert np.allclose(models.resize_pos_embed(same, 10, num_tokens=1), same)
    with pytest.raises(ValueError, match="square"):
        models.resize_pos_embed(np.zeros((1, 6, 2)), 9)


@needs_torch
def test_resize_pos_embed_matches_torch_interpolate():
    rng = np.random.default_rng(0)
    pe = rng.standard_normal((1, 1 + 64, 5))
    for new in (1 + 16, 1 + 144, 1 + 49):
        g = int(np.sqrt(new - 1))
        grid = torch.from_numpy(pe[0, 1:]).reshape(1, 8, 8, 5).permute(0, 3, 1, 2)
        ref = torch.nn.functional.interpolate(grid, size=(g, g), mode="bilinear")
        ref = ref.permute(0, 2, 3, 1).reshape(1, g * g, 5).numpy()
        got = models.resize_pos_embed(pe, new, num_tokens=1)
        assert np.allclose(got[:, 1:], ref, atol=1e-12) and np.array_equal(got[:, :1], pe[:, :1])


# ---- torch compatibility (optional) -----------------------------------------------------------------
@needs_torch
def test_torch_loads_what_we_write(tmp_path):
    m = create_model("cct_2_3x2_32", **TINY)
    models.save_weights(m, tmp_path / "w.pth")
    for kwargs in (dict(weights_only=True), dict(weights_only=False), dict(mmap=True, weights_only=True)):
        loaded = torch.load(tmp_path / "w.pth", **kwargs)
        assert list(loaded) == list(m.state_dict())
        for k, v in m.state_dict().items():
            assert np.array_equal(loaded[k].numpy(), v), k


@needs_torch
def test_we_read_what_torch_save_writes(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = OrderedDict([
        ("t", base.t()),                          # strided view
        ("slice", base[1:3, 2:5]),                # offset into a shared storage
        ("row", base[2]),
        ("i64", torch.arange(5)),
        ("bf16", torch.tensor([1.5, -0.25], dtype=torch.bfloat16)),
        ("half", torch.tensor([0.5], dtype=torch.float16)),
        ("param", torch.nn.Parameter(torch.ones(2))),
        ("bool", torch.tensor([True, False])),
    ])
    torch.save({"model": sd, "epoch": 3}, tmp_path / "t.pth")
    obj = ckpt.read_pth(tmp_path / "t.pth")
    assert obj["epoch"] == 3
    for k, v in sd.items():
        ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
        assert np.array_equal(obj["model"][k], ref), k


# ---- refusing code ----------------------------------------------------------------------------------
def _pth_with_pickle(path, payload):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", b"3\n")


class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("fn", ["os.system", "builtins.eval", "subprocess.check_output",
                                "numpy.load", "torch.load"])
def test_pickle_that_would_run_code_is_refused(tmp_path, fn):
    import builtins
    import os
    import subprocess
    marker = tmp_path / "pwned"
    target = {"os.system": os.system, "builtins.eval": builtins.eval,
              "subprocess.check_output": subprocess.check_output, "numpy.load": np.load}.get(fn)
    if target is None:   # torch.load without torch: write the opcode by hand
        payload = b"\x80\x02ctorch\nload\nX\x03\x00\x00\x00abc\x85R."
    else:
        payload = pickle.dumps(OrderedDict(w=_Evil(target, f"touch {marker}")), protocol=2)
    _pth_with_pickle(tmp_path / "evil.pth", payload)
    with pytest.raises(ckpt.CheckpointError, match="refusing to load"):
        ckpt.read_pth(tmp_path / "evil.pth")
    assert not marker.exists()


def test_storage_type_lookalikes_and_bad_strides_are_refused(tmp_path):
    # a storage reference whose type is not a storage class
    payload = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
               b"ccollections\nOrderedDict\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x02\x85K\x01\x85"
               b"\x89ccollections\nOrderedDict\n)RtR.")
    _pth_with_pickle(tmp_path / "a.pth", payload)
    with pytest.raises(ckpt.CheckpointError, match="malformed"):
        ckpt.read_pth(tmp_path / "a.pth")
    # a tensor whose strides reach past its storage (as_strided would read foreign memory)
    ckpt.write_pth(OrderedDict(w=np.zeros(4, np.float32)), tmp_path / "b.pth")
    with zipfile.ZipFile(tmp_path / "b.pth") as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    pkl = files["archive/data.pkl"]
    stride_op = b"(J\x01\x00\x00\x00t"                      # stride (1,)
    assert stride_op in pkl
    files["archive/data.pkl"] = pkl.replace(stride_op, b"(J\x00\x10\x00\x00t")   # stride (4096,)
    with zipfile.ZipFile(tmp_path / "c.pth", "w") as zf:
        for n, b in files.items():
            zf.writestr(n, b)
    with pytest.raises(ckpt.CheckpointError, match="reach element"):
        ckpt.read_pth(tmp_path / "c.pth")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "legacy.pth").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ckpt.CheckpointError, match="legacy"):
        ckpt.read_pth(tmp_path / "legacy.pth")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ckpt.CheckpointError, match="data.pkl"):
        models.read_state_dict(tmp_path / "other.zip")
    _pth_with_pickle(tmp_path / "broken.pth", b"\x80\x02}q\x00(")     # truncated pickle
    with pytest.raises(ckpt.CheckpointError, match="could not read"):
        ckpt.read_pth(tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="extension"):
        models.save_weights(OrderedDict(), tmp_path / "w.h5")


def test_pickle_cannot_modify_the_objects_the_reader_makes(tmp_path):
    # BUILD on a storage type, trying to turn its dtype into 'object'
    payload = b"\x80\x02ctorch\nFloatStorage\nN}X\x05\x00\x00\x00dtypeX\x01\x00\x00\x00Os\x86b."
    pickletools.dis(payload, out=io.StringIO())     # a well-formed pickle: (None, {'dtype': 'O'})
    _pth_with_pickle(tmp_path / "a.pth", payload)
    with pytest.raises(ckpt.CheckpointError, match="modify"):
        ckpt.read_pth(tmp_path / "a.pth")
