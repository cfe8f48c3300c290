"""Model size: parameters and multiply-accumulates (MACs), checked against the paper's Table 11.

``count_macs`` runs one forward pass on a single blank image (eval mode, no graph) and watches every
operation it applies (``minicct.autograd.function.observe``); each one that multiplies is counted
from the shapes of its arrays, by the rules of ``mac_rules()``. So the count is of what the model
really computes: no layer repeats its forward's shape arithmetic to answer it. What is counted, per
image:

* conv2d: O·OH·OW·C·KH·KW;  linear: rows·in·out (biases are not counted);
* attention: the two products q·kᵀ and attn·v, L²·d each (on top of the qkv and proj linears);
* matmul: rows·inner·cols — in these models SeqPool's weighted sum (its scores are a linear), L·d;
* layer_norm: 5 per element — the convention of fvcore, the counter whose numbers Table 11 matches
  (without it CCT-6/3x1 comes out at 1.01 G instead of 1.02 G).

Not counted: activations, softmax, pooling, residual and positional additions, dropout.

    python -c "from minicct.models import format_size_table; print(format_size_table())"
"""
from __future__ import annotations

import numpy as np

# Table 11 of the paper (CIFAR-10: 10 classes, 32×32; CCT-14/7x2: ImageNet, 1000 classes, 224×224):
# name → (parameters in millions, MACs in billions), as printed (rounded to 2 decimals).
PAPER_TABLE_11 = {
    "vit_7_16_32": (3.89, 0.02), "vit_6_16_32": (3.36, 0.02),
    "vit_7_8_32": (3.74, 0.06), "vit_6_8_32": (3.22, 0.06),
    "vit_7_4_32": (3.72, 0.26), "vit_6_4_32": (3.19, 0.22),
    "cvt_7_8_32": (3.74, 0.06), "cvt_6_8_32": (3.21, 0.05),
    "cvt_7_4_32": (3.72, 0.25), "cvt_6_4_32": (3.19, 0.22),
    "cct_2_3x2_32": (0.28, 0.04), "cct_4_3x2_32": (0.48, 0.05),
    "cct_6_3x2_32": (3.33, 0.25), "cct_7_3x2_32": (3.85, 0.29),
    "cct_6_3x1_32": (3.23, 1.02), "cct_7_3x1_32": (3.76, 1.19),
    "cct_14_7x2_224": (22.36, 5.53),
}
PAPER_NUM_CLASSES = {"cct_14_7x2_224": 1000}


def count_params(model, trainable_only=True):
    """Number of parameter elements (only those with requires_grad unless ``trainable_only=False``).
    Buffers, such as the fixed sine table, are not parameters and are never counted."""
    return sum(int(p.size) for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv2d_macs(args, out):
    w = args[1]                        # w: (O, C, KH, KW); out: (N, O, OH, OW): C·KH·KW per output
    return out.size * (w.size // w.shape[0])


def _linear_macs(args, out):
    return out.size * args[1].shape[1]  # w: (OUT, IN); out: (..., OUT)


def _heads_attention_macs(args, out):
    N, L, C3 = args[0].shape           # packed q|k|v; q·kᵀ and attn·v: N·heads·L·L·D = N·L²·C each
    return 2 * N * L * L * (C3 // 3)


def _sdpa_macs(args, out):
    q, k = args[0], args[1]            # q: (N, heads, L, D), k: (N, heads, S, D)
    return 2 * q.size * k.shape[-2]


def _layer_norm_macs(args, out):
    return 5 * args[0].size


def _matmul_macs(args, out):
    return out.size * args[0].shape[-1]


def mac_rules():
    """Function class → rule(args, out) giving its MACs from its arrays. Operations not listed
    (activations, softmax, pooling, additions, dropout, reshapes) count 0."""
    from minicct import functional as F
    from minicct.autograd import ops
    return {F.Conv2d: _conv2d_macs, F.Linear: _linear_macs, F.LinearGelu: _linear_macs,
            F._HeadsAttention: _heads_attention_macs,
            F.ScaledDotProductAttention: _sdpa_macs, F.LayerNorm: _layer_norm_macs,
            ops.MatMul: _matmul_macs}


def trace_macs(module, *inputs):
    """MACs of ``module(*inputs)`` as it runs: the forward is run once, in eval mode and without a
    graph, and each operation it applies is counted by ``mac_rules()``. The modes are restored."""
    from minicct.autograd import no_grad
    from minicct.autograd.function import observe
    rules, total = mac_rules(), 0

    def count(cls, args, out):
        nonlocal total
        if cls in rules:
            total += int(rules[cls](args, out))

    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with no_grad(), observe(count):
            module(*inputs)
    finally:
        for m, training in modes:
            object.__setattr__(m, "training", training)   # as Module.train sets it
    return total


def count_macs(model, input_shape):
    """Multiply-accumulates of one forward pass (see the module docstring for what is counted).

    input_shape: (C, H, W) for one image, or (N, C, H, W) for a batch of N (N times one image's:
    the forward is traced on one blank image, of the model's dtype and on its device).
    """
    from minicct.autograd import Tensor
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {input_shape}")
    first = next(iter(model.parameters()), None)
    x = Tensor(np.zeros((1,) + shape[1:], first.dtype if first is not None else np.float32))
    if first is not None:
        x = x.to(first.device)
    return shape[0] * trace_macs(model, x)


def size_table(names=None):
    """Rows (name, params M, MACs G, paper params M, paper MACs G) for Table 11's variants, built
    from the registry (each model is built and run once on one image: about ten seconds for all)."""
    from minicct.models.registry import create_model
    rows = []
    for name in names or PAPER_TABLE_11:
        model = create_model(name, num_classes=PAPER_NUM_CLASSES.get(name, 10))
        c = model.n_input_channels
        params = count_params(model) / 1e6
        macs = count_macs(model, (c, model.img_size, model.img_size)) / 1e9
        paper = PAPER_TABLE_11.get(name, (float("nan"), float("nan")))
        rows.append((name, params, macs) + paper)
    return rows


def format_size_table(rows=None):
    """Table 11 as a Markdown table, generated here next to the paper's numbers."""
    rows = size_table() if rows is None else rows
    lines = ["| model | params (M) | paper | MACs (G) | paper |", "|---|---:|---:|---:|---:|"]
    for name, p, m, pp, pm in rows:
        lines.append(f"| {name} | {p:.2f} | {pp:.2f} | {m:.2f} | {pm:.2f} |")
    return "\n".join(lines)
