"""Embed stimuli: CLIP image embeddings (pooled and/or patch tokens) and caption embeddings.

For every image shown to any of the given subjects (the design's trials of the sessions in each
subject's ``responses.tsv``), one HDF5 file keyed by ``nsd_id``:

==================  ===================  ===================================================
dataset             shape, dtype         content
==================  ===================  ===================================================
``nsd_id``          (n,) int64           sorted 0-based 73k ids
``image_pooled``    (n, d) float32       L2-normalised CLIP image embedding (``what`` pooled/both)
``image_tokens``    (n, T, W) float32    last-layer patch tokens, not normalised (tokens/both)
``text``            (n, 5, d) float32    L2-normalised embeddings of the first 5 COCO captions
                                         (by annotation id); NaN rows past ``n_captions``
``n_captions``      (n,) int8            captions embedded per image (≤ 5)
``captions``        (n, 5) utf-8 str     the caption texts ("" past ``n_captions``)
``done``            (n,) bool            row written (all True in a finished file)
==================  ===================  ===================================================

Attributes: ``model`` (name), ``clip_config`` and ``encoder`` (JSON), ``what``, ``subjects``,
``batch_size``, ``weights_sha256``, package versions.

Captions are found as NSD does: ``nsd_stim_info_merged.csv`` gives each image's ``cocoId`` and
``cocoSplit``, and ``annotations/captions_<split>.json`` its captions.

The file is written as ``OUT.partial``: every dataset is allocated when the file is created
(contiguous, fixed layout), captions and ids are written first, then the embeddings in batches
of ``batch_size`` rows, each followed by its ``done`` flags. An interrupted run leaves the
``.partial``; the next run with the same inputs resumes from its first batch not done (same
batch boundaries, so same results) and renames it to ``OUT`` when every row is done — the bytes
are those of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from .data import nsd
from .data.layout import NSDPaths
from .errors import InputError

WHAT = {"pooled": ("pooled",), "tokens": ("tokens",), "both": ("pooled", "tokens")}
MAX_CAPTIONS = 5

__all__ = ["embed_stimuli", "shown_images", "read_captions", "read_rows", "partial_path", "WHAT"]


def partial_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def shown_images(paths: NSDPaths, subjects, sessions="all") -> np.ndarray:
    """Sorted unique 0-based nsd ids of every image shown to ``subjects`` in their sessions."""
    design = nsd.NSDDesign.load(paths.expdesign)
    ids = []
    for s in subjects:
        design.check_subject(int(s))
        sess = nsd.parse_sessions(sessions, nsd.available_sessions(paths, int(s)), int(s))
        ids.append(design.trials(int(s), sess).nsd_id)
    return np.unique(np.concatenate(ids)).astype(np.int64) if ids else np.zeros(0, np.int64)


def _stim_info(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(cocoId, cocoSplit) indexed by 0-based nsd id."""
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{path}: stimulus table not found (NSD's nsd_stim_info_merged.csv)")
    try:
        df = pd.read_csv(path, usecols=["cocoId", "cocoSplit", "nsdId"])
    except ValueError as e:
        raise InputError(f"{path}: expected columns cocoId, cocoSplit, nsdId ({e})") from None
    nid = df["nsdId"].to_numpy(np.int64)
    n = int(nid.max()) + 1 if len(nid) else 0
    coco = np.full(n, -1, np.int64)
    split = np.full(n, "", object)
    coco[nid] = df["cocoId"].to_numpy(np.int64)
    split[nid] = df["cocoSplit"].astype(str).to_numpy()
    return coco, split


def read_captions(paths: NSDPaths, nsd_ids: np.ndarray, max_captions: int = MAX_CAPTIONS) -> list[list[str]]:
    """The first ``max_captions`` COCO captions (by annotation id) of each image."""
    coco, split = _stim_info(paths.stim_info)
    bad = nsd_ids[(nsd_ids >= len(coco))]
    if len(bad) or (len(nsd_ids) and (coco[nsd_ids] < 0).any()):
        first = int(bad[0]) if len(bad) else int(nsd_ids[coco[nsd_ids] < 0][0])
        raise InputError(f"{paths.stim_info}: no row for nsd id {first}")
    by_split: dict[str, dict[int, list]] = {}
    for sp in sorted(set(split[nsd_ids].tolist())):
        f = paths.captions(sp)
        if not f.is_file():
            raise InputError(f"{f}: caption file not found (COCO captions of split {sp!r})")
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
            anns = doc["annotations"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{f}: not a COCO caption file ({type(e).__name__}: {e})") from None
        table: dict[int, list] = {}
        for a in anns:
            table.setdefault(int(a["image_id"]), []).append((int(a["id"]), str(a["caption"]).strip()))
        by_split[sp] = table
    out = []
    for i in nsd_ids.tolist():
        caps = by_split[split[i]].get(int(coco[i]))
        if not caps:
            raise InputError(f"{paths.captions(split[i])}: no caption for cocoId {int(coco[i])} (nsd id {i})")
        out.append([c for _, c in sorted(caps)][:max_captions])
    return out


def read_rows(dset, rows: np.ndarray) -> np.ndarray:
    """``dset[rows]`` for sorted unique ``rows``, read as slices of consecutive rows.

    h5py's fancy indexing (a list of rows) is correct but ~25x slower than slicing on
    nsd-sim's one-image gzip chunks (it builds one selection over all chunks); runs of
    consecutive rows are read as plain slices, which is one chunk or one contiguous span each.
    """
    rows = np.asarray(rows, np.int64)
    if len(rows) and (np.diff(rows) <= 0).any():
        raise ValueError("rows must be sorted and unique")
    if not len(rows):
        return np.zeros((0, *dset.shape[1:]), dset.dtype)
    out = np.empty((len(rows), *dset.shape[1:]), dset.dtype)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
        dset.read_direct(out, np.s_[int(rows[lo]):int(rows[hi - 1]) + 1], np.s_[int(lo):int(hi)])
    return out


def _create(h5, name, shape, dtype):
    """A contiguous dataset allocated now (fixed file layout whatever order rows are written in)."""
    import h5py

    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return h5.create_dataset(name, shape=shape, dtype=dtype, dcpl=dcpl, track_times=False,
                             fill_time="never")


def embed_stimuli(nsd_root, subjects, clip, out, *, what: str = "both", batch_size: int = 64,
                  sessions="all", sim_dir=None, device: str = "cpu", progress: bool = True,
                  encoder=None) -> Path:
    """Write the embeddings file ``out`` (see the module docstring); return its path.

    ``clip`` is a CLIP config (see :func:`braindecode_pkg.models.clip.parse_clip_config`);
    ``encoder`` an already loaded :class:`~braindecode_pkg.models.clip.ClipEncoder` (tests).
    """
    from .models import clip as mclip

    if what not in WHAT:
        raise InputError(f"--what {what!r}: expected one of {sorted(WHAT)}")
    if int(batch_size) < 1:
        raise InputError(f"--batch-size {batch_size}: expected a positive integer")
    batch_size = int(batch_size)
    subjects = sorted({int(s) for s in subjects})
    if not subjects:
        raise InputError("no subjects given")
    root = Path(nsd_root)
    if not root.is_dir():
        raise InputError(f"{root}: NSD root not found")
    paths = NSDPaths(root)
    cfg = encoder.config if encoder is not None and encoder.config is not None else mclip.parse_clip_config(clip, sim_dir=sim_dir)
    if not paths.stimuli.is_file():
        raise InputError(f"{paths.stimuli}: stimulus images not found (NSD's nsd_stimuli.hdf5, dataset imgBrick)")
    ids = shown_images(paths, subjects, sessions)
    captions = read_captions(paths, ids)
    import h5py

    with h5py.File(paths.stimuli, "r") as f:
        if "imgBrick" not in f:
            raise InputError(f"{paths.stimuli}: no dataset imgBrick (found {list(f.keys())})")
        shape = f["imgBrick"].shape
    if len(shape) != 4 or shape[3] != 3 or (len(ids) and ids[-1] >= shape[0]):
        raise InputError(f"{paths.stimuli}: imgBrick {shape} does not hold (73000, H, W, 3) images for these ids")

    from .io import cached_sha256, default_hash_cache

    weights_sha = cached_sha256(cfg.weights, default_hash_cache())
    if encoder is None:
        encoder = mclip.ClipEncoder.load(cfg, device=device)
    parts = WHAT[what]
    d = encoder.embed_dim
    n = len(ids)
    signature = {
        "nsd_id_sha1": __import__("hashlib").sha1(ids.tobytes()).hexdigest(), "n": n, "what": what,
        "batch_size": batch_size, "clip_config": cfg.to_dict(), "weights_sha256": weights_sha,
        "captions_sha1": __import__("hashlib").sha1(json.dumps(captions).encode()).hexdigest(),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(out)
    h5 = _open_partial(part, signature)
    if h5 is None:
        h5 = _new_partial(part, signature, ids, captions, parts, d, encoder, cfg, subjects, batch_size, what)
    try:
        done = h5["done"][:]
        starts = [a for a in range(0, n, batch_size) if not done[a:a + batch_size].all()]
        bar = None
        if progress and starts:
            from tqdm.auto import tqdm

            bar = tqdm(total=n, initial=n - sum(min(batch_size, n - a) for a in starts), unit="img",
                       desc=f"embed {cfg.name}", file=sys.stderr)
        with h5py.File(paths.stimuli, "r") as stim:
            brick = stim["imgBrick"]
            for a in starts:
                b = min(n, a + batch_size)
                imgs = read_rows(brick, ids[a:b])
                emb = encoder.encode_images(imgs, batch_size=batch_size, what=parts)
                if "pooled" in emb:
                    h5["image_pooled"][a:b] = emb["pooled"]
                if "tokens" in emb:
                    h5["image_tokens"][a:b] = emb["tokens"]
                flat = [c for caps in captions[a:b] for c in caps]
                t = encoder.encode_text(flat) if flat else np.zeros((0, d), np.float32)
                block = np.full((b - a, MAX_CAPTIONS, d), np.nan, np.float32)
                k = 0
                for r, caps in enumerate(captions[a:b]):
                    block[r, : len(caps)] = t[k:k + len(caps)]
                    k += len(caps)
                h5["text"][a:b] = block
                h5["done"][a:b] = True
                h5.flush()
                if bar is not None:
                    bar.update(b - a)
        if bar is not None:
            bar.close()
    finally:
        h5.close()
    os.replace(part, out)
    return out


def _open_partial(part: Path, signature: dict):
    """The partial file if it was started with the same inputs, else None (and it is removed)."""
    import h5py

    if not part.exists():
        return None
    try:
        h5 = h5py.File(part, "r+")
    except OSError:
        part.unlink()
        return None
    try:
        same = json.loads(h5.attrs.get("signature", "null")) == signature
    except (ValueError, TypeError):
        same = False
    if same:
        return h5
    h5.close()
    print(f"[embed] {part}: started with other inputs; starting over", file=sys.stderr)
    part.unlink()
    return None


def _new_partial(part, signature, ids, captions, parts, d, encoder, cfg, subjects, batch_size, what):
    import h5py
    import open_clip
    import torch

    from . import __version__

    n = len(ids)
    h5 = h5py.File(part, "w", libver="earliest")
    try:
        h5.create_dataset("nsd_id", data=ids.astype(np.int64), track_times=False)
        ncap = np.array([len(c) for c in captions], np.int8)
        h5.create_dataset("n_captions", data=ncap, track_times=False)
        text = np.array([c + [""] * (MAX_CAPTIONS - len(c)) for c in captions], dtype=object).reshape(n, MAX_CAPTIONS)
        h5.create_dataset("captions", data=text, dtype=h5py.string_dtype("utf-8"), track_times=False)
        if "pooled" in parts:
            _create(h5, "image_pooled", (n, d), np.float32)
        if "tokens" in parts:
            _create(h5, "image_tokens", (n, *encoder.token_shape), np.float32)
        _create(h5, "text", (n, MAX_CAPTIONS, d), np.float32)
        h5.create_dataset("done", data=np.zeros(n, bool), track_times=False)
        a = h5.attrs
        a["model"] = cfg.name
        a["clip_config"] = json.dumps(cfg.to_dict())
        a["encoder"] = json.dumps(encoder.describe())
        a["what"] = what
        a["subjects"] = np.asarray(subjects, np.int64)
        a["batch_size"] = batch_size
        a["weights_sha256"] = signature["weights_sha256"]
        a["signature"] = json.dumps(signature)
        a["versions"] = json.dumps({"braindecode_pkg": __version__, "open_clip": open_clip.__version__,
                                    "torch": torch.__version__})
        h5.flush()
    except BaseException:
        h5.close()
        part.unlink()
        raise
    return h5
