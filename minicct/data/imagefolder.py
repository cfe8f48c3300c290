"""Image folders: any labelled images laid out one folder per class.

    root/train/<class>/*.jpg|png|...      root/test/<class>/*   (or root/val/<class>/*)

Classes are the training sub-folder names, sorted, so label i is the i-th name alphabetically.
Every image is decoded once, converted to RGB (grey, palette, RGBA and CMYK files all work; alpha is
dropped), and brought to ``img_size`` x ``img_size``: the shorter side is resized to ``img_size``
(bicubic), then the centre square is cropped. Nothing is stretched, and a square image is simply
resized. Mean and std come from the training images after that resize.

The whole split then lives in memory as one uint8 array, like CIFAR. That suits small data sets (a
100,000-image folder at 64 px is 1.2 GB); it is not meant for ImageNet.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minicct.data.datasets import DatasetError, ImageDataset, Splits, channel_stats

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def _list_split(split_dir: Path, classes=None):
    """[(path, label)] for split_dir/<class>/*; classes fixed by train (None: read them from here)."""
    class_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DatasetError(f"{split_dir} has no class folders: expected {split_dir}/<class name>/<image files>")
    names = [d.name for d in class_dirs]
    if classes is None:
        classes = names
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DatasetError(f"{split_dir} has class folders {unknown} that the training split lacks")
    items = []
    for d in class_dirs:
        files = sorted(f for f in d.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."))
        if not files:
            raise DatasetError(f"{d} holds no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        label = classes.index(d.name)
        items += [(f, label) for f in files]
    return items, classes


def load_image(path: Path, img_size: int | None, mode: str = "RGB") -> np.ndarray:
    """One file -> (img_size, img_size, 3) uint8: shorter side resized (bicubic), centre crop.

    img_size None keeps the image's own size (the caller checks they all agree). mode 'L' gives a
    grey image (img_size, img_size, 1) instead.
    """
    from PIL import Image
    try:
        with Image.open(path) as im:
            if img_size is not None:
                im.draft(mode, (img_size, img_size))  # JPEG: let the decoder shrink big files cheaply
            im = im.convert(mode)
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... on bad files
        raise DatasetError(f"{path} could not be read as an image ({type(e).__name__}: {e}); "
                           f"delete or replace it") from None
    if img_size is not None:
        w, h = im.size
        s = img_size / min(w, h)
        nw, nh = max(img_size, round(w * s)), max(img_size, round(h * s))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - img_size) // 2, (nh - img_size) // 2
        im = im.crop((left, top, left + img_size, top + img_size))
    x = np.asarray(im, dtype=np.uint8)
    return x[..., None] if x.ndim == 2 else x


def _load_split(items, img_size, split_dir):
    arrays = [load_image(p, img_size) for p, _ in items]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1 or arrays[0].shape[0] != arrays[0].shape[1]:
        raise DatasetError(f"images under {split_dir} have sizes {sorted(shapes)[:4]}...; pass img_size= "
                           f"so they are all brought to one square size")
    return np.stack(arrays), np.array([label for _, label in items], dtype=np.int64)


def load_image_folder(root, img_size: int | None = None) -> Splits:
    """Splits(train, test) from root/train and root/test (or root/val); images (N, S, S, 3) uint8."""
    root = Path(root)
    train_dir = root / "train"
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DatasetError(f"{root} is not an image folder: expected {root}/train/<class>/<images> and "
                           f"{root}/test/<class>/<images> (or val/ instead of test/)")
    train_items, classes = _list_split(train_dir)
    test_items, _ = _list_split(test_dir, classes)
    x_train, y_train = _load_split(train_items, img_size, train_dir)
    img_size = x_train.shape[1]  # when None, the training images decide
    x_test, y_test = _load_split(test_items, img_size, test_dir)
    mean, std = channel_stats(x_train)
    name = root.resolve().name
    return Splits(ImageDataset(x_train, y_train, classes, mean, std, name=f"{name} train", source=str(train_dir)),
                  ImageDataset(x_test, y_test, classes, mean, std, name=f"{name} {test_dir.name}",
                               source=str(test_dir)))
