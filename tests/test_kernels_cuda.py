"""The CuPy kernels (minicct/kernels/cuda/) against their references, on the GPU only; and, on any
machine, that the package imports without CuPy (nothing is compiled or imported until a call)."""
import subprocess
import sys

import numpy as np
import pytest

from minicct.backend import to_numpy
from minicct.kernels import activation, norm, pool
from minicct.kernels import adamw as adamw_ref


def test_cuda_package_imports_without_cupy():
    """CPU-only machines import everything: dispatch, functional and optim name the CUDA modules,
    and none of them may import CuPy before a CuPy array reaches it."""
    code = ("import sys; import minicct.functional, minicct.optim, minicct.kernels.dispatch; "
            "import minicct.kernels.cuda.gelu, minicct.kernels.cuda.pool, minicct.kernels.cuda.norm, "
            "minicct.kernels.cuda.adamw, minicct.kernels.cuda.philox; assert 'cupy' not in sys.modules, 'cupy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def cp(device):
    if device != "gpu":
        pytest.skip("CuPy kernels only run on a GPU: use `pytest --device gpu` on a CUDA machine")
    from minicct.backend import xp_for
    return xp_for("gpu")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_matches_reference(approximate, dtype, cp, rng):
    from minicct.kernels.cuda import gelu
    x = cp.asarray(rng.standard_normal((64, 257)) * 4, dtype=dtype)[:, ::2]     # odd, strided
    gy = cp.asarray(rng.standard_normal(x.shape), dtype=dtype)
    y_fast, c_fast = gelu.gelu_forward(x, approximate)
    y_ref, c_ref = activation.gelu_forward(x, approximate)
    gx_fast, gx_ref = gelu.gelu_backward(gy, c_fast), activation.gelu_backward(gy, c_ref)
    assert y_fast.dtype == dtype and gx_fast.dtype == dtype
    # The reference erf is within 1.5e-7 of the true one; CUDA's is within an ulp or two.
    tol = 2e-6 if dtype == np.float32 else 5e-7
    np.testing.assert_allclose(to_numpy(y_fast), to_numpy(y_ref), rtol=0, atol=tol * 4)
    np.testing.assert_allclose(to_numpy(gx_fast), to_numpy(gx_ref), rtol=0, atol=tol * 4)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "hwnc"])
@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 3, 9, 8), 3, 2, 1), ((1, 2, 7, 7), (3, 2), (1, 2), (1, 0)), ((2, 2, 6, 6), 2, 2, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_matches_reference(layout, shape, kernel, stride, padding, dtype, cp, rng):
    from minicct.kernels.cuda import pool as cuda_pool
    a = rng.integers(0, 4, shape).astype(dtype)          # many ties
    x = cp.asarray(a)
    if layout == "channels_last":
        x = cp.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    elif layout == "hwnc":   # what conv2d's im2col returns: (OH, OW, N, C) memory
        x = cp.ascontiguousarray(x.transpose(2, 3, 0, 1)).transpose(2, 3, 0, 1)
    y_fast, c_fast = cuda_pool.max_pool2d_forward(x, kernel, stride, padding)
    y_ref, c_ref = pool.max_pool2d_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(to_numpy(y_fast), to_numpy(y_ref))
    gy = cp.asarray(rng.standard_normal(y_fast.shape), dtype=dtype)
    np.testing.assert_allclose(to_numpy(cuda_pool.max_pool2d_backward(gy, c_fast)),
                               to_numpy(pool.max_pool2d_backward(gy, c_ref)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("xshape,nshape", [((4, 7), (7,)), ((2, 3, 128), (128,)), ((2, 3, 40), (3, 40)),
                                           ((3, 5, 33), (33,))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_matches_reference(affine, xshape, nshape, dtype, cp, rng):
    from minicct.kernels.cuda import norm as cuda_norm
    x = cp.asarray(rng.standard_normal(xshape) * 3 + 1, dtype=dtype)
    w = cp.asarray(rng.standard_normal(nshape), dtype=dtype) if affine else None
    b = cp.asarray(rng.standard_normal(nshape), dtype=dtype) if affine else None
    y_fast, c_fast = cuda_norm.layer_norm_forward(x, nshape, w, b)
    y_ref, c_ref = norm.layer_norm_forward(x, nshape, w, b)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(to_numpy(y_fast), to_numpy(y_ref), rtol=tol, atol=tol)
    gy = cp.asarray(rng.standard_normal(xshape), dtype=dtype)
    for g_fast, g_ref in zip(cuda_norm.layer_norm_backward(gy, c_fast), norm.layer_norm_backward(gy, c_ref)):
        if g_ref is None:
            assert g_fast is None
        else:
            np.testing.assert_allclose(to_numpy(g_fast), to_numpy(g_ref), rtol=tol * 10, atol=tol * 10)


def test_layer_norm_checks_its_arguments(cp):
    from minicct.kernels.cuda import norm as cuda_norm
    with pytest.raises(ValueError, match="layer_norm"):
        cuda_norm.layer_norm_forward(cp.zeros((2, 5)), (4,))


def test_adamw_matches_reference(cp, rng):
    from minicct.kernels.cuda import adamw as cuda_adamw
    n = 10_001
    p, g, m, v = (rng.normal(size=n).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    hyper = dict(lr=1e-3, weight_decay=0.05, beta1=0.9, beta2=0.999, eps=1e-8, step=7)
    ref = [a.copy() for a in (p, m, v)]
    adamw_ref.adamw_update_(ref[0], g, ref[1], ref[2], **hyper)
    dev = [cp.asarray(a) for a in (p, m, v)]
    cuda_adamw.adamw_update_(dev[0], cp.asarray(g), dev[1], dev[2], **hyper)
    for r, d in zip(ref, dev):
        np.testing.assert_allclose(to_numpy(d), r, rtol=1e-5, atol=1e-7)
