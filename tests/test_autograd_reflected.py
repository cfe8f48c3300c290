"""Reflected operators: ``c - x``, ``c / x``, ``c ** x``, ``c * x``, ``c + x``, ``A @ x`` with a
Tensor x on the right and a Python number, NumPy scalar or array on the left. Each is checked
against NumPy on values (float64) and on the gradient with respect to x, by formula and by
gradcheck. An operand order swapped inside ``__rsub__`` computes ``x - c``: values catch it."""
import operator

import numpy as np
import pytest

import minicct

# name: (the operator, d(c op x)/dx times the upstream gy, by hand)
OPS = {
    "radd": (operator.add, lambda c, x, gy: gy),
    "rsub": (operator.sub, lambda c, x, gy: -gy),
    "rmul": (operator.mul, lambda c, x, gy: c * gy),
    "rtruediv": (operator.truediv, lambda c, x, gy: -c / x ** 2 * gy),
    "rpow": (operator.pow, lambda c, x, gy: c ** x * np.log(c) * gy),
}
LEFT = {   # left operands that are not Tensors; all positive, so c ** x is real
    "int": 3,
    "float": 2.5,
    "np.float64": np.float64(1.75),
    "np.float32": np.float32(0.5),
    "array (4,)": np.array([0.5, 1.5, 2.0, 3.25]),
    "array (3, 4)": np.arange(1.0, 13.0).reshape(3, 4) / 4,
}


def x_and_gy():
    rng = np.random.default_rng(0)
    return rng.uniform(0.5, 2.0, (3, 4)), rng.standard_normal((3, 4))


@pytest.mark.parametrize("left", LEFT, ids=list(LEFT))
@pytest.mark.parametrize("name", OPS)
def test_reflected_operator_value_and_gradient(name, left):
    op, dx = OPS[name]
    c = LEFT[left]
    x, gy = x_and_gy()
    xt = minicct.Tensor(x, requires_grad=True, dtype=np.float64)
    y = op(c, xt)
    assert isinstance(y, minicct.Tensor), f"{type(c).__name__} {name} Tensor gave a {type(y).__name__}"
    c64 = np.asarray(c, np.float64)
    np.testing.assert_allclose(y.numpy(), op(c64, x), rtol=1e-12, err_msg=f"{left} {name} x")
    y.backward(minicct.Tensor(gy, dtype=np.float64))
    np.testing.assert_allclose(xt.grad.numpy(), dx(c64, x, gy), rtol=1e-10, atol=1e-12)
    assert minicct.gradcheck(lambda t: op(c, t), [minicct.Tensor(x, requires_grad=True, dtype=np.float64)])


def test_reflected_matmul_value_and_gradient():
    rng = np.random.default_rng(1)
    A, x, gy = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    xt = minicct.Tensor(x, requires_grad=True, dtype=np.float64)
    y = A @ xt
    assert isinstance(y, minicct.Tensor)
    np.testing.assert_allclose(y.numpy(), A @ x, rtol=1e-12)
    y.backward(minicct.Tensor(gy, dtype=np.float64))
    np.testing.assert_allclose(xt.grad.numpy(), A.T @ gy, rtol=1e-12)
    assert minicct.gradcheck(lambda t: A @ t, [minicct.Tensor(x, requires_grad=True, dtype=np.float64)])


@pytest.mark.parametrize("name", OPS)
def test_reflected_and_forward_operators_agree(name):
    """c op x (reflected) equals Tensor(c) op x (both Tensors, no reflection involved)."""
    op, _ = OPS[name]
    x, _ = x_and_gy()
    xt = minicct.Tensor(x, dtype=np.float64)
    for c in (2.5, np.array([0.5, 1.5, 2.0, 3.25])):
        np.testing.assert_allclose(op(c, xt).numpy(), op(minicct.Tensor(c, dtype=np.float64), xt).numpy(),
                                   rtol=1e-12)
