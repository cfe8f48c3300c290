"""The transformer half of ViT-Lite, CVT and CCT: encoder layers, SeqPool, the classifier.

Tokens (N, L, d) → [class token] → + positional embedding → encoder layers → LayerNorm →
SeqPool or class token → Linear head → logits (N, num_classes).
"""
from __future__ import annotations

import numpy as np

from minicct import backend, functional as F, nn
from minicct.autograd import Tensor, concatenate
from minicct.nn import init

POSITIONAL_EMBEDDINGS = ("learnable", "sine", "none")


class TransformerEncoderLayer(nn.Module):
    """One encoder layer, in the order of the released code. x: (N, L, d) → (N, L, d).

        x = x + drop_path(self_attn(pre_norm(x)))
        x = norm1(x)
        x = x + drop_path(dropout2(linear2(dropout1(gelu(linear1(x))))))

    This is *not* the textbook pre-norm layer (``x + mlp(norm(x))``): after the attention
    residual, ``norm1`` normalises the residual stream itself, and the MLP branch then adds to the
    normalised stream. So each layer's output is (normalised stream) + MLP, and the final LayerNorm
    of the classifier sees that. The released CCT weights were trained this way, so the order is
    kept exactly; a "cleaned-up" pre-norm layer would not reproduce them.

    Each residual ``x + drop_path(...)`` runs as one Function (``F.add_drop_path``), and so does
    ``gelu(linear1(x))`` (``F.linear_gelu``): fewer graph nodes, the same values.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, attention_dropout=0.1,
                 drop_path_rate=0.1):
        super().__init__()
        self.pre_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.Attention(d_model, num_heads=nhead, attention_dropout=attention_dropout,
                                      projection_dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout2 = nn.Dropout(dropout)
        # The first layer's rate is 0: it gets an Identity (no parameters either way).
        self.drop_path = nn.DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x, key_mask=None):
        """key_mask: None or booleans (N, L), False = padding (never attended to)."""
        x = self.residual(x, self.self_attn(self.pre_norm(x), key_mask=key_mask))
        x = self.norm1(x)
        h = F.linear_gelu(x, self.linear1.weight, self.linear1.bias)     # gelu(linear1(x))
        return self.residual(x, self.dropout2(self.linear2(self.dropout1(h))))

    def residual(self, x, branch):
        """x + drop_path(branch), as one Function (``F.add_drop_path``)."""
        p = self.drop_path.p if isinstance(self.drop_path, nn.DropPath) else 0.0
        return F.add_drop_path(x, branch, p, self.drop_path.training)


class SeqPool(nn.Linear):
    """Sequence pooling: a learned, input-dependent weighted average of the tokens.

    x: (N, L, d) → (N, d):  w = softmax over L of (x @ weightᵀ + bias), shape (N, L, 1);
    out = wᵀ @ x. It is a Linear(d, 1) scoring each token (so its weights load as the official
    ``attention_pool.weight`` (1, d) and ``attention_pool.bias`` (1,)), followed by the pooling.
    It replaces the class token: every token contributes to the output, weighted by importance.
    The bias adds the same number to every score, which the softmax ignores: its gradient is always
    0 (up to rounding). It is kept because the released weights have it.
    With a mask (N, L) of booleans (False = padding), padded tokens score -inf: the softmax runs
    over the real tokens alone and padding gets weight exactly 0.
    """

    def __init__(self, embedding_dim):
        super().__init__(embedding_dim, 1)

    def forward(self, x, mask=None):
        n, length, d = x.shape
        scores = F.linear(x, self.weight, self.bias)                # (N, L, 1)
        if mask is not None:
            xp = backend.get_array_module(x.data)
            scores = scores + xp.where(xp.asarray(mask), 0.0, -xp.inf).astype(x.dtype)[:, :, None]
        w = F.softmax(scores, dim=1)                                  # (N, L, 1)
        return (w.transpose(0, 2, 1) @ x).reshape(n, d)               # (N, 1, L) @ (N, L, d)


def sinusoidal_embedding(length, dim):
    """The fixed table of "Attention is all you need": (1, length, dim), float32.

    pe[p, i] = sin(p / 10000^(2⌊i/2⌋/dim)) for even i, cos(...) for odd i.
    """
    p = np.arange(length, dtype=np.float64)[:, None]
    i = np.arange(dim)[None, :]
    angle = p / 10000 ** (2 * (i // 2) / dim)
    pe = np.where(i % 2 == 0, np.sin(angle), np.cos(angle))
    return pe[None].astype(np.float32)


class TransformerClassifier(nn.Module):
    """Tokens → logits. x: (N, L, d) → (N, num_classes).

    seq_pool: True → SeqPool (``attention_pool``); False → a class token (``class_emb``, zeros)
    prepended to the sequence and read out at the end (ViT).
    positional_embedding: 'learnable' (a Parameter (1, L', d), truncated normal std 0.2),
    'sine' (the fixed table, a buffer: saved in state_dict, never trained) or 'none';
    L' = sequence_length (+1 with a class token).
    """

    def __init__(self, seq_pool=True, embedding_dim=768, num_layers=12, num_heads=12, mlp_ratio=4.0,
                 num_classes=1000, dropout=0.1, attention_dropout=0.1, stochastic_depth=0.1,
                 positional_embedding="learnable", sequence_length=None):
        super().__init__()
        if positional_embedding not in POSITIONAL_EMBEDDINGS:
            raise ValueError(f"positional_embedding must be one of {POSITIONAL_EMBEDDINGS}, "
                             f"got {positional_embedding!r}")
        if positional_embedding != "none" and sequence_length is None:
            raise ValueError(f"a {positional_embedding!r} positional embedding needs the sequence length")
        self.embedding_dim = int(embedding_dim)
        self.seq_pool = bool(seq_pool)
        self.sequence_length = sequence_length
        self.num_tokens = 0 if seq_pool else 1   # tokens in front of the image tokens
        self.positional_embedding = positional_embedding

        if seq_pool:
            self.attention_pool = SeqPool(embedding_dim)
        else:
            self.class_emb = nn.Parameter(np.zeros((1, 1, embedding_dim), np.float32))
        length = None if sequence_length is None else sequence_length + self.num_tokens
        if positional_embedding == "learnable":
            self.positional_emb = nn.Parameter(np.zeros((1, length, embedding_dim), np.float32))
            init.trunc_normal_(self.positional_emb, std=0.2)
        elif positional_embedding == "sine":
            self.register_buffer("positional_emb", Tensor(sinusoidal_embedding(length, embedding_dim)))
        else:
            self.positional_emb = None

        self.dropout = nn.Dropout(dropout)
        rates = np.linspace(0.0, stochastic_depth, num_layers)  # deeper layers are dropped more often
        self.blocks = nn.ModuleList([
            TransformerEncoderLayer(embedding_dim, num_heads, int(embedding_dim * mlp_ratio), dropout,
                                    attention_dropout, float(r))
            for r in rates])
        self.norm = nn.LayerNorm(embedding_dim)
        self.fc = nn.Linear(embedding_dim, num_classes)
        self.apply(_init_weights)

    def forward(self, x, mask=None):
        """x: (N, L, d); mask: None or booleans (N, L), False = padding (text). With a mask, L may
        be shorter than the length the model was built for: the positional embedding's first L
        rows are used (a batch of short sentences is padded only to its longest)."""
        n, length, d = x.shape
        if mask is not None:
            xp = backend.get_array_module(x.data)
            mask = xp.asarray(mask, dtype=bool)
            if mask.shape != (n, length):
                raise ValueError(f"the mask must be (N, L) = {(n, length)}, got {tuple(mask.shape)}")
        if not self.seq_pool:
            # One copy of the class token per image; the broadcast add sums their gradients back.
            xp = backend.get_array_module(x.data)
            cls = self.class_emb + xp.zeros((n, 1, d), dtype=self.class_emb.dtype)
            x = concatenate([cls, x], axis=1)                      # (N, 1 + L, d)
            if mask is not None:                                    # the class token is real
                mask = xp.concatenate([xp.ones((n, 1), dtype=bool), mask], axis=1)
        pe = self.positional_emb
        if pe is not None and mask is not None and x.shape[1] < pe.shape[1]:
            pe = pe[:, :x.shape[1]]
        if pe is not None:
            if x.shape[1] != pe.shape[1]:
                raise ValueError(
                    f"{x.shape[1] - self.num_tokens} tokens, but the positional embedding was built "
                    f"for {self.sequence_length}: the image size differs from the one the model was "
                    f"made for (create it with that img_size, or resize a learnable embedding)")
            x = x + pe
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, key_mask=mask)
        x = self.norm(x)
        x = self.attention_pool(x, mask=mask) if self.seq_pool else x[:, 0]   # (N, d)
        return self.fc(x)


def _init_weights(m):
    """The released code's init: Linear weights truncated normal (std 0.02) with zero bias,
    LayerNorm weight 1 and bias 0."""
    if isinstance(m, nn.Linear):
        init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        init.ones_(m.weight)
        init.zeros_(m.bias)
