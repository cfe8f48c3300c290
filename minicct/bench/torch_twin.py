"""The PyTorch twin: every model the registry builds (ViT-Lite, CVT, CCT; learnable, sine or no
positional embedding), written again in plain ``torch.nn`` with the official module names.

    from minicct.bench import torch_twin                # imports torch: only where torch is wanted
    twin = torch_twin.from_minicct(model)               # same sizes, same weights, same function
    twin.double().eval(); twin(torch.from_numpy(x))     # x: (N, C, H, W) -> logits (N, num_classes)

Every size, flag and dropout rate is read from the minicct model's own modules, and the weights are
copied by name with ``load_state_dict(strict=True)``, so a name or a shape that differs fails there.
The benchmarks (``minicct.bench.step``, ``minicct.bench.side_by_side``) and the cross-check tests
(tests/test_models_torch.py) all use this one module. minicct itself never imports it: PyTorch is
never a dependency, and the benchmark modules import this file only after finding torch importable.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as TF


class DropPath(nn.Module):
    """Stochastic depth (timm's drop_path): zero a sample's branch with probability p, scale the rest
    by 1 / (1 - p). x: (N, ...) -> same shape; identity in eval()."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        mask = (torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) < keep).to(x.dtype)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention. x: (N, L, d) -> (N, L, d)."""

    def __init__(self, dim, num_heads, attention_dropout=0.0, projection_dropout=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_drop = nn.Dropout(attention_dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(projection_dropout)

    def forward(self, x):
        N, L, d = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(N, L, 3, h, d // h).permute(2, 0, 3, 1, 4)    # 3 x (N, h, L, d/h)
        attn = (q @ k.transpose(-2, -1) * (d // h) ** -0.5).softmax(dim=-1)       # (N, h, L, L)
        x = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(N, L, d)
        return self.proj_drop(self.proj(x))


class TransformerEncoderLayer(nn.Module):
    """The released layer order (see minicct.models.transformer): norm1 normalises the residual
    stream after the attention, and the MLP adds to the normalised stream. x: (N, L, d) -> (N, L, d)."""

    def __init__(self, d, heads, ff, dropout=0.0, attention_dropout=0.0, drop_path=0.0):
        super().__init__()
        self.pre_norm = nn.LayerNorm(d)
        self.self_attn = Attention(d, heads, attention_dropout, dropout)
        self.linear1 = nn.Linear(d, ff)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d)
        self.linear2 = nn.Linear(ff, d)
        self.dropout2 = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):
        x = self.norm1(x + self.drop_path(self.self_attn(self.pre_norm(x))))
        y = self.linear2(self.dropout1(TF.gelu(self.linear1(x))))
        return x + self.drop_path(self.dropout2(y))


class Tokenizer(nn.Module):
    """Image -> tokens. x: (N, C, H, W) -> (N, h*w, d). ``blocks``: one (conv, relu, pool) triple
    per conv layer, relu and pool False for the patch tokenizer (ViT-Lite, CVT)."""

    def __init__(self, blocks):
        super().__init__()
        self.conv_layers = nn.Sequential(*[nn.Sequential(
            nn.Conv2d(c["in"], c["out"], c["kernel"], c["stride"], c["padding"], bias=c["bias"]),
            nn.ReLU() if relu else nn.Identity(),
            nn.MaxPool2d(pool["kernel"], pool["stride"], pool["padding"]) if pool else nn.Identity())
            for c, relu, pool in blocks])

    def forward(self, x):
        return self.conv_layers(x).flatten(2).transpose(1, 2)


class TransformerClassifier(nn.Module):
    """Tokens -> logits. x: (N, L, d) -> (N, num_classes). SeqPool (``attention_pool``) or a class
    token (``class_emb``); positional embedding 'learnable' (a Parameter), 'sine' (a buffer, as in
    minicct, so it is in the state_dict and never trained) or 'none'."""

    def __init__(self, d, num_classes, seq_pool, positional_embedding, length, layers, dropout=0.0):
        super().__init__()
        self.seq_pool = seq_pool
        if seq_pool:
            self.attention_pool = nn.Linear(d, 1)
        else:
            self.class_emb = nn.Parameter(torch.zeros(1, 1, d))
            length += 1
        if positional_embedding == "learnable":
            self.positional_emb = nn.Parameter(torch.zeros(1, length, d))
        elif positional_embedding == "sine":
            self.register_buffer("positional_emb", torch.zeros(1, length, d))
        else:
            self.positional_emb = None
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, num_classes)

    def forward(self, x):
        if not self.seq_pool:
            x = torch.cat([self.class_emb.expand(x.shape[0], -1, -1), x], dim=1)
        if self.positional_emb is not None:
            x = x + self.positional_emb
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        if self.seq_pool:
            w = self.attention_pool(x).softmax(dim=1)                 # (N, L, 1)
            x = (w.transpose(1, 2) @ x).squeeze(1)                     # (N, d)
        else:
            x = x[:, 0]
        return self.fc(x)


class CompactTransformer(nn.Module):
    """Image -> logits: Tokenizer -> TransformerClassifier, as in minicct.models.cct."""

    def __init__(self, tokenizer, classifier):
        super().__init__()
        self.tokenizer = tokenizer
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self.tokenizer(x))


# ---- from a minicct model ---------------------------------------------------------------------------
def _tokenizer_blocks(tok):
    """The (conv, relu, pool) description of a minicct Tokenizer, read from its layers."""
    from minicct import nn as mnn
    blocks = []
    for conv, act, pool in tok.conv_layers:
        c = dict(**{"in": conv.in_channels, "out": conv.out_channels}, kernel=conv.kernel_size,
                 stride=conv.stride, padding=conv.padding, bias=conv.bias is not None)
        p = (dict(kernel=pool.kernel_size, stride=pool.stride, padding=pool.padding)
             if isinstance(pool, mnn.MaxPool2d) else None)
        blocks.append((c, isinstance(act, mnn.ReLU), p))
    return blocks


def from_minicct(model, load_weights=True):
    """A torch.nn.Module computing what the minicct ``CompactTransformer`` ``model`` computes, in the
    model's dtype and mode (train or eval). load_weights: copy the model's state_dict (strict)."""
    c = model.classifier
    layers = []
    for b in c.blocks:
        layers.append(TransformerEncoderLayer(
            b.linear1.in_features, b.self_attn.num_heads, b.linear1.out_features, dropout=b.dropout1.p,
            attention_dropout=b.self_attn.attn_drop.p, drop_path=getattr(b.drop_path, "p", 0.0)))
    twin = CompactTransformer(
        Tokenizer(_tokenizer_blocks(model.tokenizer)),
        TransformerClassifier(c.embedding_dim, c.fc.out_features, c.seq_pool, c.positional_embedding,
                              c.sequence_length, layers, dropout=c.dropout.p))
    dtype = next(iter(model.state_dict().values())).dtype
    twin.to(getattr(torch, np.dtype(dtype).name)).train(model.training)
    if load_weights:
        load_minicct_weights(twin, model)
    return twin


def load_minicct_weights(twin, model):
    """Copy a minicct model's state_dict into its twin, by name; every name and shape must match."""
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.state_dict().items()},
                         strict=True)
    return twin


def create(name, **kwargs):
    """(minicct model, its twin): ``minicct.models.create_model(name, **kwargs)`` and the same network
    in PyTorch with the same weights."""
    from minicct import models
    model = models.create_model(name, **kwargs)
    return model, from_minicct(model)
