"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as PyTorch and timm compute it.

For one parameter p with gradient g, at step t = 1, 2, ...:

    p ← p · (1 − lr·wd)                              decoupled decay: never enters m or v
    m ← β1·m + (1 − β1)·g                            first moment (running mean of g)
    v ← β2·v + (1 − β2)·g²                           second moment (running mean of g²)
    p ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)   bias-corrected Adam step

"L2 regularisation" would add wd·p to g instead, and Adam's 1/√v would then shrink the decay of
weights with large gradients; decoupling keeps the decay the same for every weight. That is the whole
difference between Adam + L2 and AdamW.

Speed: every parameter of a group lives in one flat buffer, and the parameters' ``.data`` become
views into it. One step is then a handful of whole-buffer array operations per group (one fused
kernel on CuPy) instead of a Python loop over ~50 tensors.
"""
from __future__ import annotations

import numpy as np

from minicct import backend
from minicct.kernels import dispatch


# ---- the update, on raw arrays ------------------------------------------------------------------
def adamw_update_(p, g, m, v, *, lr, weight_decay, beta1, beta2, eps, step):
    """One AdamW step, in place on ``p``, ``m`` and ``v`` (all the same shape; NumPy or CuPy).

    p: parameters, g: their gradient, m/v: first/second moment estimates, step: t >= 1.
    The formulas above, in array code, are ``kernels/adamw.py``; on a GPU one fused CuPy kernel
    (``kernels/cuda/adamw.py``) does the same. ``kernels.dispatch`` picks.
    """
    dispatch.adamw_update(p)(p, g, m, v, lr=lr, weight_decay=weight_decay, beta1=beta1, beta2=beta2,
                             eps=eps, step=step)


# ---- the optimizer ------------------------------------------------------------------------------
class AdamW:
    """AdamW over parameters, or over groups of parameters with their own settings.

        opt = AdamW(model.parameters(), lr=5.5e-4, weight_decay=0.06)
        opt = AdamW(param_groups_weight_decay(model, 0.06), lr=5.5e-4)   # no decay on biases, norms
        loss.backward(); opt.step(); opt.zero_grad()

    params: Tensors (each with ``.data`` and ``.grad``), or dicts ``{'params': [...], 'weight_decay':
        ..., 'lr': ...}`` whose missing keys take the defaults given here.
    ``param_groups[i]['lr']`` is what a scheduler changes. A parameter whose ``.grad`` is None at a step
    is left alone (no decay, no moment update), as in PyTorch.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"AdamW needs lr, eps and weight_decay >= 0, got {lr}, {eps}, {weight_decay}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamW betas must lie in [0, 1), got {betas}")
        self.defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        params = list(params)
        if not params:
            raise ValueError("AdamW got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        self.param_groups = []
        seen = set()
        for group in params:
            group = {**self.defaults, **group, "params": list(group["params"])}
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError("a parameter appears in two parameter groups")
                seen.add(id(p))
                if p.data.dtype.kind != "f":
                    raise TypeError(f"AdamW can only optimise float parameters, got {p.data.dtype}")
            self.param_groups.append(group)
        self._buffers = [_FlatGroup(g["params"]) for g in self.param_groups]

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    # ---- device scalars: for a step captured into a CUDA graph -----------------------------------
    def use_device_scalars(self):
        """From now on keep each group's learning rate and step count in 0-d arrays on the
        parameters' device (float64, int64), which the update reads when it *runs*: a CUDA graph
        that captured ``step()`` then replays it with the values of that moment, not of the capture.

        The learning rate reaches its array only through ``load_lr()``, which copies
        ``param_groups[i]['lr']`` in: call it after the schedule set the lr and before the step (or
        the graph's replay). Never inside ``step()``: a capture would freeze the value it wrote.
        ``step()`` advances the step counts in place. Every parameter of a group must be at the same
        step and get a gradient at every step (the training loop's case)."""
        for group, flat in zip(self.param_groups, self._buffers):
            flat.sync()
            if not (flat.steps == flat.steps[0]).all():
                raise ValueError("AdamW.use_device_scalars: the parameters of a group are at different "
                                 "steps; device scalars need one step count per group")
            xp = backend.get_array_module(flat.data)
            flat.lr_dev = xp.full((), group["lr"], dtype=np.float64)
            flat.step_dev = xp.full((), int(flat.steps[0]), dtype=np.int64)

    @property
    def device_scalars(self):
        """True after ``use_device_scalars()``."""
        return self._buffers[0].lr_dev is not None

    def load_lr(self):
        """Copy each group's ``'lr'`` into its device scalar (device-scalar mode only): an
        asynchronous fill on the current stream, ordered before the next step or replay."""
        for group, flat in zip(self.param_groups, self._buffers):
            flat.lr_dev.fill(group["lr"])

    def _steps_from_device(self):
        """Device-scalar mode: bring the step counts back to the host's ``steps`` (a copy)."""
        for flat in self._buffers:
            if flat.step_dev is not None:
                flat.steps[:] = int(backend.to_numpy(flat.step_dev))

    def step(self):
        """Update every parameter that has a gradient, in place."""
        for group, flat in zip(self.param_groups, self._buffers):
            flat.sync()
            beta1, beta2 = group["betas"]
            hyper = dict(lr=group["lr"], weight_decay=group["weight_decay"], beta1=beta1, beta2=beta2,
                         eps=group["eps"])
            has_grad = [p.grad is not None for p in flat.params]
            if flat.step_dev is not None:
                # Device scalars: nothing here reads or writes a host value that a replay would need
                # (the host's ``steps`` are brought up to date when the state is saved).
                if not all(has_grad):
                    raise ValueError("AdamW with device scalars needs a gradient for every parameter "
                                     "at every step")
                flat.step_dev += 1
                hyper["lr"] = flat.lr_dev
                adamw_update_(flat.data, flat.gather_grads(), flat.exp_avg, flat.exp_avg_sq,
                              step=flat.step_dev, **hyper)
                continue
            if not any(has_grad):
                continue
            if all(has_grad) and (flat.steps == flat.steps[0]).all():
                # The usual case: one update over the whole flat buffer.
                flat.steps += 1
                adamw_update_(flat.data, flat.gather_grads(), flat.exp_avg, flat.exp_avg_sq,
                              step=int(flat.steps[0]), **hyper)
                continue
            for i, p in enumerate(flat.params):  # some parameters got no gradient: one at a time
                if p.grad is None:
                    continue
                flat.steps[i] += 1
                s = flat.slices[i]
                adamw_update_(flat.data[s], p.grad.data.ravel(), flat.exp_avg[s], flat.exp_avg_sq[s],
                              step=int(flat.steps[i]), **hyper)

    # ---- saving and restoring ------------------------------------------------------------------
    def state_dict(self):
        """The optimizer's state as plain data, keyed like PyTorch's:

            {'state': {'0': {'step': int, 'exp_avg': array, 'exp_avg_sq': array}, ...},
             'param_groups': [{'lr', 'betas', 'eps', 'weight_decay', 'params': [0, 1, ...]}, ...]}

        Parameters are numbered across groups in order; arrays are host NumPy copies in the
        parameters' shapes.
        """
        self._steps_from_device()
        state, groups, index = {}, [], 0
        for group, flat in zip(self.param_groups, self._buffers):
            ids = []
            for i, p in enumerate(flat.params):
                if flat.steps[i] > 0:
                    s = flat.slices[i]
                    state[str(index)] = {
                        "step": int(flat.steps[i]),
                        "exp_avg": backend.to_numpy(flat.exp_avg[s]).reshape(p.shape).copy(),
                        "exp_avg_sq": backend.to_numpy(flat.exp_avg_sq[s]).reshape(p.shape).copy()}
                ids.append(index)
                index += 1
            groups.append({k: (list(v) if k == "betas" else v) for k, v in group.items() if k != "params"}
                          | {"params": ids})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what ``state_dict()`` returned (for the same parameters, in the same groups)."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"optimizer state has {len(groups)} parameter groups, this optimizer has "
                             f"{len(self.param_groups)}")
        state = {str(k): v for k, v in state_dict["state"].items()}
        for saved, group, flat in zip(groups, self.param_groups, self._buffers):
            if len(saved["params"]) != len(flat.params):
                raise ValueError(f"optimizer state has a group of {len(saved['params'])} parameters "
                                 f"where this optimizer has {len(flat.params)}")
            group.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k != "params"})
            flat.sync()
            xp = backend.get_array_module(flat.data)
            for i, (index, p) in enumerate(zip(saved["params"], flat.params)):
                s = flat.slices[i]
                st = state.get(str(index))
                if st is None:
                    flat.steps[i] = 0
                    flat.exp_avg[s] = 0
                    flat.exp_avg_sq[s] = 0
                    continue
                for name in ("exp_avg", "exp_avg_sq"):
                    arr = np.asarray(backend.to_numpy(st[name]))
                    if arr.shape != tuple(p.shape):
                        raise ValueError(f"optimizer state {name} of parameter {index} has shape "
                                         f"{arr.shape}, the parameter has shape {tuple(p.shape)}")
                    getattr(flat, name)[s] = xp.asarray(arr.ravel(), dtype=flat.data.dtype)
                flat.steps[i] = int(st["step"])
            if flat.step_dev is not None:
                if not (flat.steps == flat.steps[0]).all():
                    raise ValueError("optimizer state has parameters of one group at different steps, "
                                     "which device scalars cannot hold")
                flat.step_dev.fill(int(flat.steps[0]))
                flat.lr_dev.fill(group["lr"])

    def __repr__(self):
        lines = [f"  group {i}: {len(g['params'])} parameters, lr={g['lr']:.3g}, "
                 f"weight_decay={g['weight_decay']}" for i, g in enumerate(self.param_groups)]
        return "AdamW(\n" + "\n".join(lines) + "\n)"


class _FlatGroup:
    """The parameters of one group packed into one flat array, with the moments beside it.

    data, exp_avg, exp_avg_sq: (P,) where P = total number of elements; ``slices[i]`` is parameter
    i's range, and parameter i's ``.data`` is ``data[slices[i]]`` reshaped (a view, so updating
    ``data`` updates the model). If something replaces a parameter's array (``load_state_dict``,
    ``.to(device)``), ``sync`` packs the new arrays again and keeps the moments.
    """

    def __init__(self, params):
        self.params = params
        sizes = [int(np.prod(p.shape)) for p in params]
        ends = np.cumsum([0] + sizes)
        self.slices = [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]
        self.steps = np.zeros(len(params), np.int64)
        self.lr_dev = self.step_dev = None       # 0-d device arrays after AdamW.use_device_scalars
        self.data = self.exp_avg = self.exp_avg_sq = None
        self._views = []
        self.sync()

    def sync(self):
        """Make sure each parameter's array is still its view into ``data``; re-pack if not."""
        if self.data is not None and all(p.data is view for p, view in zip(self.params, self._views)):
            return
        arrays = [p.data for p in self.params]
        dtypes = {a.dtype for a in arrays}
        devices = {backend.device_of(a) for a in arrays}
        if len(dtypes) > 1 or len(devices) > 1:
            raise TypeError(f"the parameters of one group must share a dtype and device, got "
                            f"{sorted(map(str, dtypes))} on {sorted(devices)}")
        xp = backend.get_array_module(arrays[0])
        self.data = xp.concatenate([a.ravel() for a in arrays])
        if self.exp_avg is None:
            self.exp_avg = xp.zeros_like(self.data)
            self.exp_avg_sq = xp.zeros_like(self.data)
        else:  # the parameters moved (device or dtype): the moments follow them
            device = backend.device_of(self.data)
            self.exp_avg = xp.asarray(backend.to_device(self.exp_avg, device), dtype=self.data.dtype)
            self.exp_avg_sq = xp.asarray(backend.to_device(self.exp_avg_sq, device), dtype=self.data.dtype)
        self._views = []
        for p, s in zip(self.params, self.slices):
            p.data = self.data[s].reshape(p.data.shape)
            self._views.append(p.data)

    def gather_grads(self):
        """All gradients as one flat array (P,)."""
        xp = backend.get_array_module(self.data)
        return xp.concatenate([p.grad.data.ravel() for p in self.params])
