"""An exponential moving average (EMA) of a model's weights, the kind evaluated instead of the weights
themselves at the end of a run.

    ema = WeightEMA(model, decay=0.999)
    for x, y in loader:
        ...; opt.step(); opt.zero_grad()
        ema.update()                      # average <- d * average + (1 - d) * weights
    with ema.applied():                   # the model holds the average inside the block
        evaluate(model, ...)

Why. Late in a run the weights jitter around a minimum, one mini-batch's step at a time; their
average over the last few hundred steps sits nearer its middle, and often scores higher than any one
step's weights. It costs one multiply-add per parameter per step, and nothing at all for training:
the optimizer never sees the average.

The decay of update t (counting from 0) is ``min(decay, (1 + t) / (10 + t))``: the first updates
forget faster (0.1, 0.18, 0.25 ...), so the average does not stay anchored to the random initial
weights in a short run (the warm-up of TensorFlow's ExponentialMovingAverage with ``num_updates``).

Parameters and persistent buffers are averaged alike (a frozen one stays what it is). The average
lives on the model's device, in its dtype; ``state_dict()`` gives host copies for a checkpoint, and a
resumed run continues the same average, bit for bit.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict

from minicct import backend


class WeightEMA:
    def __init__(self, model, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"WeightEMA: decay must be between 0 and 1 (exclusive), got {decay}")
        self.model, self.decay, self.updates = model, float(decay), 0
        self.average = OrderedDict((k, t.data.copy()) for k, t in model._named_state())

    def rate(self) -> float:
        """The decay the next ``update`` uses."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def update(self):
        """average <- d * average + (1 - d) * weights, in place, for every parameter and buffer."""
        d = self.rate()
        for k, t in self.model._named_state():
            a = self.average[k]
            a *= d
            a += (1.0 - d) * t.data
        self.updates += 1

    @contextlib.contextmanager
    def applied(self):
        """Within the block the model's arrays hold the average (copied in place, so an optimizer's
        views stay valid); the weights are put back afterwards, whatever happens inside."""
        live = OrderedDict((k, t.data.copy()) for k, t in self.model._named_state())
        self.model.load_state_dict(self.average)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(live)

    def state_dict(self) -> dict:
        """{'decay', 'updates', 'average': {name: NumPy array}} for a checkpoint."""
        return {"decay": self.decay, "updates": self.updates,
                "average": OrderedDict((k, backend.to_numpy(a)) for k, a in self.average.items())}

    def load_state_dict(self, state: dict):
        """Continue the average a checkpoint saved (its names and shapes must be the model's)."""
        names = list(self.average)
        if sorted(state["average"]) != sorted(names):
            raise ValueError("the saved weight average does not match the model's parameters")
        for k in names:
            a = self.average[k]
            xp = backend.get_array_module(a)
            a[...] = xp.asarray(backend.to_device(state["average"][k], backend.device_of(a)), dtype=a.dtype)
        self.updates = int(state["updates"])
