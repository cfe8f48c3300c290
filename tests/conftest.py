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
