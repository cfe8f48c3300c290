"""``python -m minicct.evaluate --checkpoint PATH [DATASET]``: test top-1/top-5 of a trained model.

    python -m minicct.evaluate --checkpoint runs/cifar10-cct_2_3x2_32/best.npz
    python -m minicct.evaluate --checkpoint best.npz path/to/folder      # another ImageFolder test split

DATASET defaults to the one the checkpoint was trained on, and --data-dir to the folder it was
trained from. Images are normalised with the training set's mean and std (stored in the
checkpoint), exactly as during training's evaluation. --limit N takes the same class-balanced
subset as training's --test-limit N.

By default the model is evaluated as the run evaluated it: the moving average of the weights if it
trained with --ema, each image and its mirror if it trained with --tta-flip. ``--weights last``
takes the last step's weights instead, ``--flip on|off`` decides the mirror images, so what each
of the two adds can be measured on one checkpoint:

    python -m minicct.evaluate --checkpoint best.npz --weights last --flip off   # neither
"""
from __future__ import annotations

import sys
from pathlib import Path

from minicct.cli import ArgumentParser, existing_folder, plural, positive, run_cli, use_device
from minicct.errors import RunError
from minicct.training.checkpoint import evaluated_as, load_checkpoint, model_from_checkpoint
from minicct.training.config import DATASETS, dataset_key
from minicct.training.evaluation import evaluate


def build_parser():
    p = ArgumentParser(prog="python -m minicct.evaluate",
                       description="Print the test top-1/top-5 accuracy of a training checkpoint.\n\n"
                                   "examples:\n"
                                   "  python -m minicct.evaluate --checkpoint runs/cifar10-cct_2_3x2_32/best.npz\n"
                                   "  python -m minicct.evaluate --checkpoint best.npz path/to/folder")
    p.add_argument("dataset", nargs="?", default=None,
                   help="a dataset name (as for python -m minicct.train) or an ImageFolder root "
                        "(default: the checkpoint's)")
    p.add_argument("--checkpoint", required=True, help="a .npz written by python -m minicct.train")
    p.add_argument("--data-dir", default=None, type=existing_folder("give the folder that holds the data, or "
                                                                    "leave --data-dir out"), help="where CIFAR is (default: the folder the run used, else data/)")
    p.add_argument("--batch-size", type=positive(int, "--batch-size 256"), default=256,
                   help="evaluation batch size (default: 256)")
    p.add_argument("--device", default=None, help="'cpu' or 'gpu' (default: $MINICCT_DEVICE, else cpu)")
    p.add_argument("--limit", type=positive(int, "--limit 1000"), default=None,
                   help="N test images, the same number from each class (the same as training's --test-limit N)")
    p.add_argument("--weights", choices=["average", "last"], default=None,
                   help="'average': the moving average of the weights (a run trained with --ema); 'last': "
                        "the last step's weights (default: what the run evaluated)")
    p.add_argument("--flip", choices=["on", "off"], default=None,
                   help="average each image's logits with its mirror image's (test-time flip) or not "
                        "(default: what the run did, --tta-flip)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.dataset is not None and dataset_key(args.dataset) is None and not Path(args.dataset).is_dir():
        raise RunError(f"dataset {args.dataset!r}: not one of {', '.join(DATASETS)}, and not a directory "
                       f"(leave it out to use the checkpoint's)")
    device = use_device(args.device)
    ckpt = load_checkpoint(args.checkpoint)
    if args.weights == "average" and "ema" not in ckpt:
        raise RunError(f"--weights average: {args.checkpoint} holds no moving average (its run did not "
                       f"use --ema); leave --weights out or give --weights last")
    average = args.weights != "last"
    flip = bool((ckpt.get("args") or {}).get("tta_flip")) if args.flip is None else args.flip == "on"
    from minicct.data import eval_loader, get_dataset
    from minicct.data.datasets import balanced_subset

    data = ckpt["data"]
    dataset = (dataset_key(args.dataset) or args.dataset) if args.dataset else data["dataset"]
    data_dir = args.data_dir
    saved_dir = (ckpt.get("args") or {}).get("data_dir")
    same_data = dataset_key(dataset) is not None and dataset_key(dataset) == dataset_key(data["dataset"])
    if data_dir is None and (args.dataset is None or same_data) and saved_dir and Path(saved_dir).is_dir():
        data_dir = saved_dir   # the folder the run was trained from
    img_size = None if data.get("img_size") is None else int(data["img_size"])
    _, test = get_dataset(dataset, data_dir=data_dir, img_size=img_size)
    if test.num_classes != len(data["classes"]):
        raise RunError(f"{dataset} has {plural(test.num_classes, 'class', 'classes')}, the checkpoint's model "
                       f"{len(data['classes'])} ({', '.join(data['classes'][:5])}...): give the dataset it was "
                       f"trained on")
    if args.limit is not None:
        test = balanced_subset(test, args.limit)
    model = model_from_checkpoint(ckpt, device, average=average)
    if flip and getattr(test, "kind", "") == "text":
        raise RunError("--flip on mirrors test images, but this checkpoint's data are sentences: give --flip off")
    if getattr(test, "kind", "") == "text":            # sentences as word ids, padded per batch
        from minicct.data.text import TextBatches
        loader = TextBatches(test, args.batch_size, False)
    else:
        loader = eval_loader(test, batch_size=args.batch_size, mean=data["mean"], std=data["std"])
    r = evaluate(model, loader, device, progress=True, flip=flip)
    print(f"{ckpt['model']['name']} (epoch {int(ckpt['epoch']) - 1}{evaluated_as(ckpt, average, flip)}) on {dataset} test, "
          f"{r['n']} images: top-1 {r['test_top1']:.2f}%  top-5 {r['test_top5']:.2f}%  loss {r['test_loss']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="minicct.evaluate"))
