"""Image transforms for training and evaluation, with timm's / torchvision's semantics.

Per image (uint8 in, uint8 out, on PIL images):
    RandomResizedCrop -> horizontal flip (p 0.5) -> RandAugment            = ``TrainTransform``
Per batch (vectorised NumPy):
    Normalize (uint8 (N, H, W, C) -> float32 (N, C, H, W)) -> Mixup/CutMix -> RandomErasing

C is 3 for RGB images and 1 for grey ones (MNIST); every step keeps the channel count.

Evaluation is ``Normalize`` alone: the datasets are already at the model's input size.

Every random choice comes from a ``numpy.random.Generator`` passed in, drawn for a whole batch at once
(``sample``) so the per-image loop only calls Pillow. The same Generator state always gives the
same output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from minicct.data.randaugment import RESAMPLE, RandAugment, pil_array, pil_image


# --- RandomResizedCrop -----------------------------------------------------------------------------
@dataclass
class CropParams:
    """Per image (n,) int arrays: crop box top, left, height, width, and the resample filter index."""
    top: np.ndarray
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray
    resample: np.ndarray


class RandomResizedCrop:
    """Crop a random box of area ``scale`` x the image and aspect ratio ``ratio``, resize to ``size``.

    As torchvision: the area fraction is uniform in ``scale``, the aspect ratio (w / h) log-uniform in
    ``ratio``; up to 10 tries for a box that fits, else a centre crop clamped to the ratio range. The
    resample filter is drawn from ``interpolation`` per image (timm's 'random' = bilinear or bicubic).
    Defaults are CCT's CIFAR settings (torchvision's default scale is (0.08, 1.0)).
    """

    def __init__(self, size: int, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3),
                 interpolation=("bilinear", "bicubic"), attempts: int = 10):
        self.size, self.scale, self.ratio, self.attempts = size, tuple(scale), tuple(ratio), attempts
        self.interpolation = (interpolation,) if isinstance(interpolation, str) else tuple(interpolation)
        self._resample = [RESAMPLE[i] for i in self.interpolation]

    def sample(self, n: int, H: int, W: int, rng: np.random.Generator) -> CropParams:
        """Boxes for n images of H x W. All 10 tries are drawn for every image; the first that fits wins."""
        T = self.attempts
        area = rng.uniform(*self.scale, size=(n, T)) * (H * W)
        aspect = np.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), size=(n, T)))
        w = np.round(np.sqrt(area * aspect)).astype(np.int64)
        h = np.round(np.sqrt(area / aspect)).astype(np.int64)
        fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)
        first = fits.argmax(axis=1)                      # index of the first try that fits
        ok = fits[np.arange(n), first]
        h, w = h[np.arange(n), first], w[np.arange(n), first]

        # fallback: the whole image, trimmed to the nearest allowed aspect ratio, centred
        in_ratio = W / H
        if in_ratio < self.ratio[0]:
            fw, fh = W, int(round(W / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            fw, fh = int(round(H * self.ratio[1])), H
        else:
            fw, fh = W, H
        h, w = np.where(ok, h, fh), np.where(ok, w, fw)
        u = rng.random((n, 2))  # position: uniform over the valid integer offsets, as randint(0, H - h)
        top = np.where(ok, np.floor(u[:, 0] * (H - h + 1)), (H - fh) // 2).astype(np.int64)
        left = np.where(ok, np.floor(u[:, 1] * (W - w + 1)), (W - fw) // 2).astype(np.int64)
        resample = rng.integers(0, len(self._resample), size=n)
        return CropParams(top, left, h, w, resample)

    def apply(self, img: Image.Image, p: CropParams, i: int) -> Image.Image:
        t, l, h, w = int(p.top[i]), int(p.left[i]), int(p.height[i]), int(p.width[i])
        box = img if (t, l, h, w) == (0, 0, img.height, img.width) else img.crop((l, t, l + w, t + h))
        if box.size == (self.size, self.size):
            return box
        return box.resize((self.size, self.size), self._resample[p.resample[i]])

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """img (H, W, C) uint8 -> (size, size, C) uint8."""
        p = self.sample(1, img.shape[0], img.shape[1], rng)
        return pil_array(self.apply(pil_image(img), p, 0))


# --- the per-image training pipeline --------------------------------------------------------------
def mean_fill(mean) -> tuple:
    """Dataset mean in [0, 1] (one per channel) -> the uint8 colour geometric ops fill with (as timm's img_mean)."""
    return tuple(min(255, round(255 * m)) for m in mean)


class TrainTransform:
    """RandomResizedCrop -> horizontal flip -> RandAugment, per image; uint8 in, uint8 out.

        t = TrainTransform(32, mean=train.mean)
        out = t.batch(images, rng)       # images (N, H, W, C) uint8 -> (N, 32, 32, C) uint8
    """

    def __init__(self, img_size: int, mean=(0.5, 0.5, 0.5), scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3),
                 interpolation=("bilinear", "bicubic"), hflip: float = 0.5,
                 auto_augment: str | None = "rand-m9-mstd0.5-inc1"):
        self.img_size = img_size
        self.crop = RandomResizedCrop(img_size, scale, ratio, interpolation)
        self.hflip = hflip
        self.randaugment = (RandAugment.from_config(auto_augment, fill=mean_fill(mean), interpolation=interpolation)
                            if auto_augment else None)

    def batch(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """images (N, H, W, C) uint8 -> (N, S, S, C) uint8, S = img_size."""
        n, H, W, C = images.shape
        crop = self.crop.sample(n, H, W, rng)
        flip = rng.random(n) < self.hflip
        ra = self.randaugment.sample(n, rng) if self.randaugment else None
        out = np.empty((n, self.img_size, self.img_size, C), np.uint8)
        for i in range(n):
            img = self.crop.apply(pil_image(images[i]), crop, i)
            if flip[i]:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if ra is not None:
                img = self.randaugment.apply(img, ra, i)
            out[i] = pil_array(img)
        return out

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """img (H, W, C) uint8 -> (S, S, C) uint8."""
        return self.batch(img[None], rng)[0]


# --- normalisation ----------------------------------------------------------------------------------
class Normalize:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) with (x / 255 - mean) / std per channel.

    C = len(mean): 3 for RGB, 1 for grey. A single image (H, W, C) gives (C, H, W).
    """

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        # (x / 255 - mean) / std = x * scale + shift, tabulated for the 256 possible values of x:
        # a table lookup per value is twice as fast as converting and multiplying.
        scale = (1.0 / (255.0 * self.std)).astype(np.float32)
        shift = (-self.mean / self.std).astype(np.float32)
        self._table = np.ascontiguousarray((np.arange(256, dtype=np.float32)[:, None] * scale + shift).T)  # (C, 256)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        C = len(self._table)
        if x.shape[-1] != C:
            raise ValueError(f"Normalize has {C}-channel statistics but the images are {x.shape} (last axis = channels)")
        out = np.empty(x.shape[:-3] + (C,) + x.shape[-3:-1], np.float32)
        for c in range(C):  # writing each channel plane straight into its CHW slot
            np.take(self._table[c], x[..., c], out=out[..., c, :, :])
        return out

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """float32 (..., C, H, W) normalised -> uint8 (..., H, W, C), for looking at batches."""
        y = np.moveaxis(x, -3, -1) * (255.0 * self.std) + 255.0 * self.mean
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)


# --- random erasing -----------------------------------------------------------------------------------
class RandomErasing:
    """Erase one random rectangle per image with probability ``prob`` (timm's RandomErasing, count 1).

    Works on a normalised float batch (N, C, H, W), in place. The box covers a fraction of the image
    area uniform in [min_area, max_area] with aspect ratio (h / w) log-uniform in [min_aspect,
    1 / min_aspect]; up to ``attempts`` tries for one that fits strictly inside, else nothing is erased.
    Fill: 'pixel' = N(0, 1) per value (noise in normalised space), 'rand' = one N(0, 1) colour, 'const' = 0.
    """

    def __init__(self, prob: float = 0.25, min_area: float = 0.02, max_area: float = 1 / 3,
                 min_aspect: float = 0.3, max_aspect: float | None = None, mode: str = "pixel",
                 attempts: int = 10):
        if mode not in ("pixel", "rand", "const"):
            raise ValueError(f"mode must be 'pixel', 'rand' or 'const', got {mode!r}")
        self.prob, self.min_area, self.max_area, self.mode, self.attempts = prob, min_area, max_area, mode, attempts
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect or 1 / min_aspect))

    def sample(self, n: int, H: int, W: int, rng: np.random.Generator):
        """Boxes (n,) arrays top, left, h, w; h = 0 where nothing is erased."""
        T = self.attempts
        erase = rng.random(n) < self.prob
        area = rng.uniform(self.min_area, self.max_area, size=(n, T)) * (H * W)
        aspect = np.exp(rng.uniform(*self.log_aspect, size=(n, T)))
        h = np.round(np.sqrt(area * aspect)).astype(np.int64)
        w = np.round(np.sqrt(area / aspect)).astype(np.int64)
        fits = (h < H) & (w < W)
        first = fits.argmax(axis=1)
        ok = erase & fits[np.arange(n), first]
        h = np.where(ok, h[np.arange(n), first], 0)
        w = np.where(ok, w[np.arange(n), first], 0)
        u = rng.random((n, 2))
        top = np.floor(u[:, 0] * (H - h + 1)).astype(np.int64)
        left = np.floor(u[:, 1] * (W - w + 1)).astype(np.int64)
        return top, left, h, w

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """x (N, C, H, W) float, erased in place and returned."""
        n, C, H, W = x.shape
        top, left, h, w = self.sample(n, H, W, rng)
        for i in np.flatnonzero(h):
            t, l, hh, ww = top[i], left[i], h[i], w[i]
            if self.mode == "pixel":
                fill = rng.standard_normal((C, hh, ww), dtype=np.float32)
            elif self.mode == "rand":
                fill = rng.standard_normal((C, 1, 1), dtype=np.float32)
            else:
                fill = 0.0
            x[i, :, t:t + hh, l:l + ww] = fill
        return x
