"""Optimisation: AdamW with decoupled weight decay, timm's no-decay parameter groups, timm's
cosine learning-rate schedule with warmup and cooldown, and a moving average of the weights (WeightEMA).

    groups = param_groups_weight_decay(model, weight_decay=0.06)
    opt = AdamW(groups, lr=5.5e-4)
    sched = CosineLRScheduler(5.5e-4, t_initial=300, min_lr=1e-5, warmup_epochs=10, warmup_lr=1e-5,
                              cooldown_epochs=10, optimizer=opt)
    for epoch in range(sched.total_epochs):
        sched.step(epoch)
        ...  # loss.backward(); opt.step(); opt.zero_grad()
"""
from minicct.optim.adamw import AdamW, adamw_update_
from minicct.optim.ema import WeightEMA
from minicct.optim.param_groups import param_groups_weight_decay
from minicct.optim.scheduler import CosineLRScheduler

__all__ = ["AdamW", "adamw_update_", "param_groups_weight_decay", "CosineLRScheduler", "WeightEMA"]
