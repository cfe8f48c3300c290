"""File formats minicct reads and writes, none of which can run code when read.

    pickles.py     RestrictedUnpickler: the one unpickler, which builds only what a table allows
                   (used for CIFAR batches and .pth files)
    pth.py         PyTorch's torch.save zip format: read_pth, write_pth (no torch needed)
    npz.py         .npz: a state_dict (save_npz, load_npz), a training checkpoint tree
                   (save_checkpoint, load_checkpoint)
    state_dict.py  read_state_dict (.npz or .pth, the content decides), write_state_dict
    files.py       atomic_write: a reader never sees half a file

What the weights *mean* (official names, resizing a positional embedding) is the models' business
(``minicct.models.checkpoint``); what a training checkpoint holds is training's.
"""
from minicct.errors import CheckpointError
from minicct.formats.files import atomic_write
from minicct.formats.npz import load_checkpoint, load_npz, save_checkpoint, save_npz
from minicct.formats.pickles import NUMPY_ARRAYS, RestrictedUnpickler, load_restricted
from minicct.formats.pth import read_pth, write_pth
from minicct.formats.state_dict import extract_state_dict, read_state_dict, write_state_dict

__all__ = ["CheckpointError", "atomic_write", "load_checkpoint", "load_npz", "save_checkpoint", "save_npz",
           "NUMPY_ARRAYS", "RestrictedUnpickler", "load_restricted", "read_pth", "write_pth",
           "extract_state_dict", "read_state_dict", "write_state_dict"]
