"""Embed stimuli: CLIP image embeddings (pooled and/or patch tokens) and caption embeddings.

For every image shown to any of the given subjects (the design's trials of the sessions in each
subject's ``responses.tsv``), one HDF5 file keyed by ``nsd_id``:

==================  ===================  ===================================================
dataset             shape, dtype         content
==================  ===================  ===================================================
``nsd_id``          (n,) int64           sorted 0-based 73k ids
``image_pooled``    (n, d) DTYPE         L2-normalised CLIP image embedding (``what`` pooled/both)
``image_tokens``    (n, T, W) DTYPE      last-layer patch tokens, not normalised (tokens/both)
``text``            (n, 5, d) DTYPE      L2-normalised embeddings of the first 5 COCO captions
                                         (by annotation id); NaN rows past ``n_captions``
``n_captions``      (n,) int8            captions embedded per image (≤ 5)
``captions``        (n, 5) utf-8 str     the caption texts ("" past ``n_captions``)
``done``            (n,) bool            row written (all True in a finished file)
``batch_sha256``    (n_batches,) S64     SHA-256 of each batch's embedding rows (see below)
==================  ===================  ===================================================

DTYPE is ``float32``, or ``float16`` (``dtype``; half the disk and memory, e.g. 62 GB instead of
124 GB for the ViT-bigG tokens of all 73k NSD images; readers compute in float32). Every
dataset is contiguous, so readers can memory-map the embeddings (:func:`contiguous_memmap`);
readers check the batch checksums first (:func:`verify_embeddings`).

Attributes: ``model`` (name), ``clip_config`` and ``encoder`` (JSON), ``what``, ``dtype``,
``subjects``, ``batch_size``, ``weights_sha256``, package versions.

Captions are found as NSD does: ``nsd_stim_info_merged.csv`` gives each image's ``cocoId`` and
``cocoSplit``, and ``annotations/captions_<split>.json`` its captions.

The file is written as ``OUT.partial``: every dataset is allocated when the file is created
(contiguous, fixed layout), captions and ids are written first, then the embeddings in batches
of ``batch_size`` rows, each flushed to disk before its checksum (``batch_sha256``) and ``done``
flags are written and flushed. An interrupted (even killed) run leaves the ``.partial``; the next
run with the same inputs first checks every batch marked done against its checksum (one read of
the partial file; a batch altered on disk, or whose rows never reached it, is embedded again),
then resumes from the batches not done (same batch boundaries, so same results) and renames the
file to ``OUT`` when every row is done — the bytes are those of an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from ..data import nsd
from ..data.layout import NSDPaths
from ..data.stimuli import check_image_brick, read_coco_captions
from ..errors import InputError
from ..io import ContentDigest, fault_point

WHAT = {"pooled": ("pooled",), "tokens": ("tokens",), "both": ("pooled", "tokens")}
DTYPES = ("float32", "float16")
MAX_CAPTIONS = 5
PARTIAL_FORMAT = 2  # partial files of another format are started over
EMBEDDINGS = ("image_pooled", "image_tokens", "text")  # what batch_sha256 covers, in this order

__all__ = ["embed_stimuli", "shown_images", "read_captions", "read_rows", "partial_path", "verify_embeddings", "clip_info",
           "contiguous_memmap", "WHAT", "DTYPES"]


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
        by_split[sp] = read_coco_captions(f)
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
                  encoder=None, dtype: str = "float32") -> Path:
    """Write the embeddings file ``out`` (see the module docstring); return its path.

    ``clip`` is a CLIP config (see :func:`braindecode_pkg.decoders.clip.parse_clip_config`);
    ``encoder`` an already loaded :class:`~braindecode_pkg.decoders.clip.ClipEncoder` (tests).
    """
    from ..decoders import clip as mclip

    if what not in WHAT:
        raise InputError(f"--what {what!r}: expected one of {sorted(WHAT)}")
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: expected one of {list(DTYPES)}")
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
    check_image_brick(paths.stimuli)
    ids = shown_images(paths, subjects, sessions)
    check_image_brick(paths.stimuli, ids)
    captions = read_captions(paths, ids)
    import h5py

    from ..io import cached_sha256, default_hash_cache

    weights_sha = cached_sha256(cfg.weights, default_hash_cache())
    if encoder is None:
        encoder = mclip.ClipEncoder.load(cfg, device=device)
    parts = WHAT[what]
    d = encoder.embed_dim
    n = len(ids)
    signature = {
        "format": PARTIAL_FORMAT, "nsd_id_sha1": __import__("hashlib").sha1(ids.tobytes()).hexdigest(), "n": n, "what": what,
        "batch_size": batch_size, "clip_config": cfg.to_dict(), "weights_sha256": weights_sha, "dtype": dtype,
        "captions_sha1": __import__("hashlib").sha1(json.dumps(captions).encode()).hexdigest(),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(out)
    h5 = _open_partial(part, signature)
    if h5 is None:
        h5 = _new_partial(part, signature, ids, captions, parts, d, encoder, cfg, subjects, batch_size, what, dtype)
    try:
        _check_done_batches(h5, part, batch_size)
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
                rows = {}
                if "pooled" in emb:
                    rows["image_pooled"] = np.asarray(emb["pooled"], dtype)
                if "tokens" in emb:
                    rows["image_tokens"] = np.asarray(emb["tokens"], dtype)
                flat = [c for caps in captions[a:b] for c in caps]
                t = encoder.encode_text(flat) if flat else np.zeros((0, d), np.float32)
                block = np.full((b - a, MAX_CAPTIONS, d), np.nan, dtype)
                k = 0
                for r, caps in enumerate(captions[a:b]):
                    block[r, : len(caps)] = t[k:k + len(caps)]
                    k += len(caps)
                rows["text"] = block
                for name, arr in rows.items():
                    h5[name][a:b] = arr
                h5.flush()  # the rows reach the file before the flags that vouch for them
                fault_point("embed.rows_written")
                h5["batch_sha256"][a // batch_size] = _rows_digest(rows).encode()
                h5["done"][a:b] = True
                h5.flush()
                fault_point("embed.batch_done")
                if bar is not None:
                    bar.update(b - a)
        if bar is not None:
            bar.close()
    finally:
        h5.close()
    fault_point("embed.before_rename")
    os.replace(part, out)
    return out


def clip_info(path) -> dict:
    """The CLIP an embeddings file was written with, from its attributes: ``model`` (name),
    ``config`` (its open_clip config) and ``weights_sha256``, each where recorded."""
    import h5py

    a = {}
    with h5py.File(path, "r") as f:
        for k in ("model", "clip_config", "weights_sha256"):
            if k in f.attrs:
                v = f.attrs[k]
                a[k] = v.decode() if isinstance(v, bytes) else str(v)
    if "clip_config" in a:
        a["config"] = json.loads(a.pop("clip_config") or "{}")
    return a


def verify_embeddings(path, cache_dir="default") -> None:
    """Check a finished embeddings file before it is trusted: every row written, every batch
    matching its ``batch_sha256``, the image embeddings finite. An :class:`InputError` names
    the file and the first bad rows.

    One read of the embeddings (0.47 GB/s measured on this project's 2-core machines: about 2 min for
    62 GB of float16 ViT-bigG tokens); the outcome is remembered by the file's
    stat (:func:`.io.remembered_by_stat`, in the SHA-256 cache, ``cache_dir``), so each file is
    read once however many jobs train on it. Files without checksums (written before they
    existed) are only checked for unwritten rows.
    """
    from ..io import default_hash_cache, remembered_by_stat

    path = Path(path)
    remembered_by_stat(path, default_hash_cache() if cache_dir == "default" else cache_dir,
                       "embed-verified", _verify_embeddings)


def _verify_embeddings(path: Path) -> str:
    import hashlib

    import h5py

    with h5py.File(path, "r") as f:
        if "done" in f and not f["done"][:].all():
            raise InputError(f"{path}: unfinished (some rows not written); run the embed stage again")
        if "batch_sha256" not in f:
            return "no checksums"
        names = [x for x in EMBEDDINGS if x in f]
        n = len(f["nsd_id"])
        bs = int(f.attrs["batch_size"])
        want = f["batch_sha256"][:]
        if len(want) != -(-n // bs):
            raise InputError(f"{path}: {len(want)} batch checksums for {n} rows of batch size {bs}")
        for i, a in enumerate(range(0, n, bs)):
            rows = {x: f[x][a:a + bs] for x in names}
            if _rows_digest(rows) != want[i].decode(errors="replace"):
                raise InputError(f"{path}: rows {a}..{min(n, a + bs) - 1} do not match their checksum "
                                 "(altered on disk); run the embed stage again")
            for x in ("image_pooled", "image_tokens"):
                if x in rows and not all_finite(rows[x]):
                    raise InputError(f"{path}: {x} contains NaN or inf (rows {a}..{min(n, a + bs) - 1})")
    return hashlib.sha256(want.tobytes()).hexdigest()


def all_finite(a: np.ndarray) -> bool:
    if a.dtype == np.float16:  # an exponent of all ones is inf or NaN (2x faster than isfinite)
        return bool(((a.view(np.uint16) & 0x7C00) != 0x7C00).all())
    return bool(np.isfinite(a).all())


def contiguous_memmap(dset):
    """A read-only ``np.memmap`` of the h5py dataset ``dset`` (None if it is not stored
    contiguously and unfiltered, e.g. chunked or compressed).

    The embed stage allocates its datasets contiguously, so the embeddings can be used without
    reading them into memory: the pages are read on first use and shared, through the OS page
    cache, by every process that maps the file (the data-parallel training processes of a node).
    """
    offset = dset.id.get_offset()
    if dset.chunks is not None or offset is None or dset.dtype.kind != "f" or not dset.dtype.isnative:
        return None
    return np.memmap(dset.file.filename, dtype=dset.dtype, mode="r", offset=offset, shape=dset.shape)


def _rows_digest(rows: dict) -> str:
    """SHA-256 of one batch's embedding rows (the datasets of :data:`EMBEDDINGS` it has)."""
    d = ContentDigest()
    for name in EMBEDDINGS:
        if name in rows:
            d.add(name, rows[name])
    return d.hexdigest()


def _check_done_batches(h5, part: Path, batch_size: int) -> list[int]:
    """Mark undone every batch whose rows do not match its ``batch_sha256``; returns their indices.

    Rows flagged done by a killed run, or altered on disk since, are then embedded again.
    Costs one read of the embeddings already written (only when resuming).
    """
    done = h5["done"][:]
    n = len(done)
    names = [x for x in EMBEDDINGS if x in h5]
    bad = []
    for i, a in enumerate(range(0, n, batch_size)):
        b = min(n, a + batch_size)
        if not done[a:b].any():
            continue
        want = h5["batch_sha256"][i].decode(errors="replace")
        if not done[a:b].all() or _rows_digest({x: h5[x][a:b] for x in names}) != want:
            bad.append(i)
            h5["done"][a:b] = False
    if bad:
        h5.flush()
        print(f"[embed] {part}: {len(bad)} batch(es) marked done do not match their checksum "
              f"(first rows {bad[0] * batch_size}..); embedding them again", file=sys.stderr)
    return bad


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
        n_batches = -(-signature["n"] // signature["batch_size"])
        # a killed creation may have left the signature without every dataset
        same = same and h5["done"].shape == (signature["n"],) and h5["batch_sha256"].shape == (n_batches,)
    except (ValueError, TypeError, KeyError, OSError):
        same = False
    if same:
        return h5
    h5.close()
    print(f"[embed] {part}: started with other inputs; starting over", file=sys.stderr)
    part.unlink()
    return None


def _new_partial(part, signature, ids, captions, parts, d, encoder, cfg, subjects, batch_size, what, dtype):
    import h5py
    import open_clip
    import torch

    from .. import __version__

    n = len(ids)
    per_row = np.dtype(dtype).itemsize * ((d if "pooled" in parts else 0) + (int(np.prod(encoder.token_shape)) if "tokens" in parts else 0)
                   + MAX_CAPTIONS * d) + 8 + 1 + 1 + 4 * sum(len(c) for caps in captions for c in caps) // max(n, 1)
    need = n * per_row + (1 << 20)
    free = shutil.disk_usage(part.parent).free
    if need > free:  # HDF5 can crash closing a file whose writes failed: refuse before creating it
        raise OSError(errno.ENOSPC, f"No space left on device: the embeddings need about {need / 1e6:.1f} MB, "
                      f"{free / 1e6:.1f} MB free", str(part.parent))
    h5 = h5py.File(part, "w", libver="earliest")
    try:
        h5.create_dataset("nsd_id", data=ids.astype(np.int64), track_times=False)
        ncap = np.array([len(c) for c in captions], np.int8)
        h5.create_dataset("n_captions", data=ncap, track_times=False)
        text = np.array([c + [""] * (MAX_CAPTIONS - len(c)) for c in captions], dtype=object).reshape(n, MAX_CAPTIONS)
        h5.create_dataset("captions", data=text, dtype=h5py.string_dtype("utf-8"), track_times=False)
        if "pooled" in parts:
            _create(h5, "image_pooled", (n, d), dtype)
        if "tokens" in parts:
            _create(h5, "image_tokens", (n, *encoder.token_shape), dtype)
        _create(h5, "text", (n, MAX_CAPTIONS, d), dtype)
        h5.create_dataset("done", data=np.zeros(n, bool), track_times=False)
        _create(h5, "batch_sha256", (-(-n // batch_size),), "S64")
        a = h5.attrs
        a["model"] = cfg.name
        a["clip_config"] = json.dumps(cfg.to_dict())
        a["encoder"] = json.dumps(encoder.describe())
        a["what"] = what
        a["dtype"] = dtype
        a["subjects"] = np.asarray(subjects, np.int64)
        a["batch_size"] = batch_size
        a["weights_sha256"] = signature["weights_sha256"]
        a["signature"] = json.dumps(signature)
        a["versions"] = json.dumps({"braindecode_pkg": __version__, "open_clip": open_clip.__version__,
                                    "torch": torch.__version__})
        h5.flush()
        # every dataset was allocated at creation: reserve its blocks now, so that a disk filled
        # by another job fails here, cleanly, and not in the middle of a batch
        with open(part, "r+b") as fh:
            try:
                os.posix_fallocate(fh.fileno(), 0, h5.id.get_filesize())
            except OSError as e:  # a file system without fallocate: the reservation is best-effort
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
        fault_point("embed.created")
    except BaseException:
        h5.close()
        part.unlink()
        raise
    return h5
