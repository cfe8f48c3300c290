"""Named variants, as in the official repository and timm: ``create_model("cct_7_3x1_32")``.

A name says the shape:  cct_7_3x1_32_sine = CCT, 7 layers, 3×3 convs, 1 conv layer, 32 px images,
sinusoidal positional embedding;  vit_7_4_32 = ViT-Lite, 7 layers, 4×4 patches, 32 px.
The sizes and the variants are data (two tables below); every name has a ``_sine`` twin.
The text models (``text_cct_2_k1`` ...) are named in ``minicct.models.text`` and built here too.
"""
from __future__ import annotations

import difflib
import fnmatch

from minicct.models.cct import CompactTransformer
from minicct.models.text import TEXT_VARIANTS, TextCompactTransformer

# layers: (heads, mlp ratio, width) — the paper's sizes.
SIZES = {
    2: (2, 1, 128),
    4: (2, 1, 128),
    6: (4, 2, 256),
    7: (4, 2, 256),
    14: (6, 3, 384),
}

# family: the flags that make ViT-Lite, CVT and CCT.
FAMILIES = {
    "vit": dict(tokenizer="patch", seq_pool=False),
    "cvt": dict(tokenizer="patch", seq_pool=True),
    "cct": dict(tokenizer="conv", seq_pool=True),
}

# (family, layers, tokenizer, image size); tokenizer = patch size for vit/cvt, (kernel, conv layers)
# for cct. Table 11 of the paper, the smaller ones the official code registers, and the big ones.
VARIANT_TABLE = [
    ("vit", 2, 4, 32), ("vit", 4, 4, 32),
    ("vit", 6, 4, 32), ("vit", 6, 8, 32), ("vit", 6, 16, 32),
    ("vit", 7, 4, 32), ("vit", 7, 8, 32), ("vit", 7, 16, 32),
    ("cvt", 2, 4, 32), ("cvt", 4, 4, 32),
    ("cvt", 6, 4, 32), ("cvt", 6, 8, 32), ("cvt", 7, 4, 32), ("cvt", 7, 8, 32),
    ("cct", 2, (3, 2), 32), ("cct", 4, (3, 2), 32), ("cct", 6, (3, 2), 32), ("cct", 7, (3, 2), 32),
    ("cct", 6, (3, 1), 32), ("cct", 7, (3, 1), 32),
    ("cct", 7, (7, 2), 224), ("cct", 14, (7, 2), 224), ("cct", 14, (7, 2), 384),
]


def _variants():
    out = {}
    for family, layers, tok, img in VARIANT_TABLE:
        heads, mlp, width = SIZES[layers]
        spec = dict(FAMILIES[family], num_layers=layers, num_heads=heads, mlp_ratio=mlp,
                    embedding_dim=width, img_size=img)
        if family == "cct":
            kernel, n_conv = tok
            name = f"cct_{layers}_{kernel}x{n_conv}_{img}"
            spec.update(kernel_size=kernel, n_conv_layers=n_conv)
        else:
            name = f"{family}_{layers}_{tok}_{img}"
            spec.update(kernel_size=tok)
        out[name] = dict(spec, positional_embedding="learnable")
        out[name + "_sine"] = dict(spec, positional_embedding="sine")
    return out


VARIANTS = _variants()


def list_models(pattern=None):
    """Sorted variant names, optionally filtered by a shell pattern (``list_models("cct_7*")``)."""
    names = sorted(VARIANTS) + sorted(TEXT_VARIANTS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def model_config(name):
    """The constructor arguments of a variant (a copy); ValueError naming close matches if unknown."""
    if name in TEXT_VARIANTS:
        return dict(TEXT_VARIANTS[name])
    if name not in VARIANTS:
        known = list(VARIANTS) + list(TEXT_VARIANTS)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (list_models() gives all {len(known)} names)")
    return dict(VARIANTS[name])


def create_model(name, num_classes=10, img_size=None, positional_embedding=None, **overrides):
    """Build a named variant.

    num_classes: size of the head (10 for CIFAR-10; the ImageNet checkpoints need 1000, the
    Flowers-102 ones 102). img_size: overrides the variant's image size (the sequence length
    follows). positional_embedding: 'learnable', 'sine' or 'none', overriding the name's.
    overrides: any other ``CompactTransformer`` argument (e.g. ``embedding_dim=16, num_layers=2``
    for a toy model, ``stochastic_depth=0``).
    """
    spec = model_config(name)
    spec["num_classes"] = num_classes
    if name in TEXT_VARIANTS:   # text: overrides must include vocab_size (and may set seq_len)
        if img_size is not None:
            raise ValueError(f"{name} is a text model: it takes word ids, not {img_size}px images")
        if positional_embedding is not None:
            spec["positional_embedding"] = positional_embedding
        return TextCompactTransformer(**dict(spec, **overrides))
    if img_size is not None:
        spec["img_size"] = img_size
    if positional_embedding is not None:
        spec["positional_embedding"] = positional_embedding
    spec.update(overrides)
    return CompactTransformer(**spec)
