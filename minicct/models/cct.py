"""ViT-Lite, CVT and CCT: one model, ``Tokenizer`` → ``TransformerClassifier``, three sets of flags.

    family     tokenizer                                   readout
    ViT-Lite   patches (conv kernel = stride = patch)       class token
    CVT        patches                                     SeqPool
    CCT        convolutions + ReLU + max-pool              SeqPool

The paper's argument is this table read top to bottom: each step removes something that made ViT
need huge datasets. ``CompactTransformer`` takes the flags; ``ViTLite``, ``CVT`` and ``CCT`` set
them. Named variants (``cct_7_3x1_32`` ...) live in ``minicct.models.registry``.
"""
from __future__ import annotations

from minicct import nn
from minicct.models.tokenizer import Tokenizer
from minicct.models.transformer import TransformerClassifier

TOKENIZERS = ("conv", "patch")


class CompactTransformer(nn.Module):
    """Image → logits. x: (N, n_input_channels, img_size, img_size) → (N, num_classes).

    tokenizer: 'conv' (CCT: ``n_conv_layers`` k×k convs with ReLU and max-pool; stride defaults to
    max(1, k//2 − 1) and padding to max(1, k//2), as released) or 'patch' (ViT-Lite/CVT:
    kernel = stride = ``kernel_size``, which must divide ``img_size``).
    seq_pool: SeqPool (True) or a class token (False).
    The other arguments are the classifier's (see ``TransformerClassifier``); the defaults are the
    paper's training settings: dropout 0, attention dropout 0.1, stochastic depth up to 0.1.
    """

    def __init__(self, img_size=32, n_input_channels=3, num_classes=10, embedding_dim=256,
                 num_layers=7, num_heads=4, mlp_ratio=2.0, tokenizer="conv", kernel_size=3,
                 n_conv_layers=1, stride=None, padding=None, pooling_kernel_size=3,
                 pooling_stride=2, pooling_padding=1, in_planes=64, seq_pool=True,
                 positional_embedding="learnable", dropout=0.0, attention_dropout=0.1,
                 stochastic_depth=0.1):
        super().__init__()
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
        if embedding_dim % num_heads:
            raise ValueError(f"the number of heads ({num_heads}) must divide the width "
                             f"embedding_dim ({embedding_dim})")
        self.img_size = int(img_size)
        self.n_input_channels = int(n_input_channels)
        if tokenizer == "conv":
            self.tokenizer = Tokenizer(
                kernel_size,
                stride if stride is not None else max(1, kernel_size // 2 - 1),
                padding if padding is not None else max(1, kernel_size // 2),
                pooling_kernel_size, pooling_stride, pooling_padding, n_conv_layers=n_conv_layers,
                n_input_channels=n_input_channels, n_output_channels=embedding_dim,
                in_planes=in_planes, activation=nn.ReLU, max_pool=True, conv_bias=False)
        else:
            if img_size % kernel_size:
                raise ValueError(f"the patch size ({kernel_size}) must divide the image size "
                                 f"({img_size}): patches would otherwise drop the edge pixels")
            self.tokenizer = Tokenizer(kernel_size, kernel_size, 0, n_conv_layers=1,
                                       n_input_channels=n_input_channels,
                                       n_output_channels=embedding_dim, activation=None,
                                       max_pool=False, conv_bias=True)
        # From the conv/pool arithmetic (raises ValueError if the image is too small).
        sequence_length = self.tokenizer.sequence_length(img_size, img_size)
        self.classifier = TransformerClassifier(
            seq_pool=seq_pool, embedding_dim=embedding_dim, num_layers=num_layers,
            num_heads=num_heads, mlp_ratio=mlp_ratio, num_classes=num_classes, dropout=dropout,
            attention_dropout=attention_dropout, stochastic_depth=stochastic_depth,
            positional_embedding=positional_embedding, sequence_length=sequence_length)

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.n_input_channels:
            raise ValueError(f"expected images (N, {self.n_input_channels}, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[2:]
        if self.classifier.positional_emb is not None and (h, w) != (self.img_size, self.img_size):
            raise ValueError(f"this model was built for {self.img_size}x{self.img_size} images "
                             f"({self.classifier.sequence_length} tokens) and got {h}x{w}: its "
                             f"positional embedding fixes the number of tokens")
        return self.classifier(self.tokenizer(x))

    def extra_repr(self):
        return f"img_size={self.img_size}"


def CCT(**kwargs):
    """Compact Convolutional Transformer: conv tokenizer + SeqPool."""
    return CompactTransformer(tokenizer="conv", seq_pool=True, **kwargs)


def CVT(**kwargs):
    """Compact Vision Transformer: patch tokenizer + SeqPool (``kernel_size`` = patch size)."""
    return CompactTransformer(tokenizer="patch", seq_pool=True, **kwargs)


def ViTLite(**kwargs):
    """ViT-Lite: patch tokenizer + class token (``kernel_size`` = patch size)."""
    return CompactTransformer(tokenizer="patch", seq_pool=False, **kwargs)
