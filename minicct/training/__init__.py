"""Training runs: what ``python -m minicct.train`` is made of.

    config.py      the flags, their defaults (the paper's CIFAR-10 recipe) and the presets
    trainer.py     Trainer: data, model, AdamW, schedule, loaders; the epoch loop; resuming; generators
    checkpoint.py  atomic .npz checkpoints (arrays + a JSON document, no pickle); model_from_checkpoint
    metrics.py     top-k accuracy, running means, metrics.csv
    curves.py      the loss/accuracy PNG, drawn with Pillow
    errors.py      one-line errors and exit codes for the commands (no tracebacks for user mistakes)

The commands themselves are ``minicct/train.py``, ``minicct/evaluate.py`` and ``minicct/predict.py``.
"""
