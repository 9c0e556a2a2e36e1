"""A small reader for numeric arrays in MATLAB v5/v7 ``.mat`` files (such as nsd_expdesign.mat).

``scipy.io.loadmat`` imports ``scipy.sparse`` and costs ~0.4 s of start-up, as long as the whole
HDF5 read of a session's ROI voxels. This reader handles what the NSD design holds — named
numeric matrices, optionally zlib-compressed (``miCOMPRESSED``) — and skips everything else.
Tests check it against ``scipy.io.savemat``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

# MAT-file data types (miXXX) -> numpy dtype
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
# mxCLASS ids of numeric arrays (double, single, int8..uint64)
_NUMERIC_CLASSES = {6, 7, 8, 9, 10, 11, 12, 13, 14, 15}


class MatFileError(ValueError):
    pass


def _elements(buf: bytes, endian: str):
    """Yield (type, payload) of the data elements in ``buf``."""
    pos, n = 0, len(buf)
    while pos + 8 <= n:
        tag_type, tag_bytes = struct.unpack_from(endian + "II", buf, pos)
        if tag_type >> 16:  # small data element: size in the upper half, data in the tag
            size, tag_type = tag_type >> 16, tag_type & 0xFFFF
            yield tag_type, buf[pos + 4 : pos + 4 + size]
            pos += 8
            continue
        start, end = pos + 8, pos + 8 + tag_bytes
        if end > n:
            raise MatFileError(f"data element of {tag_bytes} bytes runs past the end of the file")
        yield tag_type, buf[start:end]
        pos = end if tag_type == _MI_COMPRESSED else start + ((tag_bytes + 7) // 8) * 8


def _matrix(payload: bytes, endian: str, wanted) -> tuple[str, np.ndarray] | None:
    sub = _elements(payload, endian)
    (_, flags), (_, dims), (_, name) = next(sub), next(sub), next(sub)
    mx_class = struct.unpack_from(endian + "I", flags)[0] & 0xFF
    name = name.decode("ascii", "replace")
    if wanted is not None and name not in wanted:
        return None
    if mx_class not in _NUMERIC_CLASSES:
        if wanted is None:  # not asked for by name: skip strings, cells, structs
            return None
        raise MatFileError(f"variable {name!r} is not a numeric matrix (class {mx_class})")
    shape = tuple(np.frombuffer(dims, dtype=endian + "i4"))
    mi_type, data = next(sub)
    if mi_type not in _MI_DTYPES:
        raise MatFileError(f"variable {name!r} has unsupported data type {mi_type}")
    arr = np.frombuffer(data, dtype=endian + _MI_DTYPES[mi_type])
    if arr.size != int(np.prod(shape)):
        raise MatFileError(f"variable {name!r}: {arr.size} values for shape {shape}")
    return name, arr.reshape(shape, order="F")


def loadmat(path: str | Path, variable_names=None) -> dict[str, np.ndarray]:
    """Numeric matrices of a v5/v7 ``.mat`` file, shaped as MATLAB saw them (e.g. (1, 30000))."""
    raw = Path(path).read_bytes()
    if len(raw) < 128:
        raise MatFileError("shorter than the 128-byte MAT-file header")
    if raw[:128].startswith(b"\x89HDF") or raw[512:516] == b"\x89HDF":
        raise MatFileError("a MATLAB v7.3 (HDF5) file; save the design with -v7 or read it with h5py")
    endian = {b"IM": "<", b"MI": ">"}.get(raw[126:128])
    if endian is None or struct.unpack_from(endian + "H", raw, 124)[0] != 0x0100:
        raise MatFileError("not a MATLAB 5.0 MAT-file (bad header version or endian mark)")
    wanted = set(variable_names) if variable_names is not None else None
    out: dict[str, np.ndarray] = {}
    for mi_type, payload in _elements(raw[128:], endian):
        if mi_type == _MI_COMPRESSED:
            try:
                payload = zlib.decompress(payload)
            except zlib.error as e:
                raise MatFileError(f"corrupt compressed element ({e})") from None
            mi_type, payload = next(_elements(payload, endian))
        if mi_type != _MI_MATRIX:
            continue
        got = _matrix(payload, endian, wanted)
        if got is not None:
            out[got[0]] = got[1]
            if wanted is not None and wanted <= out.keys():
                break
    return out
