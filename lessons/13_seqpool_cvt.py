"""Lesson 13 — SeqPool, and ViT-Lite becomes CVT.

What you will learn
    * sequence pooling (SeqPool): score every output token with one small Linear layer, softmax
      the scores over the sequence, and take the weighted average of the tokens;
    * why that replaces the class token: no extra token to carry through the attention, and
      every token's output reaches the classifier, weighted by how useful it is;
    * that mean pooling is the special case where all the scores are equal;
    * CVT = ViT-Lite with SeqPool instead of a class token: its parameter and MAC counts against
      the paper's table.

What it builds on
    Lesson 05 (softmax, Linear), lesson 12 (ViT-Lite and `scratch.py`).

Run it:  python lessons/13_seqpool_cvt.py
"""
import numpy as np

import minicct
from minicct import Tensor, gradcheck
import scratch  # lessons/scratch.py

rng = np.random.default_rng(0)

# --------------------------------------------------------------------------------------------------
print("1. SeqPool")
# x: (N, L, D) tokens after the last layer (and the final layer norm).
#   scores = x @ w^T + b          (N, L, 1)     w: (1, D), b: (1,)  — a Linear(D, 1)
#   a      = softmax over L       (N, L, 1)     how much each token counts, summing to 1
#   out    = a^T @ x              (N, 1, D) -> (N, D)
def seq_pool(x, w, b):
    a = scratch.softmax(x @ w.T + b, axis=1)                        # (N, L, 1)
    return (a.transpose(0, 2, 1) @ x)[:, 0], a[..., 0]

N, L, D = 2, 64, 128
x = rng.standard_normal((N, L, D))
w, b = rng.standard_normal((1, D)) * 0.1, np.zeros(1)
out, a = seq_pool(x, w, b)
print(f"   tokens {x.shape} -> weights {a.shape} (each row sums to {a.sum(1)[0]:.1f}) -> pooled {out.shape}")
assert np.allclose(a.sum(axis=1), 1) and out.shape == (N, D)
# With every score equal, SeqPool is plain mean pooling.
mean_pool, _ = seq_pool(x, np.zeros((1, D)), b)
assert np.allclose(mean_pool, x.mean(axis=1))
print("   with w = 0 every token weighs 1/L: SeqPool is the mean of the tokens")
# Learned weights can single out tokens: a weight vector aligned with token 5 puts most weight there.
focused, a5 = seq_pool(x, 3 * x[0, 5:6] / np.linalg.norm(x[0, 5]), b)
print(f"   w pointing at token 5 of image 0: its weight {a5[0, 5]:.2f} (uniform would be {1 / L:.3f})")
assert a5[0].argmax() == 5 and a5[0, 5] > 0.5

# --------------------------------------------------------------------------------------------------
print("\n2. Its gradient, through the tape")
# Written with Tensor operations (softmax from exp/sum as in lesson 05), the tape differentiates it.
def seq_pool_tensor(x, w, b):
    s = x @ w.T + b                                                 # (N, L, 1)
    e = (s - Tensor(s.data.max(axis=1, keepdims=True))).exp()
    a = e / e.sum(axis=1, keepdims=True)
    return (a.transpose(0, 2, 1) @ x).reshape(x.shape[0], x.shape[2])

ts = [Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 5, 4), (1, 4), (1,)]]
assert gradcheck(seq_pool_tensor, ts, names=["x", "w", "b"])
assert np.allclose(seq_pool_tensor(*[Tensor(t.numpy()) for t in ts]).numpy(),
                   seq_pool(*[t.numpy() for t in ts])[0], atol=1e-6)
print("   gradcheck passes for x, w and b; the Tensor version equals the NumPy one")
# The bias shifts every score equally, and softmax ignores equal shifts: its gradient is 0.
ts[2].grad = None
seq_pool_tensor(*ts).backward(Tensor(rng.standard_normal((2, 4))))
print(f"   d/d(bias) = {ts[2].grad.item():.1e} — a softmax over the sequence cannot see a shared shift")
assert abs(ts[2].grad.item()) < 1e-6

# --------------------------------------------------------------------------------------------------
print("\n3. CVT: ViT-Lite with SeqPool")
from minicct.models import count_macs, create_model
for patch, (vit_p, vit_m), (cvt_p, cvt_m) in [(4, (3.72, 0.26), (3.72, 0.25)), (8, (3.74, 0.06), (3.74, 0.06))]:
    vit, cvt = scratch.config("vit", 7, patch), scratch.config("cvt", 7, patch)
    n = {k: sum(int(np.prod(s)) for s in scratch.param_shapes(c).values()) for k, c in [("vit", vit), ("cvt", cvt)]}
    # MACs: minicct's counter runs each model once and counts its products (lesson 14 counts them by hand)
    m = {k: count_macs(create_model(f"{k}_7_{patch}_32"), (3, 32, 32)) for k in ("vit", "cvt")}
    print(f"   patch {patch}: ViT-Lite-7/{patch} {n['vit'] / 1e6:.2f} M params {m['vit'] / 1e9:.3f} G MACs "
          f"(paper {vit_p} M, {vit_m} G) | CVT-7/{patch} {n['cvt'] / 1e6:.2f} M {m['cvt'] / 1e9:.3f} G (paper {cvt_p} M, {cvt_m} G)")
    assert round(n["vit"] / 1e6, 2) == vit_p and round(n["cvt"] / 1e6, 2) == cvt_p
    assert abs(m["vit"] / 1e9 - vit_m) <= 0.01 and abs(m["cvt"] / 1e9 - cvt_m) <= 0.01
    # SeqPool adds D + 1 weights but drops the class token (D) and its position (D): one token fewer
    # in every attention, which is where CVT's few saved MACs come from.
    assert n["vit"] - n["cvt"] == vit["embedding_dim"] - 1
    assert m["cvt"] < m["vit"]

cfg = scratch.config("cvt", 7, 4)
P = scratch.init_params(cfg, rng)
img = rng.standard_normal((2, 3, 32, 32))
logits = scratch.forward(img, P, cfg)
print(f"   CVT-7/4 forward: images {img.shape} -> 64 tokens -> 7 layers -> SeqPool -> logits {logits.shape}")
assert logits.shape == (2, 10) and "classifier.class_emb" not in P


# --------------------------------------------------------------------------------------------------
print("\n4. minicct's SeqPool and CVT")
from minicct.models import SeqPool, count_params

pool = SeqPool(D)                                                    # a Linear(D, 1) plus the pooling
sd = {"weight": rng.standard_normal((1, D)) * 0.1, "bias": np.array([0.3])}
pool.load_state_dict(sd)
assert np.allclose(pool(Tensor(x)).numpy(), seq_pool(x, sd["weight"], sd["bias"])[0], atol=1e-5)
print("   minicct.models.SeqPool equals ours")
model = create_model("cvt_7_4_32", num_classes=10)
assert count_params(model) == sum(int(np.prod(s)) for s in scratch.param_shapes(cfg).values())
model.eval()
sd = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
assert np.allclose(model(Tensor(img.astype(np.float32))).numpy(), scratch.forward(img, sd, cfg), atol=1e-4)
print(f"   create_model('cvt_7_4_32'): {count_params(model):,} parameters, same logits as ours with its weights")
print("\nAll claims of lesson 13 hold.")
