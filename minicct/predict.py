"""``python -m minicct.predict IMAGE... --checkpoint PATH``: the top-5 classes of each image.

    python -m minicct.predict cat.jpg dog.png --checkpoint runs/cifar10-cct_2_3x2_32/best.npz

Any image size or mode works: each image is converted to RGB (grey for a model trained on grey images,
such as MNIST's), its shorter side resized (bicubic) to
the model's input size and the centre cropped square (as ImageFolder data is prepared), then
normalised with the training set's mean and std. Class names come from the checkpoint. A file that
is missing, a folder, or not an image is reported on stderr and skipped; the others are still
predicted, and the exit code is 2.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from minicct import backend
from minicct.cli import EXIT_ERROR, ArgumentParser, positive, run_cli, use_device
from minicct.errors import DatasetError, RunError
from minicct.kernels.activation import softmax_forward
from minicct.training.checkpoint import load_checkpoint, model_from_checkpoint

PROG = "minicct.predict"


def build_parser():
    p = ArgumentParser(prog="python -m minicct.predict",
                       description="Print each image's top classes with probabilities.\n\n"
                                   "example:\n"
                                   "  python -m minicct.predict cat.jpg dog.png --checkpoint "
                                   "runs/cifar10-cct_2_3x2_32/best.npz")
    p.add_argument("images", nargs="+", help="image files (any size; JPEG, PNG, ...)")
    p.add_argument("--checkpoint", required=True, help="a .npz written by python -m minicct.train")
    p.add_argument("--top", type=positive(int, "--top 5"), default=5, help="how many classes to print (default: 5)")
    p.add_argument("--device", default=None, help="'cpu' or 'gpu' (default: $MINICCT_DEVICE, else cpu)")
    return p


def predict(model, images, mean, std, device, flip=False):
    """images: (N, S, S, C) uint8 (C = 3, or 1 for grey) -> class probabilities (N, K) float64 (NumPy).
    flip: average the logits of each image and its mirror image (a run trained with --tta-flip)."""
    from minicct import Tensor, no_grad
    from minicct.data import Normalize
    x = Normalize(mean, std)(images)
    with no_grad():
        logits = backend.to_numpy(model(Tensor(backend.to_device(x, device))).data)
        if flip:
            mirror = np.ascontiguousarray(x[..., ::-1])
            logits = 0.5 * (logits + backend.to_numpy(model(Tensor(backend.to_device(mirror, device))).data))
    probs, _ = softmax_forward(logits.astype(np.float64), axis=1)   # the library's stable softmax
    return probs


def read_image(path, size, mode="RGB"):
    """(size, size, C) uint8 (C = 3, or 1 for mode 'L'), or a reason the file cannot be used (a string)."""
    from minicct.data.imagefolder import load_image
    p = Path(path)
    if p.is_dir():
        return f"{path} is a folder, not an image (give its files, e.g. {p / '*.jpg'})"
    if not p.exists():
        return f"{path}: no such file"
    try:
        return load_image(p, size, mode=mode)
    except DatasetError as e:
        cause = e.__context__   # Pillow's own exception, hidden by the loader's ``from None``
        why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return f"{path} could not be read as an image{why}"


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = use_device(args.device)
    ckpt = load_checkpoint(args.checkpoint)
    data = ckpt["data"]
    if data.get("img_size") is None:
        raise RunError(f"--checkpoint {args.checkpoint} holds a {ckpt['model']['name']}, a text model: "
                       f"predict classifies images (python -m minicct.evaluate tests a text model)")
    classes, size = list(data["classes"]), int(data["img_size"])
    from_data = ckpt["model"].get("data_kwargs", {"n_input_channels": ckpt["model"].get("n_input_channels", 3)})
    mode = "L" if int(from_data.get("n_input_channels", 3)) == 1 else "RGB"   # grey models: MNIST
    images, paths = [], []
    for path in args.images:
        img = read_image(path, size, mode)
        if isinstance(img, str) and len(args.images) == 1:
            raise RunError(img)
        if isinstance(img, str):
            print(f"{PROG}: skipped {img}", file=sys.stderr)
        else:
            images.append(img)
            paths.append(path)
    if not images:
        raise RunError(f"none of the {len(args.images)} files could be read as an image (see above)")
    model = model_from_checkpoint(ckpt, device)
    # as the run evaluated: its weight average (--ema) and test-time flip, if it used them
    probs = predict(model, np.stack(images), data["mean"], data["std"], device,
                    flip=bool((ckpt.get("args") or {}).get("tta_flip")))
    k = min(args.top, len(classes))
    for path, p in zip(paths, probs):
        order = np.argsort(-p, kind="stable")[:k]
        print(path)
        for c in order:
            print(f"  {p[c]:7.2%}  {classes[c]}")
    return EXIT_ERROR if len(paths) < len(args.images) else 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
