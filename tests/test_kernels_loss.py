"""cross_entropy against a loop over samples: class indices, soft targets, label smoothing (as
PyTorch defines it), the fused backward by gradcheck, and label checks."""
import math

import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct.kernels import cross_entropy_forward


def ce_ref(z, target, eps=0.0):
    N, C = z.shape
    total = 0.0
    for n in range(N):
        lse = math.log(sum(math.exp(v - z[n].max()) for v in z[n])) + z[n].max()
        t = np.eye(C)[target[n]] if np.ndim(target) == 1 else target[n]
        t = (1 - eps) * t + eps / C                   # PyTorch's label smoothing
        total -= sum(t[c] * (z[n, c] - lse) for c in range(C))
    return total / N


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("soft", [False, True])
def test_forward_matches_loop(soft, eps, rng, xp):
    z = rng.standard_normal((6, 5)) * 3
    t = rng.dirichlet(np.ones(5), 6) if soft else rng.integers(0, 5, 6)
    loss, _ = cross_entropy_forward(xp.asarray(z), xp.asarray(t), eps)
    assert to_numpy(loss).shape == ()
    assert np.isclose(float(loss), ce_ref(z, t, eps), rtol=1e-12)


def test_smoothing_equals_soft_target_form(rng, xp):
    z = rng.standard_normal((4, 10))
    y = rng.integers(0, 10, 4)
    smooth = 0.9 * np.eye(10)[y] + 0.1 / 10
    a, _ = cross_entropy_forward(xp.asarray(z), xp.asarray(y), 0.1)
    b, _ = cross_entropy_forward(xp.asarray(z), xp.asarray(smooth))
    assert np.isclose(float(a), float(b), rtol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_gradcheck_logits_with_labels(eps, rng, device):
    z = Tensor(rng.standard_normal((5, 4)), requires_grad=True, device=device, dtype=np.float64)
    y = Tensor(rng.integers(0, 4, 5), device=device)
    assert gradcheck(lambda z: F.cross_entropy(z, y, eps), [z])


def test_gradcheck_logits_and_soft_targets(rng, device):
    # Rows that do not sum to one check the general form softmax * sum(t) - t.
    z = Tensor(rng.standard_normal((3, 4)), requires_grad=True, device=device, dtype=np.float64)
    t = Tensor(rng.uniform(0, 1, (3, 4)), requires_grad=True, device=device, dtype=np.float64)
    assert gradcheck(lambda z, t: F.cross_entropy(z, t, 0.1), [z, t], names=["logits", "target"])


def test_backward_is_softmax_minus_onehot_over_n(rng):
    z = rng.standard_normal((3, 4))
    y = np.array([0, 3, 1])
    zt = Tensor(z, requires_grad=True, dtype=np.float64)
    F.cross_entropy(zt, Tensor(y)).backward()
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(zt.grad.numpy(), (p - np.eye(4)[y]) / 3, rtol=1e-12)


def test_stable_and_float32_close_to_float64(rng, xp):
    z = rng.standard_normal((128, 10)) * 5
    z[0] = [1000.0] + [0.0] * 9
    y = rng.integers(0, 10, 128)
    l64 = float(cross_entropy_forward(xp.asarray(z), xp.asarray(y), 0.1)[0])
    l32 = cross_entropy_forward(xp.asarray(z, dtype=np.float32), xp.asarray(y), 0.1)[0]
    assert l32.dtype == np.float32 and np.isfinite(float(l32))
    assert abs(float(l32) - l64) <= 1e-5 * abs(l64)


@pytest.mark.parametrize("labels,match", [([0, 4, 1], r"\[0, 4\)"), ([0, -1, 2], r"\[0, 4\)"),
                                          ([0, 1], "labels"), ([0.0, 1.0, 2.0], "integers")])
def test_bad_labels_raise_value_error(labels, match):
    with pytest.raises(ValueError, match=match):
        F.cross_entropy(Tensor(np.zeros((3, 4))), Tensor(np.array(labels)))


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="2-D"):
        F.cross_entropy(Tensor(np.zeros((3, 4, 2))), Tensor(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match="shape"):
        F.cross_entropy(Tensor(np.zeros((3, 4))), Tensor(np.zeros((3, 5))))
