"""A minimal reader of MATLAB v5 ``.mat`` files: enough for Flowers-102's setid.mat and imagelabels.mat.

    arrays = read_mat("setid.mat")          # {'trnid': (1, 1020) float64, 'valid': ..., 'tstid': ...}

The format (MathWorks' "MAT-File Format", level 5):

    header   128 bytes: 116 of text, 8 of subsystem offset, version 0x0100 (int16), and 'IM' or 'MI',
             the characters 'MI' written as an int16, which say the byte order of the whole file
    elements one after another, each a tag then data:
             tag  = type (uint32) and size in bytes (uint32), data padded to a multiple of 8 bytes;
                    or the "small" form: size in the upper 16 bits, type in the lower, data in the
                    same 8 bytes (for 4 bytes of data or fewer)

A variable is an miMATRIX element (type 14) whose data is itself a list of elements: the array flags
(class in the low byte, complex/global/logical bits above), the dimensions (int32), the name (int8),
then the real part. The real part may be stored in a narrower type than the array's class: a double
array of small integers is often written as uint8 or uint16 to save space. MATLAB -v7 files wrap each
whole miMATRIX element in an miCOMPRESSED element (type 15): zlib-compressed bytes, not padded.

Only real numeric arrays are read (double, single, and the integer classes). Cell arrays, structs,
sparse, character, logical or complex arrays, and v7.3 (HDF5) files raise ``MatFileError`` saying so.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

MI_MATRIX, MI_COMPRESSED = 14, 15
# data element type -> dtype (byte order added when the file's is known)
MI_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
# array class -> the dtype of the array MATLAB holds
MX_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
MX_NAMES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse"}
FLAG_COMPLEX, FLAG_LOGICAL = 0x0800, 0x0200


class MatFileError(ValueError):
    """The file is not a MAT v5 file this reader understands; the message says why."""


def read_mat(path) -> dict:
    """All variables of a MAT v5 file: {name: ndarray}, each with MATLAB's shape (column-major data)."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 128:
        raise MatFileError(f"{path} is {len(data)} bytes, shorter than a MAT-file header (128): it is truncated")
    if data[:19] == b"MATLAB 7.3 MAT-file" or data[:8] == b"\x89HDF\r\n\x1a\n" or data[512:520] == b"\x89HDF\r\n\x1a\n":
        raise MatFileError(f"{path} is a MAT v7.3 (HDF5) file; only v5/v7 files are read here")
    if data[126:128] == b"IM":
        order = "<"
    elif data[126:128] == b"MI":
        order = ">"
    else:
        raise MatFileError(f"{path} is not a MAT v5 file: bytes 126-127 are {data[126:128]!r}, expected 'IM' or "
                           f"'MI' (text header: {data[:40]!r})")
    version = int(np.frombuffer(data, order + "u2", count=1, offset=124)[0])
    if version != 0x0100:
        raise MatFileError(f"{path} has MAT version 0x{version:04x}, expected 0x0100 (level 5)")
    out = {}
    for mtype, body in _elements(data, 128, len(data), order, path):
        if mtype == MI_COMPRESSED:
            try:
                inner = zlib.decompress(body)
            except zlib.error as e:
                raise MatFileError(f"{path}: a compressed variable could not be unpacked ({e}); the file is "
                                   f"truncated or corrupt") from None
            elements = list(_elements(inner, 0, len(inner), order, path))
        else:
            elements = [(mtype, body)]
        for t, b in elements:
            if t != MI_MATRIX:
                raise MatFileError(f"{path}: a top-level element of type {t}, expected a matrix (14)")
            name, array = _matrix(b, order, path)
            out[name] = array
    return out


def _elements(buf: bytes, pos: int, end: int, order: str, path):
    """Yield (type, data bytes) for each element in buf[pos:end]."""
    while pos < end:
        if end - pos < 8:
            raise MatFileError(f"{path}: {end - pos} stray bytes where an element tag (8 bytes) should be; "
                               f"the file is truncated or corrupt")
        first, second = (int(v) for v in np.frombuffer(buf, order + "u4", count=2, offset=pos))
        if first >> 16:  # the small form: size and type in one uint32, data in the next 4 bytes
            mtype, size = first & 0xFFFF, first >> 16
            if size > 4:
                raise MatFileError(f"{path}: a small element claims {size} bytes (at most 4); the file is corrupt")
            yield mtype, buf[pos + 4:pos + 4 + size]
            pos += 8
            continue
        mtype, size = first, second
        start = pos + 8
        if start + size > end:
            raise MatFileError(f"{path}: an element of {size} bytes runs past the end of its container "
                               f"({end - start} bytes left); the file is truncated")
        yield mtype, buf[start:start + size]
        # compressed elements are not padded; every other element is padded to 8 bytes
        pos = start + (size if mtype == MI_COMPRESSED else -(-size // 8) * 8)


def _matrix(body: bytes, order: str, path):
    """One miMATRIX element's data -> (name, array of MATLAB's shape)."""
    parts = list(_elements(body, 0, len(body), order, path))
    if len(parts) < 3:
        raise MatFileError(f"{path}: a matrix with {len(parts)} sub-elements; expected flags, dimensions, name, data")
    (ft, flags), (dt, dims), (nt, name) = parts[:3]
    if ft != 6 or len(flags) < 4:
        raise MatFileError(f"{path}: a matrix without its array-flags element; the file is corrupt")
    flag_word = int(np.frombuffer(flags, order + "u4", count=1)[0])
    cls = flag_word & 0xFF
    name = name.decode("ascii", "replace") if nt in (1, 2) else "?"
    if cls not in MX_CLASSES:
        kind = MX_NAMES.get(cls, f"class {cls}")
        raise MatFileError(f"{path}: variable {name!r} is a {kind} array; only real numeric arrays are read here")
    if flag_word & (FLAG_COMPLEX | FLAG_LOGICAL):
        raise MatFileError(f"{path}: variable {name!r} is complex or logical; only real numeric arrays are read here")
    if dt != 5:
        raise MatFileError(f"{path}: variable {name!r} has dimensions of type {dt}, expected int32 (5)")
    shape = tuple(int(d) for d in np.frombuffer(dims, order + "i4"))
    if len(parts) < 4:
        raise MatFileError(f"{path}: variable {name!r} has no data")
    rt, real = parts[3]
    if rt not in MI_TYPES:
        raise MatFileError(f"{path}: variable {name!r} stores its data as type {rt}, which is not a numeric type")
    stored = np.dtype(order + MI_TYPES[rt])
    n = int(np.prod(shape, dtype=np.int64))
    if len(real) != n * stored.itemsize:
        raise MatFileError(f"{path}: variable {name!r} of shape {shape} needs {n * stored.itemsize} bytes of "
                           f"{stored.name}, found {len(real)}; the file is corrupt")
    values = np.frombuffer(real, stored).astype(MX_CLASSES[cls])  # widened to the array's own class
    return name, values.reshape(shape, order="F")                 # MATLAB stores columns first
