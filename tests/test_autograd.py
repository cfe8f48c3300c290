"""The engine: every Tensor op gradchecked, graph mechanics, no_grad, dtypes and devices."""
import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest

import minicct
from minicct import Tensor, gradcheck, GradcheckError, no_grad, Function
from minicct.backend import DeviceError


def T(a, device="cpu", grad=True):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad, device=device, dtype=np.float64)


@pytest.fixture
def r():
    return np.random.default_rng(1)


# ---- every op, gradchecked in float64 with a random upstream weight --------------------------------
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow_tensor": lambda a, b: a ** b,
}
# (shape of a, shape of b): same shape, b broadcast into a, a broadcast into b, both broadcast.
SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (2, 3, 4)), ((2, 1, 4), (3, 1))]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("sa,sb", SHAPES)
def test_binary_ops_with_broadcasting(op, sa, sb, r, device):
    a = T(r.uniform(0.5, 2.0, sa), device)  # positive: pow and div stay smooth
    b = T(r.uniform(0.5, 2.0, sb), device)
    assert gradcheck(BINARY[op], [a, b])


@pytest.mark.parametrize("name,fn,lo", [
    ("neg", lambda a: -a, -2), ("exp", lambda a: a.exp(), -2), ("log", lambda a: a.log(), 0.3),
    ("sqrt", lambda a: a.sqrt(), 0.3), ("pow", lambda a: a ** 3, -2), ("pow_frac", lambda a: a ** 0.5, 0.3),
    ("scalar_ops", lambda a: 2.0 * a - 1.0 + a / 3.0 - 4.0 / a, 0.5), ("rpow", lambda a: 2.0 ** a, -1),
])
def test_unary_ops(name, fn, lo, r, device):
    assert gradcheck(fn, [T(r.uniform(lo, 2.0, (3, 5)), device)])


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                   ((1, 3, 4), (2, 4, 2)), ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,))])
def test_matmul(sa, sb, r, device):
    assert gradcheck(lambda a, b: a @ b, [T(r.normal(size=sa), device), T(r.normal(size=sb), device)])


def test_matmul_with_numpy_array_operand(r):
    a = T(r.normal(size=(2, 3)))
    m = r.normal(size=(3, 2))
    assert gradcheck(lambda a: a @ m, [a])
    assert gradcheck(lambda a: m @ a, [a])


@pytest.mark.parametrize("red", ["sum", "mean", "max"])
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(red, axis, keepdims, r, device):
    # distinct values, so max has no ties and finite differences are valid
    a = T(r.permutation(24).reshape(2, 3, 4) * 0.1 + r.uniform(0, 0.01, (2, 3, 4)), device)
    assert gradcheck(lambda a: getattr(a, red)(axis=axis, keepdims=keepdims), [a])


def test_max_ties_share_the_gradient():
    a = Tensor([1.0, 3.0, 3.0, 0.0], requires_grad=True)
    a.max().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0, 0.5, 0.5, 0])


@pytest.mark.parametrize("name,fn", [
    ("reshape", lambda a: a.reshape(4, 6)), ("reshape_tuple", lambda a: a.reshape((6, -1))),
    ("transpose_all", lambda a: a.transpose(2, 0, 1)), ("transpose_two", lambda a: a.transpose(0, 2)),
    ("permute", lambda a: a.permute(1, 2, 0)), ("swapaxes", lambda a: a.swapaxes(-1, -2)),
    ("T", lambda a: a.T), ("flatten", lambda a: a.flatten(1)), ("unsqueeze", lambda a: a.unsqueeze(1)),
    ("slice", lambda a: a[:, 1:, ::2]), ("int_index", lambda a: a[1, 2]), ("neg_index", lambda a: a[-1]),
    ("ellipsis", lambda a: a[..., 0]), ("newaxis", lambda a: a[:, None, 0]),
    ("bool_mask", lambda a: a[a.data > 0]),
    ("repeated_indices", lambda a: a[np.array([0, 1, 0, 0])]),
    ("repeated_fancy_2d", lambda a: a[np.array([1, 1, 0]), np.array([2, 2, 0])]),
    ("index_tensor", lambda a: a[Tensor(np.array([1, 1, 0]))]),
])
def test_shape_and_indexing_ops(name, fn, r, device):
    assert gradcheck(fn, [T(r.normal(size=(2, 3, 4)), device)])


def test_repeated_indices_accumulate():
    a = Tensor(np.zeros(3), requires_grad=True)
    a[np.array([0, 2, 0, 0])].sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [3, 0, 1])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_and_stack(axis, r, device):
    a, b = T(r.normal(size=(2, 3)), device), T(r.normal(size=(2, 3)), device)
    c = T(r.normal(size=(2, 3)), device)
    assert gradcheck(lambda a, b, c: minicct.concatenate([a, b, c], axis=axis), [a, b, c])
    assert gradcheck(lambda a, b, c: minicct.stack([a, b, c], axis=axis), [a, b, c])


def test_concatenate_unequal_sizes(r):
    a, b = T(r.normal(size=(2, 1))), T(r.normal(size=(2, 4)))
    assert gradcheck(lambda a, b: minicct.concatenate([a, b], axis=1) * 2, [a, b])


def test_composite_expression_matches_hand_derivative():
    x = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = ((x * x).sum(axis=1) * Tensor([1.0, -1.0])).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [[2, 4], [-6, -8]])


# ---- graph mechanics -------------------------------------------------------------------------------
def test_diamond_graph_accumulates():
    """x feeds two branches that meet again: its gradient is the sum of both paths."""
    x = Tensor([2.0], requires_grad=True)
    a = x * 3.0
    b = x * x
    (a + b).sum().backward()  # d/dx (3x + x^2) = 3 + 2x = 7
    np.testing.assert_allclose(x.grad.numpy(), [7.0])
    x2 = T([0.3, -1.2, 0.7])
    assert gradcheck(lambda x: (x.exp() * x) / (x * x + 1.0) + x, [x2])


def test_same_tensor_both_operands():
    x = Tensor([3.0], requires_grad=True)
    (x * x).backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0])


def test_grad_accumulates_across_backward_calls_and_is_a_tensor():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    assert isinstance(x.grad, Tensor)
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])
    x.zero_grad()
    assert x.grad is None


def test_leaf_grads_do_not_alias():
    """add hands the same array to both inputs; an in-place update of one grad must not touch the other."""
    a = Tensor([1.0], requires_grad=True)
    b = Tensor([1.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.data += 10
    np.testing.assert_allclose(b.grad.numpy(), [1.0])


def test_deep_chain_has_no_recursion_error():
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 10_000], rtol=1e-3)


def test_graph_is_released_after_backward():
    x = Tensor(np.ones((100, 100)), requires_grad=True)
    h = x * 2.0
    ref = weakref.ref(h.data)
    y = (h.exp() * h).sum()
    del h
    gc.collect()
    assert ref() is not None  # the graph holds h's array: Mul saved it for backward
    y.backward()
    gc.collect()
    assert ref() is None       # freed by backward
    assert y._ctx is None


def test_graph_keeps_only_the_arrays_backward_needs():
    x = Tensor(np.ones((100, 100)), requires_grad=True)
    h = x * 2.0
    ref = weakref.ref(h.data)
    y = ((h + 1.0) * x).sum()   # h feeds an Add, whose backward needs nothing from it
    del h
    gc.collect()
    assert ref() is None        # so the graph does not keep h's array alive
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((100, 100), 5.0))   # 2x + 1 + 2x


def test_memory_does_not_grow_over_steps():
    import tracemalloc
    w = Tensor(np.random.default_rng(0).normal(size=(64, 64)), requires_grad=True)
    x = Tensor(np.ones((32, 64)))

    def step():
        loss = ((x @ w).exp() * 0.001).mean()
        loss.backward()
        w.grad = None

    for _ in range(3):
        step()
    tracemalloc.start()
    step()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(20):
        step()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 64 * 1024, f"memory grew by {grown} bytes over 20 steps"


def test_second_backward_through_a_freed_graph_is_an_error():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x * 2.0
    y = (h * h).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        (h * 3.0).sum().backward()   # a new output built on a freed intermediate
    np.testing.assert_allclose(x.grad.numpy(), [8.0, 16.0])  # untouched by the failed calls


def test_backward_needs_scalar_or_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match="one-element"):
        (x * 2).backward()
    (x * 2).backward(np.array([1.0, 0.5], dtype=np.float32))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 1.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()


def test_no_grad_records_nothing():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        y = x * 2
        assert not minicct.is_grad_enabled()
    assert minicct.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None

    @no_grad()
    def f(t):
        return t * 3
    assert f(x)._ctx is None
    assert (x * 2)._ctx is not None


def test_detach_cuts_the_graph():
    x = Tensor([1.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d._ctx is None


# ---- Function: raw arrays in, ctx for backward ------------------------------------------------------
class Cube(Function):
    @staticmethod
    def forward(ctx, a, scale):
        ctx.save_for_backward(a)
        ctx.scale = scale
        return scale * a ** 3

    @staticmethod
    def backward(ctx, gy):
        (a,) = ctx.saved_tensors
        return gy * 3 * ctx.scale * a ** 2, None


def test_custom_function_receives_raw_arrays(r):
    seen = {}

    class Spy(Function):
        @staticmethod
        def forward(ctx, a):
            seen["type"] = type(a)
            seen["needs"] = ctx.needs_input_grad
            return a * 1

        @staticmethod
        def backward(ctx, gy):
            return gy

    Spy.apply(T([1.0]))
    assert seen == {"type": np.ndarray, "needs": (True,)}
    assert gradcheck(lambda a: Cube.apply(a, 2.0), [T(r.normal(size=(3, 2)))])


# ---- gradcheck must fail on wrong backwards --------------------------------------------------------
def _softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class SoftmaxRight(Function):
    @staticmethod
    def forward(ctx, a):
        p = _softmax(a)
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, gy):
        (p,) = ctx.saved_tensors
        return p * (gy - (gy * p).sum(axis=-1, keepdims=True))


class SoftmaxIgnoresJacobian(SoftmaxRight):
    """Treats softmax as elementwise: keeps the diagonal p(1-p) of the Jacobian, drops the rest."""

    @staticmethod
    def backward(ctx, gy):
        (p,) = ctx.saved_tensors
        return gy * p * (1 - p)


class SoftmaxZeroBackward(SoftmaxRight):
    @staticmethod
    def backward(ctx, gy):
        return np.zeros_like(gy)


def _ln_forward(ctx, a):
    mu = a.mean(-1, keepdims=True)
    sig = np.sqrt(a.var(-1, keepdims=True) + 1e-5)
    xh = (a - mu) / sig
    ctx.save_for_backward(xh, sig)
    return xh


class LayerNormRight(Function):
    forward = staticmethod(_ln_forward)

    @staticmethod
    def backward(ctx, gy):
        xh, sig = ctx.saved_tensors
        return (gy - gy.mean(-1, keepdims=True) - xh * (gy * xh).mean(-1, keepdims=True)) / sig


class LayerNormNoMeanTerm(Function):
    forward = staticmethod(_ln_forward)

    @staticmethod
    def backward(ctx, gy):
        xh, sig = ctx.saved_tensors
        return (gy - xh * (gy * xh).mean(-1, keepdims=True)) / sig


def test_gradcheck_passes_right_softmax_and_layernorm(r):
    x = T(r.normal(size=(3, 5)))
    assert gradcheck(SoftmaxRight.apply, [x])
    assert gradcheck(LayerNormRight.apply, [x])


@pytest.mark.parametrize("wrong", [SoftmaxIgnoresJacobian, SoftmaxZeroBackward, LayerNormNoMeanTerm])
def test_gradcheck_fails_on_wrong_backward(wrong, r):
    x = T(r.normal(size=(3, 5)))
    with pytest.raises(GradcheckError, match=r"input 0 .*analytic .* vs numeric"):
        gradcheck(wrong.apply, [x])
    assert gradcheck(wrong.apply, [x], raise_exception=False) is False


def test_a_plain_sum_would_have_missed_the_zero_softmax_backward(r):
    """Why gradcheck contracts the output with a random weight: with sum(f(x)) the wrong zero
    backward of softmax agrees with finite differences, because sum(softmax(x)) is always 1."""
    x = T(r.normal(size=(3, 5)))
    assert gradcheck(lambda a: SoftmaxZeroBackward.apply(a).sum(), [x])   # the blind check passes
    with pytest.raises(GradcheckError):
        gradcheck(SoftmaxZeroBackward.apply, [x])                         # ours does not


def test_gradcheck_names_the_input_and_element(r):
    class WrongSecond(Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, gy):
            a, b = ctx.saved_tensors
            gb = gy * a
            gb.reshape(-1)[4] += 1.0   # one wrong element
            return gy * b, gb

    a, b = T(r.normal(size=(2, 3))), T(r.normal(size=(2, 3)))
    with pytest.raises(GradcheckError, match=r"bias \(shape \(2, 3\)\): at element \(1, 1\)"):
        gradcheck(WrongSecond.apply, [a, b], names=["x", "bias"])


def test_gradcheck_runs_in_float64_and_leaves_inputs_alone(r):
    x = Tensor(r.normal(size=(2, 3)), requires_grad=True)  # float32
    before = x.numpy()
    assert gradcheck(lambda a: (a * a).exp(), [x])
    np.testing.assert_array_equal(x.numpy(), before)
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(lambda a: a * 2, [Tensor([1.0])])


# ---- dtypes -----------------------------------------------------------------------------------------
def test_dtype_policy():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.ones(3, dtype=np.float64)).dtype == np.float32
    assert Tensor(np.ones(3), dtype=np.float64).dtype == np.float64
    assert Tensor([1, 2, 3]).dtype.kind == "i"
    assert Tensor(np.array([1, 2], dtype=np.uint8)).dtype == np.uint8
    assert Tensor(3.5).dtype == np.float32 and Tensor(3.5).shape == ()
    with pytest.raises(TypeError, match="only float tensors"):
        Tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="cannot hold"):
        Tensor(np.array(["a"]))


def test_scalars_and_arrays_keep_float32():
    x = Tensor([1.0, 2.0])
    for y in (x * 2.5, x + np.float64(1.0), x / np.ones(2), 1.0 - x, np.ones(2) * x, x ** 2):
        assert isinstance(y, Tensor) and y.dtype == np.float32, y


def test_accessors():
    x = Tensor(np.arange(6.0).reshape(2, 3))
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
    n = x.numpy()
    n[0, 0] = 99
    assert x.numpy()[0, 0] == 0  # numpy() is a copy
    assert Tensor([[4.0]]).item() == 4.0
    with pytest.raises(ValueError, match="one element"):
        x.item()
    assert "Tensor(" in repr(x)
    assert x.argmax(axis=1).numpy().tolist() == [2, 2]
    assert (x > 2).numpy().sum() == 3


# ---- devices ----------------------------------------------------------------------------------------
def test_device_names(monkeypatch):
    assert Tensor([1.0]).device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        Tensor([1.0], device="tpu")
    monkeypatch.setenv("MINICCT_DEVICE", "banana")
    with pytest.raises(ValueError, match="MINICCT_DEVICE"):
        Tensor([1.0])


def test_gpu_without_cupy_is_one_clear_error(monkeypatch):
    from minicct import backend
    if backend.gpu_available():
        pytest.skip("a GPU is available here, so asking for one succeeds")
    with pytest.raises(DeviceError, match="cupy-cuda12x"):
        Tensor([1.0], device="gpu")
    monkeypatch.setenv("MINICCT_DEVICE", "gpu")
    with pytest.raises(DeviceError, match="CuPy"):
        Tensor([1.0])
    with pytest.raises(DeviceError):
        Tensor([1.0], device="cpu").to("gpu")


def test_mixing_devices_is_an_error(device):
    if device != "gpu":
        pytest.skip("needs --device gpu and a GPU to have two devices to mix")
    a = Tensor([1.0], device="gpu")
    b = Tensor([1.0], device="cpu")
    with pytest.raises(DeviceError, match="different devices"):
        a + b


def test_to_moves_and_backpropagates(device):
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x.to(device)
    assert y.device == device
    (y * y).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


def test_import_is_light_and_never_imports_cupy():
    code = ("import sys, time; t = time.perf_counter(); import minicct; dt = time.perf_counter() - t; "
            "x = minicct.Tensor([1.0]) * 2; "
            "print(dt, 'cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "MINICCT_DEVICE": "cpu"})
    dt, has_cupy = out.stdout.split()
    assert has_cupy == "False"
    assert float(dt) < 1.0, f"import minicct took {dt} s"


# ---- autograd.grad: gradients returned, not accumulated -------------------------------------------
def test_grad_returns_what_backward_accumulates(r):
    from minicct.autograd import grad
    a, b = T(r.standard_normal((3, 4))), T(r.standard_normal((4,)))
    (((a * b).exp() + a).sum()).backward()
    ga, gb = a.grad.numpy(), b.grad.numpy()
    a.grad = b.grad = None
    h = (a * b).exp()
    out = (h + a).sum()
    da, dh, db = grad(out, [a, h, b])
    np.testing.assert_allclose(da.numpy(), ga, rtol=1e-12)
    np.testing.assert_allclose(db.numpy(), gb, rtol=1e-12)
    np.testing.assert_allclose(dh.numpy(), np.ones((3, 4)))      # an intermediate result
    assert a.grad is None and b.grad is None                      # nothing accumulated


def test_grad_scales_by_grad_output_and_marks_unused_inputs(r):
    from minicct.autograd import grad
    a, unused = T(r.standard_normal(5)), T(r.standard_normal(5))
    (ga, gu) = grad((a * a).sum(), [a, unused], grad_output=0.25)
    np.testing.assert_allclose(ga.numpy(), 0.5 * a.numpy())
    assert gu is None


def test_contiguous_copies_once_and_hands_the_gradient_back_in_the_input_order(r):
    """Tensor.contiguous(): a C-contiguous copy (self when already contiguous); its backward gives
    the gradient in the memory order the input had (what the ops before it were fast on)."""
    base = Tensor(r.standard_normal((3, 4, 5)), requires_grad=True, dtype=np.float64)
    t = base.transpose(2, 0, 1)                       # a view, not contiguous
    c = t.contiguous()
    assert c.data.flags.c_contiguous and not t.data.flags.c_contiguous
    np.testing.assert_array_equal(c.data, t.data)
    assert base.contiguous() is base
    seen = {}

    class Spy(Function):   # records the memory order of the gradient reaching t
        @staticmethod
        def forward(ctx, a):
            return a

        @staticmethod
        def backward(ctx, gy):
            seen["strides"] = gy.strides
            return gy

    w = r.standard_normal((5, 3, 4))
    (Spy.apply(t).contiguous() * Tensor(w)).sum().backward()
    assert seen["strides"] == t.data.strides          # the transposed view's order, not C order
    np.testing.assert_allclose(base.grad.data, w.transpose(1, 2, 0))
    assert gradcheck(lambda a: a.transpose(2, 0, 1).contiguous(), [base])
