"""Lesson 19 — looking inside a trained model: SeqPool weights and attention maps over the image.

What you will learn
    * that the NumPy model of lessons 12-14 and minicct's agree on a *trained* model too, so we can
      open it up in plain NumPy and keep every intermediate array;
    * SeqPool's weights: how much each token (each region of the image) counts in the summary the
      classifier sees;
    * attention maps: which tokens each token looked at, per layer and head, and "attention
      rollout", which follows the attention through both layers and the residual connections;
    * drawing those maps over the image, to see what the model looks at.

What it builds on
    Lesson 17, whose trained weights (lessons/output/17_cct_shapes.npz) it loads; if they are not
    there yet, it runs lesson 17 first. Lessons 10 and 13 (attention, SeqPool), `scratch.py`.

Run it:  python lessons/19_inside_the_model.py [--checkpoint PATH]
Picture: lessons/output/19_attention_maps.png
"""
import argparse
import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image, ImageDraw

import minicct
from minicct import Tensor
from minicct.data import eval_loader, get_dataset
from minicct.models import create_model
import scratch  # lessons/scratch.py

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "output"
parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--checkpoint", default=str(OUT / "17_cct_shapes.npz"),
                    help="weights saved by lesson 17 (default: its short run)")
args = parser.parse_args()
OUT.mkdir(exist_ok=True)

# --------------------------------------------------------------------------------------------------
print("1. The trained model")
path = pathlib.Path(args.checkpoint)
if not path.exists():
    print(f"   {path.name} is missing: running lesson 17 first to train it")
    subprocess.run([sys.executable, str(HERE / "17_training_cct.py")], check=True, stdout=subprocess.DEVNULL)
with np.load(path) as f:
    img_size, width = int(f["_img_size"]), int(f["_width"])
    sd = {k: f[k] for k in f.files if not k.startswith("_")}
train, test = get_dataset("shapes", img_size=img_size)
C = len(train.classes)
model = create_model("cct_2_3x2_32", num_classes=C, img_size=img_size, embedding_dim=width, in_planes=width // 2)
model.load_state_dict(sd)
model.eval()
cfg = scratch.config("cct", 2, (3, 2), img_size=img_size, num_classes=C)
cfg["embedding_dim"] = width
P = {k: v.astype(np.float64) for k, v in sd.items()}
x, labels = next(iter(eval_loader(test, batch_size=64, mean=train.mean, std=train.std)))
with minicct.no_grad():
    theirs = model(Tensor(x)).numpy()
ours = scratch.forward(x.astype(np.float64), P, cfg)
L = scratch.sequence_length(cfg)
g = int(np.sqrt(L))                                                   # tokens sit on a g x g grid
print(f"   {path.name}: CCT-2/3x2 of width {width} on {img_size}x{img_size} images, {L} tokens ({g}x{g})")
print(f"   minicct's logits and our NumPy model's agree: max |diff| {np.abs(theirs - ours).max():.1e}")
assert np.allclose(theirs, ours, atol=1e-3)
pred = ours.argmax(1)
print(f"   accuracy on these 64 test images: {np.mean(pred == labels):.0%}")

# --------------------------------------------------------------------------------------------------
print("\n2. Running the model by hand, keeping what we want to look at")
# The same steps as scratch.forward, but we keep the attention weights of every layer and head,
# and SeqPool's weights.
tokens = scratch.tokenize(x.astype(np.float64), P, cfg) + P["classifier.positional_emb"]
attn = []                                                             # per layer: (N, heads, L, L)
h = tokens
for i in range(cfg["num_layers"]):
    pre = f"classifier.blocks.{i}."
    A, _ = scratch.attention_weights(scratch.layer_norm(h, P[pre + "pre_norm.weight"], P[pre + "pre_norm.bias"]),
                                     P[pre + "self_attn.qkv.weight"], cfg["num_heads"])
    attn.append(A)
    h = scratch.encoder_layer(h, P, pre, cfg["num_heads"])
h = scratch.layer_norm(h, P["classifier.norm.weight"], P["classifier.norm.bias"])
pool = scratch.softmax(h @ P["classifier.attention_pool.weight"].T + P["classifier.attention_pool.bias"], axis=1)[..., 0]
logits = (pool[:, None, :] @ h)[:, 0] @ P["classifier.fc.weight"].T + P["classifier.fc.bias"]
assert np.allclose(logits, ours)
print(f"   attention: {len(attn)} layers of {attn[0].shape} (images, heads, query, key); SeqPool weights {pool.shape}")
# Every attention row and every SeqPool row is a probability distribution.
assert all(np.allclose(A.sum(-1), 1) for A in attn) and np.allclose(pool.sum(1), 1)

# --------------------------------------------------------------------------------------------------
print("\n3. SeqPool's weights")
# Uniform weights would be 1/L each (mean pooling). How far from uniform did training take them?
entropy = -(pool * np.log(pool)).sum(1)
print(f"   the largest token weight per image: {pool.max(1).mean():.3f} on average (uniform: {1 / L:.3f}); "
      f"entropy {entropy.mean():.2f} vs log L = {np.log(L):.2f}")
assert pool.max(1).mean() > 1.2 / L                                   # training made SeqPool selective
# Does the selection matter? Pool the same tokens uniformly instead and classify again.
mean_logits = h.mean(1) @ P["classifier.fc.weight"].T + P["classifier.fc.bias"]
print(f"   accuracy with SeqPool's weights {np.mean(pred == labels):.0%}, with a plain mean instead "
      f"{np.mean(mean_logits.argmax(1) == labels):.0%} (after lesson 17's short run the weights are still close to")
print("   uniform; train longer, --full, and look again with --checkpoint)")

# --------------------------------------------------------------------------------------------------
print("\n4. Attention rollout")
# One layer's attention says where each token looked in that layer's input. But layer 2's inputs are
# already mixtures (through attention) plus the residual (the token itself). Rollout follows that:
# per layer, average the heads, add the identity for the residual, renormalise the rows, and
# multiply the layers' matrices. SeqPool's weights then say which input tokens the summary came from.
rollout = np.broadcast_to(np.eye(L), (len(x), L, L))
for A in attn:
    R = 0.5 * A.mean(axis=1) + 0.5 * np.eye(L)                        # (N, L, L)
    R = R / R.sum(-1, keepdims=True)
    rollout = R @ rollout
seen = (pool[:, None, :] @ rollout)[:, 0]                              # (N, L): weight on each input token
assert np.allclose(seen.sum(1), 1)
print(f"   rollout through {len(attn)} layers: each image's summary draws on its input tokens with weights summing to 1")

# --------------------------------------------------------------------------------------------------
print("\n5. Drawing the maps over the images")
S = 96                                                                # each image drawn at 96x96
def heat(img_uint8, weights):
    """Light up the image where the g x g weight map (scaled to its max) is high; dim it elsewhere."""
    m = weights.reshape(g, g) / weights.max()
    m = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize((S, S), Image.Resampling.BILINEAR)) / 255.0
    base = np.asarray(Image.fromarray(img_uint8).resize((S, S), Image.Resampling.NEAREST)).astype(np.float64)
    return Image.fromarray((base * (0.15 + 0.85 * m[..., None])).astype(np.uint8))

shown = [int(np.flatnonzero(labels == k)[0]) for k in range(C) if np.any(labels == k)]
raw = test.images[:64]
columns = ["image", "SeqPool", "rollout"] + [f"layer 2, head {j + 1}" for j in range(cfg["num_heads"])]
grid = Image.new("RGB", (S * len(columns), (S + 16) * len(shown) + 16), "white")
d = ImageDraw.Draw(grid)
for c, name in enumerate(columns):
    d.text((c * S + 4, 2), name, fill="black")
for r, i in enumerate(shown):
    y0 = 16 + r * (S + 16)
    # Per head: the attention that all tokens paid to each token in the last layer (column mean).
    maps = [None, pool[i], seen[i]] + [attn[-1][i, j].mean(0) for j in range(cfg["num_heads"])]
    for c, m in enumerate(maps):
        tile = Image.fromarray(raw[i]).resize((S, S), Image.Resampling.NEAREST) if m is None else heat(raw[i], m)
        grid.paste(tile, (c * S, y0))
    d.text((4, y0 + S + 1), f"{test.classes[labels[i]]} -> {test.classes[pred[i]]}", fill="black")
pic = OUT / "19_attention_maps.png"
grid.save(pic)
print(f"   wrote {pic.relative_to(HERE.parent)}: one row per class (true -> predicted)")

print("\nAll claims of lesson 19 hold.")
