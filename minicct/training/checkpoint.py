"""Training checkpoints: what ``python -m minicct.train`` writes, and the model it describes.

    save_checkpoint("runs/x/last.npz", {"epoch": 3, "model": model.state_dict(), "rng": {...}})
    ckpt = load_checkpoint("runs/x/last.npz")
    model = model_from_checkpoint(ckpt)

The file format (a nested dict of arrays and plain values in one ``.npz``, written atomically) is
``minicct.formats.npz``'s; this module adds what a checkpoint means to training.
"""
from __future__ import annotations

from minicct.errors import CheckpointError  # noqa: F401  (raised by the readers; imported from here too)
from minicct.formats.files import atomic_write  # noqa: F401
from minicct.formats.npz import load_checkpoint, save_checkpoint  # noqa: F401


def model_from_checkpoint(ckpt: dict, device="cpu"):
    """Rebuild the model a training checkpoint describes, with its weights, in eval mode, on ``device``.

    ckpt: what ``load_checkpoint`` returned for a file that ``python -m minicct.train`` wrote.
    """
    from minicct import models
    try:
        info = ckpt["model"]
        model = models.create_model(info["name"], num_classes=int(info["num_classes"]),
                                    img_size=int(info["img_size"]), **info.get("kwargs", {}))
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"the checkpoint does not describe a model ({e}): was it written by "
                              "python -m minicct.train?") from None
    model.load_state_dict(info["state"])
    return model.to(device).eval()
