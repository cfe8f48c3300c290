"""The Module system: registration order, names, modes, devices, state_dict, initialisation."""
import numpy as np
import pytest

import minicct
from minicct import nn
from minicct.nn import init


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(8, 2, bias=False)
        self.scale = nn.Parameter(np.ones(2, np.float32))
        self.register_buffer("table", minicct.Tensor(np.arange(3.0)))
        self.register_buffer("scratch", minicct.Tensor(np.zeros(1)), persistent=False)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = Block()
        self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.first(x)
        for layer in self.layers:
            x = layer(x)
        return self.drop(x)


def test_parameters_in_insertion_order_with_dotted_names():
    names = [n for n, _ in Net().named_parameters()]
    assert names == ["first.scale", "first.fc1.weight", "first.fc1.bias", "first.fc2.weight",
                     "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in Net().parameters())


def test_state_dict_follows_pytorch_order_and_holds_persistent_buffers():
    sd = Net().state_dict()
    assert list(sd) == ["first.scale", "first.table", "first.fc1.weight", "first.fc1.bias",
                        "first.fc2.weight", "layers.0.weight", "layers.0.bias", "layers.1.weight",
                        "layers.1.bias"]
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["first.fc1.weight"].shape == (8, 4)          # Linear: (out, in)


def test_named_modules_and_children():
    net = Net()
    assert [n for n, _ in net.named_modules()] == ["", "first", "first.fc1", "first.act", "first.fc2",
                                                   "layers", "layers.0", "layers.1", "drop"]
    assert [n for n, _ in net.named_children()] == ["first", "layers", "drop"]


def test_shared_parameter_listed_once():
    net = Net()
    net.layers[1].weight = net.layers[0].weight
    assert sum(1 for _ in net.parameters()) == 7


def test_reassigning_a_parameter_keeps_its_place_and_none_bias():
    lin = nn.Linear(3, 2)
    lin.weight = nn.Parameter(np.zeros((2, 3), np.float32))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    assert nn.Linear(3, 2, bias=False).bias is None
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]
    with pytest.raises(TypeError, match="Parameter"):
        lin.weight = np.zeros((2, 3))


def test_assignment_before_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)
    with pytest.raises(AttributeError, match="super"):
        Bad()


def test_train_eval_reach_every_submodule():
    net = Net().eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_eval_turns_dropout_off():
    net = Net()
    x = minicct.Tensor(np.random.default_rng(0).standard_normal((64, 4)))
    net.eval()
    assert np.array_equal(net(x).numpy(), net(x).numpy())
    net.train()
    assert not np.array_equal(net(x).numpy(), net(x).numpy())


def test_zero_grad_forgets_gradients():
    net = Net().eval()
    net(minicct.Tensor(np.ones((3, 4)))).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_load_state_dict_round_trip_in_place_from_numpy():
    a, b = Net(), Net()
    params_before = list(b.parameters())
    arrays_before = [p.data for p in b.parameters()]
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert np.array_equal(va, vb), k
    # the same Parameter objects and arrays (an optimizer's views stay valid)
    assert all(p is q for p, q in zip(params_before, b.parameters()))
    assert all(p.data is arr for p, arr in zip(b.parameters(), arrays_before))


def test_load_state_dict_accepts_tensors_and_casts_dtype():
    net = Net()
    sd = {k: minicct.Tensor(v.astype(np.float64), dtype=np.float64) for k, v in Net().state_dict().items()}
    net.load_state_dict(sd)
    assert net.first.fc1.weight.dtype == np.float32


def test_strict_load_names_missing_unexpected_and_mismatched():
    net = Net()
    sd = net.state_dict()
    del sd["layers.1.bias"]
    sd["extra.weight"] = np.zeros(3)
    sd["first.fc1.weight"] = np.zeros((8, 5))
    before = net.first.fc2.weight.numpy()
    with pytest.raises(nn.StateDictError) as e:
        net.load_state_dict(sd)
    msg = str(e.value)
    assert "layers.1.bias" in msg and "extra.weight" in msg
    assert "first.fc1.weight" in msg and "(8, 5)" in msg and "(8, 4)" in msg
    assert np.array_equal(net.first.fc2.weight.numpy(), before)  # nothing written on error


def test_non_strict_load_reports_keys_but_shape_mismatch_still_fails():
    net = Net()
    sd = net.state_dict()
    del sd["layers.1.bias"]
    sd["extra"] = np.zeros(1)
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["layers.1.bias"] and result.unexpected_keys == ["extra"]
    sd["first.scale"] = np.zeros(3)
    with pytest.raises(nn.StateDictError, match="first.scale"):
        net.load_state_dict(sd, strict=False)


def test_buffers_are_not_parameters_and_non_persistent_ones_are_not_saved():
    b = Block()
    assert "table" not in dict(b.named_parameters())
    assert [n for n, _ in b.named_buffers()] == ["table", "scratch"]
    assert "scratch" not in b.state_dict()


def test_to_cpu_keeps_objects_and_astype_casts_parameters_and_buffers():
    net = Net()
    params = list(net.parameters())
    assert net.to("cpu") is net
    assert all(p is q for p, q in zip(params, net.parameters()))
    net.double()
    assert all(t.dtype == np.float64 for t in list(net.parameters()) + list(net.buffers()))
    net.float()
    assert net.first.table.dtype == np.float32
    with pytest.raises(ValueError, match="device"):
        net.to("tpu")


def test_to_gpu_moves_parameters_and_buffers(device):
    if device != "gpu":
        pytest.skip("moving to a GPU needs --device gpu (CuPy and a GPU)")
    net = Net().to("gpu")
    assert all(t.device == "gpu" for t in list(net.parameters()) + list(net.buffers()))
    y = net.eval()(minicct.Tensor(np.ones((2, 4)), device="gpu"))
    assert y.device == "gpu"
    assert all(isinstance(v, np.ndarray) for v in net.state_dict().values())


def test_functional_call_swaps_and_restores():
    lin = nn.Linear(2, 1)
    w = minicct.Tensor(np.array([[1.0, 2.0]]))
    b = minicct.Tensor(np.array([0.5]))
    y = nn.functional_call(lin, {"weight": w, "bias": b}, minicct.Tensor(np.array([[1.0, 1.0]])))
    assert np.allclose(y.numpy(), [[3.5]])
    assert isinstance(lin.weight, nn.Parameter) and lin.weight is not w
    with pytest.raises(KeyError, match="nope"):
        nn.functional_call(lin, {"nope": w}, w)


def test_sequential_indexing_and_repr():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Identity())
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and len(seq[:2]) == 2
    assert "(0): Linear(in_features=2, out_features=3, bias=True)" in repr(seq)


# ---- initialisation --------------------------------------------------------------------------------
def test_manual_seed_makes_initialisation_reproducible():
    minicct.manual_seed(3)
    a = nn.Linear(8, 8).weight.numpy()
    minicct.manual_seed(3)
    b = nn.Linear(8, 8).weight.numpy()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, nn.Linear(8, 8).weight.numpy())


def test_generator_argument_is_used():
    p = nn.Parameter(np.zeros((4, 4), np.float32))
    init.normal_(p, generator=np.random.default_rng(7))
    q = nn.Parameter(np.zeros((4, 4), np.float32))
    init.normal_(q, generator=np.random.default_rng(7))
    assert np.array_equal(p.numpy(), q.numpy())


def test_trunc_normal_statistics_and_bounds():
    p = nn.Parameter(np.zeros((200, 200), np.float32))
    init.trunc_normal_(p, std=0.02, generator=np.random.default_rng(0))
    assert abs(p.numpy().std() - 0.02) < 5e-4
    init.trunc_normal_(p, std=1.0, a=-0.5, b=0.5, generator=np.random.default_rng(0))
    assert p.numpy().min() >= -0.5 and p.numpy().max() <= 0.5


def test_kaiming_normal_std_and_default_uniform_bound():
    w = nn.Parameter(np.zeros((256, 64, 3, 3), np.float32))
    init.kaiming_normal_(w, generator=np.random.default_rng(0))
    assert abs(w.numpy().std() - np.sqrt(2 / (64 * 9))) < 1e-3
    lin = nn.Linear(100, 50)
    assert np.abs(lin.weight.numpy()).max() <= 0.1 and np.abs(lin.bias.numpy()).max() <= 0.1
