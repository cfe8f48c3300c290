"""minicct.errors: one hierarchy, one definition per class, old import paths and builtin bases kept."""
import pytest

from minicct import errors


@pytest.mark.parametrize("name, where, bases", [
    ("DeviceError", ["minicct.backend", "minicct"], (RuntimeError,)),
    ("DatasetError", ["minicct.data", "minicct.data.datasets"], (RuntimeError,)),
    ("CheckpointError", ["minicct.models", "minicct.formats", "minicct.training.checkpoint"],
     (ValueError, RuntimeError)),
    ("StateDictError", ["minicct.nn", "minicct.nn.module"], (RuntimeError,)),
    ("RunError", ["minicct.training.errors"], (RuntimeError,)),
])
def test_each_error_is_one_class_under_minicct_error(name, where, bases):
    import importlib
    cls = getattr(errors, name)
    assert issubclass(cls, errors.MinicctError)
    for base in bases:  # `except RuntimeError` / `except ValueError` written earlier still catch it
        assert issubclass(cls, base)
    for module in where:  # the old homes name the same class, not a look-alike
        assert getattr(importlib.import_module(module), name) is cls, module


def test_non_finite_loss_is_a_run_error():
    from minicct.training.errors import NonFiniteLoss
    e = NonFiniteLoss(1, 2, 3, float("nan"))
    assert isinstance(e, errors.RunError) and isinstance(e, errors.MinicctError)
