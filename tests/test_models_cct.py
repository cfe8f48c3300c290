"""ViT-Lite, CVT and CCT: the paper's sizes, the official names, gradients, modes and errors."""
import functools
from pathlib import Path

import numpy as np
import pytest

import minicct
from minicct import functional as F, models, nn
from minicct.autograd import gradcheck
from minicct.models import PAPER_TABLE_11, count_macs, count_params, create_model, format_size_table, trace_macs
from minicct.models.complexity import size_table

# A toy of each family: 2 layers, width 16, 8x8 images (the tokenizer makes 4 tokens).
TINY = dict(img_size=8, embedding_dim=16, num_layers=2, num_heads=2, mlp_ratio=1, in_planes=8)


def images(n=2, size=8, seed=0):
    return minicct.Tensor(np.random.default_rng(seed).standard_normal((n, 3, size, size)))


# ---- sizes ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def size_rows():
    """Table 11's rows, counted once for the tests below (each model is built and traced once)."""
    return {row[0]: row for row in size_table()}


@pytest.mark.parametrize("name", list(PAPER_TABLE_11))
def test_params_and_macs_match_table_11(name):
    paper_params, paper_macs = PAPER_TABLE_11[name]
    _, params, macs, _, _ = size_rows()[name]
    if name == "cct_14_7x2_224":
        # The official code gives exactly this count too (same keys and shapes). The paper prints
        # 22.36 M, i.e. 22.367 M truncated; its README's 22.51 M at 384 px (22,513,193) is truncated
        # the same way.
        assert round(params * 1e6) == 22_367_273
    else:
        assert round(params, 2) == paper_params, params
    assert round(macs, 2) == paper_macs


def test_readme_model_table_is_the_generated_one():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("| model | params (M) | paper | MACs (G) | paper |")
    lines = readme[start:].splitlines()
    table = lines[:next(i for i, line in enumerate(lines) if not line.startswith("|"))]
    assert "\n".join(table) == format_size_table(list(size_rows().values()))


def test_count_macs_scales_with_batch_and_counts_attention():
    model = create_model("cct_2_3x2_32")
    one = count_macs(model, (3, 32, 32))
    assert count_macs(model, (4, 3, 32, 32)) == 4 * one
    # conv 3→64 at 32², conv 64→128 at 16²; per layer on 64 tokens × 128: qkv, q·kᵀ, attn·v, proj,
    # MLP (ratio 1), two LayerNorms (5 per element); final LayerNorm, SeqPool, head.
    L, d = 64, 128
    layer = L * d * 3 * d + 2 * L * L * d + L * d * d + 2 * L * d * d + 2 * 5 * L * d
    expected = 32 * 32 * 64 * 27 + 16 * 16 * 128 * 576 + 2 * layer + 5 * L * d + 2 * L * d + d * 10
    assert one == expected
    with pytest.raises(ValueError):
        count_macs(model, (32, 32))


def test_count_macs_restores_modes_and_leaves_nothing_behind():
    from minicct.autograd import function
    model = create_model("cct_2_3x2_32", **TINY)
    model.train()
    model.classifier.dropout.eval()            # a mixed state: each module's mode is kept
    before = [m.training for m in model.modules()]
    count_macs(model, (3, 8, 8))
    assert [m.training for m in model.modules()] == before
    assert function._observers == []
    with pytest.raises(ValueError):            # a forward that fails: modes and observers restored too
        count_macs(model, (3, 16, 16))
    assert [m.training for m in model.modules()] == before and function._observers == []
    assert all(p.grad is None for p in model.parameters())


def test_trace_macs_counts_each_product_once():
    # scaled_dot_product_attention, called directly: q·kᵀ and attn·v, N·heads·L·S·D each
    class Sdpa(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)
    q, k = minicct.Tensor(np.ones((2, 3, 5, 4))), minicct.Tensor(np.ones((2, 3, 7, 4)))
    assert trace_macs(Sdpa(), q, k, k) == 2 * (2 * 3 * 5 * 7 * 4)

    # a plain matmul (SeqPool's weighted sum is one), and no count for what only moves or adds
    class MatMulAdd(nn.Module):
        def forward(self, a, b):
            return F.relu(a @ b + 1.0).reshape(-1)
    a, b = minicct.Tensor(np.ones((2, 3, 4))), minicct.Tensor(np.ones((2, 4, 6)))
    assert trace_macs(MatMulAdd(), a, b) == 2 * 3 * 4 * 6


def test_sine_variants_have_no_trainable_table():
    learnable, sine = create_model("cct_7_3x1_32"), create_model("cct_7_3x1_32_sine")
    assert count_params(learnable) - count_params(sine) == 256 * 256


# ---- registry ---------------------------------------------------------------------------------------
def test_every_variant_of_the_issue_is_registered_with_a_sine_twin():
    names = ([f"vit_{l}_{p}_32" for l in (6, 7) for p in (4, 8, 16)]
             + [f"cvt_{l}_{p}_32" for l in (6, 7) for p in (4, 8)]
             + [f"cct_{l}_3x2_32" for l in (2, 4, 6, 7)] + ["cct_6_3x1_32", "cct_7_3x1_32",
                                                            "cct_7_7x2_224", "cct_14_7x2_224"])
    listed = set(models.list_models())
    for name in names:
        assert name in listed and name + "_sine" in listed
    assert models.list_models("cct_7_3x1*") == ["cct_7_3x1_32", "cct_7_3x1_32_sine"]


def test_variant_table_is_data():
    cfg = models.model_config("cct_7_3x1_32_sine")
    assert cfg == dict(tokenizer="conv", seq_pool=True, num_layers=7, num_heads=4, mlp_ratio=2,
                       embedding_dim=256, img_size=32, kernel_size=3, n_conv_layers=1,
                       positional_embedding="sine")
    assert models.model_config("vit_6_16_32")["seq_pool"] is False
    assert models.SIZES[14] == (6, 3, 384)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError) as e:
        create_model("cct_7_3x3_32")
    assert "cct_7_3x1_32" in str(e.value) and "cct_7_3x2_32" in str(e.value)
    with pytest.raises(ValueError, match="list_models"):
        create_model("resnet50")


def test_create_model_arguments():
    m = create_model("cvt_7_4_32", num_classes=100, img_size=16, positional_embedding="none",
                     stochastic_depth=0.0)
    assert m.classifier.fc.weight.shape == (100, 256)
    assert m.classifier.positional_emb is None and m.img_size == 16
    assert all(isinstance(b.drop_path, nn.Identity) for b in m.classifier.blocks)
    with pytest.raises(TypeError):
        create_model("cvt_7_4_32", no_such_argument=1)


# ---- names and layouts of the official checkpoints ----------------------------------------------------
def test_state_dict_keys_and_layouts_are_the_official_ones():
    sd = create_model("cct_7_3x1_32").state_dict()
    assert list(sd)[:6] == ["tokenizer.conv_layers.0.0.weight", "classifier.positional_emb",
                            "classifier.attention_pool.weight", "classifier.attention_pool.bias",
                            "classifier.blocks.0.pre_norm.weight", "classifier.blocks.0.pre_norm.bias"]
    shapes = {
        "tokenizer.conv_layers.0.0.weight": (256, 3, 3, 3),
        "classifier.positional_emb": (1, 256, 256),
        "classifier.attention_pool.weight": (1, 256),
        "classifier.blocks.0.self_attn.qkv.weight": (768, 256),
        "classifier.blocks.0.self_attn.proj.weight": (256, 256),
        "classifier.blocks.0.self_attn.proj.bias": (256,),
        "classifier.blocks.0.linear1.weight": (512, 256),
        "classifier.blocks.0.linear2.weight": (256, 512),
        "classifier.blocks.0.norm1.bias": (256,),
        "classifier.blocks.6.norm1.weight": (256,),
        "classifier.norm.weight": (256,),
        "classifier.fc.weight": (10, 256),
        "classifier.fc.bias": (10,),
    }
    for k, shape in shapes.items():
        assert sd[k].shape == shape, k
    assert len(sd) == 1 + 1 + 2 + 7 * 11 + 2 + 2
    vit = create_model("vit_7_4_32").state_dict()
    assert vit["classifier.class_emb"].shape == (1, 1, 256)
    assert vit["classifier.positional_emb"].shape == (1, 65, 256)       # class token + 8x8 patches
    assert vit["tokenizer.conv_layers.0.0.bias"].shape == (256,)
    assert "classifier.attention_pool.weight" not in vit
    two = create_model("cct_7_3x2_32").state_dict()
    assert two["tokenizer.conv_layers.1.0.weight"].shape == (256, 64, 3, 3)


def test_sine_table_is_a_saved_buffer():
    m = create_model("cct_2_3x2_32_sine")
    assert "classifier.positional_emb" not in dict(m.named_parameters())
    pe = m.state_dict()["classifier.positional_emb"]
    assert pe.shape == (1, 64, 128)
    assert np.isclose(pe[0, 1, 0], np.sin(1.0)) and np.isclose(pe[0, 1, 1], np.cos(1.0))
    assert np.isclose(pe[0, 3, 2], np.sin(3 / 10000 ** (2 / 128)))


def test_initialisation_follows_the_release():
    minicct.manual_seed(0)
    m = create_model("vit_7_4_32")
    c = m.classifier
    assert abs(c.blocks[0].linear1.weight.numpy().std() - 0.02) < 1e-3
    assert not c.blocks[0].linear1.bias.numpy().any() and not c.fc.bias.numpy().any()
    assert np.all(c.norm.weight.numpy() == 1) and not c.blocks[3].pre_norm.bias.numpy().any()
    assert abs(c.positional_emb.numpy().std() - 0.2) < 0.01
    assert not c.class_emb.numpy().any()
    conv = m.tokenizer.conv_layers[0][0].weight.numpy()
    assert abs(conv.std() - np.sqrt(2 / 48)) < 0.01
    rates = [b.drop_path.p if isinstance(b.drop_path, nn.DropPath) else 0.0 for b in c.blocks]
    assert np.allclose(rates, np.linspace(0, 0.1, 7)) and isinstance(c.blocks[0].drop_path, nn.Identity)
    assert c.blocks[0].self_attn.attn_drop.p == 0.1 and c.blocks[0].dropout1.p == 0.0


def test_sequence_length_from_arithmetic_matches_the_tokens():
    for name, length in [("cct_7_3x1_32", 256), ("cct_7_3x2_32", 64), ("cvt_7_8_32", 16),
                         ("cct_14_7x2_224", 196), ("cct_14_7x2_384", 576)]:
        assert create_model(name, num_layers=1).classifier.sequence_length == length
    tok = create_model("cct_2_3x2_32", **dict(TINY, img_size=12)).tokenizer
    assert tok(images(1, 12)).shape == (1, tok.sequence_length(12, 12), 16)


# ---- gradients ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cct_2_3x2_32", "cct_6_3x1_32_sine", "cvt_2_4_32_sine", "vit_2_4_32"])
def test_gradcheck_tiny_model_over_every_parameter_and_the_input(name):
    minicct.manual_seed(0)
    model = create_model(name, **TINY).double().eval()
    names = [n for n, _ in model.named_parameters()]
    x = images()
    x.requires_grad_(True)

    def fn(x, *params):
        return nn.functional_call(model, dict(zip(names, params)), x)

    # Every parameter tensor and the input are checked; 12 random elements of each keep it fast.
    assert gradcheck(fn, [x] + list(model.parameters()), names=["input"] + names, max_elements=12)


def test_whole_model_gradcheck_catches_a_wrong_gradient():
    model = create_model("cvt_2_4_32", **TINY).double().eval()
    names = [n for n, _ in model.named_parameters()][-2:]    # the head: fc.weight, fc.bias

    def fn(*params):
        y = nn.functional_call(model, dict(zip(names, params)), images())
        return y * y.detach()   # the analytic gradient misses half of d(y²)

    with pytest.raises(minicct.GradcheckError):
        gradcheck(fn, [model.classifier.fc.weight, model.classifier.fc.bias])


def test_seqpool_bias_gets_no_gradient():
    """The SeqPool bias shifts every token's score equally, which the softmax cancels."""
    model = create_model("cvt_2_4_32", **TINY).double().eval()
    y = model(images())
    y.backward(minicct.Tensor(np.random.default_rng(1).standard_normal(y.shape), dtype=np.float64))
    assert abs(model.classifier.attention_pool.bias.grad.item()) < 1e-12
    assert np.abs(model.classifier.attention_pool.weight.grad.numpy()).max() > 1e-6


# ---- modes --------------------------------------------------------------------------------------------
def test_eval_turns_dropout_and_drop_path_off():
    model = create_model("cct_2_3x2_32", dropout=0.3, attention_dropout=0.3, stochastic_depth=0.5,
                         **TINY)
    x = images(8)
    model.train()
    assert not np.allclose(model(x).numpy(), model(x).numpy())
    model.eval()
    assert np.array_equal(model(x).numpy(), model(x).numpy())


def test_forward_under_no_grad_records_no_graph():
    model = create_model("vit_2_4_32", **TINY)
    with minicct.no_grad():
        y = model(images())
    assert not y.requires_grad and y._ctx is None
    y = model(images())
    assert y.requires_grad and y._ctx is not None


def test_encoder_layer_runs_in_the_released_order():
    """x + attn(pre_norm(x)) → norm1 → + MLP, against the same steps written with functional."""
    layer = models.TransformerEncoderLayer(8, 2, 16, dropout=0.0, attention_dropout=0.0).eval()
    for p in layer.parameters():   # non-trivial norms
        p.data[...] = np.random.default_rng(p.size).standard_normal(p.shape) * 0.5
    x = minicct.Tensor(np.random.default_rng(1).standard_normal((2, 5, 8)))
    ln = lambda m, t: F.layer_norm(t, (8,), m.weight, m.bias)
    h = x + layer.self_attn(ln(layer.pre_norm, x))
    h = ln(layer.norm1, h)
    ref = h + F.linear(F.gelu(F.linear(h, layer.linear1.weight, layer.linear1.bias)),
                       layer.linear2.weight, layer.linear2.bias)
    assert np.allclose(layer(x).numpy(), ref.numpy(), atol=1e-5)
    # ... which is not the textbook pre-norm layer
    h2 = x + layer.self_attn(ln(layer.pre_norm, x))
    textbook = h2 + F.linear(F.gelu(F.linear(ln(layer.norm1, h2), layer.linear1.weight,
                                             layer.linear1.bias)), layer.linear2.weight, layer.linear2.bias)
    assert not np.allclose(layer(x).numpy(), textbook.numpy(), atol=1e-3)


# ---- learning -----------------------------------------------------------------------------------------
def test_small_cct_overfits_one_batch():
    """A small CCT memorises 64 random images with random labels: the whole model learns."""
    from minicct.optim import AdamW
    minicct.manual_seed(0)
    rng = np.random.default_rng(0)
    x = minicct.Tensor(rng.standard_normal((64, 3, 8, 8)))
    y = minicct.Tensor(rng.integers(0, 10, 64))
    model = create_model("cct_2_3x2_32", img_size=8, embedding_dim=32, num_layers=2, num_heads=2,
                         mlp_ratio=1, in_planes=16, attention_dropout=0.0, stochastic_depth=0.0)
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for step in range(300):
        logits = model(x)
        if (logits.numpy().argmax(1) == y.numpy()).all():
            break
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model(x).numpy().argmax(1) == y.numpy()).all(), f"not memorised after {step} steps"


# ---- bad input ----------------------------------------------------------------------------------------
def test_image_too_small_for_the_tokenizer():
    with pytest.raises(ValueError, match="too small"):
        create_model("cct_7_7x2_224", img_size=4, padding=0)


def test_patch_size_must_divide_the_image():
    with pytest.raises(ValueError, match="patch size"):
        create_model("vit_7_4_32", img_size=30)
    with pytest.raises(ValueError, match="patch size"):
        create_model("cvt_6_8_32", img_size=12)


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="heads"):
        create_model("cct_7_3x1_32", num_heads=3)


def test_unknown_positional_embedding_and_tokenizer():
    with pytest.raises(ValueError, match="positional_embedding"):
        create_model("cct_2_3x2_32", positional_embedding="rope")
    with pytest.raises(ValueError, match="tokenizer"):
        models.CompactTransformer(tokenizer="pixels")


def test_wrong_image_size_or_channels_at_forward():
    model = create_model("cct_2_3x2_32", **TINY)
    with pytest.raises(ValueError, match="8x8"):
        model(images(1, 12))
    with pytest.raises(ValueError, match="N, 3, H, W"):
        model(minicct.Tensor(np.zeros((1, 1, 8, 8))))
    free = create_model("cct_2_3x2_32", positional_embedding="none", **TINY)
    assert free(images(1, 12)).shape == (1, 10)   # no positional table: any size the convs accept
