"""The training batch as the trainer gets it: erasing comes last, on normalised floats; 'pixel'
erasing is per-pixel, per-channel noise; mixing is on before --mixup-off-epoch and off from it.

Each of these once let a plausible bug through: every stage was right on its own, but the
composition (order, fill shape, switch-off epoch) was not checked."""
import numpy as np
import pytest

from minicct.data.loader import train_loader
from minicct.data.mixup import Mixup
from minicct.data.shapes import make_shapes
from minicct.data.transforms import RandomErasing


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(n_train=128, n_test=10, seed=0)


def first_batch(train, **kw):
    with train_loader(train, batch_size=64, seed=0, **kw) as loader:
        return next(iter(loader))


@pytest.mark.parametrize("mixing", [{}, dict(mixup_alpha=0, cutmix_alpha=0, smoothing=0)],
                         ids=["mixing", "no-mixing"])
def test_erasing_is_last_and_fills_normalised_noise(shapes, mixing):
    """Every image erased (reprob 1) against the same batch without erasing: they differ in one
    rectangle per image, all channels, and nothing else (so erasing comes after mixing, which
    would spread a box over a second image), and the rectangle holds N(0, 1) floats, not values
    a uint8 pixel normalises to (so it comes after normalising)."""
    train, _ = shapes
    x0, y0 = first_batch(train, **mixing)          # RandAugment and (or not) Mixup/CutMix
    x1, y1 = first_batch(train, reprob=1.0, remode="pixel", **mixing)
    np.testing.assert_array_equal(y0, y1)
    changed = x1 != x0                             # (N, 3, H, W)
    noise = x1[changed]
    uint8_values = (np.arange(256)[:, None] / 255.0 - np.asarray(train.mean)) / np.asarray(train.std)
    on_uint8_grid = np.isin(noise, uint8_values.astype(np.float32))
    assert on_uint8_grid.mean() < 0.01, "erased values are normalised uint8 pixels: erased before normalising"
    erased_images = 0
    for i, m in enumerate(changed):
        if not m.any():
            continue                               # no box fitted in 10 tries: timm erases nothing too
        erased_images += 1
        assert (m == m[0]).all(), f"image {i}: erased in some channels only"
        ys, xs = np.nonzero(m[0])
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert m[0].sum() == h * w, f"image {i}: the changed pixels are not one rectangle"
    assert erased_images > 0.9 * len(x1)
    assert x1.dtype == np.float32 and abs(noise.mean()) < 0.05 and noise.std() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("mode", ["pixel", "rand", "const"])
def test_erasing_fill_per_mode(mode):
    """pixel: a fresh N(0, 1) value for every pixel and channel of the box; rand: one N(0, 1)
    colour per box (a value per channel); const: zeros."""
    x = np.full((200, 3, 16, 16), 7.0, np.float32)    # 7: never drawn, so the box shows
    RandomErasing(1.0, mode=mode)(x, np.random.default_rng(0))
    boxes = 0
    for img in x:
        m = img[0] != 7.0
        if not m.any():
            continue
        boxes += 1
        box = img[:, m]                                # (3, pixels in the box)
        if mode == "pixel":
            assert len(np.unique(box)) > 0.99 * box.size, "pixel mode: the box is not per-pixel noise"
            assert (box[0] != box[1]).all() and (box[1] != box[2]).all()
        elif mode == "rand":
            assert (box == box[:, :1]).all() and len(np.unique(box[:, 0])) == 3
        else:
            assert not box.any()
    assert boxes > 150
    if mode != "const":
        x = np.zeros((2000, 3, 16, 16), np.float32)
        RandomErasing(1.0, mode=mode)(x, np.random.default_rng(1))
        vals = x[:, :, 0][x[:, :, 0] != 0] if mode == "rand" else x[x != 0]
        assert abs(vals.mean()) < 0.05 and vals.std() == pytest.approx(1.0, abs=0.05)


# ---- mixing, epoch by epoch, as the trainer runs it -------------------------------------------------
def test_mixing_is_on_before_mixup_off_epoch_and_off_from_it(tmp_path, capsys, monkeypatch,
                                                            generate_datasets_once):
    """A 3-epoch run with --mixup-off-epoch 2, then resumed for a 4th: every training batch's
    mixing decision, per epoch. 64 images in batches of 32: two batches an epoch."""
    from minicct import train
    from minicct.training.errors import run_cli

    decided = []
    real = Mixup.sample

    def spy(self, rng, enabled=None):
        decided.append(self.enabled if enabled is None else enabled)
        return real(self, rng, enabled)

    monkeypatch.setattr(Mixup, "sample", spy)
    tiny = ["shapes", "--model-kwargs", "embedding_dim=16", "num_layers=1", "num_heads=2", "mlp_ratio=1",
            "in_planes=8", "--warmup-epochs", "1", "--cooldown-epochs", "0", "--batch-size", "32",
            "--train-limit", "64", "--test-limit", "32", "--aa", "none", "--mixup", "0.8", "--cutmix", "1.0",
            "--mixup-off-epoch", "2", "--reprob", "0", "--workers", "0", "--output", str(tmp_path)]
    assert run_cli(train.main, tiny + ["--epochs", "3"], prog="minicct.train") == 0, capsys.readouterr().err
    assert decided == [True, True, True, True, False, False]
    decided.clear()
    assert run_cli(train.main, tiny + ["--epochs", "4", "--resume", "auto"], prog="minicct.train") == 0, \
        capsys.readouterr().err
    assert decided == [False, False]
