"""Shared test set-up: one set of tests runs on either device.

    pytest                    # CPU (NumPy)
    pytest --device gpu       # the same tests on CuPy; skipped with a reason where no GPU exists

Tests that take the ``device`` fixture run on the chosen device; ``xp`` is its array module.
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
