"""Which parameters get weight decay: timm's rule.

Weight decay pulls weights toward zero so the function stays simple. It makes sense for the
weights that mix features (conv kernels, linear matrices, the positional embedding, SeqPool's
attention-pool weight). It does not for biases and for LayerNorm's scale and shift: they are
1-D, few, and shrinking a norm's scale toward 0 only fights the normalisation. So:

    no decay:  every parameter with ndim <= 1, every name ending in '.bias', names listed explicitly
    decay:     everything else
"""
from __future__ import annotations


def param_groups_weight_decay(model, weight_decay, no_weight_decay_list=()):
    """Two parameter groups for an optimizer: ``[{'params': no_decay, 'weight_decay': 0.0},
    {'params': decay, 'weight_decay': weight_decay}]``.

    model: anything with ``named_parameters()`` yielding (name, parameter).
    no_weight_decay_list: further parameter names (full dotted names) to leave undecayed.
    Parameters with ``requires_grad=False`` are left out (nothing trains them).
    """
    skip = set(no_weight_decay_list)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]
