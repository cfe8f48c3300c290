"""CuPy fast paths: one fused kernel where the reference runs a chain of whole-array passes.

Each module has the same functions, signatures and results as its reference (the tests compare
them on a GPU); ``kernels/dispatch.py`` picks them for CuPy arrays in ``fast`` mode. CuPy is
imported on first use only, so this package imports (and is never called) on a CPU-only machine.

    gelu.py     gelu, exact and tanh (CUDA's own erf and tanh); backward recomputes in registers
    pool.py     max_pool2d: one thread per output (forward), per input pixel (backward, no atomics)
    norm.py     layer_norm: one warp per row
    adamw.py    the AdamW update: moments and step in one pass over memory
    _launch.py  what they share: C type names, launch sizes, compiled-module cache
"""
