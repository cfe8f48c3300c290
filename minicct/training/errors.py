"""How the commands fail: one clear line on stderr and a non-zero exit code, never a traceback for a
problem the user can fix (bad flags, missing data, no GPU, a bad checkpoint, a diverged run)."""
from __future__ import annotations

import contextlib
import sys

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


EXIT_ERROR = 2        # bad input: flags, data, device, checkpoint
EXIT_DIVERGED = 3     # NaN/inf loss
EXIT_INTERRUPTED = 130


def user_errors():
    """The exception types whose message is enough (no traceback)."""
    from minicct.backend import DeviceError
    from minicct.training.checkpoint import CheckpointError
    types = [RunError, DeviceError, CheckpointError]
    with contextlib.suppress(ImportError):
        from minicct.data.datasets import DatasetError
        types.append(DatasetError)
    with contextlib.suppress(ImportError):
        from minicct.nn.module import StateDictError
        types.append(StateDictError)
    return tuple(types)


def run_cli(main, argv=None, prog="minicct") -> int:
    """Call ``main(argv)``; turn the errors a user can fix into ``prog: error: message`` and an exit code."""
    try:
        return main(argv)
    except NonFiniteLoss as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except user_errors() as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
