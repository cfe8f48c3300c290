"""timm's cosine learning-rate schedule with warmup and cooldown, stepped once per epoch.

With base_lr=5.5e-4, t_initial=300, min_lr=1e-5, warmup_epochs=10, warmup_lr=1e-5, cooldown_epochs=10
(the CCT CIFAR recipe), the learning rate of epoch e is

    e < 10 (warmup):       warmup_lr + e · (base_lr − warmup_lr) / warmup_epochs      1e-5 → 4.96e-4
    10 <= e < 300:         min_lr + ½ (base_lr − min_lr) (1 + cos(π e / t_initial))   5.485e-4 → 1.0015e-5
    300 <= e < 310:        min_lr  (the cooldown: a few epochs at the floor)

Note the cosine is evaluated at e, not at e − warmup_epochs: the warmup overwrites the first
epochs of the cosine rather than delaying it (timm's default, ``warmup_prefix=False``), so the
cosine never reaches base_lr exactly. The run lasts ``total_epochs = t_initial + cooldown_epochs``.
"""
from __future__ import annotations

import math


class CosineLRScheduler:
    """lr_at(epoch) -> float; ``step(epoch)`` writes that lr into the optimizer's parameter groups.

    base_lr: the peak learning rate; t_initial: length of the cosine in epochs (counted from epoch 0);
    min_lr: where the cosine ends and the cooldown stays; warmup_epochs / warmup_lr: linear ramp
    from warmup_lr at epoch 0; cooldown_epochs: extra epochs at min_lr after t_initial;
    warmup_prefix: True starts the cosine after the warmup instead (not the CCT recipe).
    optimizer: optional; anything with ``param_groups`` (a list of dicts with an 'lr').
    """

    def __init__(self, base_lr, t_initial, min_lr=0.0, warmup_epochs=0, warmup_lr=0.0, cooldown_epochs=0,
                 warmup_prefix=False, optimizer=None):
        if t_initial <= 0:
            raise ValueError(f"t_initial must be a positive number of epochs, got {t_initial}")
        if min(base_lr, min_lr, warmup_lr, warmup_epochs, cooldown_epochs) < 0:
            raise ValueError("learning rates and epoch counts of a schedule cannot be negative")
        self.base_lr = base_lr
        self.t_initial = t_initial
        self.min_lr = min_lr
        self.warmup_epochs = warmup_epochs
        self.warmup_lr = warmup_lr
        self.cooldown_epochs = cooldown_epochs
        self.warmup_prefix = warmup_prefix
        self.optimizer = optimizer
        self.epoch = 0  # the last epoch passed to step()
        if optimizer is not None:
            self.step(0)

    @property
    def total_epochs(self):
        """How long the recipe runs: the cosine, plus the warmup when it is a prefix, plus the cooldown."""
        return self.t_initial + (self.warmup_epochs if self.warmup_prefix else 0) + self.cooldown_epochs

    def lr_at(self, epoch):
        """The learning rate for epoch ``epoch`` (0-based; fractions allowed)."""
        if epoch < self.warmup_epochs:
            return self.warmup_lr + epoch * (self.base_lr - self.warmup_lr) / self.warmup_epochs
        t = epoch - self.warmup_epochs if self.warmup_prefix else epoch
        if t >= self.t_initial:  # past the one cosine cycle: the cooldown (and anything after it)
            return self.min_lr
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * t / self.t_initial))

    def step(self, epoch):
        """Move to ``epoch``: set every parameter group's lr to ``lr_at(epoch)``; returns that lr."""
        self.epoch = epoch
        lr = self.lr_at(epoch)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        return lr

    def state_dict(self):
        return {"epoch": self.epoch, "base_lr": self.base_lr, "t_initial": self.t_initial,
                "min_lr": self.min_lr, "warmup_epochs": self.warmup_epochs, "warmup_lr": self.warmup_lr,
                "cooldown_epochs": self.cooldown_epochs, "warmup_prefix": self.warmup_prefix}

    def load_state_dict(self, state):
        for k, v in state.items():
            setattr(self, k, v)
        self.step(self.epoch)

    def __repr__(self):
        return (f"CosineLRScheduler(base_lr={self.base_lr}, t_initial={self.t_initial}, min_lr={self.min_lr}, "
                f"warmup_epochs={self.warmup_epochs}, warmup_lr={self.warmup_lr}, "
                f"cooldown_epochs={self.cooldown_epochs})")
