"""Every error minicct raises on purpose, in one place.

    MinicctError                     a problem the user can fix; the message says what and how
    ├── DeviceError                  a tensor on the wrong device, or no usable GPU    (RuntimeError)
    ├── DatasetError                 data missing, unfetchable or unreadable           (RuntimeError)
    ├── CheckpointError              a file that is not a checkpoint minicct reads     (ValueError, RuntimeError)
    ├── StateDictError               weights whose names or shapes do not fit a model  (RuntimeError)
    ├── RunError                     a run's set-up: flags, folders, a diverged loss   (RuntimeError)
    └── GraphCaptureError            a step a CUDA graph cannot capture faithfully      (RuntimeError)

A command catches ``MinicctError`` and prints its message as one line, no traceback; anything else
is a bug and keeps its traceback. Each class also keeps the builtin base it has always had (in
brackets above), so ``except RuntimeError`` written before this module existed still catches it.
CheckpointError has both: the ``.pth`` reader used to raise a ValueError and the ``.npz`` one a
RuntimeError, and callers of either keep working.

The classes are also importable from where they are raised (``minicct.backend.DeviceError``,
``minicct.data.DatasetError``, ``minicct.nn.StateDictError`` ...): those names are these classes.
"""
from __future__ import annotations


class MinicctError(Exception):
    """Base of every error minicct raises for a problem the user can fix."""


class DeviceError(MinicctError, RuntimeError):
    """A tensor is on the wrong device, or the GPU cannot be used."""


class DatasetError(MinicctError, RuntimeError):
    """The data could not be found, fetched or read. The message says where and how to fix it."""


class CheckpointError(MinicctError, ValueError, RuntimeError):
    """A checkpoint or weights file is missing, unreadable, not a format minicct reads, or holds
    something it refuses (e.g. a pickle that names a function outside the allowed few)."""


class StateDictError(MinicctError, RuntimeError):
    """``load_state_dict`` found keys or shapes that do not fit the model (all of them listed)."""


class RunError(MinicctError, RuntimeError):
    """A problem with the run's set-up that the user can fix; the message says how."""


class GraphCaptureError(MinicctError, RuntimeError):
    """A training step cannot be captured into a CUDA graph without changing what it computes
    (e.g. it draws random masks in graph mode with no capturable generator plugged in): the message names the way out."""


__all__ = ["MinicctError", "DeviceError", "DatasetError", "CheckpointError", "StateDictError", "RunError",
           "GraphCaptureError"]
