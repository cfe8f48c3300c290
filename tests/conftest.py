"""Shared test set-up: one set of tests runs on either device.

    pytest                    # CPU (NumPy)
    pytest --device gpu       # the same tests on CuPy; skipped with a reason where no GPU exists

Tests that take the ``device`` fixture run on the chosen device; ``xp`` is its array module.
Tests that take ``kernel_mode`` run twice, with the reference kernels and with the fast ones
(``kernels.dispatch.use_mode``); ``force_impl`` makes ``minicct.functional`` run one given kernel
module whatever dispatch would pick (to gradcheck each version through its Function).
"""
import os

import numpy as np
import pytest

from minicct import backend


def pytest_addoption(parser):
    parser.addoption("--device", default=os.environ.get("MINICCT_TEST_DEVICE", "cpu"),
                     choices=["cpu", "gpu"], help="device the device-parametrised tests run on")


@pytest.fixture
def device(request):
    d = request.config.getoption("--device")
    if d == "gpu" and not backend.gpu_available():
        pytest.skip("--device gpu asked for, but CuPy or a GPU is missing here "
                    "(install cupy-cuda12x / cupy-cuda13x on a CUDA machine)")
    return d


@pytest.fixture
def xp(device):
    return backend.xp_for(device)


@pytest.fixture(params=["reference", "fast"])
def kernel_mode(request, monkeypatch):
    """Run the test with the reference kernels, then with the fast ones (kernels.dispatch).

    Tests use small shapes, below the sizes from which dispatch takes Winograd or the blocked
    attention in training; in fast mode those size rules are lowered so every fast version runs
    here (the rules themselves are tested in test_kernels_dispatch / test_kernels_fast)."""
    from minicct.kernels import dispatch
    if request.param == "fast":
        monkeypatch.setattr(dispatch, "WINOGRAD_MIN_CHANNELS", 1)
        monkeypatch.setattr(dispatch, "SDPA_FAST_MIN_SCORES", 0)
    with dispatch.use_mode(request.param):
        yield request.param


@pytest.fixture
def force_impl(monkeypatch):
    """``force_impl("conv2d", module)``: F.conv2d runs ``module.conv2d_forward`` / ``_backward``."""
    from minicct.kernels import dispatch

    def force(op, module):
        impl = dispatch.Impl(f"{op} from {module.__name__}", getattr(module, f"{op}_forward"),
                             getattr(module, f"{op}_backward"))
        monkeypatch.setattr(dispatch, op, lambda *args, **kwargs: impl)
        return impl
    return force


@pytest.fixture
def rng():
    return np.random.default_rng(0)


_DATASETS = {}


@pytest.fixture
def generate_datasets_once(monkeypatch):
    """Each training run would generate the 6,000 shapes images again (seconds): keep one copy per
    session. Runs get fresh arrays (the trainer slices them for --train-limit)."""
    import copy
    import minicct.data
    real = minicct.data.get_dataset

    def cached(name, *args, **kwargs):
        key = (str(name), args, tuple(sorted(kwargs.items())))
        if key not in _DATASETS:
            _DATASETS[key] = real(name, *args, **kwargs)
        return type(_DATASETS[key])(*(copy.copy(ds) for ds in _DATASETS[key]))

    monkeypatch.setattr(minicct.data, "get_dataset", cached)
