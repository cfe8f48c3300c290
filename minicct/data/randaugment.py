"""RandAugment with timm's conventions (``rand-m9-mstd0.5-inc1``, as CCT trains on CIFAR).

For each image, ``n`` ops are drawn uniformly *with replacement* from the op list; each is then
applied with probability ``p`` = 0.5, at a magnitude drawn from N(m, mstd) and clipped to [0, 10].
The magnitude maps to each op's own argument (``level_to_arg``); for the signed ops (rotate, shear,
translate, and the "increasing" enhance ops) the argument's sign is flipped with probability 0.5.

The "increasing" op set (``inc1``) has every op grow stronger with magnitude: Posterize keeps fewer
bits, Solarize uses a lower threshold, and Color/Contrast/Brightness/Sharpness move further from 1.0
in either direction. Geometric ops fill uncovered pixels with ``fill`` (the dataset mean as uint8) and
resample with bilinear or bicubic interpolation, chosen at random per op.

Images are RGB (H, W, 3) or grey (H, W, 1), held by Pillow as mode 'RGB' or 'L' (``pil_image``).
Every op works per channel, so a grey image stays grey: Color has nothing to desaturate and leaves
it unchanged, the rest act on the one channel exactly as on each of R, G and B.

Random numbers are drawn for a whole batch at once (``sample``), so the per-image work (``apply``)
is nothing but Pillow calls. Sampling and application are deterministic for a given Generator.

One deliberate difference from timm's parser: ``inc0`` turns the increasing set *off* here (timm
tests ``bool("0")``, which is True).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

LEVEL_DENOM = 10.0  # magnitudes run 0..10; level = magnitude / 10

# PIL resampling filters that RandAugment (and RandomResizedCrop) pick from at random
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}


# --- arrays <-> Pillow -------------------------------------------------------------------------------
def pil_image(x: np.ndarray) -> Image.Image:
    """(H, W, 3) uint8 -> an 'RGB' image; (H, W, 1) -> an 'L' (grey) image."""
    if x.ndim != 3 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected an image (H, W, 3) or (H, W, 1), got shape {x.shape}")
    return Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)


def pil_array(img: Image.Image) -> np.ndarray:
    """An 'RGB' or 'L' image -> (H, W, 3) or (H, W, 1) uint8: the channel axis is always there."""
    x = np.asarray(img)
    return x[..., None] if x.ndim == 2 else x


# --- the ops: PIL image in, PIL image out ---------------------------------------------------------
def _affine(img, matrix, resample, fill):
    # PIL's affine matrix maps *output* pixel (x, y) to input pixel (a x + b y + c, d x + e y + f)
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)


def _pixelwise(fn):
    """Run an op written on the uint8 array (H, W, C) on a PIL image ('RGB': C = 3, 'L': C = 1).

    The colour-mapping ops below are written in NumPy: Pillow applies a lookup table by first
    rounding all 768 entries in Python, which costs ten times more than the whole op here. Each
    matches its Pillow counterpart (ImageOps.*) value for value; the tests check that.
    """
    def op(img, arg, resample, fill):
        return pil_image(fn(pil_array(img), arg))
    op.__name__ = fn.__name__
    op.__doc__ = fn.__doc__
    return op


@_pixelwise
def auto_contrast(x, arg=None):
    """Stretch each channel so its darkest value becomes 0 and its brightest 255 (ImageOps.autocontrast)."""
    lo = x.min(axis=(0, 1)).astype(np.float64)
    hi = x.max(axis=(0, 1)).astype(np.float64)
    flat = hi <= lo
    scale = 255.0 / np.where(flat, 1.0, hi - lo)
    lut = np.clip(np.floor(np.arange(256.0)[:, None] * scale - lo * scale), 0, 255)   # (256, C)
    lut[:, flat] = np.arange(256.0)[:, None]  # a single-valued channel is left alone
    return _apply_lut(x, lut)


@_pixelwise
def equalize(x, arg=None):
    """Flatten each channel's histogram (ImageOps.equalize): value v -> (step // 2 + #pixels below v) // step."""
    lut = np.empty((256, x.shape[-1]), np.int64)
    for c in range(x.shape[-1]):
        h = np.bincount(x[..., c].ravel(), minlength=256)
        present = h[h > 0]
        step = (present.sum() - present[-1]) // 255 if len(present) > 1 else 0
        if step == 0:
            lut[:, c] = np.arange(256)
        else:
            below = np.concatenate(([0], np.cumsum(h)[:-1]))
            lut[:, c] = (step // 2 + below) // step
    return _apply_lut(x, np.clip(lut, 0, 255))


@_pixelwise
def invert(x, arg=None):
    return 255 - x


def rotate(img, degrees, resample, fill):
    return img.rotate(degrees, resample=resample, fillcolor=fill)  # about the centre, counter-clockwise


@_pixelwise
def posterize(x, bits):
    """Keep the `bits` most significant bits; 0 bits gives black (Pillow >= 10 refuses 0, timm reaches it)."""
    return x if bits >= 8 else x & np.uint8((0xFF << (8 - bits)) & 0xFF)


@_pixelwise
def solarize(x, threshold):
    """Invert every value >= threshold (256: no change)."""
    return np.where(x >= threshold, 255 - x, x)


@_pixelwise
def solarize_add(x, add, threshold=128):
    """Add `add` (saturating at 255) to every value below threshold."""
    return np.where(x < threshold, np.minimum(x.astype(np.int16) + add, 255).astype(np.uint8), x)


def _apply_lut(x, lut):
    """x (H, W, C) uint8, lut (256, C) -> lut[x[..., c], c] per channel, uint8."""
    C = x.shape[-1]
    return np.take_along_axis(lut.astype(np.uint8), x.reshape(-1, C).astype(np.intp), axis=0).reshape(x.shape)


def color(img, factor, resample, fill):
    return ImageEnhance.Color(img).enhance(factor)  # 0 = grey, 1 = unchanged


def contrast(img, factor, resample, fill):
    return ImageEnhance.Contrast(img).enhance(factor)


def brightness(img, factor, resample, fill):
    return ImageEnhance.Brightness(img).enhance(factor)


def sharpness(img, factor, resample, fill):
    return ImageEnhance.Sharpness(img).enhance(factor)


def shear_x(img, factor, resample, fill):
    return _affine(img, (1, factor, 0, 0, 1, 0), resample, fill)


def shear_y(img, factor, resample, fill):
    return _affine(img, (1, 0, 0, factor, 1, 0), resample, fill)


def translate_x_rel(img, pct, resample, fill):
    return _affine(img, (1, 0, pct * img.size[0], 0, 1, 0), resample, fill)


def translate_y_rel(img, pct, resample, fill):
    return _affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), resample, fill)


# --- magnitude (0..10) -> op argument, as timm maps it -------------------------------------------
# Each entry: (op function, level -> argument, is the argument's sign flipped at random?)
def _enhance_increasing(level):  # 1.0 is "no change"; +-0.9 at level 1; never below 0.1 (see sign below)
    return level * 0.9


OPS = {
    "AutoContrast": (auto_contrast, None, False),
    "Equalize": (equalize, None, False),
    "Invert": (invert, None, False),
    "Rotate": (rotate, lambda l: l * 30.0, True),                         # degrees in [-30, 30]
    "PosterizeIncreasing": (posterize, lambda l: 4 - int(l * 4), False),  # bits kept, 4 down to 0
    "SolarizeIncreasing": (solarize, lambda l: 256 - min(256, int(l * 256)), False),  # threshold 256 -> 0
    "SolarizeAdd": (solarize_add, lambda l: min(128, int(l * 110)), False),           # add 0..110 below 128
    "ColorIncreasing": (color, _enhance_increasing, True),
    "ContrastIncreasing": (contrast, _enhance_increasing, True),
    "BrightnessIncreasing": (brightness, _enhance_increasing, True),
    "SharpnessIncreasing": (sharpness, _enhance_increasing, True),
    "ShearX": (shear_x, lambda l: l * 0.3, True),                         # shear factor in [-0.3, 0.3]
    "ShearY": (shear_y, lambda l: l * 0.3, True),
    "TranslateXRel": (translate_x_rel, lambda l: l * 0.45, True),         # fraction of width in [-0.45, 0.45]
    "TranslateYRel": (translate_y_rel, lambda l: l * 0.45, True),
    # the original, non-increasing variants (inc0): weaker with magnitude for Posterize/Solarize,
    # and the enhance factor runs from 0.1 (m=0) to 1.9 (m=10) with no random sign
    "Posterize": (posterize, lambda l: int(l * 4), False),
    "Solarize": (solarize, lambda l: min(256, int(l * 256)), False),
    "Color": (color, lambda l: l * 1.8 + 0.1, False),
    "Contrast": (contrast, lambda l: l * 1.8 + 0.1, False),
    "Brightness": (brightness, lambda l: l * 1.8 + 0.1, False),
    "Sharpness": (sharpness, lambda l: l * 1.8 + 0.1, False),
}
_ENHANCE = {"ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}

# timm's _RAND_INCREASING_TRANSFORMS and _RAND_TRANSFORMS, in timm's order
INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                  "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                  "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
DEFAULT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
               "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
               "TranslateYRel")


def level_to_arg(name: str, magnitude: float, negate: bool = False):
    """The argument op `name` gets at `magnitude` (0..10); negate flips the sign of signed ops.

    e.g. Rotate 9 -> 27.0 degrees (-27.0 negated); PosterizeIncreasing 9 -> 1 bit; SolarizeIncreasing 9
    -> threshold 26; ContrastIncreasing 9 -> 1.81 (0.19 negated). Ops without an argument give None.
    """
    _, fn, signed = OPS[name]
    if fn is None:
        return None
    arg = fn(magnitude / LEVEL_DENOM)
    if name in _ENHANCE:
        return max(0.1, 1.0 + (-arg if negate else arg))
    return -arg if (signed and negate) else arg


def parse_config(config: str) -> dict:
    """'rand-m9-mstd0.5-inc1' -> dict(magnitude=9, magnitude_std=0.5, increasing=True, num_ops=2, ...).

    Sections after 'rand': m (magnitude), n (ops per image), mstd (magnitude std; > 100 means uniform
    in [0, m]), mmax (clip bound, default 10), inc (1: increasing op set), p (probability per op).
    """
    parts = config.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment config must start with 'rand', got {config!r}")
    cfg = dict(magnitude=10.0, num_ops=2, magnitude_std=0.0, magnitude_max=LEVEL_DENOM, increasing=False,
               prob=0.5)
    for part in parts[1:]:
        m = re.fullmatch(r"([a-z]+)(\d.*)", part)
        if not m:
            raise ValueError(f"bad RandAugment section {part!r} in {config!r}")
        key, val = m.groups()
        if key == "m":
            cfg["magnitude"] = float(val)
        elif key == "n":
            cfg["num_ops"] = int(val)
        elif key == "mstd":
            cfg["magnitude_std"] = math.inf if float(val) > 100 else float(val)
        elif key == "mmax":
            cfg["magnitude_max"] = float(val)
        elif key == "inc":
            cfg["increasing"] = int(val) != 0
        elif key == "p":
            cfg["prob"] = float(val)
        else:
            raise ValueError(f"unknown RandAugment section {part!r} in {config!r}")
    return cfg


@dataclass
class RandAugmentParams:
    """Random draws for a batch of n images and k = num_ops op slots, all arrays (n, k)."""
    op: np.ndarray          # int, index into RandAugment.ops
    apply: np.ndarray       # bool, this slot fires (probability p)
    magnitude: np.ndarray   # float, already clipped to [0, magnitude_max]
    negate: np.ndarray      # bool, flip the argument's sign (signed ops only)
    resample: np.ndarray    # int, index into RandAugment.interpolation


class RandAugment:
    """Per-image RandAugment on PIL images, randomness drawn per batch.

        ra = RandAugment.from_config("rand-m9-mstd0.5-inc1", fill=(125, 123, 114))
        out = ra(img, rng)                   # img (H, W, C) uint8 -> (H, W, C) uint8, C = 3 or 1
    """

    def __init__(self, ops=INCREASING_OPS, num_ops=2, magnitude=9.0, magnitude_std=0.5,
                 magnitude_max=LEVEL_DENOM, prob=0.5, fill=(128, 128, 128),
                 interpolation=("bilinear", "bicubic")):
        unknown = [o for o in ops if o not in OPS]
        if unknown:
            raise ValueError(f"unknown ops {unknown}; known: {list(OPS)}")
        self.ops = tuple(ops)
        self.num_ops, self.prob = num_ops, prob
        self.magnitude, self.magnitude_std, self.magnitude_max = magnitude, magnitude_std, magnitude_max
        self.fill = tuple(int(c) for c in fill)
        self.interpolation = tuple(interpolation)
        self._resample = [RESAMPLE[i] for i in self.interpolation]

    @classmethod
    def from_config(cls, config: str = "rand-m9-mstd0.5-inc1", fill=(128, 128, 128),
                    interpolation=("bilinear", "bicubic")):
        c = parse_config(config)
        ops = INCREASING_OPS if c["increasing"] else DEFAULT_OPS
        return cls(ops, c["num_ops"], c["magnitude"], c["magnitude_std"], c["magnitude_max"],
                   c["prob"], fill, interpolation)

    def sample(self, n: int, rng: np.random.Generator) -> RandAugmentParams:
        """Draw everything random for n images at once (vectorised)."""
        k = self.num_ops
        op = rng.integers(0, len(self.ops), size=(n, k))       # with replacement, as timm
        apply = rng.random((n, k)) < self.prob
        if self.magnitude_std == math.inf:
            mag = rng.uniform(0, self.magnitude, size=(n, k))
        elif self.magnitude_std > 0:
            mag = rng.normal(self.magnitude, self.magnitude_std, size=(n, k))
        else:
            mag = np.full((n, k), float(self.magnitude))
        mag = np.clip(mag, 0.0, self.magnitude_max)
        negate = rng.random((n, k)) < 0.5
        resample = rng.integers(0, len(self._resample), size=(n, k))
        return RandAugmentParams(op, apply, mag, negate, resample)

    def apply(self, img: Image.Image, p: RandAugmentParams, i: int) -> Image.Image:
        """Apply image i's draws from p to the PIL image img."""
        for j in range(self.num_ops):
            if not p.apply[i, j]:
                continue
            name = self.ops[p.op[i, j]]
            arg = level_to_arg(name, float(p.magnitude[i, j]), bool(p.negate[i, j]))
            img = OPS[name][0](img, arg, self._resample[p.resample[i, j]], self.fill)
        return img

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """img (H, W, C) uint8 -> (H, W, C) uint8."""
        return pil_array(self.apply(pil_image(img), self.sample(1, rng), 0))

    def __repr__(self):
        return (f"RandAugment(n={self.num_ops}, m={self.magnitude}, mstd={self.magnitude_std}, "
                f"p={self.prob}, fill={self.fill}, ops={len(self.ops)})")


def apply_op(img: np.ndarray, name: str, magnitude: float, negate: bool = False, fill=(128, 128, 128),
             interpolation: str = "bilinear") -> np.ndarray:
    """One named op at a fixed magnitude on img (H, W, C) uint8 -> (H, W, C) uint8 (for tests and lessons).

    fill: one value per channel (3 for RGB, 1 for grey)."""
    arg = level_to_arg(name, magnitude, negate)
    return pil_array(OPS[name][0](pil_image(img), arg, RESAMPLE[interpolation], tuple(fill)))
