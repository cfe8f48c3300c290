"""Fast versions of some kernels, for NumPy: same signatures and results as the references.

Each module computes what its reference in ``minicct/kernels`` computes (the tests check them
against each other, forward and every gradient, and by float64 gradcheck), only faster on a CPU.
They are never imported by the references; ``kernels/dispatch.py`` alone picks them (in
``MINICCT_KERNELS=fast`` mode, the default).

    conv_im2col.py   conv2d: im2col on a flat (C, T) buffer with the images innermost, the patch
                     matrix copied from strided views in long runs, output handed on as a view of
                     (OH, OW, N, O) memory; a blocked weight-gradient product. Also what runs on
                     CuPy in fast mode (one large GEMM).
    winograd.py      conv2d for 3x3 stride-1 convs with enough channels: Winograd's F(2x2, 3x3),
                     2.25x fewer multiplies (CCT's 64 -> 128 conv).
    pool.py          max_pool2d keeping the input's memory order (the convs' (H, W, N, C)), with no
                     padded copy and a branch-free argmax.
    gelu.py          gelu: the derivative computed in the forward and kept (backward is one
                     product), big arrays in cache-sized blocks.
    fused.py         add_drop_path and linear_gelu (kernels/fused.py) with one array less each
                     way: the GELU overwrites the GEMM's output, the skip is added in place.
    attention.py     scaled dot-product attention: the score scale and dropout's 1 / (1 - p)
                     folded off the (L, S) arrays, in-place passes, images in cache-sized blocks
                     (one block on CuPy).
    philox.py        Philox4x32-10 words in place, in cache-sized chunks, with the keep mask
                     compared as integers (the same numbers as kernels/philox.py).
"""
