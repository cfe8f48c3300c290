"""Lesson 14 — the convolutional tokenizer, and CVT becomes CCT.

What you will learn
    * CCT's tokenizer: a few blocks of [k x k convolution (no bias) -> ReLU -> 3x3 max-pool,
      stride 2], each pixel of the last feature map becoming one token;
    * working out the sequence length from the conv and pool arithmetic — never by pushing a
      dummy image through;
    * what the convolutions buy: overlapping, translation-equivariant tokens (shift the image and
      the tokens shift with it), where patches chop an object at arbitrary borders;
    * counting parameters and multiply-accumulates (MACs) for the paper's variants and checking
      them against its table.

What it builds on
    Lessons 06-07 (conv and pool), 12-13 (ViT-Lite, SeqPool, CVT and `scratch.py`).

Run it:  python lessons/14_cct.py
"""
import numpy as np

import scratch  # lessons/scratch.py

rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. The tokenizer, block by block")
# A variant's name says its shape: CCT-7/3x2 = 7 encoder layers, 3x3 convolutions, 2 conv blocks.
# Conv stride max(1, k//2 - 1) and padding max(1, k//2), as released: a 3x3 conv keeps the size,
# a 7x7 one (for ImageNet-sized images) halves it. Every max-pool (3x3, stride 2, pad 1) halves it.
def walk(cfg):
    k, h = cfg["kernel_size"], cfg["img_size"]
    steps = [f"{h}"]
    for _ in range(cfg["n_conv_layers"]):
        h = scratch.out_size(h, k, max(1, k // 2 - 1), max(1, k // 2))
        steps.append(f"conv {h}")
        h = scratch.out_size(h, 3, 2, 1)
        steps.append(f"pool {h}")
    return h, " -> ".join(steps)

for name, args in [("CCT-7/3x1, 32 px", ("cct", 7, (3, 1), 32)), ("CCT-2/3x2, 32 px", ("cct", 2, (3, 2), 32)),
                   ("CCT-14/7x2, 224 px", ("cct", 14, (7, 2), 224))]:
    cfg = scratch.config(*args)
    h, path = walk(cfg)
    print(f"   {name:19}: {path}: {h}x{h} = {h * h} tokens of {cfg['embedding_dim']} features")
    assert scratch.sequence_length(cfg) == h * h
assert scratch.sequence_length(scratch.config("cct", 14, (7, 2), 224)) == 196

# The arithmetic agrees with what the tokenizer really produces:
cfg = scratch.config("cct", 2, (3, 2))
P = scratch.init_params(cfg, rng)
for name in [n for n in P if n.startswith("tokenizer")]:
    P[name] = rng.standard_normal(P[name].shape) * np.sqrt(2 / np.prod(P[name].shape[1:]))   # He init
img = rng.standard_normal((2, 3, 32, 32))
tokens = scratch.tokenize(img, P, cfg)
print(f"   CCT-2/3x2 tokenizer on {img.shape}: tokens {tokens.shape}")
assert tokens.shape == (2, scratch.sequence_length(cfg), 128)

# --------------------------------------------------------------------------------------------------
print("\n2. Tokens that move with the image")
# Shift the picture right by 4 pixels. The two conv+pool blocks shrink it 4x, so the token grid
# shifts by exactly one column (away from the borders, where padding and wrap-around differ).
shifted = np.roll(img, 4, axis=3)
grid = lambda t: t.reshape(2, 8, 8, 128)                             # tokens back on their 8x8 grid
a, b = grid(tokens), grid(scratch.tokenize(shifted, P, cfg))
inner = slice(2, 6)
assert np.allclose(b[:, inner, 3:7], a[:, inner, 2:6])
print("   conv tokens: shifting the image by 4 px shifts the token grid by one column (inner tokens equal)")
# Patches of 4 px shift the same way only when the shift is a multiple of 4; shift by 2 and every
# patch holds different pixels.
pcfg = scratch.config("cvt", 7, 4)
PP = scratch.init_params(pcfg, rng)
pa = scratch.tokenize(img, PP, pcfg).reshape(2, 8, 8, -1)
pb = scratch.tokenize(np.roll(img, 2, axis=3), PP, pcfg).reshape(2, 8, 8, -1)
assert not np.allclose(pb[:, inner, 3:7], pa[:, inner, 2:6]) and not np.allclose(pb[:, inner, 2:6], pa[:, inner, 2:6])
print("   patch tokens: a 2 px shift matches neither the same nor the next column")

# --------------------------------------------------------------------------------------------------
print("\n3. Counting against the paper's table (CIFAR, 32x32 images, 10 classes)")
# MACs: every conv and Linear, plus the two attention products q k^T and A v, counted from the
# shapes alone. The paper rounds to two decimals (M parameters, G MACs).
def count_macs_by_hand(cfg):
    D, r, C = cfg["embedding_dim"], int(cfg["mlp_ratio"]), cfg["in_channels"]
    h, k, macs = cfg["img_size"], cfg["kernel_size"], 0
    if cfg["tokenizer"] == "patch":                     # one conv, kernel = stride = patch size
        h //= k
        macs += h * h * D * C * k * k
    else:                                               # conv blocks: an output pixel costs C_in*k*k per channel
        widths = [C] + [64] * (cfg["n_conv_layers"] - 1) + [D]
        for i in range(cfg["n_conv_layers"]):
            h = scratch.out_size(h, k, max(1, k // 2 - 1), max(1, k // 2))
            macs += h * h * widths[i + 1] * widths[i] * k * k
            h = scratch.out_size(h, 3, 2, 1)
    L = h * h + (0 if cfg["seq_pool"] else 1)
    # per layer: qkv (3 D^2), proj (D^2), the MLP (2 r D^2) for each of L tokens; q k^T and A v (L^2 D each)
    per_layer = L * (3 * D * D + D * D + 2 * r * D * D) + 2 * L * L * D
    pool = 2 * L * D if cfg["seq_pool"] else 0           # SeqPool: the scores and the weighted sum
    return macs + cfg["num_layers"] * per_layer + pool + D * cfg["num_classes"]


TABLE = [("ViT-Lite-7/4", ("vit", 7, 4), 3.72, 0.26), ("CVT-7/4", ("cvt", 7, 4), 3.72, 0.25),
         ("CCT-2/3x2", ("cct", 2, (3, 2)), 0.28, 0.04), ("CCT-4/3x2", ("cct", 4, (3, 2)), 0.48, 0.05),
         ("CCT-6/3x2", ("cct", 6, (3, 2)), 3.33, 0.25), ("CCT-7/3x2", ("cct", 7, (3, 2)), 3.85, 0.29),
         ("CCT-7/3x1", ("cct", 7, (3, 1)), 3.76, 1.19)]
print("   model          tokens   params (ours / paper)   MACs (ours / paper)")
ours = {}
for name, args, paper_p, paper_m in TABLE:
    cfg = scratch.config(*args)
    n = sum(int(np.prod(s)) for s in scratch.param_shapes(cfg).values())
    m = count_macs_by_hand(cfg)
    ours[name] = (n, m)
    print(f"   {name:13} {scratch.sequence_length(cfg):6}   {n / 1e6:6.2f} M / {paper_p:.2f} M      "
          f"{m / 1e9:6.3f} G / {paper_m:.2f} G")
    assert round(n / 1e6, 2) == paper_p, name
    assert abs(m / 1e9 - paper_m) <= 0.01, name
# Where CCT-7/3x1's MACs go: 256 tokens make every Linear 4x dearer than ViT-Lite-7/4's 64 tokens.
ratio = ours["CCT-7/3x1"][1] / ours["ViT-Lite-7/4"][1]
print(f"   CCT-7/3x1 has 4x the tokens of ViT-Lite-7/4, {ratio:.1f}x its MACs and about the same parameters")
assert 4 < ratio < 5

# --------------------------------------------------------------------------------------------------
print("\n4. The whole CCT-2/3x2, forward")
cfg = scratch.config("cct", 2, (3, 2))
logits = scratch.forward(img, P, cfg)
print(f"   images {img.shape} -> tokens {tokens.shape} -> 2 layers -> SeqPool -> logits {logits.shape}")
assert logits.shape == (2, 10) and np.isfinite(logits).all()


# --------------------------------------------------------------------------------------------------
print("\n5. minicct's CCT and its counters")
# models.count_params, and models.count_macs, which runs one forward pass on one blank image and
# counts each product as it happens (no shape arithmetic like ours to keep in step). minicct also
# counts 5 MACs per LayerNorm element (the fvcore convention behind the paper's numbers), which is
# the whole difference from our count; models.PAPER_TABLE_11 holds the paper's numbers.
from minicct import Tensor
from minicct.models import PAPER_TABLE_11, count_macs, count_params, create_model

NAMES = {"ViT-Lite-7/4": "vit_7_4_32", "CVT-7/4": "cvt_7_4_32", "CCT-2/3x2": "cct_2_3x2_32",
         "CCT-4/3x2": "cct_4_3x2_32", "CCT-6/3x2": "cct_6_3x2_32", "CCT-7/3x2": "cct_7_3x2_32",
         "CCT-7/3x1": "cct_7_3x1_32"}
for name, args, paper_p, paper_m in TABLE:
    model = create_model(NAMES[name], num_classes=10)
    c = scratch.config(*args)
    L = scratch.sequence_length(c) + (0 if c["seq_pool"] else 1)
    norm_macs = 5 * (2 * c["num_layers"] + 1) * L * c["embedding_dim"]     # 2 norms per layer + the last
    assert count_params(model) == ours[name][0], name
    assert count_macs(model, (3, 32, 32)) == ours[name][1] + norm_macs, name
    assert PAPER_TABLE_11[NAMES[name]] == (paper_p, paper_m), name
print("   count_params equals ours for all seven; count_macs equals ours + 5 per LayerNorm element;")
print("   our table of the paper's numbers equals models.PAPER_TABLE_11")

model = create_model("cct_2_3x2_32", num_classes=10)
model.eval()
sd = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
theirs = model(Tensor(img.astype(np.float32))).numpy()
assert np.allclose(theirs, scratch.forward(img, sd, cfg), atol=1e-4)
print(f"   create_model('cct_2_3x2_32') with its weights copied into ours: the same logits {theirs.shape}")
print("\nAll claims of lesson 14 hold.")
