"""Evaluation: the test loss and top-1/top-5 accuracy of a model, used after every training epoch
and by ``python -m minicct.evaluate`` (which needs nothing else from training)."""
from __future__ import annotations

import sys

import numpy as np

from minicct import backend
from minicct.training.metrics import topk_correct


def evaluate(model, loader, device, progress=False, flip=False, forward=None):
    """Mean cross-entropy and top-1/top-5 accuracy (%) over ``loader`` (x normalised, y int labels).
    forward: None, or a ``graph_step.GraphForward`` (host batch -> logits, the forward as a CUDA graph).

    flip: test-time augmentation; the logits are the mean of the image's and its mirror image's
    (x[..., ::-1], the width axis), at twice the cost.
    Returns {'test_loss', 'test_top1', 'test_top5', 'n'}.
    """
    from minicct import Tensor, no_grad, parallel

    was_training = getattr(model, "training", True)
    model.eval()
    total_loss, c1, c5, n = 0.0, 0, 0, 0
    bar = progress_bar(len(loader), "evaluate", progress)
    try:
        with no_grad():
            for x, y in loader:
                if forward is not None:      # the forward as a CUDA graph replay
                    logits = backend.to_numpy(forward(x)).astype(np.float64)
                    if flip:
                        logits = 0.5 * (logits + backend.to_numpy(forward(np.ascontiguousarray(x[..., ::-1]))))
                else:
                    x = backend.to_device(x, device)
                    logits = backend.to_numpy(parallel.forward(model, Tensor(x)).data).astype(np.float64)
                    if flip:
                        mirror = backend.get_array_module(x).ascontiguousarray(x[..., ::-1])
                        logits = 0.5 * (logits + backend.to_numpy(parallel.forward(model, Tensor(mirror)).data))
                y = np.asarray(y)
                # cross-entropy from a stable log-softmax: logsumexp(z) - z[label]
                zmax = logits.max(axis=1, keepdims=True)
                lse = np.log(np.exp(logits - zmax).sum(axis=1)) + zmax[:, 0]
                total_loss += float((lse - logits[np.arange(len(y)), y]).sum())
                a1, a5 = topk_correct(logits, y, (1, 5))
                c1, c5, n = c1 + a1, c5 + a5, n + len(y)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return {"test_loss": total_loss / n, "test_top1": 100.0 * c1 / n, "test_top5": 100.0 * c5 / n, "n": n}


def progress_bar(total, desc, enabled):
    """A tqdm bar on stderr, shown only on a terminal (a log file gets the per-epoch lines alone)."""
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr, disable=None)
