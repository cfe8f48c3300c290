"""How a training run fails: ``RunError`` for a set-up the user can fix, ``NonFiniteLoss`` for a run
that diverged. The commands print either as one line (``minicct.cli.run_cli``, which catches the base
``minicct.errors.MinicctError``), never with a traceback."""
from __future__ import annotations

from minicct.cli import EXIT_DIVERGED, EXIT_ERROR, EXIT_INTERRUPTED, run_cli  # noqa: F401 (the commands' entry)
from minicct.errors import RunError  # the one definition (minicct.errors)


class NonFiniteLoss(RunError):
    """The loss became NaN or infinite: the run stops, keeping the last good checkpoint."""

    def __init__(self, epoch, step, steps, value, checkpoint=None):
        where = f"at epoch {epoch}, step {step} (of {steps} in the epoch)"
        keep = (f"the last good checkpoint, {checkpoint}, is kept" if checkpoint
                else "no checkpoint was written yet")
        super().__init__(f"the training loss became {value} {where}; stopping ({keep}). "
                         f"Try a lower --lr or a longer --warmup-epochs.")
        self.epoch, self.step, self.steps, self.value = epoch, step, steps, value
