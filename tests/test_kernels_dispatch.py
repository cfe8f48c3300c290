"""kernels.dispatch picks the version it should, per op, device and mode (layer_norm, the
activations, attention, cross_entropy, the AdamW update, and max_pool2d's GPU branch).

A CuPy array is stood in for by an object of a class of our own, which ``dispatch.on_gpu`` is
told to take for one (monkeypatched): the GPU branches are checked on any machine (the CUDA
modules import without CuPy and are not called here).
"""
import numpy as np
import pytest

from minicct.kernels import activation, adamw, attention, dispatch, loss, norm
from minicct.kernels.cuda import adamw as cuda_adamw, gelu as cuda_gelu, norm as cuda_norm, pool as cuda_pool
from minicct.kernels.fast import attention as fast_attention, gelu as fast_gelu


class FakeGpuArray:
    """Not a NumPy array: what dispatch sees of a CuPy array."""


CPU, GPU = np.zeros((2, 3), np.float32), FakeGpuArray()


@pytest.fixture(autouse=True)
def fake_gpu(monkeypatch):
    from minicct import backend
    assert not backend.is_gpu_array(GPU)           # the real test does not take it for CuPy
    monkeypatch.setattr(dispatch, "on_gpu", lambda x: isinstance(x, FakeGpuArray))


def _module_of(impl):
    fn = impl.forward
    return getattr(fn, "func", fn).__module__        # through functools.partial


# (mode, array) -> the module each selector's Impl comes from
EXPECTED = {
    ("reference", "cpu"): dict(layer_norm=norm, gelu=activation, relu=activation, softmax=activation,
                               log_softmax=activation, sdpa=attention, cross_entropy=loss),
    ("fast", "cpu"): dict(layer_norm=norm, gelu=fast_gelu, relu=activation, softmax=activation,
                          log_softmax=activation, sdpa=fast_attention, cross_entropy=loss),
    ("reference", "gpu"): dict(layer_norm=norm, gelu=activation, relu=activation, softmax=activation,
                               log_softmax=activation, sdpa=attention, cross_entropy=loss),
    ("fast", "gpu"): dict(layer_norm=cuda_norm, gelu=cuda_gelu, relu=activation, softmax=activation,
                          log_softmax=activation, sdpa=fast_attention, cross_entropy=loss),
}


# An attention q (N, heads, L, D) with CCT-7/3x1's 4 x 256 x 256 scores an image.
Q_LARGE = np.zeros((1, 4, 256, 8), np.float32)


@pytest.mark.parametrize("mode,device", list(EXPECTED))
def test_each_op_picks_its_version(mode, device):
    x = CPU if device == "cpu" else GPU
    with dispatch.use_mode(mode):
        for op, module in EXPECTED[mode, device].items():
            impl = getattr(dispatch, op)(Q_LARGE if op == "sdpa" and device == "cpu" else x)
            assert _module_of(impl) == module.__name__, (op, mode, device, impl.name)
            backward = getattr(module, f"{op}_backward")
            assert impl.backward is backward, (op, mode, device)


def test_fast_attention_runs_in_one_block_on_a_gpu_and_in_blocks_on_numpy():
    with dispatch.use_mode("fast"):
        assert dispatch.sdpa(Q_LARGE).forward is fast_attention.sdpa_forward
        assert dispatch.sdpa(GPU).forward.keywords == {"block": None}


def test_numpy_attention_is_fast_only_where_the_scores_are_large():
    """Measured: the blocked attention pays for CCT-7/3x1 (4 heads, 256 tokens) and not for
    CCT-2/3x2 (2 heads, 64 tokens), where the reference runs."""
    with dispatch.use_mode("fast"):
        assert dispatch.sdpa(np.zeros((16, 4, 256, 64), np.float32)).name == "sdpa_fast"
        assert dispatch.sdpa(np.zeros((16, 2, 64, 64), np.float32)).name == "sdpa"


def test_conv_on_a_gpu_is_the_flat_im2col_with_one_weight_product():
    from minicct.kernels.fast import conv_im2col
    w = np.zeros((32, 32, 3, 3), np.float32)
    with dispatch.use_mode("fast"):
        impl = dispatch.conv2d(GPU, w, (1, 1), (1, 1))
        assert impl.forward is conv_im2col.conv2d_forward and impl.backward.keywords == {"gw_block": None}
        assert dispatch.conv2d(CPU, w, (1, 1), (1, 1)).name == "conv2d_winograd"


def test_attention_size_rule_reads_the_keys_length():
    q = np.zeros((1, 4, 16, 8), np.float32)                  # 4 * 16 queries
    with dispatch.use_mode("fast"):
        assert dispatch.sdpa(q).name == "sdpa"                                       # S = L = 16
        assert dispatch.sdpa(q, np.zeros((1, 4, 1024, 8), np.float32)).name == "sdpa_fast"   # S = 1024


def test_max_pool2d_gpu_branch():
    with dispatch.use_mode("fast"):
        assert dispatch.max_pool2d(GPU).forward is cuda_pool.max_pool2d_forward
        assert dispatch.max_pool2d(CPU).forward is not cuda_pool.max_pool2d_forward
    with dispatch.use_mode("reference"):
        assert dispatch.max_pool2d(GPU).forward is not cuda_pool.max_pool2d_forward


@pytest.mark.parametrize("mode,device,expected", [
    ("reference", "cpu", adamw), ("fast", "cpu", adamw),
    ("reference", "gpu", adamw), ("fast", "gpu", cuda_adamw)])
def test_adamw_update(mode, device, expected):
    with dispatch.use_mode(mode):
        assert dispatch.adamw_update(CPU if device == "cpu" else GPU) is expected.adamw_update_


def test_the_fast_versions_take_the_references_arguments(rng):
    """dispatch swaps one Impl for another, so each fast version must take what its reference
    takes, positionally, and say so in the same error."""
    x = rng.standard_normal((2, 5)).astype(np.float32)
    for fwd in (activation.gelu_forward, fast_gelu.gelu_forward):
        assert fwd(x, "tanh")[0].shape == x.shape
        with pytest.raises(ValueError, match="approximate must be"):
            fwd(x, "erf")
    q = rng.standard_normal((2, 3, 4))
    for fwd in (attention.sdpa_forward, fast_attention.sdpa_forward):
        assert fwd(q, q, q, 0.5, True, np.random.default_rng(0))[0].shape == q.shape
        with pytest.raises(ValueError, match="do not fit"):
            fwd(q, q[..., :2], q)
