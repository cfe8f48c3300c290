"""Kernels: each operation as a pair of plain array functions, forward and backward.

    y, cache = conv2d_forward(x, w, b, stride, padding)
    gx, gw, gb = conv2d_backward(gy, cache)

The names below are the *reference* versions: plain, portable, the ones the lessons build.
No Tensor in sight: these take and return NumPy or CuPy arrays (``xp = get_array_module(x)``
picks the module). ``minicct.functional`` wraps each pair as an autograd Function.

    conv.py        conv2d (im2col + one GEMM; col2im by kernel offsets)
    pool.py        max_pool2d (overlapping windows, PyTorch's tie-breaking)
    norm.py        layer_norm
    activation.py  relu, gelu (with a hand-written erf), softmax, log_softmax
    dropout.py     dropout, drop_path (masks from minicct.random unless a generator is passed)
    attention.py   scaled dot-product attention (one fused backward)
    loss.py        cross_entropy (class indices or soft targets, label smoothing)
    linear.py      linear (PyTorch's (out, in) weight layout)
    adamw.py       the AdamW update (in place; optim.AdamW calls it)
    philox.py      Philox4x32-10, the counter-based generator dropout masks come from (portable xp)
    fused.py       pairs that always run together, as their compositions: add_drop_path
                   (x + drop_path(branch)), linear_gelu (gelu(linear(x))): one Function each

Those are the references, the versions the lessons build. Fast versions sit beside them with the
same signatures, tested against them: ``fast/`` (NumPy: conv2d by flat-buffer im2col and by
Winograd F(2x2, 3x3), max_pool2d keeping the memory order, gelu, attention, Philox, the fused
pairs) and ``cuda/`` (CuPy kernels: gelu, max_pool2d, layer_norm, the AdamW update, Philox).
``dispatch.py`` alone picks one per call, by device and ``MINICCT_KERNELS=reference|fast``.
"""
# dispatch first: the kernels call dispatch.matmul at run time, and importing it here, before any
# kernel, lets each of them import it at the top whichever module a program imports first.
from minicct.kernels import dispatch  # noqa: F401
from minicct.kernels.conv import conv2d_forward, conv2d_backward, conv_output_size
from minicct.kernels.pool import max_pool2d_forward, max_pool2d_backward
from minicct.kernels.norm import layer_norm_forward, layer_norm_backward
from minicct.kernels.activation import (erf, relu_forward, relu_backward, gelu_forward, gelu_backward,
                                        softmax_forward, softmax_backward, log_softmax_forward,
                                        log_softmax_backward)
from minicct.kernels.dropout import (dropout_forward, dropout_backward, drop_path_forward,
                                     drop_path_backward)
from minicct.kernels.attention import sdpa_forward, sdpa_backward
from minicct.kernels.loss import cross_entropy_forward, cross_entropy_backward
from minicct.kernels.linear import linear_forward, linear_backward
