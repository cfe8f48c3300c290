"""Text CCT / CVT / ViT-Lite: parameter counts against the official NLP README, the mask through
the conv and the pool, masked SeqPool, padding that changes nothing, gradient checks."""
import numpy as np
import pytest

import minicct
from minicct import Tensor, gradcheck, models, nn
from minicct import functional as F
from minicct.models.text import (TEXT_VARIANTS, TextCompactTransformer, count_parameters,
                                 propagate_mask)
from minicct.models.transformer import SeqPool, sinusoidal_embedding

# The official NLP README's "# Params" column (word embeddings excluded), at its printed precision.
README_PARAMS = {
    "text_cct_2_k1": 0.238, "text_cct_2_k2": 0.276, "text_cct_2_k4": 0.353,
    "text_cct_4_k1": 0.436, "text_cct_4_k2": 0.475, "text_cct_4_k4": 0.551,
    "text_cct_6_k1": 3.237, "text_cct_6_k2": 3.313, "text_cct_6_k4": 3.467,
}


@pytest.mark.parametrize("name", sorted(README_PARAMS))
def test_parameter_counts_match_the_official_readme(name):
    model = models.create_model(name, num_classes=4, vocab_size=50)     # AG News: 4 classes
    assert round(count_parameters(model) / 1e6, 3) == README_PARAMS[name]
    assert count_parameters(model, embedding=True) - count_parameters(model) == 50 * 300


def test_parameter_count_by_hand():
    # text_cct_2, k = 1: conv 128·1·300 (no bias); per layer 2 LayerNorms (2·2·128), qkv 128·384,
    # proj, linear1, linear2 (128·128 + 128 each); final LayerNorm; SeqPool 128 + 1; head 128·4 + 4.
    layer = 4 * 128 + 128 * 384 + 3 * (128 * 128 + 128)
    expected = 128 * 300 + 2 * layer + 2 * 128 + 129 + 4 * 128 + 4
    assert count_parameters(models.create_model("text_cct_2_k1", num_classes=4, vocab_size=9)) == expected


def test_every_family_size_and_kernel_is_registered():
    for family, tag in (("cct", "k"), ("cvt", "p"), ("vit", "p")):
        for layers in (2, 4, 6):
            for k in (1, 2, 4):
                assert f"text_{family}_{layers}_{tag}{k}" in models.list_models("text_*")
    assert models.model_config("text_vit_4_p2") == dict(tokenizer="patch", seq_pool=False, num_layers=4,
                                                        num_heads=2, mlp_ratio=1, embedding_dim=128,
                                                        kernel_size=2)
    with pytest.raises(ValueError, match="text model"):
        models.create_model("text_cct_2_k1", vocab_size=9, img_size=32)


@pytest.mark.parametrize("tokenizer,k", [("conv", 1), ("conv", 2), ("conv", 4), ("conv", 3), ("patch", 4),
                                         ("patch", 2)])
def test_text_tokenizer_is_the_conv2d_of_the_official_code(rng, tokenizer, k):
    # Windows times a matrix = Conv2d(1, d, (k, word_dim)) on the sentence as a one-channel image,
    # followed (CCT) by ReLU and max-pool (2, 1) stride (2, 1) padding (1, 0); values and gradients.
    m = TextCompactTransformer(vocab_size=5, seq_len=16, word_embedding_dim=7, embedding_dim=6,
                               num_layers=1, num_heads=2, tokenizer=tokenizer, kernel_size=k)
    tok = m.tokenizer
    x = rng.standard_normal((3, 13, 7))
    w = rng.standard_normal(tok.conv.weight.shape)
    _, s, p = tok.windows[0]
    ref_x, ref_w = (Tensor(a, requires_grad=True, dtype=np.float64) for a in (x, w))
    ref = F.conv2d(ref_x.reshape(3, 1, 13, 7), ref_w, stride=(s, 1), padding=(p, 0))
    if tokenizer == "conv":
        ref = F.relu(F.max_pool2d(ref, (2, 1), (2, 1), (1, 0)))
    ref = ref.reshape(ref.shape[:3]).transpose(0, 2, 1)                  # (N, L'', d)
    ours_x, ours_w = (Tensor(a, requires_grad=True, dtype=np.float64) for a in (x, w))
    ours, _ = nn.functional_call(tok, {"conv.weight": ours_w}, ours_x)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(ref.shape)
    ref.backward(Tensor(gy, dtype=np.float64))
    ours.backward(Tensor(gy, dtype=np.float64))
    np.testing.assert_allclose(ours_x.grad.numpy(), ref_x.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours_w.grad.numpy(), ref_w.grad.numpy(), rtol=1e-10, atol=1e-12)
    fn = lambda x, w: nn.functional_call(tok, {"conv.weight": w}, x)[0]
    assert gradcheck(fn, [ours_x, ours_w], names=["x", "conv.weight"])


# ---- the mask through the tokenizer ------------------------------------------------------------------
def mask_loops(mask, k, s, p):
    """Output t is real when any of inputs t·s − p ... t·s − p + k − 1 (inside the sequence) is."""
    n, length = mask.shape
    out_len = (length + 2 * p - k) // s + 1
    out = np.zeros((n, out_len), bool)
    for i in range(n):
        for t in range(out_len):
            out[i, t] = any(0 <= t * s - p + j < length and mask[i, t * s - p + j] for j in range(k))
    return out


@pytest.mark.parametrize("k,s,p", [(1, 1, 1), (2, 1, 1), (4, 1, 2), (2, 2, 1), (3, 2, 1), (4, 4, 0)])
def test_propagate_mask_matches_loops(rng, k, s, p):
    mask = rng.random((6, 11)) < 0.5
    mask[0] = np.arange(11) < 4           # a prefix, as padding makes it
    np.testing.assert_array_equal(propagate_mask(mask, k, s, p), mask_loops(mask, k, s, p))


def _model(name, **kw):
    minicct.manual_seed(0)
    kw = dict(dict(num_classes=3, vocab_size=40, seq_len=64, num_layers=1), **kw)
    return models.create_model(name, **kw).eval()


def _tokens(model, ids):
    mask = ids != 0
    x = model.embedder(ids) * mask[:, :, None].astype(np.float32)
    return model.tokenizer(x, mask)


@pytest.mark.parametrize("name", ["text_cct_2_k1", "text_cct_2_k2", "text_cct_2_k4", "text_vit_2_p4"])
def test_tokens_outside_the_mask_are_exactly_zero(rng, name):
    # What the mask calls padding saw only padding (zeros): the conv and the pool give exact zeros,
    # the very values the padding of a shorter batch would give.
    model = _model(name)
    ids = rng.integers(1, 40, (3, 20))
    ids[1, 9:] = 0
    ids[2, 2:] = 0
    tokens, mask = _tokens(model, ids)
    assert tokens.shape[:2] == mask.shape == (3, model.tokenizer.sequence_length(20))
    assert np.all(tokens.numpy()[~mask] == 0.0)
    assert np.all(np.abs(tokens.numpy()[mask]).max(axis=-1) > 0)


# ---- padding changes nothing ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["text_cct_2_k1", "text_cct_2_k2", "text_cct_4_k4", "text_cvt_2_p2",
                                  "text_vit_2_p4"])
@pytest.mark.parametrize("pe", ["sine", "learnable"])
def test_padding_to_32_or_64_gives_the_same_logits(rng, name, pe):
    model = _model(name, positional_embedding=pe)
    lengths = [5, 17, 32, 1]
    ids64 = np.zeros((4, 64), np.int64)
    for i, n in enumerate(lengths):
        ids64[i, :n] = rng.integers(1, 40, n)
    a = model(ids64[:, :32]).numpy()
    b = model(ids64).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    alone = model(ids64[1:2, :17]).numpy()          # the batch around a sentence changes nothing
    np.testing.assert_allclose(alone, b[1:2], rtol=1e-5, atol=1e-6)
    # ... while the words do matter:
    other = ids64.copy()
    other[1, 3] = 1 + other[1, 3] % 39
    assert np.abs(model(other).numpy()[1] - b[1]).max() > 1e-4


def test_without_masking_padding_would_change_the_logits(rng):
    # The control: the same model told that the padding is real gives other logits.
    model = _model("text_cct_2_k2")
    ids = np.zeros((1, 64), np.int64)
    ids[0, :10] = rng.integers(1, 40, 10)
    masked = model(ids).numpy()
    unmasked = model(ids, mask=np.ones((1, 64), bool)).numpy()
    assert np.abs(masked - unmasked).max() > 1e-3


def test_positional_embedding_has_one_row_per_token():
    # The official sine table had one row too many for SeqPool models (34 against 35 tokens).
    for name, extra in (("text_cct_2_k2", 0), ("text_cvt_2_p4", 0), ("text_vit_2_p4", 1)):
        m = _model(name, seq_len=64)
        tokens = m.tokenizer.sequence_length(64)
        assert m.classifier.positional_emb.shape == (1, tokens + extra, 128)
        np.testing.assert_array_equal(m.classifier.positional_emb.numpy(),
                                      sinusoidal_embedding(tokens + extra, 128))
    assert _model("text_cct_2_k2", seq_len=64).tokenizer.sequence_length(64) == 33


def test_input_errors():
    model = _model("text_cct_2_k1", seq_len=16)
    with pytest.raises(ValueError, match="at most seq_len=16"):
        model(np.ones((1, 17), np.int64))
    with pytest.raises(ValueError, match="no words"):
        model(np.array([[3, 4], [0, 0]]))
    with pytest.raises(ValueError, match="integers"):
        model(np.ones((1, 4), np.float32))


def test_frozen_pretrained_embeddings(rng):
    table = rng.standard_normal((40, 300)).astype(np.float32)
    model = _model("text_cct_2_k1", embeddings=table, freeze_embeddings=True)
    np.testing.assert_array_equal(model.embedder.weight.numpy(), table)
    assert not model.embedder.weight.requires_grad
    ids = np.array([[1, 2, 3, 0]])
    model.train()
    logits = model(ids)
    (logits * Tensor(rng.standard_normal(logits.shape).astype(np.float32))).sum().backward()
    assert model.embedder.weight.grad is None and model.tokenizer.conv.weight.grad is not None


# ---- masked SeqPool and gradient checks ---------------------------------------------------------------
def _lengths_mask(lengths, L):
    return np.arange(L)[None, :] < np.asarray(lengths)[:, None]


def test_masked_seqpool_equals_seqpool_over_the_real_tokens(rng):
    pool = SeqPool(6)
    x = rng.standard_normal((3, 7, 6)).astype(np.float32)
    lengths = [7, 3, 1]
    y = pool(Tensor(x), mask=_lengths_mask(lengths, 7)).numpy()
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(y[i], pool(Tensor(x[i:i + 1, :n])).numpy()[0], rtol=1e-6, atol=1e-6)


def test_gradcheck_masked_seqpool(rng):
    pool = SeqPool(5)
    mask = _lengths_mask([6, 2, 4], 6)
    x = Tensor(rng.standard_normal((3, 6, 5)), requires_grad=True, dtype=np.float64)
    w = Tensor(rng.standard_normal((1, 5)), requires_grad=True, dtype=np.float64)
    b = Tensor(rng.standard_normal(1), requires_grad=True, dtype=np.float64)
    fn = lambda x, w, b: nn.functional_call(pool, {"weight": w, "bias": b}, x, mask=mask)
    assert gradcheck(fn, [x, w, b], names=["x", "weight", "bias"])


@pytest.mark.parametrize("name", ["text_cct_2_k2", "text_vit_2_p2"])
def test_gradcheck_text_model(rng, name):
    # The whole masked path in float64 (embedding rows, the (k, 300) conv, the pool, masked
    # attention, masked SeqPool / class token), sentences cut at different lengths.
    model = _model(name, vocab_size=12, seq_len=8, embedding_dim=8, word_embedding_dim=6, num_heads=2,
                   mlp_ratio=1, attention_dropout=0.0, stochastic_depth=0.0)
    ids = np.array([[3, 5, 7, 2, 9, 4, 1, 6], [2, 8, 11, 0, 0, 0, 0, 0], [10, 0, 0, 0, 0, 0, 0, 0]])
    names = ["embedder.weight", "tokenizer.conv.weight", "classifier.blocks.0.self_attn.qkv.weight"]
    params = dict(model.named_parameters())
    tensors = [Tensor(params[n].numpy(), requires_grad=True, dtype=np.float64) for n in names]
    fn = lambda *ts: nn.functional_call(model, dict(zip(names, ts)), ids)
    assert gradcheck(fn, tensors, names=names)


def test_text_model_parameters_all_get_gradients(rng):
    model = _model("text_cct_2_k2", num_layers=2)
    model.train()
    ids = np.zeros((2, 12), np.int64)
    ids[0, :12] = rng.integers(1, 40, 12)
    ids[1, :4] = rng.integers(1, 40, 4)
    logits = model(ids)
    (logits * Tensor(rng.standard_normal(logits.shape).astype(np.float32))).sum().backward()
    for name, p in model.named_parameters():
        if name.endswith("attention_pool.bias"):   # its gradient is 0 by design (see SeqPool)
            continue
        assert p.grad is not None and np.abs(p.grad.numpy()).max() > 0, name
    assert set(TEXT_VARIANTS) <= set(models.list_models())


def test_text_compact_transformer_class_is_exported_for_custom_variants():
    m = TextCompactTransformer(vocab_size=10, num_classes=2, seq_len=10, embedding_dim=16, num_layers=1,
                               num_heads=2, word_embedding_dim=8, kernel_size=3)
    assert m(np.array([[1, 2, 3]])).shape == (1, 2)
