"""Writing a file so that a reader never sees half of it.

    atomic_write("runs/x/last.npz", lambda f: np.savez(f, **arrays))

The file is written under a temporary name in the same folder, flushed to disk, then renamed over the
target (``os.replace`` is atomic within one file system): an interrupted save leaves the previous
file whole, and no half-written file ever has the target's name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
