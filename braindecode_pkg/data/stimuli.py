"""Checks of NSD's stimulus files and subjects, cheap enough to run before any job starts.

- :func:`check_image_brick`: ``nsd_stimuli.hdf5`` holds ``imgBrick`` (n_images, H, W, 3) uint8
  (NSD: (73000, 425, 425, 3)); reads the HDF5 header only.
- :func:`read_coco_captions`: a COCO caption file, every annotation checked.
- :func:`check_nsd_root`: what the workflow checks at parse time on real NSD: each configured
  subject present, the image brick's shape, the caption files looking like JSON objects (their
  first and last bytes; the embed stage parses them fully before loading any model).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from .layout import NSDPaths

COCO_SPLITS = ("train2017", "val2017")


def check_image_brick(path, ids=None) -> tuple:
    """Shape of ``imgBrick`` in ``path``; :class:`InputError` naming the file unless it holds
    (n, H, W, 3) uint8 images (and, given ``ids``, an image for each 0-based nsd id)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: stimulus images not found (NSD's nsd_stimuli.hdf5, dataset imgBrick)")
    try:
        with h5py.File(path, "r") as f:
            if "imgBrick" not in f:
                raise InputError(f"{path}: no dataset imgBrick (found {list(f.keys())})")
            ds = f["imgBrick"]
            shape, dtype = tuple(ds.shape), ds.dtype
    except OSError as e:
        raise InputError(f"{path}: cannot open HDF5 ({e}); truncated or corrupt?") from None
    if len(shape) != 4 or shape[3] != 3 or min(shape[1:3], default=0) < 1 or dtype != np.uint8:
        raise InputError(f"{path}: imgBrick has shape {shape} and dtype {dtype}; expected (n_images, H, W, 3) "
                         f"uint8 RGB images (NSD's is (73000, 425, 425, 3))")
    if ids is not None and len(ids) and int(np.max(ids)) >= shape[0]:
        raise InputError(f"{path}: imgBrick holds {shape[0]} images; nsd id {int(np.max(ids))} is shown "
                         f"to these subjects (NSD's holds 73000)")
    return shape


def read_coco_captions(path) -> dict[int, list[tuple[int, str]]]:
    """``{image_id: [(annotation id, caption), ...]}`` of a COCO caption file (``captions_*.json``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: caption file not found")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: not a COCO caption file: not JSON ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        raise InputError(f"{path}: not a COCO caption file: expected a JSON object with an 'annotations' "
                         f"list, got {type(doc).__name__}" + (f" with keys {sorted(doc)[:6]}" if isinstance(doc, dict) else ""))
    table: dict[int, list] = {}
    for i, a in enumerate(doc["annotations"]):
        ok = isinstance(a, dict) and isinstance(a.get("caption"), str)
        ok = ok and all(isinstance(a.get(k), int) and not isinstance(a.get(k), bool) for k in ("image_id", "id"))
        if not ok:
            raise InputError(f"{path}: not a COCO caption file: annotation {i} is {json.dumps(a)[:120]}; expected "
                             f'{{"image_id": int, "id": int, "caption": str}}')
        table.setdefault(a["image_id"], []).append((a["id"], a["caption"].strip()))
    return table


def _looks_like_json_object(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        size = f.seek(0, 2)
        f.seek(max(0, size - 4096))
        tail = f.read().rstrip(b" \t\r\n")
    return head[:1] == b"{" and tail[-1:] == b"}"


def check_nsd_root(root, subjects) -> None:
    """Cheap checks of a real NSD root for the workflow (milliseconds): see the module docstring."""
    paths = NSDPaths(Path(root))
    if not paths.root.is_dir():
        raise InputError(f"{paths.root}: NSD root not found")
    if not paths.expdesign.is_file():
        raise InputError(f"{paths.expdesign}: design file not found (NSD's nsd_expdesign.mat); is {paths.root} an "
                         f"NSD root (the folder holding nsddata/, nsddata_betas/, nsddata_stimuli/)?")
    absent = [s for s in subjects if not paths.responses(int(s)).is_file()]
    if absent:
        have = sorted(p.name for p in (paths.root / "nsddata/ppdata").glob("subj*") if (p / "behav/responses.tsv").is_file())
        raise InputError(f"subject(s) {', '.join(str(s) for s in absent)} absent from the data: no "
                         f"{paths.responses(int(absent[0]))} (subjects with data: {', '.join(have) or 'none'}); "
                         f"set subjects to those with data")
    check_image_brick(paths.stimuli)
    for split in COCO_SPLITS:
        f = paths.captions(split)
        if f.is_file() and not _looks_like_json_object(f):
            raise InputError(f"{f}: not a COCO caption file (not a JSON object)")
