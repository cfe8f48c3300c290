"""ViT-Lite, CVT and CCT (Hassani et al., "Escaping the Big Data Paradigm with Compact Transformers").

    from minicct import models
    model = models.create_model("cct_7_3x1_32")          # CIFAR-10 sized: 3.76 M parameters
    models.list_models("cct_*")
    models.count_params(model), models.count_macs(model, (3, 32, 32))

Every model is ``Tokenizer`` → ``TransformerClassifier``; the three families differ only in flags
(``minicct.models.cct``). Weights load from and save to ``.npz`` and PyTorch ``.pth`` files with the
official names (``minicct.models.checkpoint``; the file formats are in ``minicct.formats``).
"""
from minicct.models.tokenizer import Tokenizer
from minicct.models.transformer import (TransformerEncoderLayer, TransformerClassifier, SeqPool,
                                        sinusoidal_embedding)
from minicct.models.cct import CompactTransformer, CCT, CVT, ViTLite
from minicct.models.registry import create_model, list_models, model_config, VARIANTS, SIZES
from minicct.models.text import TextCompactTransformer, list_text_models
from minicct.models.complexity import count_params, count_macs, trace_macs, PAPER_TABLE_11, format_size_table

__all__ = ["Tokenizer", "TransformerEncoderLayer", "TransformerClassifier", "SeqPool",
           "sinusoidal_embedding", "CompactTransformer", "CCT", "CVT", "ViTLite", "create_model",
           "list_models", "model_config", "VARIANTS", "SIZES", "count_params", "count_macs", "trace_macs",
           "PAPER_TABLE_11", "format_size_table", "TextCompactTransformer", "list_text_models"]
from minicct.models.checkpoint import save_weights, load_weights, resize_pos_embed
from minicct.formats import read_state_dict, read_pth, write_pth, save_npz, load_npz, CheckpointError

__all__ += ["save_weights", "load_weights", "read_state_dict", "read_pth", "write_pth",
            "save_npz", "load_npz", "resize_pos_embed", "CheckpointError"]
