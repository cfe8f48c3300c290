"""``python -m minicct.predict IMAGE... --checkpoint PATH``: the top-5 classes of each image.

    python -m minicct.predict cat.jpg dog.png --checkpoint runs/cifar10-cct_2_3x2_32/best.npz

Any image size or mode works: each image is converted to RGB (grey for a model trained on grey images,
such as MNIST's), its shorter side resized (bicubic) to
the model's input size and the centre cropped square (as ImageFolder data is prepared), then
normalised with the training set's mean and std. Class names come from the checkpoint.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from minicct import backend
from minicct.kernels.activation import softmax_forward
from minicct.training.checkpoint import load_checkpoint, model_from_checkpoint
from minicct.training.errors import run_cli


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minicct.predict",
                                description="Print each image's top classes with probabilities.")
    p.add_argument("images", nargs="+", help="image files (any size; JPEG, PNG, ...)")
    p.add_argument("--checkpoint", required=True, help="a .npz written by python -m minicct.train")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default: 5)")
    p.add_argument("--device", default=None, help="'cpu' or 'gpu' (default: $MINICCT_DEVICE, else cpu)")
    return p


def predict(model, images, mean, std, device):
    """images: (N, S, S, C) uint8 (C = 3, or 1 for grey) -> class probabilities (N, K) float64 (NumPy)."""
    from minicct import Tensor, no_grad
    from minicct.data import Normalize
    with no_grad():
        logits = backend.to_numpy(model(Tensor(backend.to_device(Normalize(mean, std)(images), device))).data)
    probs, _ = softmax_forward(logits.astype(np.float64), axis=1)   # the library's stable softmax
    return probs


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = backend.check_device(args.device)
    backend.xp_for(device)
    from minicct.data.imagefolder import load_image

    ckpt = load_checkpoint(args.checkpoint)
    data = ckpt["data"]
    classes, size = list(data["classes"]), int(data["img_size"])
    grey = int(ckpt["model"].get("n_input_channels", 3)) == 1
    images = np.stack([load_image(path, size, mode="L" if grey else "RGB") for path in args.images])
    model = model_from_checkpoint(ckpt, device)
    probs = predict(model, images, data["mean"], data["std"], device)
    k = max(1, min(args.top, len(classes)))
    for path, p in zip(args.images, probs):
        order = np.argsort(-p, kind="stable")[:k]
        print(path)
        for c in order:
            print(f"  {p[c]:7.2%}  {classes[c]}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="minicct.predict"))
