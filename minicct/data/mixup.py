"""Mixup and CutMix on whole batches, with label smoothing (timm's Mixup, mode 'batch').

For each batch one coin (p = switch_prob) picks CutMix or Mixup, and one lam ~ Beta(alpha, alpha)
mixes every image i with its partner N-1-i (the batch reversed, ``x[::-1]``):

    Mixup:   x = lam * x + (1 - lam) * x[::-1]
    CutMix:  a box of area about (1 - lam) * H * W is pasted from x[::-1]; the box is clipped to the
             image, so lam is recomputed as 1 - (clipped box area) / (H * W)

Targets are label-smoothed one-hot rows (off value eps / C, on value 1 - eps + eps / C) mixed the
same way: ``y = lam * y + (1 - lam) * y[::-1]``. Every row sums to 1.

``enabled = False`` stops the mixing (the trainer does this late in training, from epoch 175 for
CCT) but keeps the smoothing, so the targets keep the same shape and meaning.
"""
from __future__ import annotations

import numpy as np


def one_hot_smooth(labels: np.ndarray, num_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """labels (N,) int -> (N, num_classes) float32 rows: 1 - eps + eps/C on the label, eps/C elsewhere."""
    off = smoothing / num_classes
    y = np.full((len(labels), num_classes), off, np.float32)
    y[np.arange(len(labels)), labels] = 1.0 - smoothing + off
    return y


def mixup_target(labels: np.ndarray, num_classes: int, lam: float = 1.0, smoothing: float = 0.0) -> np.ndarray:
    """Soft targets (N, num_classes) float32 for a batch mixed with its reverse at weight lam."""
    y = one_hot_smooth(labels, num_classes, smoothing)
    return (lam * y + (1.0 - lam) * y[::-1]).astype(np.float32)


def cutmix_box(H: int, W: int, lam: float, rng: np.random.Generator):
    """A CutMix box for mixing weight lam: (top, bottom, left, right) and the lam it really gives.

    The box has sides int(H * sqrt(1 - lam)) x int(W * sqrt(1 - lam)) around a uniform random centre,
    then is clipped to the image (as timm's rand_bbox, which also loses a pixel on odd sides), so the
    returned lam = 1 - box area / (H * W) is the true share of the original image.
    """
    r = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(H * r), int(W * r)
    cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
    y0, y1 = np.clip(cy - cut_h // 2, 0, H), np.clip(cy + cut_h // 2, 0, H)
    x0, x1 = np.clip(cx - cut_w // 2, 0, W), np.clip(cx + cut_w // 2, 0, W)
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)
    return (int(y0), int(y1), int(x0), int(x1)), float(lam)


class Mixup:
    """Batch-level Mixup/CutMix plus label smoothing.

        mix = Mixup(num_classes=10)                  # CCT's CIFAR settings are the defaults
        x, y = mix(x, labels, rng)                   # x (N, C, H, W) float32, labels (N,) int
                                                     # -> x mixed, y (N, num_classes) float32
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1):
        if num_classes <= 0:
            raise ValueError("num_classes must be set")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing
        self.enabled = True  # the trainer turns mixing off late in training; smoothing stays

    def sample(self, rng: np.random.Generator, enabled: bool | None = None):
        """(lam, use_cutmix) for one batch; lam = 1.0 means no mixing. enabled None: self.enabled."""
        enabled = self.enabled if enabled is None else enabled
        if not enabled or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0) or rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def __call__(self, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator, enabled: bool | None = None):
        """x (N, C, H, W) float, labels (N,) int -> (mixed x (N, C, H, W), targets (N, num_classes) float32).

        x is modified in place when it is mixed. enabled overrides self.enabled (the loader passes the
        flag with each batch, since worker processes hold their own copy of this object).
        """
        lam, use_cutmix = self.sample(rng, enabled)
        if lam < 1.0:
            if use_cutmix:
                (y0, y1, x0, x1), lam = cutmix_box(x.shape[-2], x.shape[-1], lam, rng)
                # the partner patch is copied first: x[::-1] is a view of x itself
                x[:, :, y0:y1, x0:x1] = x[::-1, :, y0:y1, x0:x1].copy()
            else:
                x_rev = x[::-1].copy()
                x *= lam
                x += (1.0 - lam) * x_rev
        return x, mixup_target(labels, self.num_classes, lam, self.label_smoothing)

    def __repr__(self):
        return (f"Mixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, prob={self.prob}, "
                f"switch_prob={self.switch_prob}, smoothing={self.label_smoothing}, enabled={self.enabled})")
