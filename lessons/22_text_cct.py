"""Lesson 22 — CCT for text, and masking: padding must change nothing.

What you will learn
    * why a batch of sentences needs a mask: sentences differ in length, a batch is a rectangle,
      so the short ones are padded, and every step that mixes tokens (softmax over keys, SeqPool)
      would otherwise give the padding weight;
    * the masked softmax: a score of -inf for every padded position, so its weight is exactly 0;
      masked attention (padded *keys* get no weight) and masked SeqPool, in plain NumPy;
    * how the mask follows the tokens through the text tokenizer's conv and max-pool: a token is
      real when its window touches at least one real word;
    * text CCT in minicct (word embeddings → a (k, 300) conv over the sentence → ReLU → max-pool →
      the transformer), and that the same sentence padded to 32 or to 64 words gets the same logits.

What it builds on
    Lesson 10 (attention), lesson 13 (SeqPool), lesson 14 (the conv tokenizer).

Run it:  python lessons/22_text_cct.py
"""
import numpy as np

import minicct
from minicct import Tensor, models
from minicct import functional as F
from minicct.data.text import build_vocab, encode_batch, tokenize
from minicct.models.text import propagate_mask
from minicct.models.transformer import SeqPool

rng = np.random.default_rng(0)


def softmax(s, axis=-1):
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------------------------------
print("1. A batch of sentences is a padded rectangle")
sentences = ["the striker scored a late goal", "not a goal", "lasers cool atoms to near absolute zero"]
words = [tokenize(s) for s in sentences]
vocab = build_vocab(words)
ids = encode_batch(words, vocab, seq_len=8)             # (3, 8), 0 = <pad>
mask = ids != 0                                          # True = a real word
for row, m in zip(ids, mask):
    print(f"   {row}  real: {m.astype(int)}")
assert mask.sum(1).tolist() == [len(w) for w in words]

# --------------------------------------------------------------------------------------------------
print("\n2. The masked softmax, and masked SeqPool")
# SeqPool (lesson 13) scores each token and averages with softmax weights over the sequence. Over
# a padded row the padding gets weight too, and how much depends on how long the batch happens to
# be. The fix: score -inf at padding, so exp(-inf) = 0 and the real tokens share all the weight.
def masked_softmax(scores, mask, axis=-1):
    return softmax(np.where(mask, scores, -np.inf), axis=axis)


def masked_seq_pool(x, w, b, mask):
    """x: (N, L, D), mask: (N, L) -> (N, D): weights over the real tokens only."""
    a = masked_softmax((x @ w.T + b)[..., 0], mask)    # (N, L)
    return np.einsum("nl,nld->nd", a, x), a


D = 6
w, b = rng.standard_normal((1, D)), rng.standard_normal(1)
x_short = rng.standard_normal((1, 4, D))               # 4 real tokens
pads = [np.concatenate([x_short, rng.standard_normal((1, extra, D))], axis=1) for extra in (0, 3, 9)]
plain = [softmax((p @ w.T + b)[..., 0]) @ p[0] for p in pads]
masked = [masked_seq_pool(p, w, b, np.arange(p.shape[1])[None] < 4)[0] for p in pads]
print(f"   plain SeqPool, padded to 4 / 7 / 13: first feature {[round(float(v[0, 0]), 3) for v in plain]}")
print(f"   masked SeqPool, the same:            first feature {[round(float(v[0, 0]), 3) for v in masked]}")
assert not np.allclose(plain[0], plain[2])
assert np.allclose(masked[0], masked[1]) and np.allclose(masked[0], masked[2])
a = masked_seq_pool(pads[2], w, b, np.arange(13)[None] < 4)[1]
assert np.all(a[0, 4:] == 0.0) and np.isclose(a.sum(), 1.0)
print("   with the mask the padding weighs exactly 0, however much there is")

# --------------------------------------------------------------------------------------------------
print("\n3. Masked attention: padded keys get no weight")
# In attention every query takes a softmax over the keys; the same -inf goes on the padded keys.
# The padded *queries* still produce outputs, but nothing reads them: their keys are masked in the
# next layer, and SeqPool ignores them.
def masked_attention(q, k, v, key_mask):
    """q: (N, L, d), k, v: (N, S, d), key_mask: (N, S) -> (N, L, d)."""
    s = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    return masked_softmax(s, key_mask[:, None, :]) @ v


q, k, v = (rng.standard_normal((2, 7, 4)) for _ in range(3))
key_mask = np.arange(7)[None] < np.array([[7], [3]])     # the second sentence has 3 real tokens
y = masked_attention(q, k, v, key_mask)
k2, v2 = k.copy(), v.copy()
k2[1, 3:], v2[1, 3:] = 50.0, -50.0                        # garbage under the padding
assert np.allclose(y, masked_attention(q, k2, v2, key_mask))
print("   changing what sits under the padding changes no output")
ours = F.scaled_dot_product_attention(*(Tensor(t[:, None], dtype=np.float64) for t in (q, k, v)),
                                      key_mask=key_mask).numpy()[:, 0]
assert np.allclose(ours, y)
print("   minicct's F.scaled_dot_product_attention(..., key_mask=) agrees")

# --------------------------------------------------------------------------------------------------
print("\n4. The mask through the conv and the max-pool")
# The text tokenizer slides a window over the words: a conv of k words (padding p), then a max-pool
# of 2 (stride 2, padding 1). An output is real when its window touches a real input. Outputs
# that touch only padding see only zeros (the padded words' embeddings are zeroed), so they are
# the same zeros the padding of a longer batch would give: they are simply masked out.
def window_mask(m, k, s, p):
    L = len(m)
    out_len = (L + 2 * p - k) // s + 1
    return np.array([any(0 <= t * s - p + j < L and m[t * s - p + j] for j in range(k))
                     for t in range(out_len)])


m = np.arange(10) < 4                                      # 4 words, 6 pads
conv_mask = window_mask(m, 4, 1, 2)                        # kernel 4, padding 2
pool_mask = window_mask(conv_mask, 2, 2, 1)
print(f"   words {m.astype(int)}\n   conv  {conv_mask.astype(int)}\n   pool  {pool_mask.astype(int)}")
ours = propagate_mask(propagate_mask(m[None], 4, 1, 2), 2, 2, 1)[0]
assert np.array_equal(ours, pool_mask)
print("   minicct.models.text.propagate_mask agrees")

# --------------------------------------------------------------------------------------------------
print("\n5. Text CCT in minicct: padding changes nothing")
minicct.manual_seed(0)
model = models.create_model("text_cct_2_k2", num_classes=4, vocab_size=len(vocab), seq_len=64).eval()
print(f"   text_cct_2_k2: {sum(p.size for n, p in model.named_parameters() if not n.startswith('embedder')):,} "
      f"parameters without the word embeddings (the official README: 0.276M)")
ids32, ids64 = encode_batch(words, vocab, 32), encode_batch(words, vocab, 64)
z32, z64 = model(ids32).numpy(), model(ids64).numpy()
alone = model(ids64[1:2, :3]).numpy()
print(f"   logits of sentence 2 padded to 32: {np.round(z32[1], 4)}\n"
      f"                          to 64: {np.round(z64[1], 4)}\n"
      f"                     not at all: {np.round(alone[0], 4)}")
assert np.allclose(z32, z64, atol=1e-5) and np.allclose(alone[0], z64[1], atol=1e-5)
unmasked = model(ids64, mask=np.ones(ids64.shape, bool)).numpy()
assert not np.allclose(unmasked, z64, atol=1e-3)
print("   told that the padding is real, the same model gives other logits: the mask does the work")
# The model's SeqPool is section 2's masked SeqPool.
pool = SeqPool(D)
pool.weight.data[...], pool.bias.data[...] = w, b
mask13 = np.arange(13)[None] < 4
assert np.allclose(pool(Tensor(pads[2]), mask=mask13).numpy(), masked_seq_pool(pads[2], w, b, mask13)[0],
                   atol=1e-5)
print("   minicct's SeqPool(x, mask=) is the masked SeqPool of section 2")
print("\nTrain one: python -m minicct.train text-synth   (offline; 'agnews' and 'trec' download)")

print("\nAll claims of lesson 22 hold.")
