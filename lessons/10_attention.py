"""Lesson 10 — attention and multi-head self-attention.

What you will learn
    * attention: each token asks a question (query), every token offers a label (key) and a
      content (value); the answer is the values averaged with weights softmax(q . k / sqrt(d));
    * why the scores are divided by sqrt(d);
    * that attention does not know the order of the tokens (permute them, the output permutes
      the same way) — why transformers add position embeddings;
    * multi-head attention: split the features into heads, attend in each, join and project; laid
      out exactly as CCT's released code (one `qkv` matrix, then `proj`);
    * the backward of attention, by hand, checked against the tape and with gradcheck.

What it builds on
    Lesson 01 (batched `@`), lesson 04 (softmax and its backward), lesson 05 (linear layers).

Run it:  python lessons/10_attention.py
"""
import math

import numpy as np

import minicct
from minicct import Function, Tensor, gradcheck

rng = np.random.default_rng(0)

def softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

# --------------------------------------------------------------------------------------------------
print("1. Attention, one query at a time")
# q: (T, d) queries, k: (T, d) keys, v: (T, d) values. For query i:
#   weights_j = softmax_j(q_i . k_j / sqrt(d)),   out_i = sum_j weights_j v_j
def attention_loops(q, k, v):
    T, d = q.shape
    out = np.zeros_like(v)
    for i in range(T):
        scores = np.array([q[i] @ k[j] for j in range(T)]) / math.sqrt(d)
        w = softmax(scores)
        out[i] = sum(w[j] * v[j] for j in range(T))
    return out

# All queries at once: S = q @ k^T / sqrt(d) is (T, T), row i holds query i's scores.
def attention(q, k, v):
    """q, k, v: (..., T, d) -> (..., T, d). Any leading axes (batch, heads) come along."""
    A = softmax(q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1]))    # (..., T, T)
    return A @ v

T, d = 6, 8
q, k, v = (rng.standard_normal((T, d)) for _ in range(3))
assert np.allclose(attention(q, k, v), attention_loops(q, k, v))
print(f"   q, k, v {q.shape}: the matrix form equals the loops; the weights form a {T}x{T} grid")

# --------------------------------------------------------------------------------------------------
print("\n2. Why divide by sqrt(d)")
# A dot product of two random d-vectors with unit-variance entries has variance d. Unscaled, the
# scores grow like sqrt(d), softmax becomes nearly one-hot, and its gradient nearly vanishes.
for dim in (4, 64, 256):
    a, b = rng.standard_normal((2, 2000, dim))
    s = (a * b).sum(-1)
    q2, k2 = rng.standard_normal((2, 16, dim))
    top_raw = softmax(q2 @ k2.T).max(-1).mean()
    top_scaled = softmax(q2 @ k2.T / math.sqrt(dim)).max(-1).mean()
    print(f"   d={dim:3}: score std {s.std():5.1f} (sqrt d = {math.sqrt(dim):4.1f}); largest weight "
          f"unscaled {top_raw:.2f}, scaled {top_scaled:.2f}")
    assert abs(s.std() / math.sqrt(dim) - 1) < 0.1
assert top_raw > 0.9 and top_scaled < 0.6

# --------------------------------------------------------------------------------------------------
print("\n3. Attention has no idea of order")
perm = rng.permutation(T)
assert np.allclose(attention(q[perm], k[perm], v[perm]), attention(q, k, v)[perm])
print("   shuffling the tokens shuffles the outputs the same way (permutation equivariance)")
print("   -> a picture's patches need position embeddings, or a convolution before them (lesson 14)")

# --------------------------------------------------------------------------------------------------
print("\n4. Multi-head self-attention, as CCT lays it out")
# x: (N, T, D). One Linear without bias makes q, k and v together: x @ Wqkv^T is (N, T, 3D),
# viewed as (N, T, 3, H, D/H) and permuted to (3, N, H, T, D/H). Each of the H heads attends with
# its own D/H features; the heads are joined back to (N, T, D) and mixed by `proj` (with a bias).
def mhsa(x, w_qkv, w_proj, b_proj, heads):
    N, T, D = x.shape
    qkv = (x @ w_qkv.T).reshape(N, T, 3, heads, D // heads).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]                        # each (N, H, T, D/H)
    o = attention(q, k, v)                                  # (N, H, T, D/H)
    o = o.transpose(0, 2, 1, 3).reshape(N, T, D)            # heads side by side again
    return o @ w_proj.T + b_proj

def mhsa_head_loop(x, w_qkv, w_proj, b_proj, heads):
    """The same, one image and one head at a time, slicing the weight rows of each head."""
    N, T, D = x.shape
    dh = D // heads
    out = np.zeros_like(x)
    for n in range(N):
        parts = []
        for h in range(heads):
            rows = lambda which: w_qkv[which * D + h * dh: which * D + (h + 1) * dh]   # (dh, D)
            parts.append(attention_loops(x[n] @ rows(0).T, x[n] @ rows(1).T, x[n] @ rows(2).T))
        out[n] = np.concatenate(parts, axis=1) @ w_proj.T + b_proj
    return out

N, T, D, H = 2, 5, 12, 3
x = rng.standard_normal((N, T, D))
w_qkv = rng.standard_normal((3 * D, D)) / math.sqrt(D)
w_proj, b_proj = rng.standard_normal((D, D)) / math.sqrt(D), rng.standard_normal(D)
assert np.allclose(mhsa(x, w_qkv, w_proj, b_proj, H), mhsa_head_loop(x, w_qkv, w_proj, b_proj, H))
print(f"   x {x.shape}, {H} heads of {D // H}: the reshape/permute version equals a loop over heads")
print(f"   parameters: qkv {3 * D * D} + proj {D * D + D} = {4 * D * D + D}")

# --------------------------------------------------------------------------------------------------
print("\n5. The backward, by hand")
# Forward: S = q k^T / sqrt(d),  A = softmax(S),  O = A v.   Given gO = dL/dO:
#   gv = A^T gO                      gA = gO v^T
#   gS = A * (gA - sum_j(gA * A))    (softmax backward, lesson 04)
#   gq = gS k / sqrt(d)              gk = gS^T q / sqrt(d)
class Attention(Function):
    @staticmethod
    def forward(ctx, q, k, v):
        A = softmax(q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1]))
        ctx.save_for_backward(q, k, v, A)
        return A @ v

    @staticmethod
    def backward(ctx, gO):
        q, k, v, A = ctx.saved_tensors
        sT = lambda a: np.swapaxes(a, -1, -2)
        gv = sT(A) @ gO
        gA = gO @ sT(v)
        gS = A * (gA - (gA * A).sum(-1, keepdims=True))
        scale = 1 / math.sqrt(q.shape[-1])
        return gS @ k * scale, sT(gS) @ q * scale, gv


qkv = [Tensor(rng.standard_normal((2, 3, 5, 4)), requires_grad=True) for _ in range(3)]  # (N, H, T, d)
assert gradcheck(Attention.apply, qkv, names=["q", "k", "v"])
print("   gradcheck of our attention backward passes for q, k and v")

# The tape's answer: the same attention composed from Tensor operations.
def attention_composed(q, k, v):
    s = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1])
    e = (s - Tensor(s.data.max(axis=-1, keepdims=True))).exp()
    return (e / e.sum(axis=-1, keepdims=True)) @ v

gO = rng.standard_normal((2, 3, 5, 4))
a = [Tensor(t.numpy(), requires_grad=True, dtype="float64") for t in qkv]
b = [Tensor(t.numpy(), requires_grad=True, dtype="float64") for t in qkv]
Attention.apply(*a).backward(Tensor(gO, dtype="float64"))
attention_composed(*b).backward(Tensor(gO, dtype="float64"))
assert all(np.allclose(u.grad.numpy(), w.grad.numpy(), atol=1e-10) for u, w in zip(a, b))
print("   our hand-written backward equals the tape's gradients of the composed version")

# --------------------------------------------------------------------------------------------------
print("\n6. What it costs")
# The weight grid is T x T per head and image: attention's memory grows with the square of the
# sequence length. CCT-7/3x1 on CIFAR: 256 tokens, 4 heads, batch 128, float32.
T, H, B = 256, 4, 128
print(f"   {B} images x {H} heads x {T}x{T} weights x 4 bytes = {B * H * T * T * 4 / 2**20:.0f} MiB per layer")
assert B * H * T * T * 4 == 128 * 2**20


# --------------------------------------------------------------------------------------------------
print("\n7. minicct's attention")
# F.scaled_dot_product_attention(q, k, v) takes (N, heads, T, d) as PyTorch does, with one fused
# backward; F.multi_head_attention(x, qkv_weight, proj_weight, proj_bias, num_heads) is the whole
# CCT self-attention of section 4, weights in the same layout.
import minicct.functional as F

a = [Tensor(t.numpy(), requires_grad=True, dtype="float64") for t in qkv]
y = F.scaled_dot_product_attention(*a, dropout_p=0.0)
assert np.allclose(y.numpy(), attention(*[t.numpy() for t in qkv]), atol=1e-6)
y.backward(Tensor(gO, dtype="float64"))
b = [Tensor(t.numpy(), requires_grad=True, dtype="float64") for t in qkv]
Attention.apply(*b).backward(Tensor(gO, dtype="float64"))
assert all(np.allclose(u.grad.numpy(), w.grad.numpy(), atol=1e-6) for u, w in zip(a, b))
print("   F.scaled_dot_product_attention equals ours, forward and backward")

N, T, D, H = 2, 5, 12, 3
x = rng.standard_normal((N, T, D))
w_qkv = rng.standard_normal((3 * D, D)) / math.sqrt(D)
w_proj, b_proj = rng.standard_normal((D, D)) / math.sqrt(D), rng.standard_normal(D)
theirs = F.multi_head_attention(Tensor(x, dtype="float64"), Tensor(w_qkv, dtype="float64"),
                                Tensor(w_proj, dtype="float64"), Tensor(b_proj, dtype="float64"), H,
                                training=False)
assert np.allclose(theirs.numpy(), mhsa(x, w_qkv, w_proj, b_proj, H), atol=1e-10)
print("   F.multi_head_attention equals our mhsa with the same weights")
ts = [Tensor(rng.standard_normal(s) * 0.5, requires_grad=True) for s in [(2, 4, 6), (18, 6), (6, 6), (6,)]]
assert gradcheck(lambda x, wq, wp, bp: F.multi_head_attention(x, wq, wp, bp, 2, training=False), ts,
                 names=["x", "qkv_weight", "proj_weight", "proj_bias"])
print("   gradcheck(F.multi_head_attention) passes for x and all three weights")
print("\nAll claims of lesson 10 hold.")
