"""Lesson 12 — ViT-Lite: an image as a sequence of patches, and a class token.

What you will learn
    * cutting an image into p x p patches is a reshape and a transpose, and embedding each patch
      with one Linear layer is exactly a convolution whose kernel and stride are both p;
    * a learned *class token* is put in front of the patch tokens; after the encoder layers its
      output is read as the whole image's summary;
    * without position embeddings the model cannot tell where a patch was (lesson 10), so a
      position embedding is added to every token;
    * the whole ViT-Lite forward pass from the pieces of lessons 06-11, and its parameter count
      against the paper's table.

What it builds on
    Lesson 06 (convolution), lesson 10 (attention is blind to order), lesson 11 (the encoder layer).
    The pieces are collected in `lessons/scratch.py`, which this lesson imports.

Run it:  python lessons/12_vit_lite.py
"""
import numpy as np

import scratch  # lessons/scratch.py: the from-scratch model of lessons 10-11, on minicct's kernels

rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. Patches by reshaping")
# (N, C, H, W) -> (N, C, H/p, p, W/p, p): split each spatial axis into (which patch, where inside)
# -> (N, H/p, W/p, C, p, p): patch indices first -> (N, T, C*p*p) with T = (H/p)(W/p).
def patchify(img, p):
    N, C, H, W = img.shape
    x = img.reshape(N, C, H // p, p, W // p, p).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(N, (H // p) * (W // p), C * p * p)

img = rng.standard_normal((2, 3, 32, 32))                            # (N, C, H, W)
patches = patchify(img, 4)
print(f"   image {img.shape} -> {patches.shape[1]} patches of 3x4x4 = {patches.shape[2]} numbers")
assert patches.shape == (2, 64, 48)
# Patch number 9 is row 1, column 1 of the 8x8 grid of patches (row-major order):
assert np.array_equal(patches[0, 9], img[0, :, 4:8, 4:8].ravel())

# --------------------------------------------------------------------------------------------------
print("\n2. Embedding the patches: a Linear is a conv with kernel = stride = p")
D, p = 256, 4
W = rng.standard_normal((D, 3 * p * p)) * 0.02                      # (D, C*p*p)
b = rng.standard_normal(D) * 0.02
by_linear = patches @ W.T + b                                       # (N, 64, D)
feature_map = scratch.conv2d(img, W.reshape(D, 3, p, p), b, stride=p)  # (N, D, 8, 8)
by_conv = feature_map.reshape(2, D, 64).transpose(0, 2, 1)          # (N, 64, D): one token per position
print(f"   Linear on patches {by_linear.shape} == conv(kernel 4, stride 4) {feature_map.shape} flattened")
assert np.allclose(by_linear, by_conv)

# --------------------------------------------------------------------------------------------------
print("\n3. A class token, and why position embeddings are needed")
cfg = scratch.config("vit", 7, 4)                                   # ViT-Lite-7/4 on 32x32 images
P = scratch.init_params(cfg, rng)
print(f"   class token {P['classifier.class_emb'].shape}, position embedding "
      f"{P['classifier.positional_emb'].shape} (1 + 64 tokens)")
tokens = scratch.tokenize(img, P, cfg)                              # (N, 64, D)
logits = scratch.classify(tokens, P, cfg)
print(f"   tokens {tokens.shape} -> [class token] + {tokens.shape[1]} -> 7 layers -> token 0 -> logits {logits.shape}")
assert logits.shape == (2, 10)

# Shuffle the patches. Without position embeddings the class token's answer does not change at
# all: attention sees a set of patches, not a picture. With them, it does.
shuffle = rng.permutation(64)
P0 = dict(P, **{"classifier.positional_emb": np.zeros_like(P["classifier.positional_emb"])})
P1 = dict(P, **{"classifier.positional_emb": rng.standard_normal(P["classifier.positional_emb"].shape)})
same0 = np.allclose(scratch.classify(tokens[:, shuffle], P0, cfg), scratch.classify(tokens, P0, cfg))
same1 = np.allclose(scratch.classify(tokens[:, shuffle], P1, cfg), scratch.classify(tokens, P1, cfg))
print(f"   shuffled patches give the same logits? without position embeddings: {same0}; with: {same1}")
assert same0 and not same1

# --------------------------------------------------------------------------------------------------
print("\n4. Counting the parameters")
shapes = scratch.param_shapes(cfg)
total = sum(int(np.prod(s)) for s in shapes.values())
per_block = sum(int(np.prod(s)) for n, s in shapes.items() if n.startswith("classifier.blocks.0."))
print(f"   patch embedding {3 * 16 * D + D:,}; each of 7 layers {per_block:,}; "
      f"position embedding {65 * D:,}; total {total:,}")
print(f"   the paper's table: ViT-Lite-7/4 3.72 M — ours {total / 1e6:.2f} M")
assert round(total / 1e6, 2) == 3.72
# Larger patches mean fewer tokens (less compute), a bigger patch embedding, a smaller position table.
for patch, paper in [(8, 3.74), (16, 3.89)]:
    n = sum(int(np.prod(s)) for s in scratch.param_shapes(scratch.config("vit", 7, patch)).values())
    print(f"   ViT-Lite-7/{patch}: {scratch.sequence_length(scratch.config('vit', 7, patch))} tokens, "
          f"{n / 1e6:.2f} M parameters (paper {paper} M)")
    assert round(n / 1e6, 2) == paper


# --------------------------------------------------------------------------------------------------
print("\n5. minicct's ViT-Lite")
# create_model("vit_7_4_32"): ViT-Lite, 7 layers, 4x4 patches, 32x32 images. Its state_dict uses the
# same names as our dict, so we can copy its (randomly initialised) weights and run both.
from minicct import Tensor
from minicct.models import count_params, create_model

model = create_model("vit_7_4_32", num_classes=10)
sd = model.state_dict()
assert set(sd) == set(shapes) and all(sd[k].shape == shapes[k] for k in sd)
assert count_params(model) == total
print(f"   the same {len(sd)} parameter arrays with the same names and shapes; count_params = {count_params(model):,}")
model.eval()                                                         # no dropout
theirs = model(Tensor(img.astype(np.float32))).numpy()
ours = scratch.forward(img, {k: v.astype(np.float64) for k, v in sd.items()}, cfg)
print(f"   logits of minicct's model and of ours, same weights: max |diff| {np.abs(theirs - ours).max():.1e}")
assert np.allclose(theirs, ours, atol=1e-4)
print("\nAll claims of lesson 12 hold.")
