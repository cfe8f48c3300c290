"""dropout and drop_path: inverted scaling, identity at eval time, reproducible masks, the
backward uses the forward's mask."""
import numpy as np
import pytest

import minicct.functional as F
from minicct import Tensor, gradcheck
from minicct.backend import to_numpy
from minicct import manual_seed
from minicct.kernels import dropout_forward, drop_path_forward


def test_dropout_rate_and_scaling(xp):
    x = xp.ones((200, 500), dtype=np.float32)
    y, _ = dropout_forward(x, 0.3, True, np.random.default_rng(0))
    y = to_numpy(y)
    assert y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((y == 0).mean() - 0.3) < 0.01          # 100k draws: std of the rate is 0.0015
    assert abs(y.mean() - 1.0) < 0.02                 # inverted dropout keeps the expectation


@pytest.mark.parametrize("p,training", [(0.0, True), (0.5, False)])
def test_dropout_identity_when_off(p, training, rng, xp):
    x = xp.asarray(rng.standard_normal((4, 5)))
    y, mask = dropout_forward(x, p, training)
    assert mask is None and y is x


def test_dropout_p_one_zeroes_everything(xp):
    y, _ = dropout_forward(xp.ones((3, 3)), 1.0, True)
    assert not to_numpy(y).any()


def test_manual_seed_and_generator_are_reproducible(xp):
    x = xp.ones((50, 50))
    manual_seed(123)
    a = to_numpy(dropout_forward(x, 0.5)[0])
    manual_seed(123)
    b = to_numpy(dropout_forward(x, 0.5)[0])
    np.testing.assert_array_equal(a, b)
    c = to_numpy(dropout_forward(x, 0.5, True, np.random.default_rng(5))[0])
    d = to_numpy(dropout_forward(x, 0.5, True, np.random.default_rng(5))[0])
    np.testing.assert_array_equal(c, d)
    assert (a != c).any()


def test_backward_uses_the_forward_mask(rng, device):
    x = Tensor(rng.standard_normal((6, 7)), requires_grad=True, device=device, dtype=np.float64)
    y = F.dropout(x, 0.4, True, np.random.default_rng(1))
    y.sum().backward()
    kept = y.numpy() != 0
    np.testing.assert_allclose(x.grad.numpy(), np.where(kept, 1 / 0.6, 0.0))


def test_gradcheck_dropout_and_drop_path(rng, device):
    x = Tensor(rng.standard_normal((6, 3, 2)), requires_grad=True, device=device, dtype=np.float64)
    assert gradcheck(lambda x: F.dropout(x, 0.3, True, np.random.default_rng(3)), [x])
    assert gradcheck(lambda x: F.drop_path(x, 0.5, True, np.random.default_rng(3)), [x])


def test_drop_path_drops_whole_samples(xp):
    x = xp.ones((400, 3, 4))
    y, _ = drop_path_forward(x, 0.25, True, np.random.default_rng(0))
    y = to_numpy(y).reshape(400, -1)
    per_sample = np.unique(y, axis=1)
    assert per_sample.shape[1] == 1                   # every sample: all zero or all kept
    assert set(np.unique(y)) == {0.0, 1 / 0.75}
    assert abs((y[:, 0] == 0).mean() - 0.25) < 0.07


def test_drop_path_defaults_are_identity(rng):
    x = Tensor(rng.standard_normal((3, 4)))
    np.testing.assert_array_equal(F.drop_path(x).numpy(), x.numpy())


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability_raises_value_error(p):
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(Tensor(np.zeros(3)), p)
    with pytest.raises(ValueError, match="p must be in"):
        F.drop_path(Tensor(np.zeros(3)), p, True)


@pytest.mark.parametrize("fn", [F.dropout, F.drop_path])
@pytest.mark.parametrize("p,training", [(0.0, True), (0.5, False), (0.0, False)])
def test_identity_is_no_function_at_all(fn, p, training, rng):
    """Eval mode and p = 0 hand the tensor itself back: no graph node, nothing to walk backward."""
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    assert fn(x, p, training) is x


@pytest.mark.parametrize("fn", [F.dropout, F.drop_path])
def test_training_with_p_above_zero_is_a_function(fn, rng):
    x = Tensor(rng.standard_normal((8, 4)), requires_grad=True)
    y = fn(x, 0.5, True, np.random.default_rng(0))
    assert y is not x and y._ctx is not None
    assert (y.numpy() == 0).any()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability_raises_even_in_eval_mode(p):
    with pytest.raises(ValueError, match="p must be in"):
        F.dropout(Tensor(np.zeros(3)), p, False)
