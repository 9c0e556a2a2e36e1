"""Check a weights file before anything is loaded from it, without ever unpickling.

:func:`check_weights_file` reads only a file's head (and, for a torch zip checkpoint, its small
``data.pkl`` through ``torch.load(weights_only=True, mmap=True)``, which maps the tensors
without reading them): milliseconds even for a 10 GB checkpoint, so config checks can call it
before any job runs. It refuses, naming the file:

- a plain Python pickle (``pickle.dump`` of anything, whatever its suffix): never loaded;
- a torch checkpoint whose pickle holds objects other than tensors and plain containers;
- a file that is none of safetensors, a torch zip checkpoint or a legacy torch checkpoint
  (a truncated download, an HTML error page, a TorchScript archive is reported as such).
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from .errors import InputError

# torch.save's legacy (non-zip) format starts with this number, pickled (protocol 2, LONG1)
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_CONVERT = "save its state dict as safetensors with a tool you trust"


def sniff_weights(path) -> str:
    """``'safetensors'``, ``'torch-zip'``, ``'torchscript'``, ``'torch-legacy'``, ``'pickle'`` or ``'unknown'``."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
        size = f.seek(0, 2)
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "unknown"
        if any(n.endswith("/constants.pkl") or n.endswith("/code/__torch__.py") for n in names):
            return "torchscript"
        return "torch-zip" if any(n.endswith("data.pkl") for n in names) else "unknown"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    return "unknown"


def check_weights_file(path, what: str = "weights") -> str:
    """Raise :class:`InputError` naming ``path`` unless it is a loadable weights file; returns its kind."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    kind = sniff_weights(path)
    if kind == "pickle":
        raise InputError(f"{path}: {what} file is a plain Python pickle, not a safetensors or torch checkpoint; "
                         f"pickles are never loaded (unpickling runs arbitrary code): {_CONVERT}")
    if kind == "torchscript":
        raise InputError(f"{path}: {what} file is a TorchScript archive; convert it to a state dict: {_CONVERT}")
    if kind != "safetensors" and path.suffix == ".safetensors":
        raise InputError(f"{path}: not a readable safetensors file ({what}; its header is not safetensors': "
                         f"a truncated download, or another format?)")
    if kind == "unknown":
        raise InputError(f"{path}: {what} file is not safetensors nor a torch checkpoint (truncated download, "
                         f"or another format?)")
    if kind == "safetensors":
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise InputError(f"{path}: {what} file has a corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise InputError(f"{path}: {what} file has a corrupt safetensors header")
    elif kind == "torch-zip":
        import pickle

        import torch

        try:  # the secure unpickler on data.pkl; mmap: the tensors are mapped, not read
            torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"{path}: {what} file refused: its pickle holds objects other than tensors "
                             f"({first}); checkpoints are only loaded with torch.load(weights_only=True): "
                             f"{_CONVERT}") from None
        except Exception as e:  # noqa: BLE001 (truncated zips, bad records)
            raise InputError(f"{path}: {what} file cannot be read as a torch checkpoint "
                             f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    return kind
