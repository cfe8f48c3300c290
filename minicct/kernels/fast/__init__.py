"""Fast versions of some kernels, for NumPy: same signatures and results as the references.

Each module computes what its reference in ``minicct/kernels`` computes (the tests check them
against each other, forward and every gradient), only faster on a CPU. They are never imported by
the references; ``kernels/dispatch.py`` alone picks them (in ``MINICCT_KERNELS=fast`` mode, the
default).

    gelu.py          gelu: the derivative computed in the forward and kept (backward is one
                     product), big arrays in cache-sized blocks.
    attention.py     scaled dot-product attention: the score scale and dropout's 1 / (1 - p)
                     folded off the (L, S) arrays, in-place passes, images in cache-sized blocks
                     (one block on CuPy).
"""
