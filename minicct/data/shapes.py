"""``shapes``: a synthetic, offline image dataset for quick experiments and tests.

Each 32x32 image shows one shape: circle, ring, square, triangle, cross or star (label = index in
``SHAPE_CLASSES``). Everything else is nuisance the model has to learn to ignore: a random size and
position (shapes may poke out of the frame a little), a random fill colour that stands out from a
random, gently graded two-colour background, and light pixel noise; shapes stand upright by default.
The defaults are meant for a short CPU run (``python -m minicct.train shapes``) to reach high accuracy.
``DIFFICULTY`` holds the ranges: ``make_shapes(rotation=1.0, line_prob=0.3, noise=(2, 10),
gradient=1.0, min_contrast=100, radius=(0.25, 0.42))`` (any angle, distracting lines, more noise,
steep backgrounds, smaller shapes: roughly the first version) or the like makes it harder; ring vs
circle and star vs cross vs square at small sizes are the hard pairs.

Drawing is vectorised: each shape is a signed distance ``d`` (pixels; negative inside) computed for a
whole group of images at once over a coordinate grid, and ``alpha = clip(0.5 - d, 0, 1)`` gives
one-pixel anti-aliased edges. 5,000 images take well under a second.

The same seed always gives the same images; train and test come from two independent streams.
"""
from __future__ import annotations

import numpy as np

from minicct.data.datasets import ImageDataset, Splits, channel_stats

SHAPE_CLASSES = ("circle", "ring", "square", "triangle", "cross", "star")


def _signed_distance(kind: str, u, v, r, rng):
    """Approximate signed distance (px) to a shape of size r centred at u = v = 0, rotated already.

    u, v: (n, S, S) coordinates in the shape's frame; r: (n, 1, 1) its outer radius.
    """
    rho = np.sqrt(u * u + v * v)
    if kind == "circle":
        return rho - r
    if kind == "ring":
        inner = r * rng.uniform(0.45, 0.65, size=r.shape)
        return np.maximum(rho - r, inner - rho)
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8 * r
    if kind == "triangle":
        # equilateral: inside all three half-planes; inradius = circumradius / 2, enlarged for a fair area
        d = None
        for k in range(3):
            a = np.pi / 2 + k * 2 * np.pi / 3
            dk = u * np.cos(a) + v * np.sin(a) - 0.6 * r
            d = dk if d is None else np.maximum(d, dk)
        return d
    if kind == "cross":
        w = 0.28 * r
        bar1 = np.maximum(np.abs(u) - r, np.abs(v) - w)
        bar2 = np.maximum(np.abs(v) - r, np.abs(u) - w)
        return np.minimum(bar1, bar2)
    if kind == "star":
        # five points: the radius goes linearly from the outer r at a tip to 0.45 r between tips
        phi = np.arctan2(v, u)
        t = np.abs(((phi * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at a tip, 0 between tips
        radius = r * (0.45 + 0.55 * t)
        return (rho - radius) * 0.7  # the slanted edges are closer than the radial distance says
    raise ValueError(kind)


# How hard the pictures are: the ranges the nuisances are drawn from.
DIFFICULTY = dict(
    radius=(0.30, 0.45),   # outer radius as a fraction of the image side
    min_contrast=150,      # least RGB distance between the shape's colour and the background's mean
    rotation=0.0,          # tilt range as a fraction of a full turn, centred on upright (1: any angle)
    gradient=0.3,          # how far the background's second colour goes towards an independent one (0..1)
    line_prob=0.0,         # chance of a distracting line
    noise=(0, 3),          # pixel noise std range, in uint8 levels
)


def draw_shapes(labels: np.ndarray, rng: np.random.Generator, img_size: int = 32,
                classes=SHAPE_CLASSES, **difficulty) -> np.ndarray:
    """Images (N, S, S, 3) uint8 of the shapes named by classes[labels], drawn with rng.

    difficulty: overrides of DIFFICULTY (radius, min_contrast, rotation, gradient, line_prob, noise).
    """
    unknown = set(difficulty) - set(DIFFICULTY)
    if unknown:
        raise ValueError(f"unknown difficulty settings {sorted(unknown)}; known: {sorted(DIFFICULTY)}")
    d = {**DIFFICULTY, **difficulty}
    n, S = len(labels), img_size
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5  # pixel centres

    # background: a linear gradient between two random colours, in a random direction
    c0 = rng.uniform(0, 255, (n, 1, 1, 3)).astype(np.float32)
    c1 = rng.uniform(0, 255, (n, 1, 1, 3)).astype(np.float32)
    c1 = c0 + d["gradient"] * (c1 - c0)  # gradient 1: two independent colours; 0: a flat background
    ang = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    t = ((xx - S / 2) * np.cos(ang) + (yy - S / 2) * np.sin(ang)) / S + 0.5  # (n, S, S), roughly [0, 1]
    img = (c1 - c0) * np.clip(t, 0, 1)[..., None]
    img += c0

    # foreground colour, pushed away from the background's mean colour so the shape stays visible
    fg = rng.uniform(0, 255, (n, 1, 1, 3)).astype(np.float32)
    bg_mean = (c0 + c1) / 2
    too_close = np.linalg.norm(fg - bg_mean, axis=-1, keepdims=True) < d["min_contrast"]
    far = np.where(bg_mean > 127.5, 0.0, 255.0).astype(np.float32)  # the cube's corner farthest from bg_mean
    fg = np.where(too_close, far + 0.15 * (fg - far), fg)  # still >= 89 per channel, >= 155 in all, away

    # geometry: radius, centre (the shape may be cut by the border a little), rotation
    r = rng.uniform(*d["radius"], (n, 1, 1)).astype(np.float32) * S
    cx = rng.uniform(0.75, 1.0, (n, 1, 1)).astype(np.float32) * r
    cx = cx + rng.uniform(0, 1, (n, 1, 1)).astype(np.float32) * (S - 2 * cx)
    cy = rng.uniform(0.75, 1.0, (n, 1, 1)).astype(np.float32) * r
    cy = cy + rng.uniform(0, 1, (n, 1, 1)).astype(np.float32) * (S - 2 * cy)
    rot = ((rng.uniform(0, 1, (n, 1, 1)) - 0.5) * 2 * np.pi * d["rotation"]).astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = -dx * np.sin(rot) + dy * np.cos(rot)

    dist = np.empty((n, S, S), np.float32)
    for k, kind in enumerate(classes):
        idx = np.flatnonzero(labels == k)
        if len(idx):
            dist[idx] = _signed_distance(kind, u[idx], v[idx], r[idx], rng)
    alpha = np.clip(0.5 - dist, 0, 1)[..., None]
    img += (fg - img) * alpha  # = img (1 - alpha) + fg alpha, without two more full-size temporaries

    # clutter: a share (line_prob) of the images get a thin straight line of a third colour
    has_line = rng.random((n, 1, 1)) < d["line_prob"]
    la = rng.uniform(0, np.pi, (n, 1, 1)).astype(np.float32)
    lp = rng.uniform(0, S, (n, 1, 1, 2)).astype(np.float32)
    line_dist = np.abs((xx - lp[..., 0]) * np.sin(la) - (yy - lp[..., 1]) * np.cos(la))
    line_alpha = (np.clip(1.0 - line_dist, 0, 1) * has_line)[..., None]
    line_colour = rng.uniform(0, 255, (n, 1, 1, 3)).astype(np.float32)
    img += (line_colour - img) * line_alpha

    sigma = rng.uniform(*d["noise"], (n, 1, 1, 1)).astype(np.float32)
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= sigma
    img += noise
    img += 0.5  # round to nearest when truncating to uint8
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def make_shapes(n_train: int = 5000, n_test: int = 1000, seed: int = 0, img_size: int = 32,
                num_classes: int = len(SHAPE_CLASSES), **difficulty) -> Splits:
    """Splits(train, test) of shapes; every class gets the same number of images (within one).

    num_classes picks the first classes of SHAPE_CLASSES (2..6); difficulty overrides DIFFICULTY.
    """
    if not 2 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"num_classes must be 2..{len(SHAPE_CLASSES)}, got {num_classes}")
    classes = list(SHAPE_CLASSES[:num_classes])
    splits = []
    for n, ss in zip((n_train, n_test), np.random.SeedSequence(seed).spawn(2)):
        rng = np.random.default_rng(ss)
        labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)  # balanced, shuffled
        splits.append((draw_shapes(labels, rng, img_size, classes, **difficulty), labels))
    mean, std = channel_stats(splits[0][0])
    return Splits(*(ImageDataset(x, y, classes, mean, std, name=f"shapes {split}", source=f"shapes(seed={seed})")
                    for (x, y), split in zip(splits, ("train", "test"))))
