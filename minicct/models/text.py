"""Compact Transformers for text: word embeddings → a text tokenizer → the same classifier.

    ids (N, L) int, 0 = <pad>
      → word embeddings (N, L, 300), zero at padding
      → as a one-channel image (N, 1, L, 300): one conv with a (k, 300) kernel, stride (s, 1),
        padding (p, 0), no bias → (N, d, L', 1)         [each output mixes k neighbouring words]
      → CCT: ReLU and max-pool (2, 1) stride (2, 1) padding (1, 0) → (N, d, L'', 1)
      → tokens (N, L'', d) → TransformerClassifier with the propagated mask → logits

    family     tokenizer                                        readout
    ViT-Lite   patches: kernel = stride = p words, padding 0    class token
    CVT        patches                                          SeqPool
    CCT        conv (k words, stride max(1, k//2 − 1), padding max(1, k//2)) + ReLU + max-pool   SeqPool

These are the official ``src/text`` models' settings. Sentences have different lengths, so a batch
is padded, and everything downstream must ignore the padding:

* the **mask** follows the tokens: an output of the conv (or pool) is real when its window touches
  at least one real input (``propagate_mask``); the rest is padding;
* attention gives padded **keys** weight 0 and SeqPool gives padded tokens weight 0;
* the padded words' embeddings are zeroed, so a conv window at the end of a sentence sees zeros
  whether the batch is padded a little or a lot (as it sees zeros past the edge of the sequence).

So a sentence gets the same logits however much it is padded (``tests/test_models_text.py``).
Named variants: ``text_cct_2_k1`` = text CCT, 2 layers, kernel 1; ``text_vit_4_p2`` = text
ViT-Lite, 4 layers, patches of 2 words (list them with ``list_text_models()``).
"""
from __future__ import annotations

import fnmatch

import numpy as np

from minicct import backend, functional as F, nn
from minicct.autograd import Tensor, concatenate
from minicct.models.transformer import TransformerClassifier
from minicct import random as minicct_random
from minicct.nn import init

PAD = 0   # the id of <pad> in minicct.data.text's vocabularies


def propagate_mask(mask, kernel, stride, padding):
    """Mask through a 1-D window op. mask: (N, L) bool → (N, L_out) bool, L_out = (L + 2p − k) // s + 1.

    Output t covers inputs t·s − p … t·s − p + k − 1 (the ones outside 0 … L−1 are the op's own
    zero padding); it is real when at least one covered input is real. For the conv, an output
    that covers only padding sees only zeros; for the pool, a window with a real input takes its
    maximum from real values (after a ReLU every value is ≥ 0, so the padding's zeros never win).
    """
    xp = backend.get_array_module(mask)
    n, length = mask.shape
    out_len = (length + 2 * padding - kernel) // stride + 1
    padded = xp.zeros((n, length + 2 * padding), dtype=bool)
    padded[:, padding:padding + length] = mask
    out = xp.zeros((n, out_len), dtype=bool)
    for j in range(kernel):   # k is 1 to 4: one strided slice per kernel tap
        out |= padded[:, j:j + stride * (out_len - 1) + 1:stride]
    return out


class WordEmbedding(nn.Module):
    """ids (N, L) → vectors (N, L, dim): row ids of ``weight`` (vocab_size, dim).

    Initialised N(0, 1) as PyTorch's ``nn.Embedding``; pass ``pretrained`` (vocab_size, dim), e.g.
    from ``minicct.data.text.load_glove``, and ``freeze=True`` to keep it fixed. The gradient of a
    lookup is a scatter-add into the rows that were used (``Tensor.__getitem__``).
    """

    def __init__(self, vocab_size, dim=300, pretrained=None, freeze=False):
        super().__init__()
        if pretrained is not None:
            pretrained = np.asarray(pretrained, dtype=np.float32)
            if pretrained.shape != (vocab_size, dim):
                raise ValueError(f"pretrained embeddings must be (vocab_size, dim) = {(vocab_size, dim)}, "
                                 f"got {pretrained.shape}")
            table = pretrained.copy()
        else:
            table = minicct_random.init_generator().standard_normal((vocab_size, dim)).astype(np.float32)
        self.weight = nn.Parameter(table)
        self.weight.requires_grad = not freeze
        self.vocab_size, self.dim = int(vocab_size), int(dim)

    def forward(self, ids):
        return self.weight[ids]

    def extra_repr(self):
        return f"{self.vocab_size}, {self.dim}, frozen={not self.weight.requires_grad}"


class TextTokenizer(nn.Module):
    """Word vectors → tokens, with the mask. x: (N, L, word_dim), mask (N, L) → (N, L'', d), (N, L'').

    One Conv2d(1, d, (kernel, word_dim)) with no bias (``conv.weight`` (d, 1, k, word_dim), as the
    official checkpoints), then for CCT ReLU and a max-pool along the sequence. Its parameters:
    d · k · word_dim.

    The kernel spans the whole word vector, so the conv is a matrix product over windows of k
    words: window t = the vectors of words t·s − p … t·s − p + k − 1 side by side (k·word_dim
    numbers, zeros past either end), times the weight seen as (d, k·word_dim). That is exactly the
    Conv2d (``tests/test_models_text.py`` checks it against ``F.conv2d``), in k slices and one
    product; the general conv kernel would loop over all k·300 kernel taps.
    """

    def __init__(self, word_dim, dim, kernel_size, stride, padding, max_pool=True,
                 pooling_kernel_size=2, pooling_stride=2, pooling_padding=1):
        super().__init__()
        self.word_dim = int(word_dim)
        self.conv = nn.Conv2d(1, dim, (kernel_size, word_dim), stride=(stride, 1), padding=(padding, 0),
                              bias=False)
        init.kaiming_normal_(self.conv.weight)
        self.windows = [(kernel_size, stride, padding)]
        self.pool = None
        if max_pool:
            self.pool = nn.MaxPool2d((pooling_kernel_size, 1), (pooling_stride, 1), (pooling_padding, 0))
            self.windows.append((pooling_kernel_size, pooling_stride, pooling_padding))

    def tail(self):
        """Pad positions to append to a sentence so that every window touching its last word exists.

        A window (k, s, p) sees its input's last element in outputs up to ⌊(L − 1 + p) / s⌋, but
        produces only ⌊(L + 2p − k) / s⌋ + 1 outputs: with k − 1 > p (kernel 4, padding 2) the last
        one is cut off, although a longer padded batch would have it. Appending k − 1 − p padding
        (times the strides before the window) makes the number of real tokens the same however
        much the sentence is padded: for the official settings, 1 position for kernel 4, and up to
        p − 1 for patches of p (so no word is cut off).
        """
        extra, scale = 0, 1
        for k, s, p in self.windows:
            extra += max(0, k - 1 - p) * scale
            scale *= s
        return extra

    def sequence_length(self, length):
        """Tokens for ``length`` words, from the conv and pool arithmetic."""
        for k, s, p in self.windows:
            new = (length + 2 * p - k) // s + 1
            if new < 1:
                raise ValueError(f"{length} words are too few for a window of {k} with padding {p}")
            length = new
        return length

    def mask(self, mask):
        """(N, L) bool → (N, L'') bool: which tokens are real (see ``propagate_mask``)."""
        for k, s, p in self.windows:
            mask = propagate_mask(mask, k, s, p)
        return mask

    def forward(self, x, mask=None):
        n, length, dim = x.shape
        k, s, p = self.windows[0]
        out_len = (length + 2 * p - k) // s + 1
        if p:
            xp = backend.get_array_module(x.data)
            zeros = Tensor._wrap(xp.zeros((n, p, dim), dtype=x.dtype))
            x = concatenate([zeros, x, zeros], axis=1)                     # (N, L + 2p, word_dim)
        windows = concatenate([x[:, j:j + s * (out_len - 1) + 1:s] for j in range(k)], axis=2)
        d = self.conv.out_channels
        y = F.linear(windows, self.conv.weight.reshape(d, k * dim))        # (N, L', d)
        if self.pool is not None:   # pool along the sequence, then ReLU (they commute)
            y = self.pool(y.transpose(0, 2, 1).reshape(n, d, out_len, 1))   # (N, d, L'', 1)
            y = F.relu(y).reshape(n, d, y.shape[2]).transpose(0, 2, 1)      # (N, L'', d)
        return y.contiguous(), (None if mask is None else self.mask(mask))


class TextCompactTransformer(nn.Module):
    """ids → logits. ids: (N, L) integers, L ≤ seq_len, 0 = <pad> → (N, num_classes).

    tokenizer: 'conv' (CCT) or 'patch' (ViT-Lite/CVT; kernel_size = patch size in words).
    seq_len: the longest input (official default 64); the positional embedding covers its tokens.
    mask: by default ``ids != pad_id``; pass one (N, L) to override. Each sentence needs a word.
    embeddings / freeze_embeddings: a (vocab_size, word_embedding_dim) table (e.g. GloVe) and
    whether to keep it fixed. The defaults are the official text models' (sine embedding,
    dropout 0, attention dropout 0.1, stochastic depth 0.1).
    """

    def __init__(self, vocab_size, num_classes=4, seq_len=64, word_embedding_dim=300, embedding_dim=128,
                 num_layers=2, num_heads=2, mlp_ratio=1.0, tokenizer="conv", kernel_size=4, stride=None,
                 padding=None, seq_pool=True, positional_embedding="sine", dropout=0.0,
                 attention_dropout=0.1, stochastic_depth=0.1, embeddings=None, freeze_embeddings=False,
                 pad_id=PAD):
        super().__init__()
        if tokenizer not in ("conv", "patch"):
            raise ValueError(f"tokenizer must be 'conv' or 'patch', got {tokenizer!r}")
        self.seq_len, self.pad_id = int(seq_len), int(pad_id)
        self.embedder = WordEmbedding(vocab_size, word_embedding_dim, embeddings, freeze_embeddings)
        if tokenizer == "conv":
            self.tokenizer = TextTokenizer(
                word_embedding_dim, embedding_dim, kernel_size,
                stride if stride is not None else max(1, kernel_size // 2 - 1),
                padding if padding is not None else max(1, kernel_size // 2), max_pool=True)
        else:
            self.tokenizer = TextTokenizer(word_embedding_dim, embedding_dim, kernel_size, kernel_size, 0,
                                           max_pool=False)
        self.classifier = TransformerClassifier(
            seq_pool=seq_pool, embedding_dim=embedding_dim, num_layers=num_layers, num_heads=num_heads,
            mlp_ratio=mlp_ratio, num_classes=num_classes, dropout=dropout,
            attention_dropout=attention_dropout, stochastic_depth=stochastic_depth,
            positional_embedding=positional_embedding,
            sequence_length=self.tokenizer.sequence_length(self.seq_len + self.tokenizer.tail()))

    def forward(self, ids, mask=None):
        ids = ids.data if isinstance(ids, Tensor) else ids
        xp = backend.get_array_module(ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"expected word ids (N, L) of integers, got {tuple(ids.shape)} {ids.dtype}")
        n, length = ids.shape
        if length > self.seq_len:
            raise ValueError(f"{length} words, but this model takes at most seq_len={self.seq_len}: "
                             f"truncate the sentences or build the model with a larger seq_len")
        mask = (ids != self.pad_id) if mask is None else xp.asarray(mask, dtype=bool)
        if mask.shape != ids.shape:
            raise ValueError(f"the mask must be the shape of the ids {tuple(ids.shape)}, got {tuple(mask.shape)}")
        if not bool(mask.any(axis=1).all()):
            raise ValueError("a sentence in the batch has no words (all padding): give it at least one "
                             "token, e.g. <unk>")
        tail = self.tokenizer.tail()
        if tail:   # so that no window touching a word is cut off (TextTokenizer.tail)
            ids = xp.concatenate([ids, xp.full((n, tail), self.pad_id, ids.dtype)], axis=1)
            mask = xp.concatenate([mask, xp.zeros((n, tail), bool)], axis=1)
        x = self.embedder(ids) * mask[:, :, None].astype(self.embedder.weight.dtype)   # zero at padding
        tokens, token_mask = self.tokenizer(x, mask)
        return self.classifier(tokens, mask=token_mask)

    def extra_repr(self):
        return f"seq_len={self.seq_len}"


# ---- named variants ---------------------------------------------------------------------------------
TEXT_FAMILIES = {
    "vit": dict(tokenizer="patch", seq_pool=False),
    "cvt": dict(tokenizer="patch", seq_pool=True),
    "cct": dict(tokenizer="conv", seq_pool=True),
}
TEXT_KERNELS = (1, 2, 4)   # the sizes the official NLP README reports best
# layers: (heads, mlp ratio, width), as the official text_*_2/4/6 (the image models' sizes).
TEXT_SIZES = {2: (2, 1, 128), 4: (2, 1, 128), 6: (4, 2, 256)}


def _text_variants():
    out = {}
    for family, flags in TEXT_FAMILIES.items():
        tag = "k" if family == "cct" else "p"   # conv kernel, or patch size
        for layers, (heads, mlp, width) in TEXT_SIZES.items():
            for k in TEXT_KERNELS:
                out[f"text_{family}_{layers}_{tag}{k}"] = dict(
                    flags, num_layers=layers, num_heads=heads, mlp_ratio=mlp, embedding_dim=width,
                    kernel_size=k)
    return out


TEXT_VARIANTS = _text_variants()


def list_text_models(pattern=None):
    """Sorted text variant names, optionally filtered by a shell pattern ("text_cct_*")."""
    return [n for n in sorted(TEXT_VARIANTS) if pattern is None or fnmatch.fnmatch(n, pattern)]


def count_parameters(model, embedding=False):
    """Parameters of ``model``; without the word embedding unless ``embedding`` (as the official
    NLP README counts them)."""
    return sum(int(np.prod(p.shape)) for name, p in model.named_parameters()
               if embedding or not name.startswith("embedder."))
