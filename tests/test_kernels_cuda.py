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


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "hwnc"])
@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 3, 9, 8), 3, 2, 1), ((1, 2, 7, 7), (3, 2), (1, 2), (1, 0)), ((2, 2, 6, 6), 2, 2, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_kernels_match_portable(layout, shape, kernel, stride, padding, dtype, cp, rng):
    from minicct.kernels import cuda, pool
    a = rng.integers(0, 4, shape).astype(dtype)          # many ties
    x = cp.asarray(a)
    if layout == "channels_last":
        x = cp.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "hwnc":   # what conv2d's im2col returns: (OH, OW, N, C) memory
        x = cp.ascontiguousarray(x.transpose(2, 3, 0, 1)).transpose(2, 3, 0, 1)
    y_fast, c_fast = pool.max_pool2d_forward(x, kernel, stride, padding)
    y_port, c_port = pool.max_pool2d_forward_xp(x, kernel, stride, padding)
    assert c_fast[0] == "cuda" and c_port[0] == "xp"
    np.testing.assert_array_equal(to_numpy(y_fast), to_numpy(y_port))
    gy = cp.asarray(rng.standard_normal(y_fast.shape), dtype=dtype)
    np.testing.assert_allclose(to_numpy(pool.max_pool2d_backward(gy, c_fast)),
                               to_numpy(pool.max_pool2d_backward(gy, c_port)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("xshape,nshape", [((4, 7), (7,)), ((2, 3, 128), (128,)), ((2, 3, 40), (3, 40))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_kernels_match_portable(affine, xshape, nshape, dtype, cp, rng):
    from minicct.kernels import norm
    x = cp.asarray(rng.standard_normal(xshape) * 3 + 1, dtype=dtype)
    w = cp.asarray(rng.standard_normal(nshape), dtype=dtype) if affine else None
    b = cp.asarray(rng.standard_normal(nshape), dtype=dtype) if affine else None
    y_fast, c_fast = norm.layer_norm_forward(x, nshape, w, b)
    y_port, c_port = norm.layer_norm_forward_xp(x, nshape, w, b)
    assert c_fast[0] == "cuda" and c_port[0] == "xp"
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(to_numpy(y_fast), to_numpy(y_port), rtol=tol, atol=tol)
    gy = cp.asarray(rng.standard_normal(xshape), dtype=dtype)
    for g_fast, g_port in zip(norm.layer_norm_backward(gy, c_fast), norm.layer_norm_backward(gy, c_port)):
        if g_port is None:
            assert g_fast is None
        else:
            np.testing.assert_allclose(to_numpy(g_fast), to_numpy(g_port), rtol=tol * 10, atol=tol * 10)
