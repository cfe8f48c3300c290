"""The from-scratch model of lessons 10-14, collected in one file so later lessons can reuse it.

Nothing here is new: each function is what a lesson built and checked (the lesson is named beside
it). The kernels (convolution, pooling, layer norm, GELU, softmax) are minicct's reference kernels,
which lessons 05-09 checked against the plain-NumPy versions they built; what is assembled here from them —
attention, the encoder layer, tokenizers, the classifier, the variant table — is the lessons' own.
Forward passes only, in evaluation mode (no dropout, no drop-path); training uses minicct, whose
tape does the backward.

A model's weights are a dict of arrays named exactly as minicct's (and the released CCT
checkpoints') ``state_dict`` names them — ``classifier.blocks.0.self_attn.qkv.weight`` and so on
— so a lesson can copy a minicct model's weights here and compare outputs.
"""
import math

import numpy as np

from minicct.kernels import conv2d_forward, gelu_forward, layer_norm_forward, max_pool2d_forward, softmax_forward

# The paper's sizes: layers -> (heads, mlp ratio, width).
SIZES = {2: (2, 1, 128), 4: (2, 1, 128), 6: (4, 2, 256), 7: (4, 2, 256), 14: (6, 3, 384)}


# ---- kernels -------------------------------------------------------------------------------------
# Lessons 06-09 built each kernel in plain NumPy and checked it against minicct's reference kernel
# (the plain version in minicct/kernels), so the model below uses those kernels themselves. Each
# returns (y, cache); a forward pass needs only y.
def out_size(h, k, stride, pad):                                   # lesson 06
    return (h + 2 * pad - k) // stride + 1


def conv2d(x, w, b=None, stride=1, pad=0):                          # lesson 06
    """x: (N, C, H, W), w: (O, C, KH, KW), b: (O,) or None -> (N, O, OH, OW)."""
    return conv2d_forward(x, w, b, stride, pad)[0]


def max_pool2d(x, k=3, stride=2, pad=1):                            # lesson 07
    return max_pool2d_forward(x, k, stride, pad)[0]


def layer_norm(x, gamma, beta, eps=1e-5):                           # lesson 08
    return layer_norm_forward(x, gamma.shape, gamma, beta, eps)[0]


def gelu(x):                                                        # lesson 09
    return gelu_forward(x)[0]


def softmax(s, axis=-1):                                            # lessons 04, 05
    return softmax_forward(s, axis)[0]


def attention_weights(x, w_qkv, heads):                             # lesson 10
    """x: (N, T, D) -> A (N, H, T, T) and v (N, H, T, D/H)."""
    N, T, D = x.shape
    qkv = (x @ w_qkv.T).reshape(N, T, 3, heads, D // heads).transpose(2, 0, 3, 1, 4)
    A = softmax(qkv[0] @ qkv[1].swapaxes(-1, -2) / math.sqrt(D // heads))
    return A, qkv[2]


def mhsa(x, w_qkv, w_proj, b_proj, heads):                          # lesson 10
    A, v = attention_weights(x, w_qkv, heads)
    N, T, D = x.shape
    return (A @ v).transpose(0, 2, 1, 3).reshape(N, T, D) @ w_proj.T + b_proj


# ---- the model -----------------------------------------------------------------------------------
def encoder_layer(x, P, pre, heads):                                # lesson 11 (released order)
    g = lambda name: P[pre + name]
    x = x + mhsa(layer_norm(x, g("pre_norm.weight"), g("pre_norm.bias")), g("self_attn.qkv.weight"),
                 g("self_attn.proj.weight"), g("self_attn.proj.bias"), heads)
    x = layer_norm(x, g("norm1.weight"), g("norm1.bias"))
    return x + gelu(x @ g("linear1.weight").T + g("linear1.bias")) @ g("linear2.weight").T + g("linear2.bias")


def tokenize(img, P, cfg):                                          # lessons 12 (patches), 14 (convs)
    """img: (N, C, H, W) -> tokens (N, L, D)."""
    y = img
    if cfg["tokenizer"] == "patch":
        p = cfg["kernel_size"]
        y = conv2d(y, P["tokenizer.conv_layers.0.0.weight"], P["tokenizer.conv_layers.0.0.bias"], stride=p)
    else:
        k = cfg["kernel_size"]
        stride, pad = max(1, k // 2 - 1), max(1, k // 2)
        for i in range(cfg["n_conv_layers"]):
            y = conv2d(y, P[f"tokenizer.conv_layers.{i}.0.weight"], None, stride, pad)
            y = max_pool2d(np.maximum(y, 0), 3, 2, 1)
    N, D, h, w = y.shape
    return y.reshape(N, D, h * w).transpose(0, 2, 1)


def classify(tokens, P, cfg):                                       # lessons 12 (class token), 13 (SeqPool)
    """tokens (N, L, D) -> logits (N, classes)."""
    x = tokens
    N, L, D = x.shape
    if not cfg["seq_pool"]:
        x = np.concatenate([np.broadcast_to(P["classifier.class_emb"], (N, 1, D)), x], axis=1)
    x = x + P["classifier.positional_emb"]
    for i in range(cfg["num_layers"]):
        x = encoder_layer(x, P, f"classifier.blocks.{i}.", cfg["num_heads"])
    x = layer_norm(x, P["classifier.norm.weight"], P["classifier.norm.bias"])
    if cfg["seq_pool"]:
        w = softmax(x @ P["classifier.attention_pool.weight"].T + P["classifier.attention_pool.bias"], axis=1)
        x = (w.transpose(0, 2, 1) @ x)[:, 0]                        # (N, 1, L) @ (N, L, D) -> (N, D)
    else:
        x = x[:, 0]
    return x @ P["classifier.fc.weight"].T + P["classifier.fc.bias"]


def forward(img, P, cfg):
    return classify(tokenize(img, P, cfg), P, cfg)


def config(family, layers, tok, img_size=32, num_classes=10, in_channels=3):
    """The settings of a paper variant: family 'vit' | 'cvt' | 'cct'; tok = patch size, or
    (kernel, conv layers) for 'cct'."""
    heads, ratio, dim = SIZES[layers]
    cfg = dict(family=family, num_layers=layers, num_heads=heads, mlp_ratio=ratio, embedding_dim=dim,
               img_size=img_size, num_classes=num_classes, in_channels=in_channels,
               tokenizer="conv" if family == "cct" else "patch", seq_pool=family != "vit")
    if family == "cct":
        cfg["kernel_size"], cfg["n_conv_layers"] = tok
    else:
        cfg["kernel_size"] = tok
    return cfg


def sequence_length(cfg):
    """Tokens per image, from the conv and pool arithmetic alone."""
    h = cfg["img_size"]
    if cfg["tokenizer"] == "patch":
        return (h // cfg["kernel_size"]) ** 2
    k = cfg["kernel_size"]
    for _ in range(cfg["n_conv_layers"]):
        h = out_size(out_size(h, k, max(1, k // 2 - 1), max(1, k // 2)), 3, 2, 1)
    return h * h


def param_shapes(cfg):
    """{name: shape} of every parameter, in minicct's names."""
    D, C, r = cfg["embedding_dim"], cfg["in_channels"], int(cfg["mlp_ratio"])
    k, S = cfg["kernel_size"], {}
    if cfg["tokenizer"] == "patch":
        S["tokenizer.conv_layers.0.0.weight"] = (D, C, k, k)
        S["tokenizer.conv_layers.0.0.bias"] = (D,)
    else:
        widths = [C] + [64] * (cfg["n_conv_layers"] - 1) + [D]
        for i in range(cfg["n_conv_layers"]):
            S[f"tokenizer.conv_layers.{i}.0.weight"] = (widths[i + 1], widths[i], k, k)
    L = sequence_length(cfg) + (0 if cfg["seq_pool"] else 1)
    if not cfg["seq_pool"]:
        S["classifier.class_emb"] = (1, 1, D)
    S["classifier.positional_emb"] = (1, L, D)
    for i in range(cfg["num_layers"]):
        b = f"classifier.blocks.{i}."
        S.update({b + "pre_norm.weight": (D,), b + "pre_norm.bias": (D,),
                  b + "self_attn.qkv.weight": (3 * D, D),
                  b + "self_attn.proj.weight": (D, D), b + "self_attn.proj.bias": (D,),
                  b + "linear1.weight": (r * D, D), b + "linear1.bias": (r * D,),
                  b + "norm1.weight": (D,), b + "norm1.bias": (D,),
                  b + "linear2.weight": (D, r * D), b + "linear2.bias": (D,)})
    S["classifier.norm.weight"], S["classifier.norm.bias"] = (D,), (D,)
    if cfg["seq_pool"]:
        S["classifier.attention_pool.weight"], S["classifier.attention_pool.bias"] = (1, D), (1,)
    S["classifier.fc.weight"], S["classifier.fc.bias"] = (cfg["num_classes"], D), (cfg["num_classes"],)
    return S


def init_params(cfg, rng):
    """Random weights: normal(0, 0.02) for matrices, 1 and 0 for norms, 0 for biases."""
    P = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith("norm.weight") or name.endswith("norm1.weight"):
            P[name] = np.ones(shape)
        elif name.endswith("bias"):
            P[name] = np.zeros(shape)
        else:
            P[name] = 0.02 * rng.standard_normal(shape)
    return P
