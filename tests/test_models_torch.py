"""Optional: the same networks built in PyTorch from a minicct state_dict give the same logits and
gradients. PyTorch is never a dependency of minicct; these tests skip, saying so, without it.

The PyTorch network below is written from the paper's figure and the official module names, so a
state_dict loads into it with ``strict=True``: that alone checks every name and shape.
"""
import numpy as np
import pytest

import minicct
from minicct import models, nn

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the cross-check against it "
                                            "is optional (pip install torch to run it)")
tnn = torch.nn
TF = torch.nn.functional


# ---- the reference network, in PyTorch ------------------------------------------------------------
class TorchAttention(tnn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = tnn.Linear(dim, 3 * dim, bias=False)
        self.attn_drop = tnn.Dropout(0.0)
        self.proj = tnn.Linear(dim, dim)
        self.proj_drop = tnn.Dropout(0.0)

    def forward(self, x):
        n, length, c = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
        return self.proj((a @ v).transpose(1, 2).reshape(n, length, c))


class TorchLayer(tnn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.pre_norm = tnn.LayerNorm(d)
        self.self_attn = TorchAttention(d, heads)
        self.linear1 = tnn.Linear(d, ff)
        self.norm1 = tnn.LayerNorm(d)
        self.linear2 = tnn.Linear(ff, d)

    def forward(self, x):   # eval mode: dropout and drop-path are identities
        x = self.norm1(x + self.self_attn(self.pre_norm(x)))
        return x + self.linear2(TF.gelu(self.linear1(x)))


class TorchClassifier(tnn.Module):
    def __init__(self, cfg, length):
        super().__init__()
        d = cfg["embedding_dim"]
        self.seq_pool = cfg["seq_pool"]
        if self.seq_pool:
            self.attention_pool = tnn.Linear(d, 1)
        else:
            self.class_emb = tnn.Parameter(torch.zeros(1, 1, d))
            length += 1
        pe = cfg["positional_embedding"]
        self.positional_emb = None if pe == "none" else \
            tnn.Parameter(torch.zeros(1, length, d), requires_grad=(pe == "learnable"))
        self.blocks = tnn.ModuleList([TorchLayer(d, cfg["num_heads"], int(d * cfg["mlp_ratio"]))
                                      for _ in range(cfg["num_layers"])])
        self.norm = tnn.LayerNorm(d)
        self.fc = tnn.Linear(d, cfg.get("num_classes", 10))

    def forward(self, x):
        if not self.seq_pool:
            x = torch.cat([self.class_emb.expand(x.shape[0], -1, -1), x], dim=1)
        if self.positional_emb is not None:
            x = x + self.positional_emb
        for b in self.blocks:
            x = b(x)
        x = self.norm(x)
        if self.seq_pool:
            x = (self.attention_pool(x).softmax(dim=1).transpose(-1, -2) @ x).squeeze(-2)
        else:
            x = x[:, 0]
        return self.fc(x)


class TorchModel(tnn.Module):
    def __init__(self, cfg, length):
        super().__init__()
        d, conv = cfg["embedding_dim"], cfg["tokenizer"] == "conv"
        k = cfg["kernel_size"]
        n_conv = cfg.get("n_conv_layers", 1) if conv else 1
        widths = [3] + [cfg.get("in_planes", 64)] * (n_conv - 1) + [d]
        self.tokenizer = tnn.Module()
        self.tokenizer.conv_layers = tnn.Sequential(*[tnn.Sequential(
            tnn.Conv2d(widths[i], widths[i + 1], k, stride=max(1, k // 2 - 1) if conv else k,
                       padding=max(1, k // 2) if conv else 0, bias=not conv),
            tnn.ReLU() if conv else tnn.Identity(),
            tnn.MaxPool2d(3, 2, 1) if conv else tnn.Identity()) for i in range(n_conv)])
        self.classifier = TorchClassifier(cfg, length)

    def forward(self, x):
        x = self.tokenizer.conv_layers(x).flatten(2, 3).transpose(-2, -1)
        return self.classifier(x)


def build_pair(name, **overrides):
    """A minicct model and the PyTorch one with the same weights (float64, eval mode)."""
    minicct.manual_seed(0)
    ours = models.create_model(name, **overrides).double().eval()
    cfg = dict(models.model_config(name), **overrides)
    theirs = TorchModel(cfg, ours.classifier.sequence_length).double().eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()}, strict=True)
    return ours, theirs


TINY = dict(img_size=8, embedding_dim=16, num_layers=2, num_heads=2, mlp_ratio=1, in_planes=8)

# float64 throughout. minicct's erf is a rational approximation (|error| <= 1e-6 by its spec, far
# less in practice), so GELU and everything after it agree with PyTorch to ~1e-9, not to 1e-15.
CLOSE = dict(rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["cct_2_3x2_32", "cct_6_3x1_32_sine", "cvt_2_4_32_sine", "vit_2_4_32"])
def test_logits_and_gradients_match_pytorch(name):
    ours, theirs = build_pair(name, **TINY)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 8, 8))
    w = rng.standard_normal((3, 10))

    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    (yt * torch.from_numpy(w)).sum().backward()

    xm = minicct.Tensor(x, requires_grad=True, dtype=np.float64)
    ym = ours(xm)
    ym.backward(minicct.Tensor(w, dtype=np.float64))

    assert np.allclose(ym.numpy(), yt.detach().numpy(), **CLOSE)
    assert np.allclose(xm.grad.numpy(), xt.grad.numpy(), **CLOSE)
    torch_grads = {k: p.grad for k, p in theirs.named_parameters() if p.requires_grad}
    ours_grads = dict(ours.named_parameters())
    assert set(torch_grads) == set(ours_grads)
    for k, g in torch_grads.items():
        assert np.allclose(ours_grads[k].grad.numpy(), g.numpy(), **CLOSE), k


def test_full_size_cct_7_3x1_logits_match_pytorch():
    ours, theirs = build_pair("cct_7_3x1_32")
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32))
    with torch.no_grad():
        ref = theirs(torch.from_numpy(x)).numpy()
    with minicct.no_grad():
        got = ours(minicct.Tensor(x, dtype=np.float64)).numpy()
    assert np.allclose(got, ref, **CLOSE)


def test_torch_saved_state_dict_loads_into_minicct(tmp_path):
    """A checkpoint written by torch.save (as the released ones are) gives the same logits here."""
    _, theirs = build_pair("cvt_2_4_32", **TINY)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in theirs.parameters():   # weights unlike minicct's own init
            p.normal_(generator=gen)
    torch.save(theirs.state_dict(), tmp_path / "w.pth")
    ours = models.create_model("cvt_2_4_32", **TINY).double().eval()
    models.load_weights(ours, tmp_path / "w.pth")
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
    with torch.no_grad():
        ref = theirs(torch.from_numpy(x)).numpy()
    got = ours(minicct.Tensor(x, dtype=np.float64)).numpy()
    # Weights ~N(0, 1) give logits ~10 and push GELU far out, where the erf approximation's error
    # is largest: compare on the logits' scale.
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()
