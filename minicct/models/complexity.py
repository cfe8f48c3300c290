"""Model size: parameters and multiply-accumulates (MACs), checked against the paper's Table 11.

``count_macs`` works from shape arithmetic (each layer's ``macs(in_shape)``), so it costs nothing
and runs nothing. What it counts, per image:

* Conv2d: O·OH·OW·C·KH·KW;  Linear: rows·in·out (biases are not counted);
* attention: the two products q·kᵀ and attn·v, L²·d each (on top of the qkv and proj Linears);
* SeqPool: its scores (a Linear) and its weighted sum, L·d each;
* LayerNorm: 5 per element — the convention of fvcore, the counter whose numbers Table 11 matches
  (without it CCT-6/3x1 comes out at 1.01 G instead of 1.02 G).

Not counted: activations, softmax, pooling, residual and positional additions, dropout.

    python -c "from minicct.models import format_size_table; print(format_size_table())"
"""
from __future__ import annotations

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


def count_macs(model, input_shape):
    """Multiply-accumulates of one forward pass (see the module docstring for what is counted).

    input_shape: (C, H, W) for one image, or (N, C, H, W) for a batch of N.
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {input_shape}")
    macs, _ = model.macs(shape)
    return int(macs)


def size_table(names=None):
    """Rows (name, params M, MACs G, paper params M, paper MACs G) for Table 11's variants, built
    from the registry (the models are built, which takes a few seconds for all of them)."""
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
