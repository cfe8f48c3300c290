"""RandAugment: every op, the magnitude -> argument mapping, config parsing, and the sampling."""
import math

import numpy as np
import pytest
from PIL import Image, ImageOps

from minicct.data import randaugment as ra
from minicct.data.randaugment import (DEFAULT_OPS, INCREASING_OPS, OPS, RandAugment, apply_op, level_to_arg,
                                      parse_config)


@pytest.fixture
def img():
    return np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("negate", [False, True])
def test_every_op_keeps_shape_and_dtype_and_is_deterministic(img, name, negate):
    a = apply_op(img, name, 9.0, negate, fill=(125, 123, 114), interpolation="bicubic")
    b = apply_op(img, name, 9.0, negate, fill=(125, 123, 114), interpolation="bicubic")
    assert a.shape == img.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_known_values_by_hand(img):
    x = img.astype(np.int64)
    np.testing.assert_array_equal(apply_op(img, "Invert", 5), 255 - x)
    # PosterizeIncreasing at 9: keep 4 - int(3.6) = 1 bit
    np.testing.assert_array_equal(apply_op(img, "PosterizeIncreasing", 9), x & 0b10000000)
    # at 10 it keeps 0 bits: black (Pillow itself refuses bits=0; timm's old Pillow gave black)
    assert apply_op(img, "PosterizeIncreasing", 10).max() == 0
    # SolarizeIncreasing at 9: threshold 256 - int(230.4) = 26; values >= 26 are inverted
    np.testing.assert_array_equal(apply_op(img, "SolarizeIncreasing", 9), np.where(x >= 26, 255 - x, x))
    np.testing.assert_array_equal(apply_op(img, "SolarizeIncreasing", 0), x)  # threshold 256: unchanged
    # SolarizeAdd at 9: add int(99.0) = 99 below 128, saturating
    np.testing.assert_array_equal(apply_op(img, "SolarizeAdd", 9), np.where(x < 128, np.minimum(x + 99, 255), x))
    # Brightness factor 1.81 on a constant image
    grey = np.full((4, 4, 3), 100, np.uint8)
    assert apply_op(grey, "BrightnessIncreasing", 9)[0, 0, 0] == 181
    assert apply_op(grey, "BrightnessIncreasing", 9, negate=True)[0, 0, 0] == 19


def test_geometric_ops_fill_with_the_given_colour():
    white = np.full((32, 32, 3), 255, np.uint8)
    out = apply_op(white, "Rotate", 10, fill=(1, 2, 3))     # 30 degrees: corners uncovered
    assert tuple(out[0, 0]) == (1, 2, 3) and tuple(out[16, 16]) == (255, 255, 255)
    out = apply_op(white, "TranslateXRel", 10, fill=(1, 2, 3))  # 0.45 * 32 = 14.4 px shift
    assert (out[:, -10:] == (1, 2, 3)).all() and (out[:, :10] == 255).all()
    out = apply_op(white, "TranslateXRel", 10, negate=True, fill=(1, 2, 3))
    assert (out[:, :10] == (1, 2, 3)).all()


@pytest.mark.parametrize("name,pil", [("AutoContrast", ImageOps.autocontrast), ("Equalize", ImageOps.equalize),
                                      ("Invert", ImageOps.invert)])
def test_numpy_colour_ops_match_pillow(name, pil):
    rng = np.random.default_rng(1)
    cases = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
             rng.integers(90, 140, (32, 32, 3), dtype=np.uint8),          # low contrast
             np.full((8, 8, 3), 77, np.uint8),                           # flat
             np.where(rng.random((32, 32, 3)) < 0.9, 255, rng.integers(0, 256, (32, 32, 3))).astype(np.uint8)]
    for x in cases:
        np.testing.assert_array_equal(apply_op(x, name, 0), np.asarray(pil(Image.fromarray(x))))
    for t in (0, 26, 128, 255, 256):
        np.testing.assert_array_equal(np.asarray(ra.solarize(Image.fromarray(cases[0]), t, None, None)),
                                      np.asarray(ImageOps.solarize(Image.fromarray(cases[0]), t)))
    for bits in (1, 4, 8):
        np.testing.assert_array_equal(np.asarray(ra.posterize(Image.fromarray(cases[0]), bits, None, None)),
                                      np.asarray(ImageOps.posterize(Image.fromarray(cases[0]), bits)))


def test_magnitude_mapping_matches_timm():
    assert level_to_arg("Rotate", 9) == pytest.approx(27.0)
    assert level_to_arg("Rotate", 9, negate=True) == pytest.approx(-27.0)
    assert level_to_arg("ShearX", 10) == pytest.approx(0.3)
    assert level_to_arg("ShearY", 5, negate=True) == pytest.approx(-0.15)
    assert level_to_arg("TranslateXRel", 9) == pytest.approx(0.405)
    assert level_to_arg("TranslateYRel", 10, negate=True) == pytest.approx(-0.45)
    assert [level_to_arg("PosterizeIncreasing", m) for m in (0, 2.5, 5, 9, 10)] == [4, 3, 2, 1, 0]
    assert [level_to_arg("SolarizeIncreasing", m) for m in (0, 5, 9, 10)] == [256, 128, 26, 0]
    assert [level_to_arg("SolarizeAdd", m) for m in (0, 5, 9, 10)] == [0, 55, 99, 110]
    for op in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        assert level_to_arg(op, 9) == pytest.approx(1.81)
        assert level_to_arg(op, 9, negate=True) == pytest.approx(0.19)
        assert level_to_arg(op, 10, negate=True) == pytest.approx(0.1)   # 1 - 0.9, kept >= 0.1
        assert level_to_arg(op, 0) == pytest.approx(1.0)
    assert level_to_arg("Color", 10) == pytest.approx(1.9) and level_to_arg("Posterize", 9) == 3
    for op in ("AutoContrast", "Equalize", "Invert"):
        assert level_to_arg(op, 9) is None
    # the increasing ops' arguments are unsigned where timm does not negate them
    assert level_to_arg("SolarizeIncreasing", 9, negate=True) == 26


def test_parse_config():
    c = parse_config("rand-m9-mstd0.5-inc1")
    assert c == dict(magnitude=9.0, num_ops=2, magnitude_std=0.5, magnitude_max=10.0, increasing=True, prob=0.5)
    assert parse_config("rand-m7-n3-mstd101-mmax12-p0.8") == dict(
        magnitude=7.0, num_ops=3, magnitude_std=math.inf, magnitude_max=12.0, increasing=False, prob=0.8)
    assert RandAugment.from_config("rand-m9-mstd0.5-inc1").ops == INCREASING_OPS
    assert RandAugment.from_config("rand-m9-mstd0.5").ops == DEFAULT_OPS
    assert len(INCREASING_OPS) == 15
    for bad in ("rand-x9", "augmix-m3", "rand-m"):
        with pytest.raises(ValueError):
            parse_config(bad)


def test_sampling_statistics():
    aug = RandAugment.from_config("rand-m9-mstd0.5-inc1")
    p = aug.sample(20000, np.random.default_rng(0))
    assert p.op.shape == (20000, 2) and p.op.min() == 0 and p.op.max() == 14
    assert (p.op[:, 0] == p.op[:, 1]).mean() == pytest.approx(1 / 15, abs=0.01)  # with replacement
    assert p.apply.mean() == pytest.approx(0.5, abs=0.02)
    assert p.magnitude.min() >= 0 and p.magnitude.max() == 10.0                 # clipped at 10
    assert p.magnitude.mean() == pytest.approx(9.0, abs=0.02)
    assert (p.magnitude == 10.0).mean() == pytest.approx(0.0228, abs=0.005)     # P(N(9, .5) > 10)
    assert p.negate.mean() == pytest.approx(0.5, abs=0.02)
    assert set(np.unique(p.resample)) == {0, 1}


def test_randaugment_is_deterministic_for_a_seed(img):
    aug = RandAugment.from_config("rand-m9-mstd0.5-inc1", fill=(125, 123, 114))
    outs = [aug(img, np.random.default_rng(s)) for s in (5, 5, 6)]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].shape == img.shape and outs[0].dtype == np.uint8
    changed = sum(not np.array_equal(aug(img, np.random.default_rng(s)), img) for s in range(40))
    assert 20 < changed < 40  # P(no op fires) = 0.25
