"""minicct: Compact Transformers (CCT, CVT, ViT-Lite) from scratch in NumPy and CuPy.

    import minicct
    x = minicct.Tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward(); x.grad      # Tensor([[2., 4.]])

Layers of the package: ``backend`` (arrays and devices) → ``autograd`` (Tensor, Function,
gradcheck) → ``kernels`` (forward/backward pairs on raw arrays) → ``functional`` (kernels as
differentiable functions) → ``nn`` (modules) → ``models`` (ViT-Lite, CVT, CCT) → ``optim``,
``data`` → ``train`` / ``evaluate`` / ``predict`` / ``bench`` (the commands).
"""
from minicct.backend import DeviceError, default_device, gpu_available, get_array_module
from minicct.autograd import (Tensor, Function, Context, no_grad, is_grad_enabled, set_grad_enabled,
                              concatenate, stack, gradcheck, GradcheckError)

__version__ = "0.1.0"


def tensor(data, requires_grad=False, device=None, dtype=None):
    """Same as ``Tensor(...)``."""
    return Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)


def _filled(fill, shape, device, dtype, requires_grad):
    from minicct import backend
    xp = backend.xp_for(device)
    return Tensor(fill(xp, shape, dtype or "float32"), requires_grad=requires_grad, device=device)


def zeros(*shape, device=None, dtype=None, requires_grad=False):
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return _filled(lambda xp, s, d: xp.zeros(s, d), shape, device, dtype, requires_grad)


def ones(*shape, device=None, dtype=None, requires_grad=False):
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return _filled(lambda xp, s, d: xp.ones(s, d), shape, device, dtype, requires_grad)


def manual_seed(seed: int) -> None:
    """Seed every generator minicct draws from: weight initialisation and the dropout / drop-path
    masks, one stream each (see ``minicct.random``), and NumPy's and Python's global generators.
    The data pipeline takes its own ``seed=``."""
    from minicct import random
    random.manual_seed(seed)


def __getattr__(name):
    # The layers above the engine load on first use, so `import minicct` stays light.
    import importlib
    if name in ("functional", "nn", "models", "optim", "data", "kernels", "parallel", "random"):
        return importlib.import_module(f"minicct.{name}")
    raise AttributeError(f"module 'minicct' has no attribute {name!r}")
