"""Training runs: what ``python -m minicct.train`` is made of.

    config.py      the flags, their defaults (the paper's CIFAR-10 recipe), the presets, Config
    runs.py        run folders (runs/<dataset>-<model>[-N]) and finding --resume's checkpoint
    trainer.py     Trainer: builders for data, model, AdamW, schedule, loaders; the epoch loop; resuming
    evaluation.py  evaluate(): test loss and top-1/top-5 (training and python -m minicct.evaluate)
    checkpoint.py  atomic .npz checkpoints (arrays + a JSON document, no pickle); model_from_checkpoint
    metrics.py     top-k accuracy, running means, metrics.csv
    curves.py      the loss/accuracy PNG, drawn with Pillow
    errors.py      NonFiniteLoss (a diverged run); the one-line errors and exit codes are minicct/cli.py's

The commands themselves are ``minicct/train.py``, ``minicct/evaluate.py`` and ``minicct/predict.py``;
``minicct/cli.py`` holds what they share (checked flags, one-line errors).
"""
