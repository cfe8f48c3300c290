"""Optional: the same networks built in PyTorch from a minicct state_dict give the same logits and
gradients. PyTorch is never a dependency of minicct; these tests skip, saying so, without it.

The PyTorch networks are minicct.bench.torch_twin (the one the benchmarks use too), written with the
official module names, so a state_dict loads into them with ``strict=True``: that alone checks every
name and shape.
"""
import numpy as np
import pytest

import minicct
from minicct import models, nn

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the cross-check against it "
                                            "is optional (pip install torch to run it)")
from minicct.bench import torch_twin  # noqa: E402  (imports torch: only after the skip above)


def build_pair(name, **overrides):
    """A minicct model and its PyTorch twin (minicct.bench.torch_twin) with the same weights,
    float64, eval mode."""
    minicct.manual_seed(0)
    ours = models.create_model(name, **overrides).double().eval()
    return ours, torch_twin.from_minicct(ours)


TINY = dict(img_size=8, embedding_dim=16, num_layers=2, num_heads=2, mlp_ratio=1, in_planes=8)

# float64 throughout. minicct's erf is a rational approximation (|error| <= 1e-6 by its spec, far
# less in practice), so GELU and everything after it agree with PyTorch to ~1e-9, not to 1e-15.
CLOSE = dict(rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,in_planes", [("cct_2_3x2_32", 8), ("cct_2_3x2_32", 16), ("cct_6_3x1_32_sine", 8),
                                            ("cvt_2_4_32_sine", 8), ("vit_2_4_32", 8)])
def test_logits_and_gradients_match_pytorch(name, in_planes, kernel_mode):
    """In both kernel modes; with in_planes 16 the second conv is 16 -> 16, which fast mode runs
    by Winograd."""
    ours, theirs = build_pair(name, **dict(TINY, in_planes=in_planes))
    if in_planes == 16:
        from minicct.kernels import dispatch
        conv2 = ours.tokenizer.conv_layers[1][0]
        picked = dispatch.conv2d(np.zeros((1, 16, 4, 4)), conv2.weight.numpy(), conv2.stride, conv2.padding)
        assert picked.name == ("conv2d_winograd" if kernel_mode == "fast" else "conv2d")
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


def expected_tokens(name):
    """Tokens of a variant from its name and the paper's tokenizers, not from any code: a CCT k x k
    conv (stride 1 for k = 3, 2 for k = 7, 'same' padding) and max-pool(3, 2, 1) shrink each side by
    2 (k = 3) or 4 (k = 7) per conv layer; a p x p patch tokenizer makes (img / p)^2 tokens."""
    parts = name.split("_")
    img = int(parts[3])
    if parts[0] == "cct":
        k, n_conv = (int(v) for v in parts[2].split("x"))
        side = img // ((2 if k == 3 else 4) ** n_conv)
    else:
        side = img // int(parts[2])
    return side * side


@pytest.mark.parametrize("name", [n for n in models.list_models() if not n.startswith("text_")])   # images: the twin has no text models
def test_twin_of_every_variant(name):
    """Every registry variant (narrow, one layer: the tokenizer geometry is the variant's) has a twin
    with the same weights, the paper's token count and positional embedding, and the same logits."""
    heads = models.model_config(name)["num_heads"]
    ours, theirs = build_pair(name, embedding_dim=4 * heads, num_layers=1, mlp_ratio=1, in_planes=4)
    c = theirs.classifier
    tokens = expected_tokens(name) + (0 if name.startswith(("cct", "cvt")) else 1)   # ViT: + class token
    assert c.seq_pool == (not name.startswith("vit"))
    assert c.positional_emb.shape == (1, tokens, 4 * heads)
    trained = {k for k, p in theirs.named_parameters()}
    assert ("classifier.positional_emb" in trained) == (not name.endswith("_sine")), name
    img = ours.img_size
    x = np.random.default_rng(3).standard_normal((1, 3, img, img))
    with torch.no_grad():
        ref = theirs(torch.from_numpy(x)).numpy()
    with minicct.no_grad():
        got = ours(minicct.Tensor(x, dtype=np.float64)).numpy()
    assert np.allclose(got, ref, **CLOSE)
