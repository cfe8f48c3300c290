"""Layers and the Module system (PyTorch's ``torch.nn`` names).

    from minicct import nn
    layer = nn.Linear(16, 32)
    [n for n, _ in layer.named_parameters()]   # ['weight', 'bias']

``nn.init`` holds the initialisers (they draw from ``minicct.random``; ``minicct.manual_seed`` seeds it).
"""
from minicct.nn import init
from minicct.nn.module import (Module, Parameter, Sequential, ModuleList, StateDictError, LoadResult,
                               functional_call)
from minicct.nn.layers import (Linear, Conv2d, MaxPool2d, LayerNorm, Dropout, DropPath, ReLU, GELU,
                               Identity)
from minicct.nn.attention import Attention, MultiHeadSelfAttention

__all__ = ["init", "Module", "Parameter", "Sequential", "ModuleList", "StateDictError", "LoadResult",
           "functional_call", "Linear", "Conv2d", "MaxPool2d", "LayerNorm", "Dropout", "DropPath",
           "ReLU", "GELU", "Identity", "Attention", "MultiHeadSelfAttention"]
