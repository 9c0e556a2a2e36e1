"""Data of the brain model: trials of the preprocess stage, CLIP/latent targets, the batch stream.

- :func:`load_subject` reads ``results/prep/subjAA.h5`` (the preprocess contract) restricted to a
  split (``train``: not shared1000, ``test``: shared1000, ``all``; with a ``validation`` split,
  ``train`` leaves its images out and ``val`` is their trials) and a session selection
  (:func:`select_sessions`: ``all``, ``first:K`` — the first K acquired sessions, K = 1 ≈ one
  hour of scanning — or ``1-3,5``). The validation images (:func:`validation_ids`) are a seeded
  draw of the subject's training images over all its sessions, every repeat of an image on the
  same side: the split every choice (a recipe, a step count, decode settings) is made on, so that
  the shared test images are scored once. Drawn over all sessions, they are one set per subject
  whatever sessions a model trains on (adapted from 1 or from 4 sessions, validated on the same
  images), and a model trained on the first K sessions loses only those of them that fall in its
  sessions (on nsd-sim's default, 100 validation images take 8 % of session 1's trials, where a
  draw from session 1 alone took 19 %).
- :func:`load_targets` reads the embed stage's file (``image_pooled`` → head ``pooled``,
  ``image_tokens`` → ``tokens``) and optionally a latent file (``nsd_id`` + ``latent`` (n, c, h, w),
  the image decoder's VAE latents) for exactly the images needed; a missing image is an error.
- :class:`BatchStream` deals the trials of several subjects (each its own voxel count) into one
  stream of global batches, a pure function of ``(seed, step)``: that makes resuming and
  multi-process training reproduce a single uninterrupted run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import InputError
from .model import subject_key

__all__ = ["SubjectTrials", "Targets", "load_subject", "load_targets", "select_sessions", "BatchStream",
           "test_groups", "validation_ids", "parse_validation", "EMBED_HEADS", "SPLITS"]

#: the splits of a subject's trials
SPLITS = ("train", "val", "test", "all")

#: dataset of the embed stage's file behind each head
EMBED_HEADS = {"pooled": "image_pooled", "tokens": "image_tokens"}


@dataclasses.dataclass
class SubjectTrials:
    """Trials of one subject: ``betas`` (n, V) float32 and per-trial ``nsd_id``, ``session``, ``repeat``."""

    key: str
    path: Path
    betas: np.ndarray
    nsd_id: np.ndarray
    session: np.ndarray
    repeat: np.ndarray
    sessions: list
    split: str

    @property
    def n_voxels(self) -> int:
        return int(self.betas.shape[1])

    def __len__(self) -> int:
        return int(self.betas.shape[0])


def select_sessions(spec, available) -> list[int]:
    """``all``, ``first:K`` (the K first of ``available``), an int K (same), or ``1-3,5``."""
    avail = sorted(int(s) for s in available)
    if spec is None or (isinstance(spec, str) and spec.strip() in ("", "all")):
        return avail
    if isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and spec.strip().startswith("first:")):
        try:
            k = int(spec) if not isinstance(spec, str) else int(spec.strip()[6:])
        except ValueError:
            raise InputError(f"sessions {spec!r}: expected 'first:K' with K a positive integer") from None
        if k < 1 or k > len(avail):
            raise InputError(f"sessions {spec!r}: K={k} outside 1..{len(avail)} (sessions acquired: {avail})")
        return avail[:k]
    out: list[int] = []
    try:
        for part in str(spec).split(","):
            a, _, b = part.strip().partition("-")
            out.extend(range(int(a), (int(b) if b else int(a)) + 1))
    except ValueError:
        raise InputError(f"sessions {spec!r}: expected 'all', 'first:K' or a list like '1-3,5'") from None
    bad = sorted(set(out) - set(avail))
    if bad:
        raise InputError(f"sessions {bad} not in the file (sessions there: {avail})")
    return sorted(set(out))


def parse_validation(spec) -> tuple[int, int] | None:
    """``None``/``0``/``"0"`` → no validation split; ``N`` or ``"N:SEED"`` → ``(N images, seed)``;
    a ``{"images": N, "seed": S}`` mapping (the config's ``brain.validation``) likewise."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        n, seed = spec.get("images", 0), spec.get("seed", 0)
    else:
        text = str(spec).strip()
        a, _, b = text.partition(":")
        try:
            n, seed = int(a), int(b) if b else 0
        except ValueError:
            raise InputError(f"validation {spec!r}: expected IMAGES or IMAGES:SEED, e.g. 150:0") from None
    if int(n) < 0:
        raise InputError(f"validation {spec!r}: the number of images must be >= 0")
    return (int(n), int(seed)) if int(n) else None


def validation_ids(nsd_id, is_test, key: str, validation) -> np.ndarray:
    """The sorted validation images of one subject: ``validation[0]`` of its training images
    (``nsd_id`` of all its trials, those with ``is_test`` excluded) drawn with a generator seeded
    by ``(validation[1], subject number)``; all of them when there are fewer."""
    if validation is None:
        return np.zeros(0, np.int64)
    n, seed = validation
    pool = np.unique(np.asarray(nsd_id, np.int64)[~np.asarray(is_test, bool)])
    rng = np.random.default_rng([int(seed), int(key[4:])])
    return np.sort(rng.choice(pool, min(int(n), len(pool)), replace=False))


def load_subject(prep, *, split: str = "train", sessions="all", subject=None, validation=None) -> SubjectTrials:
    """Trials of one preprocessed subject file (see the module docstring); ``validation``: ``None``
    or ``(n images, seed)`` (:func:`parse_validation`)."""
    import h5py

    from ..embed.stimuli import read_rows

    if split not in SPLITS:
        raise InputError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    validation = parse_validation(validation) if not isinstance(validation, tuple) else validation
    if split == "val" and validation is None:
        raise InputError("split 'val' needs a validation split (its number of images and seed)")
    path = Path(prep)
    if not path.is_file():
        raise InputError(f"{path}: preprocessed subject file not found (the preprocess stage writes it)")
    with h5py.File(path, "r") as f:
        for name in ("betas", "nsd_id", "session", "is_test"):
            if name not in f:
                raise InputError(f"{path}: no dataset {name!r}; not a preprocess output")
        from ..io import verify_content

        verify_content(path, f)  # altered on disk since preprocess wrote it: one clear error
        key = subject_key(int(f.attrs["subject"])) if "subject" in f.attrs else None
        if subject is not None:
            want = subject_key(subject)
            if key is not None and key != want:
                raise InputError(f"{path}: holds {key}, not {want}")
            key = want
        if key is None:
            raise InputError(f"{path}: no 'subject' attribute; give the subject id")
        sess_all = f["session"][:].astype(np.int64)
        is_test = f["is_test"][:].astype(bool)
        chosen = select_sessions(sessions, np.unique(sess_all))
        keep = np.isin(sess_all, chosen)
        all_ids = f["nsd_id"][:].astype(np.int64)
        val = validation_ids(all_ids, is_test, key, validation)  # over all sessions: one set per subject
        in_val = np.isin(all_ids, val)
        if split == "train":
            keep &= ~is_test & ~in_val
        elif split == "val":
            keep &= in_val
        elif split == "test":
            keep &= is_test
        rows = np.flatnonzero(keep)
        if not len(rows):
            raise InputError(f"{path}: no {split} trials in sessions {chosen}")
        betas = read_rows(f["betas"], rows).astype(np.float32, copy=False)
        nsd_id = all_ids[rows]
        repeat = f["repeat"][:][rows].astype(np.int64) if "repeat" in f else np.zeros(len(rows), np.int64)
    if not np.isfinite(betas).all():
        raise InputError(f"{path}: betas contain NaN or inf")
    return SubjectTrials(key, path, betas, nsd_id, sess_all[rows], repeat, chosen, split)


@dataclasses.dataclass
class Targets:
    """Per-image targets keyed by sorted ``nsd_id``: ``arrays[head]`` (n, ...) float32."""

    nsd_id: np.ndarray
    arrays: dict
    source: dict

    def rows(self, ids) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        r = np.searchsorted(self.nsd_id, ids)
        r = np.clip(r, 0, max(len(self.nsd_id) - 1, 0))
        bad = ids[(len(self.nsd_id) == 0) | (self.nsd_id[r] != ids)] if len(ids) else ids
        if len(bad):
            raise InputError(f"no target for nsd id {int(bad[0])} (and {len(np.unique(bad)) - 1} more images) "
                             f"in {self.source}")
        return r

    def shapes(self) -> dict:
        return {k: tuple(v.shape[1:]) for k, v in self.arrays.items()}


def find_rows(all_ids, ids, where, what: str = "row") -> np.ndarray:
    """Rows of ``ids`` in the sorted id column ``all_ids`` of file ``where``; a missing id is an
    :class:`InputError` naming the file and the first missing id."""
    all_ids = np.asarray(all_ids, np.int64)
    ids = np.asarray(ids, np.int64).reshape(-1)
    rows = np.searchsorted(all_ids, ids)
    ok = (rows < len(all_ids)) & (all_ids[np.minimum(rows, len(all_ids) - 1)] == ids)
    if not ok.all():
        miss = ids[~ok]
        raise InputError(f"{where}: no {what} for nsd id {int(miss[0])}"
                         f"{f' (and {len(miss) - 1} more)' if len(miss) > 1 else ''}")
    return rows


#: load_targets(mmap="auto") maps the embeddings instead of reading them when the rows it would
#: read hold more than this many bytes
MMAP_AUTO_BYTES = 2 << 30


def _read_keyed(path: Path, datasets: dict, ids, kind: str, mmap=False) -> tuple[np.ndarray, dict]:
    """(ids, {head: array}) of the rows ``ids`` (all if None) of a file keyed by ``nsd_id``.

    ``mmap``: True maps contiguous datasets (:func:`.embed.contiguous_memmap`) in their stored
    dtype and returns every row (the caller looks rows up by id; finiteness is then the
    checksum pass's job); ``"auto"`` does so when the rows read would exceed
    :data:`MMAP_AUTO_BYTES`. Otherwise the rows are read into float32 arrays.
    """
    import h5py

    from ..embed.stimuli import contiguous_memmap, read_rows

    if not path.is_file():
        raise InputError(f"{path}: {kind} file not found")
    with h5py.File(path, "r") as f:
        if "nsd_id" not in f:
            raise InputError(f"{path}: no dataset 'nsd_id'; not a {kind} file")
        all_ids = f["nsd_id"][:].astype(np.int64)
        if len(all_ids) > 1 and (np.diff(all_ids) <= 0).any():
            raise InputError(f"{path}: nsd_id is not sorted and unique")
        if "done" in f and not f["done"][:].all():
            raise InputError(f"{path}: unfinished (some rows not written)")
        if ids is None:
            rows = np.arange(len(all_ids))
        else:
            rows = find_rows(all_ids, np.unique(np.asarray(ids, np.int64)), path)
        for head, name in datasets.items():
            if name not in f:
                raise InputError(f"{path}: no dataset {name!r} for the {head} head (found {sorted(f.keys())})")
        if mmap == "auto":
            mmap = sum(len(rows) * 4 * int(np.prod(f[n].shape[1:])) for n in datasets.values()) > MMAP_AUTO_BYTES
        maps = {head: contiguous_memmap(f[name]) for head, name in datasets.items()} if mmap else {}
        if maps and all(m is not None for m in maps.values()):
            return all_ids, maps  # every row, looked up by id by the caller
        out = {}
        for head, name in datasets.items():
            out[head] = read_rows(f[name], rows).astype(np.float32, copy=False)
            if not np.isfinite(out[head]).all():
                raise InputError(f"{path}: {name} contains NaN or inf")
    return all_ids[rows], out


def load_targets(embed, *, heads=("pooled", "tokens"), latent=None, ids=None, mmap="auto") -> Targets:
    """Targets of the CLIP ``heads`` from the embed file (those it holds if ``heads`` is
    ``"available"``) and of the ``latent`` head from a latent file, for the images ``ids``.

    The embed file's batch checksums are verified first (:func:`.embed.verify_embeddings`,
    remembered per file). ``mmap`` (see :func:`_read_keyed`): large embeddings stay on disk as
    read-only memory maps in their stored dtype (e.g. float16), holding every row of the file;
    small ones are read into float32 arrays of the rows ``ids``.
    """
    import h5py

    from ..embed.stimuli import verify_embeddings

    embed = Path(embed)
    if heads == "available":
        if not embed.is_file():
            raise InputError(f"{embed}: embeddings file not found (the embed stage writes it)")
        with h5py.File(embed, "r") as f:
            heads = tuple(h for h, n in EMBED_HEADS.items() if n in f)
    heads = tuple(heads)
    bad = [h for h in heads if h not in EMBED_HEADS]
    if bad:
        raise InputError(f"CLIP heads {bad}: expected some of {list(EMBED_HEADS)}")
    if not heads:
        raise InputError(f"{embed}: no CLIP image embeddings (image_pooled / image_tokens)")
    if embed.is_file():
        verify_embeddings(embed)
    nid, arrays = _read_keyed(embed, {h: EMBED_HEADS[h] for h in heads}, ids, "embeddings", mmap=mmap)
    source = {h: str(embed) for h in heads}
    if latent is not None:
        arrays["latent"] = _latent_targets(Path(latent), nid, mapped=any(isinstance(a, np.memmap)
                                                                        for a in arrays.values()))
        source["latent"] = str(latent)
    return Targets(nid, arrays, source)


def _latent_targets(path: Path, nid: np.ndarray, *, mapped: bool) -> np.ndarray:
    """The latent rows of the images ``nid``. When the CLIP targets are memory-mapped (``mapped``:
    ``nid`` is then every image of the embed file) and the latent file holds exactly those images,
    it is mapped too, after a finiteness check remembered per file (one read, in blocks); otherwise
    the rows are read into a float32 array."""
    lid, lat = _read_keyed(path, {"latent": "latent"}, nid, "latent", mmap=mapped)
    arr = lat["latent"]
    if isinstance(arr, np.memmap) and not np.array_equal(lid, nid):
        lid, lat = _read_keyed(path, {"latent": "latent"}, nid, "latent", mmap=False)
        arr = lat["latent"]
    if arr.ndim != 4:
        raise InputError(f"{path}: latent has shape {arr.shape}; expected (n, c, h, w)")
    if isinstance(arr, np.memmap):
        from ..io import default_hash_cache, remembered_by_stat

        remembered_by_stat(path, default_hash_cache(), "latent-finite", lambda p: _check_finite_blocks(p, arr))
    return arr


def _check_finite_blocks(path: Path, arr: np.ndarray, block_bytes: int = 256 << 20) -> str:
    from ..embed.stimuli import all_finite

    step = max(1, block_bytes // max(1, arr[:1].nbytes))
    for a in range(0, len(arr), step):
        if not all_finite(arr[a:a + step]):
            raise InputError(f"{path}: latent contains NaN or inf (rows {a}..{min(len(arr), a + step) - 1})")
    return "finite"


def test_groups(trials: SubjectTrials) -> tuple[np.ndarray, list[np.ndarray]]:
    """(sorted unique nsd ids, the trial rows of each) of a subject's trials."""
    ids, inv = np.unique(trials.nsd_id, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    splits = np.flatnonzero(np.diff(inv[order])) + 1
    return ids, np.split(order, splits)


class BatchStream:
    """Global batches over the trials of several subjects; batch ``step`` depends on ``(seed, step)`` only.

    Every epoch is a seeded permutation of all ``(subject, trial)`` pairs, cut into
    ``batch_size`` batches (the last partial batch dropped). :meth:`batch` returns the global batch
    as ``{subject: trial rows}`` with subjects in the order of ``counts``; :meth:`local` the part a
    process of a data-parallel run takes (contiguous equal slices of the global batch).
    """

    def __init__(self, counts: dict, batch_size: int, seed: int = 0):
        self.keys = list(counts)
        self.counts = [int(counts[k]) for k in self.keys]
        total = sum(self.counts)
        if total < 1:
            raise InputError("no training trials")
        if batch_size < 1:
            raise InputError(f"batch size {batch_size}: expected a positive integer")
        self.batch_size = min(int(batch_size), total)
        self.seed = int(seed)
        self.per_epoch = total // self.batch_size
        self._subj = np.repeat(np.arange(len(self.keys)), self.counts)
        self._row = np.concatenate([np.arange(c) for c in self.counts])
        self._epoch = None
        self._perm = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._epoch != epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7, int(epoch)]))
            self._perm = rng.permutation(len(self._subj))
            self._epoch = epoch
        return self._perm

    def epoch_of(self, step: int) -> float:
        return step / self.per_epoch

    def items(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(subject index, trial row) of each sample of global batch ``step``."""
        epoch, b = divmod(int(step), self.per_epoch)
        idx = self._permutation(epoch)[b * self.batch_size:(b + 1) * self.batch_size]
        return self._subj[idx], self._row[idx]

    def _group(self, subj, row) -> dict:
        return {self.keys[s]: row[subj == s] for s in range(len(self.keys)) if (subj == s).any()}

    def batch(self, step: int) -> dict:
        return self._group(*self.items(step))

    def local(self, step: int, rank: int, world: int) -> dict:
        if self.batch_size % world:
            raise InputError(f"batch size {self.batch_size} is not divisible by the {world} processes")
        subj, row = self.items(step)
        n = self.batch_size // world
        return self._group(subj[rank * n:(rank + 1) * n], row[rank * n:(rank + 1) * n])
