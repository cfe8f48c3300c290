"""CuPy fast paths (minicct/kernels/cuda.py) against their portable twins, on the GPU only."""
import numpy as np
import pytest

from minicct.backend import to_numpy
from minicct.kernels import activation


@pytest.fixture
def cp(device):
    if device != "gpu":
        pytest.skip("CuPy fast paths only run on a GPU: use `pytest --device gpu` on a CUDA machine")
    from minicct.backend import xp_for
    return xp_for("gpu")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_kernels_match_portable(approximate, dtype, cp, rng):
    from minicct.kernels import cuda
    x = cp.asarray(rng.standard_normal((64, 257)) * 4, dtype=dtype)
    gy = cp.asarray(rng.standard_normal((64, 257)), dtype=dtype)
    y_fast, c_fast = cuda.gelu_forward(x, approximate)
    y_port, c_port = activation.gelu_forward_xp(x, approximate)
    gx_fast, gx_port = cuda.gelu_backward(gy, c_fast), activation.gelu_backward_xp(gy, c_port)
    assert y_fast.dtype == dtype and gx_fast.dtype == dtype
    # The portable erf is within 1.5e-7 of the true one; CUDA's is within an ulp or two.
    tol = 2e-6 if dtype == np.float32 else 5e-7
    np.testing.assert_allclose(to_numpy(y_fast), to_numpy(y_port), rtol=0, atol=tol * 4)
    np.testing.assert_allclose(to_numpy(gx_fast), to_numpy(gx_port), rtol=0, atol=tol * 4)


def test_gelu_dispatches_to_the_fused_kernel(cp):
    y, cache = activation.gelu_forward(cp.zeros(3))
    assert cache[0] == "cuda"
