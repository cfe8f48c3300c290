"""RandomResizedCrop, the per-image train transform, Normalize, RandomErasing, Mixup/CutMix."""
import math

import numpy as np
import pytest

from minicct.data.mixup import Mixup, cutmix_box, mixup_target, one_hot_smooth
from minicct.data.transforms import Normalize, RandomErasing, RandomResizedCrop, TrainTransform, mean_fill


# --- RandomResizedCrop -------------------------------------------------------------------------------
def test_random_resized_crop_boxes_stay_in_bounds():
    crop = RandomResizedCrop(32, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3))
    p = crop.sample(5000, 32, 32, np.random.default_rng(0))
    assert (p.top >= 0).all() and (p.left >= 0).all()
    assert (p.top + p.height <= 32).all() and (p.left + p.width <= 32).all()
    area = p.height * p.width / 1024
    assert area.min() >= 0.8 - 0.07 and area.max() <= 1.0   # integer rounding of the sides
    aspect = p.width / p.height
    assert aspect.min() >= 3 / 4 - 0.06 and aspect.max() <= 4 / 3 + 0.06
    assert len(np.unique(p.top)) > 3 and set(np.unique(p.resample)) == {0, 1}  # positions and filters vary


def test_random_resized_crop_falls_back_to_a_centre_crop():
    rng = np.random.default_rng(0)
    p = RandomResizedCrop(8, scale=(2.0, 3.0)).sample(3, 32, 32, rng)  # no box can fit: whole image
    assert p.top.tolist() == [0] * 3 and p.height.tolist() == [32] * 3 and p.width.tolist() == [32] * 3
    p = RandomResizedCrop(8, scale=(2.0, 3.0)).sample(1, 10, 40, rng)  # too wide: trimmed to ratio 4/3
    assert (p.height[0], p.width[0], p.top[0], p.left[0]) == (10, 13, 0, 13)


def test_random_resized_crop_output_and_determinism():
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    crop = RandomResizedCrop(16)
    a, b = crop(img, np.random.default_rng(1)), crop(img, np.random.default_rng(1))
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_train_transform_batch():
    imgs = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    t = TrainTransform(32, mean=(0.4914, 0.4822, 0.4465))
    assert t.randaugment.fill == (125, 123, 114) == mean_fill((0.4914, 0.4822, 0.4465))
    a, b = t.batch(imgs, np.random.default_rng(3)), t.batch(imgs, np.random.default_rng(3))
    assert a.shape == imgs.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, t.batch(imgs, np.random.default_rng(4)))
    np.testing.assert_array_equal(t(imgs[0], np.random.default_rng(3)).shape, (32, 32, 3))


def test_horizontal_flip_only():
    imgs = np.random.default_rng(0).integers(0, 256, (400, 8, 8, 3), dtype=np.uint8)
    t = TrainTransform(8, scale=(1, 1), ratio=(1, 1), auto_augment=None)  # crop = whole image: flip alone
    out = t.batch(imgs, np.random.default_rng(0))
    flipped = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, imgs)])
    same = np.array([np.array_equal(o, i) for o, i in zip(out, imgs)])
    assert (flipped ^ same).all() and flipped.mean() == pytest.approx(0.5, abs=0.08)


# --- Normalize ---------------------------------------------------------------------------------------
def test_normalize_values_layout_and_inverse():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    x = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    n = Normalize(mean, std)
    y = n(x)
    assert y.shape == (4, 3, 5, 6) and y.dtype == np.float32 and y.flags.c_contiguous
    want = (x / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(y, want.transpose(0, 3, 1, 2), atol=1e-5)
    assert n(x[0]).shape == (3, 5, 6)
    np.testing.assert_array_equal(n.inverse(y), x)
    assert n(np.full((1, 1, 1, 3), 0, np.uint8))[0, 0, 0, 0] == pytest.approx(-0.4914 / 0.2470, rel=1e-5)


# --- RandomErasing -----------------------------------------------------------------------------------
def test_random_erasing_changes_one_box_of_the_right_size():
    H = W = 32
    erase = RandomErasing(prob=1.0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = np.full((2, 3, H, W), 7.0, np.float32)
        erase(x, rng)
        changed = (x != 7.0).any(axis=1)                     # (N, H, W)
        for m in changed:
            ys, xs = np.nonzero(m)
            h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            assert m.sum() == h * w                          # one solid rectangle, nothing else
            assert 0.02 - 0.02 <= h * w / (H * W) <= 1 / 3 + 0.04
            assert 0.3 - 0.15 <= h / w <= 1 / 0.3 + 0.6      # rounding of small sides
            assert h < H and w < W


def test_random_erasing_probability_and_pixel_noise():
    rng = np.random.default_rng(1)
    x = np.zeros((4000, 3, 8, 8), np.float32)
    RandomErasing(prob=0.25)(x, rng)
    erased = (x != 0).reshape(len(x), -1).any(axis=1)
    assert erased.mean() == pytest.approx(0.25, abs=0.03)
    vals = x[x != 0]
    assert abs(vals.mean()) < 0.05 and vals.std() == pytest.approx(1.0, abs=0.05)  # N(0, 1) per pixel
    y = np.zeros((10, 3, 8, 8), np.float32)
    RandomErasing(prob=0.0)(y, rng)
    assert not y.any()
    a, b = np.zeros((5, 3, 16, 16), np.float32), np.zeros((5, 3, 16, 16), np.float32)
    RandomErasing(1.0)(a, np.random.default_rng(9))
    RandomErasing(1.0)(b, np.random.default_rng(9))
    np.testing.assert_array_equal(a, b)


# --- Mixup / CutMix ----------------------------------------------------------------------------------
def test_label_smoothing_values():
    y = one_hot_smooth(np.array([0, 3]), 10, 0.1)
    assert y[0, 0] == pytest.approx(0.91) and y[0, 1] == pytest.approx(0.01) and y[1, 3] == pytest.approx(0.91)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)
    t = mixup_target(np.array([0, 1, 2]), 3, lam=0.7, smoothing=0.0)
    np.testing.assert_allclose(t, [[0.7, 0, 0.3], [0, 1.0, 0], [0.3, 0, 0.7]], atol=1e-6)


def test_mixup_blends_with_the_reversed_batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    labels = np.arange(8)
    mix = Mixup(num_classes=8, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.0)
    xm, y = mix(x.copy(), labels, np.random.default_rng(1))
    lam = y[0, 0]
    assert 0 < lam < 1
    np.testing.assert_allclose(xm, lam * x + (1 - lam) * x[::-1], atol=1e-6)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)
    assert y[0, 7] == pytest.approx(1 - lam)


def test_cutmix_pastes_a_box_and_corrects_lambda():
    H, W = 16, 20
    x = np.stack([np.full((3, H, W), float(i), np.float32) for i in range(6)])
    mix = Mixup(num_classes=6, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.1)
    for seed in range(30):
        xm, y = mix(x.copy(), np.arange(6), np.random.default_rng(seed))
        box = xm[0, 0] != 0.0                       # where image 0 now shows image 5
        assert (xm[0, :, box] == 5.0).all()
        area = box.sum()
        if area:
            ys, xs = np.nonzero(box)
            assert area == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # a rectangle
        lam = 1 - area / (H * W)                    # lambda from the box, by hand
        on, off = 1 - 0.1 + 0.1 / 6, 0.1 / 6
        assert y[0, 0] == pytest.approx(lam * on + (1 - lam) * off, abs=1e-6)
        assert y[0, 5] == pytest.approx(lam * off + (1 - lam) * on, abs=1e-6)
        np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)


class _FixedRng:
    """Stands in for a Generator where a test needs a given box centre."""
    def __init__(self, values):
        self.values = list(values)

    def integers(self, lo, hi):
        return self.values.pop(0)


def test_cutmix_box_is_clipped_at_the_border():
    # lam 0.5 on 32 x 32: sides int(32 * sqrt(0.5)) = 22, half 11; centre (2, 30) is cut by two borders
    (y0, y1, x0, x1), lam = cutmix_box(32, 32, 0.5, _FixedRng([2, 30]))
    assert (y0, y1, x0, x1) == (0, 13, 19, 32)
    assert lam == pytest.approx(1 - 13 * 13 / 1024)
    (y0, y1, x0, x1), lam = cutmix_box(32, 32, 0.5, _FixedRng([16, 16]))  # inside: 22 x 22
    assert (y1 - y0, x1 - x0) == (22, 22) and lam == pytest.approx(1 - 484 / 1024)


def test_switch_probability_and_the_off_switch():
    mix = Mixup(num_classes=10)
    rng = np.random.default_rng(0)
    draws = [mix.sample(rng) for _ in range(4000)]
    assert np.mean([c for _, c in draws]) == pytest.approx(0.5, abs=0.03)
    mix_lams = [l for l, c in draws if not c]
    assert np.mean(mix_lams) == pytest.approx(0.5, abs=0.02) and np.var(mix_lams) == pytest.approx(
        0.8 * 0.8 / (1.6 ** 2 * 2.6), abs=0.01)  # Beta(0.8, 0.8)
    mix.enabled = False
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    xm, y = mix(x.copy(), np.array([1, 2, 3, 4]), rng)
    np.testing.assert_array_equal(xm, x)  # no mixing, but the smoothing stays
    np.testing.assert_allclose(y, one_hot_smooth(np.array([1, 2, 3, 4]), 10, 0.1))
    assert not np.array_equal(mix(x.copy(), np.arange(4), rng, enabled=True)[0], x)  # per-call override
