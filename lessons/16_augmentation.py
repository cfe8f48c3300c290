"""Lesson 16 — data augmentation: RandAugment, Mixup/CutMix and random erasing (a picture grid).

What you will learn
    * why a transformer trained on a small dataset needs strong augmentation (the paper's recipe
      uses all of the following at once);
    * RandAugment: two random operations per image (rotate, shear, posterize, solarize, ...) at a
      random strength around a set "magnitude";
    * random erasing: blank out a random rectangle with noise;
    * Mixup (blend two images and their labels) and CutMix (paste a box of one image into another,
      labels weighted by area), with label smoothing; why the loss then needs *soft* targets;
    * that our from-scratch versions and `minicct.data`'s agree, and what it all looks like.

What it builds on
    Lesson 05 (cross-entropy, now with soft targets), lesson 01 (arrays as images).

Run it:  python lessons/16_augmentation.py
Picture: lessons/output/16_augmentation_grid.png
"""
import pathlib

import numpy as np
from PIL import Image, ImageDraw

import minicct
from minicct.data.datasets import get_dataset
from minicct.data.mixup import Mixup, one_hot_smooth
from minicct.data.randaugment import RandAugment, apply_op
from minicct.data.transforms import RandomErasing

OUT = pathlib.Path(__file__).resolve().parent / "output"
OUT.mkdir(exist_ok=True)
rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. The images: the offline `shapes` set")
# 32x32 RGB pictures of six shapes on varied backgrounds, generated in about a second, no download.
train, _ = get_dataset("shapes")
idx = [int(np.flatnonzero(train.labels == k)[0]) for k in range(len(train.classes))]
imgs = train.images[idx]                                               # (6, 32, 32, 3) uint8, HWC
print(f"   {len(train.images)} training images {train.images.shape[1:]}, classes {train.classes}")
assert imgs.dtype == np.uint8 and imgs.shape == (6, 32, 32, 3)

# --------------------------------------------------------------------------------------------------
print("\n2. RandAugment's operations, from scratch and from minicct")
# Two of its pixel operations are one line of NumPy each:
#   posterize: keep only the top `bits` bits of every value (fewer colours)
#   solarize:  invert every value at or above a threshold
def posterize(x, bits):
    return x & np.uint8((0xFF << (8 - bits)) & 0xFF)

def solarize(x, threshold):
    return np.where(x >= threshold, 255 - x, x).astype(np.uint8)

# CCT trains with "rand-m9-mstd0.5-inc1": magnitude 9 of 10, in the "increasing" set where a bigger
# magnitude always means a stronger change. At magnitude 9, PosterizeIncreasing keeps 4 - int(0.9*4)
# = 1 bit, SolarizeIncreasing uses threshold 256 - int(0.9*256) = 26.
img = imgs[0]
assert np.array_equal(apply_op(img, "PosterizeIncreasing", 9), posterize(img, 1))
assert np.array_equal(apply_op(img, "SolarizeIncreasing", 9), solarize(img, 26))
print("   our posterize (1 bit) and solarize (threshold 26) equal minicct's ops at magnitude 9")
# The geometric ops go through Pillow: Rotate at magnitude 9 turns the image by 27 degrees and
# fills the uncovered corners with a constant colour.
rot = apply_op(img, "Rotate", 9, fill=(128, 128, 128))
assert tuple(rot[0, 0]) == (128, 128, 128) and not np.array_equal(rot, img)
ra = RandAugment.from_config("rand-m9-mstd0.5-inc1", fill=tuple(int(255 * m) for m in train.mean))
print(f"   {ra}")
rand_aug = [[ra(im, rng) for im in imgs] for _ in range(3)]           # three random draws per image

# --------------------------------------------------------------------------------------------------
print("\n3. Random erasing")
# On the normalised float batch: with probability p, a rectangle covering 2%..33% of the image,
# aspect ratio between 0.3 and 3.3, is filled with N(0, 1) noise. The model cannot lean on any
# single region being visible.
def to_float(batch):
    """uint8 (N, H, W, 3) -> normalised float32 (N, 3, H, W)."""
    x = batch.astype(np.float32).transpose(0, 3, 1, 2) / 255
    return (x - np.array(train.mean, np.float32)[:, None, None]) / np.array(train.std, np.float32)[:, None, None]

def to_uint8(x):
    x = x * np.array(train.std, np.float32)[:, None, None] + np.array(train.mean, np.float32)[:, None, None]
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)

x = to_float(imgs)
erase = RandomErasing(prob=1.0)                                         # always, to see it
erased = erase(x.copy(), rng)
changed = (erased != x).any(axis=1)                                     # (N, H, W) pixels touched
for i in range(len(imgs)):
    rows, cols = np.flatnonzero(changed[i].any(1)), np.flatnonzero(changed[i].any(0))
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert changed[i].sum() == box and 0.015 * 1024 <= box <= 1024 / 3 + 40   # one rectangle, 2%..33%
print(f"   every image lost exactly one rectangle, covering {np.round(changed.mean(axis=(1, 2)), 2).tolist()} of it")

# --------------------------------------------------------------------------------------------------
print("\n4. Label smoothing, Mixup and CutMix")
# Smoothing: the target is not exactly one-hot; eps = 0.1 is shared out over all C classes.
def smooth(labels, C, eps):
    y = np.full((len(labels), C), eps / C)
    y[np.arange(len(labels)), labels] += 1 - eps
    return y

labels = train.labels[idx]
C = len(train.classes)
assert np.allclose(smooth(labels, C, 0.1), one_hot_smooth(labels, C, 0.1))
print(f"   smoothed target of class 0: {np.round(smooth(labels[:1], C, 0.1)[0], 4).tolist()}")

# Mixup: lam ~ Beta(0.8, 0.8); every image is blended with its partner in the reversed batch,
# and so are the targets. CutMix: lam ~ Beta(1, 1); a box of area (1 - lam) H W is pasted from the
# partner, and lam is recomputed from the box actually pasted (it may be clipped at the border).
mix = Mixup(num_classes=C)                                             # CCT's settings: 0.8, 1.0, switch 0.5, smoothing 0.1
results = {}
for seed in range(20):
    lam, use_cutmix = mix.sample(np.random.default_rng(seed))          # what the batch will draw
    kind = "cutmix" if use_cutmix else "mixup"
    if kind in results:
        continue
    xm, ym = mix(x.copy(), labels, np.random.default_rng(seed))
    if use_cutmix:
        changed = (xm != x).any(axis=1)[0]                             # the pasted box in image 0
        area = changed.sum() / changed.size
        lam_true = 1 - area
        print(f"   CutMix: drawn lam {lam:.2f}, box covers {area:.2f} of the image, so lam = {lam_true:.2f}")
    else:
        ours = lam * x + (1 - lam) * x[::-1]
        assert np.allclose(xm, ours, atol=1e-6)
        lam_true = lam
        print(f"   Mixup:  lam {lam:.2f}; our blend lam x + (1 - lam) x[::-1] equals minicct's")
    # The targets are the smoothed labels mixed with the same lam: rows still sum to 1.
    assert np.allclose(ym, lam_true * smooth(labels, C, 0.1) + (1 - lam_true) * smooth(labels[::-1], C, 0.1), atol=1e-5)
    assert np.allclose(ym.sum(axis=1), 1)
    results[kind] = xm
    if len(results) == 2:
        break
assert set(results) == {"mixup", "cutmix"}

# With soft targets y, cross-entropy is -sum_k y_k log p_k: the same formula as lesson 05 with the
# one-hot row replaced by y, and its gradient with respect to the scores is still (p - y) / N.

# --------------------------------------------------------------------------------------------------
print("\n5. The picture grid")
rows = [("original", list(imgs))] + [(f"RandAugment {i + 1}", r) for i, r in enumerate(rand_aug)] + \
       [("random erasing", list(to_uint8(erased))), ("Mixup", list(to_uint8(results["mixup"]))),
        ("CutMix", list(to_uint8(results["cutmix"])))]
S, label_w = 96, 120                                                   # each 32x32 image shown at 96x96
grid = Image.new("RGB", (label_w + S * len(imgs), S * len(rows) + 20), "white")
d = ImageDraw.Draw(grid)
for j, name in enumerate(train.classes):
    d.text((label_w + j * S + 4, 4), name, fill="black")
for r, (name, row) in enumerate(rows):
    d.text((4, 20 + r * S + S // 2 - 6), name, fill="black")
    for j, im in enumerate(row):
        grid.paste(Image.fromarray(im).resize((S, S), Image.Resampling.NEAREST), (label_w + j * S, 20 + r * S))
path = OUT / "16_augmentation_grid.png"
grid.save(path)
print(f"   wrote {path.relative_to(OUT.parent.parent)}")

print("\nAll claims of lesson 16 hold.")
