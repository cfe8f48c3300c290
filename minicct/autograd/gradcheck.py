"""gradcheck: compare a backward pass with central finite differences, in float64.

The scalar being differentiated is ``sum(w * f(x))`` for a fixed random weight ``w`` of the
output's shape, never a plain ``sum(f(x))``: a plain sum sends the same upstream gradient to every
output, and some wrong backwards are invisible to it. Softmax is the classic: its outputs always
sum to one, so d(sum softmax)/dx = 0 and a backward returning zeros would pass.
"""
from __future__ import annotations

import numpy as np

from minicct import backend
from minicct.autograd.grad_mode import no_grad
from minicct.autograd.tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with the numerical one."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0, max_elements=None,
              names=None, raise_exception=True):
    """Check the gradient of ``fn`` with respect to every input that requires grad.

    fn:      maps the inputs (Tensors, in order) to one Tensor.
    inputs:  Tensors (and other arguments passed through as they are). Float Tensors are copied to
             float64 first, so single-precision rounding never hides or fakes an error.
    eps:     finite-difference step; ``(f(x+eps) - f(x-eps)) / 2eps``.
    atol, rtol: element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``.
    max_elements: check at most this many elements per input (chosen at random); None = all.
    names:   optional names of the inputs, used in the error message.
    Returns True, or raises GradcheckError naming the input, the worst element and both values
    (returns False instead when ``raise_exception=False``).
    """
    inputs = list(inputs)
    names = list(names) if names is not None else [f"input {i}" for i in range(len(inputs))]
    xs = []
    for x in inputs:
        if isinstance(x, Tensor) and x.dtype.kind == "f":
            xp = backend.get_array_module(x.data)
            xs.append(Tensor._wrap(xp.array(x.data, dtype=np.float64, copy=True),
                                   requires_grad=x.requires_grad))
        else:
            xs.append(x)
    checked = [i for i, x in enumerate(xs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, so there is nothing to check")

    out = fn(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    xp = backend.get_array_module(out.data)
    rng = np.random.default_rng(seed)
    w = xp.asarray(rng.standard_normal(out.shape))

    def objective():
        with no_grad():
            y = fn(*xs)
        return float((y.data.astype(np.float64) * w).sum())

    # Analytic: backpropagate the weight itself, which is d(sum(w * y))/dy.
    for i in checked:
        xs[i].grad = None
    out.backward(Tensor._wrap(w.astype(out.dtype)))

    for i in checked:
        x = xs[i]
        analytic = np.zeros(x.shape) if x.grad is None else backend.to_numpy(x.grad.data).astype(np.float64)
        flat = x.data.reshape(-1)  # a view: writing to it perturbs x
        n = flat.size
        idx = np.arange(n) if max_elements is None or n <= max_elements else \
            np.sort(rng.choice(n, size=max_elements, replace=False))
        numeric = np.empty(len(idx))
        for j, k in enumerate(idx):
            orig = flat[k].item()
            flat[k] = orig + eps
            f_plus = objective()
            flat[k] = orig - eps
            f_minus = objective()
            flat[k] = orig
            numeric[j] = (f_plus - f_minus) / (2 * eps)
        a = analytic.reshape(-1)[idx]
        err = np.abs(a - numeric) - (atol + rtol * np.abs(numeric))
        if np.any(err > 0) or not np.all(np.isfinite(a)):
            worst = int(np.argmax(np.where(np.isfinite(err), err, np.inf)))
            pos = np.unravel_index(idx[worst], x.shape)
            msg = (f"gradcheck failed for {names[i]} (shape {tuple(x.shape)}): at element {tuple(int(p) for p in pos)} "
                   f"analytic {a[worst]:.6g} vs numeric {numeric[worst]:.6g} "
                   f"(|diff| {abs(a[worst] - numeric[worst]):.3g} > atol {atol} + rtol {rtol}·|numeric|); "
                   f"{int(np.sum(err > 0))} of {len(idx)} checked elements disagree")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True
