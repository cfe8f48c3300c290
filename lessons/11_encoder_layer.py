"""Lesson 11 — the transformer encoder layer: the released norm order, dropout and drop-path.

What you will learn
    * the encoder layer: attention mixes tokens, an MLP (Linear -> GELU -> Linear) works on each
      token alone, and residual connections add each result back to the stream;
    * the order of the norms in CCT's released code, which is not the textbook "pre-norm" order:
          x = x + drop_path(attn(pre_norm(x)))
          x = norm1(x)                                  <- the stream itself is normalised
          x = x + drop_path(mlp(x))
      and what that does to the size of the stream as layers pile up;
    * dropout (drop single numbers, scale the rest by 1/(1-p)) and drop-path, a.k.a. stochastic
      depth (drop a whole residual branch for some images), with rates growing with depth.

What it builds on
    Lessons 05 (linear layers), 08 (layer norm), 09 (GELU), 10 (multi-head self-attention).

Run it:  python lessons/11_encoder_layer.py
"""
import math

import numpy as np

import minicct

rng = np.random.default_rng(0)
erf = np.vectorize(math.erf)

# The pieces from lessons 08, 09 and 10, forward only (the tape will do the backward later).
def layer_norm(x, gamma=1.0, beta=0.0, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) + beta

def gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))

def softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

def mhsa(x, p, heads):
    N, T, D = x.shape
    qkv = (x @ p["qkv"].T).reshape(N, T, 3, heads, D // heads).transpose(2, 0, 3, 1, 4)
    A = softmax(qkv[0] @ qkv[1].swapaxes(-1, -2) / math.sqrt(D // heads))   # (N, H, T, T)
    return (A @ qkv[2]).transpose(0, 2, 1, 3).reshape(N, T, D) @ p["proj"].T + p["proj_b"]

def mlp(x, p):
    return gelu(x @ p["fc1"].T + p["fc1_b"]) @ p["fc2"].T + p["fc2_b"]

def random_layer(D, ratio=2):
    """Weights of one layer, drawn at a sensible scale."""
    w = lambda o, i: rng.standard_normal((o, i)) / math.sqrt(i)
    return {"qkv": w(3 * D, D), "proj": w(D, D), "proj_b": np.zeros(D),
            "fc1": w(ratio * D, D), "fc1_b": np.zeros(ratio * D), "fc2": w(D, ratio * D), "fc2_b": np.zeros(D)}

# --------------------------------------------------------------------------------------------------
print("1. The MLP works on each token alone")
D, H = 64, 4
p = random_layer(D)
x = rng.standard_normal((2, 10, D))                                  # (N, T, D)
y = mlp(x, p)
assert np.allclose(y[1, 3], mlp(x[1:2, 3:4], p)[0, 0])              # token (1, 3) on its own
print(f"   mlp: {D} -> {2 * D} -> {D} features per token; token (1, 3) alone gives the same output")

# --------------------------------------------------------------------------------------------------
print("\n2. Two norm orders")
def layer_released(x, p):
    """CCT's released TransformerEncoderLayer (eval mode: no dropout, no drop-path)."""
    x = x + mhsa(layer_norm(x), p, H)      # pre_norm, then attention, then the residual
    x = layer_norm(x)                      # norm1 normalises the stream itself
    return x + mlp(x, p)                   # the MLP adds to the normalised stream

def layer_prenorm(x, p):
    """The textbook pre-norm layer: each branch sees a normalised copy; the stream is never normed."""
    x = x + mhsa(layer_norm(x), p, H)
    return x + mlp(layer_norm(x), p)

layers = [random_layer(D) for _ in range(24)]
a = b = rng.standard_normal((4, 16, D))
print("   depth   stream std: released order   textbook pre-norm")
for i, p in enumerate(layers, 1):
    a, b = layer_released(a, p), layer_prenorm(b, p)
    if i in (1, 4, 12, 24):
        print(f"   {i:5d}   {a.std():27.2f}   {b.std():17.2f}")
# In the released order every layer's output is "a normalised stream + one MLP output", so its size
# stays put however deep the model; in pre-norm the residual stream keeps growing (~sqrt(depth)).
assert a.std() < 1.6 and b.std() > 3
# The two are different functions, so weights trained one way do not fit the other: to load CCT's
# released checkpoints the order has to be kept exactly, odd as it looks.
x = rng.standard_normal((2, 5, D))
assert not np.allclose(layer_released(x, layers[0]), layer_prenorm(x, layers[0]))

# --------------------------------------------------------------------------------------------------
print("\n3. Dropout")
# In training each number is zeroed with probability p and the survivors are scaled by 1/(1-p),
# so the expected value is unchanged and evaluation can simply skip dropout ("inverted" dropout).
def dropout(x, p, training):
    if not training or p == 0:
        return x
    keep = rng.random(x.shape) >= p
    return x * keep / (1 - p)

x = np.ones((1000, 100))
d = dropout(x, 0.1, training=True)
print(f"   p=0.1: {np.mean(d == 0):.3f} of the numbers zeroed, mean {d.mean():.3f} (was 1), eval: unchanged")
assert abs(np.mean(d == 0) - 0.1) < 0.01 and abs(d.mean() - 1) < 0.01
assert dropout(x, 0.1, training=False) is x

# --------------------------------------------------------------------------------------------------
print("\n4. Drop-path (stochastic depth)")
# Dropout drops numbers; drop-path drops the whole residual branch of a layer, for randomly chosen
# images in the batch: for those images the layer is skipped (x + 0). The kept branches are scaled
# by 1/(1-p). A deep network is thus trained as many shallower ones and leans less on any one layer.
def drop_path(branch, p, training):
    """branch: (N, T, D); one keep/drop decision per image."""
    if not training or p == 0:
        return branch
    keep = rng.random((branch.shape[0], 1, 1)) >= p                 # (N, 1, 1): broadcast per image
    return branch * keep / (1 - p)

branch = rng.standard_normal((8, 5, D))
out = drop_path(branch, 0.5, training=True)
kept = [bool(np.any(out[n])) for n in range(8)]
print(f"   p=0.5 over 8 images: kept {kept}")
for n in range(8):   # each image's branch is either all gone or all kept (and doubled)
    assert np.allclose(out[n], 0) or np.allclose(out[n], 2 * branch[n])
# CCT grows the rate linearly with depth: the first layer is never dropped, the last one most often.
rates = np.linspace(0, 0.1, 7)
print(f"   CCT-7's drop-path rates: {np.round(rates, 4).tolist()}")
assert rates[0] == 0 and rates[-1] == 0.1

# With drop-path the released layer in training mode reads:
def layer_released_train(x, p, rate, p_drop=0.1):
    x = x + drop_path(dropout(mhsa(layer_norm(x), p, H), p_drop, True), rate, True)
    x = layer_norm(x)
    return x + drop_path(dropout(mlp(x, p), p_drop, True), rate, True)

x = rng.standard_normal((64, 5, D))
ev, tr = layer_released(x, layers[0]), np.mean([layer_released_train(x, layers[0], 0.1) for _ in range(20)], axis=0)
print(f"   averaged over 20 training passes the layer is close to its eval output: "
      f"mean |diff| {np.abs(tr - ev).mean():.3f} vs output size {np.abs(ev).mean():.3f}")
assert np.abs(tr - ev).mean() < 0.5 * np.abs(ev).mean()


# --------------------------------------------------------------------------------------------------
print("\n5. minicct's dropout and drop-path")
import minicct.functional as F
from minicct import Tensor

g = np.random.default_rng(1)                                        # minicct takes a Generator
d = F.dropout(Tensor(np.ones((1000, 100))), p=0.1, training=True, generator=g).numpy()
assert abs(np.mean(d == 0) - 0.1) < 0.01 and set(np.unique(d)) <= {0.0, np.float32(1 / 0.9)}
assert np.array_equal(F.dropout(Tensor(x), p=0.1, training=False).numpy(), Tensor(x).numpy())
out = F.drop_path(Tensor(branch), p=0.5, training=True, generator=g).numpy()
for n in range(8):
    assert np.allclose(out[n], 0) or np.allclose(out[n], 2 * branch[n], atol=1e-5)
print(f"   F.drop_path keeps or drops whole images: kept {[bool(np.any(out[n])) for n in range(8)]}")
# Its gradient follows the same mask: dropped images get no gradient, kept ones twice gy.
bt = Tensor(branch, requires_grad=True)
y = F.drop_path(bt, p=0.5, training=True, generator=np.random.default_rng(2))
y.backward(Tensor(np.ones(branch.shape)))
kept_now = [bool(np.any(y.numpy()[n])) for n in range(8)]
assert all(np.allclose(bt.grad.numpy()[n], 2.0 if k else 0.0) for n, k in enumerate(kept_now))

# --------------------------------------------------------------------------------------------------
print("\n6. minicct's TransformerEncoderLayer")
# The same layer as a Module, with the released names: pre_norm, self_attn.qkv, self_attn.proj,
# norm1, linear1, linear2. We give it random weights (norms included), then run our NumPy layer
# with exactly those weights.
from minicct.models import TransformerEncoderLayer

layer = TransformerEncoderLayer(D, H, dim_feedforward=2 * D, dropout=0.0, attention_dropout=0.0, drop_path_rate=0.1)
sd = {k: 0.1 * rng.standard_normal(v.shape) + (1.0 if k.endswith("norm.weight") or k.endswith("norm1.weight") else 0.0)
      for k, v in layer.state_dict().items()}
layer.load_state_dict(sd)
print(f"   parameters: {', '.join(sd)}")

def layer_released_sd(x, sd):
    ln = lambda x, name: layer_norm(x, sd[name + ".weight"], sd[name + ".bias"])
    p = {"qkv": sd["self_attn.qkv.weight"], "proj": sd["self_attn.proj.weight"], "proj_b": sd["self_attn.proj.bias"],
         "fc1": sd["linear1.weight"], "fc1_b": sd["linear1.bias"], "fc2": sd["linear2.weight"], "fc2_b": sd["linear2.bias"]}
    x = x + mhsa(ln(x, "pre_norm"), p, H)
    x = ln(x, "norm1")
    return x + mlp(x, p)

x = rng.standard_normal((2, 7, D))
layer.eval()                                                         # eval: no dropout, no drop-path
theirs = layer(Tensor(x)).numpy()
assert np.allclose(theirs, layer_released_sd(x, sd), atol=1e-4)
print("   in eval mode it equals our released-order layer, given the same weights")
layer.train()                                                        # train: drop-path is live
x64 = Tensor(rng.standard_normal((64, 7, D)))
y1, y2 = layer(x64).numpy(), layer(x64).numpy()
same = [bool(np.allclose(y1[n], y2[n])) for n in range(64)]
print(f"   in train mode two passes over 64 images agree on {sum(same)} of them (drop-path at rate 0.1)")
assert 0 < sum(same) < 64
print("\nAll claims of lesson 11 hold.")
