"""Benchmarks: ``python -m minicct.bench <subcommand> [--device cpu|gpu]``.

Each subcommand is a module here with ``add_arguments(parser)`` and ``main(args)``; ``__main__``
lists them. ``common`` has the timing helpers (medians after warm-up, GPU-synchronised) and the
sgemm reference that kernel GFLOP/s are compared with.
"""
