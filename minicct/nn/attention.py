"""Multi-head self-attention, laid out as the released CCT code (and timm) lay it out.

Submodules ``qkv`` (one Linear, no bias, d → 3d) and ``proj`` (Linear d → d, with bias), so a
checkpoint's ``self_attn.qkv.weight`` and ``self_attn.proj.bias`` load by name. The computation is
``minicct.functional.multi_head_attention``:

    x: (N, L, d) → qkv(x): (N, L, 3d) → reshape (N, L, 3, heads, D) → permute (3, N, heads, L, D)
    softmax(q @ kᵀ · D^-½) (attention dropout) @ v → (N, heads, L, D) → (N, L, d) → proj (dropout)

with D = d / heads.
"""
from __future__ import annotations

from minicct import functional as F
from minicct.nn.layers import Dropout, Linear
from minicct.nn.module import Module


class Attention(Module):
    """Self-attention over a sequence. x: (N, L, dim) → (N, L, dim).

    attention_dropout drops attention weights (after the softmax); projection_dropout drops the
    output of ``proj``. Both are off in eval().
    """

    def __init__(self, dim, num_heads=8, attention_dropout=0.1, projection_dropout=0.1):
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"the number of heads ({num_heads}) must divide the width ({dim}): "
                             f"each head gets dim / num_heads channels")
        self.dim, self.num_heads = int(dim), int(num_heads)
        self.qkv = Linear(dim, 3 * dim, bias=False)
        self.attn_drop = Dropout(attention_dropout)
        self.proj = Linear(dim, dim)
        self.proj_drop = Dropout(projection_dropout)

    def forward(self, x, key_mask=None):
        """key_mask: None or booleans (N, L); False tokens (padding) get no attention."""
        return F.multi_head_attention(x, self.qkv.weight, self.proj.weight, self.proj.bias,
                                      self.num_heads, attn_drop=self.attn_drop.p,
                                      proj_drop=self.proj_drop.p, training=self.training,
                                      key_mask=key_mask)

    def extra_repr(self):
        return f"dim={self.dim}, num_heads={self.num_heads}"


MultiHeadSelfAttention = Attention
