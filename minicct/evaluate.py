"""``python -m minicct.evaluate --checkpoint PATH [DATASET]``: test top-1/top-5 of a trained model.

    python -m minicct.evaluate --checkpoint runs/cifar10-cct_2_3x2_32/best.npz
    python -m minicct.evaluate --checkpoint best.npz path/to/folder      # another ImageFolder test split

DATASET defaults to the one the checkpoint was trained on. Images are normalised with the training
set's mean and std (stored in the checkpoint), exactly as during training's evaluation.
"""
from __future__ import annotations

import argparse
import sys

from minicct import backend
from minicct.training.checkpoint import load_checkpoint, model_from_checkpoint
from minicct.training.errors import RunError, run_cli
from minicct.training.trainer import evaluate


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minicct.evaluate",
                                description="Print the test top-1/top-5 accuracy of a training checkpoint.")
    p.add_argument("dataset", nargs="?", default=None,
                   help="'cifar10', 'cifar100', 'shapes' or an ImageFolder root (default: the checkpoint's)")
    p.add_argument("--checkpoint", required=True, help="a .npz written by python -m minicct.train")
    p.add_argument("--data-dir", default=None, help="where CIFAR lives (default: data/)")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default: 256)")
    p.add_argument("--device", default=None, help="'cpu' or 'gpu' (default: $MINICCT_DEVICE, else cpu)")
    p.add_argument("--limit", type=int, default=None, help="only the first N test images")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = backend.check_device(args.device)
    backend.xp_for(device)
    if device == "cpu":
        backend.keep_freed_memory()
    from minicct.data import eval_loader, get_dataset

    ckpt = load_checkpoint(args.checkpoint)
    data = ckpt["data"]
    dataset = args.dataset or data["dataset"]
    _, test = get_dataset(dataset, data_dir=args.data_dir, img_size=int(data["img_size"]))
    if test.num_classes != len(data["classes"]):
        raise RunError(f"{dataset} has {test.num_classes} classes, the checkpoint's model "
                       f"{len(data['classes'])} ({', '.join(data['classes'][:5])}...)")
    if args.limit is not None:
        test.images, test.labels = test.images[:args.limit], test.labels[:args.limit]
    model = model_from_checkpoint(ckpt, device)
    loader = eval_loader(test, batch_size=args.batch_size, mean=data["mean"], std=data["std"])
    r = evaluate(model, loader, device, progress=True)
    print(f"{ckpt['model']['name']} (epoch {int(ckpt['epoch']) - 1}) on {dataset} test, {r['n']} images: "
          f"top-1 {r['test_top1']:.2f}%  top-5 {r['test_top5']:.2f}%  loss {r['test_loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="minicct.evaluate"))
