"""Reader for the real NSD release layout (NSD_FORMAT.md): design, trials, ROIs and betas.

Reads only what it needs: the design arrays, one subject's responses, one ROI volume, and of each
beta session only the ROI voxels. Never imports torch, pandas or nilearn, so a preprocessing
process starts in a fraction of a second.

Every problem with the input raises :class:`~braindecode_pkg.errors.InputError` with one message
that names the file and what is wrong.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .layout import (
    N_DESIGN_TRIALS,
    N_IMAGES_10K,
    N_SHARED,
    NSD_LEGACY_SESSIONS,
    TRIALS_PER_SESSION,
    NSDPaths,
)

__all__ = [
    "NSDDesign", "TrialTable", "RoiMask", "parse_sessions", "available_sessions",
    "load_roi", "read_roi_betas", "read_roi_betas_hdf5", "read_roi_betas_nifti", "nifti_header",
]


# --------------------------------------------------------------------------------------- design
@dataclass(frozen=True)
class TrialTable:
    """One row per stimulus trial, in the order of the beta files' trial axis."""

    nsd_id: np.ndarray  # (n,) int64, 0-based 73k id
    session: np.ndarray  # (n,) int64, 1-based
    trial: np.ndarray  # (n,) int64, 0-based global trial = (session-1)*750 + j
    repeat: np.ndarray  # (n,) int64, 0,1,2: which presentation of this image in the design
    is_test: np.ndarray  # (n,) bool, one of the shared 1000

    def __len__(self) -> int:
        return len(self.trial)


class NSDDesign:
    """``nsd_expdesign.mat``: the trial order shared by all subjects and each subject's images."""

    def __init__(self, masterordering, subjectim, sharedix, source: str | Path = "<memory>"):
        self.masterordering = np.asarray(masterordering).reshape(-1).astype(np.int64)
        self.subjectim = np.asarray(subjectim).astype(np.int64)
        self.sharedix = np.asarray(sharedix).reshape(-1).astype(np.int64)
        self.source = str(source)
        mo, si = self.masterordering, self.subjectim
        if mo.shape != (N_DESIGN_TRIALS,) or mo.min() < 1 or mo.max() > N_IMAGES_10K:
            raise InputError(
                f"{source}: masterordering must be 30000 10k-indices in 1..10000, "
                f"got shape {mo.shape} range {mo.min()}..{mo.max()}"
            )
        if si.ndim != 2 or si.shape[1] != N_IMAGES_10K:
            raise InputError(f"{source}: subjectim must be (n_subjects, 10000), got {si.shape}")
        # repeat index of every design trial: 0 for the first time a 10k image is shown, 1, 2...
        order = np.argsort(mo, kind="stable")
        sorted_k = mo[order]
        first = np.r_[0, np.flatnonzero(np.diff(sorted_k)) + 1]
        rank = np.arange(len(mo)) - np.repeat(first, np.diff(np.r_[first, len(mo)]))
        self.repeat = np.empty_like(mo)
        self.repeat[order] = rank

    @classmethod
    def load(cls, path: str | Path) -> "NSDDesign":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: design file not found (expected NSD's nsd_expdesign.mat)")
        from .matfile import MatFileError, loadmat

        try:
            mat = loadmat(path, variable_names=["masterordering", "subjectim", "sharedix"])
        except (MatFileError, StopIteration, struct.error) as e:
            raise InputError(f"{path}: cannot read the MATLAB design file ({e or 'truncated'})") from None
        missing = [k for k in ("masterordering", "subjectim", "sharedix") if k not in mat]
        if missing:
            raise InputError(f"{path}: design file lacks {', '.join(missing)}")
        return cls(mat["masterordering"], mat["subjectim"], mat["sharedix"], source=path)

    @property
    def n_subjects(self) -> int:
        return self.subjectim.shape[0]

    def check_subject(self, subject: int) -> None:
        if not 1 <= subject <= self.n_subjects:
            raise InputError(
                f"{self.source}: subject {subject} is absent from the design "
                f"(subjectim has subjects 1..{self.n_subjects})"
            )

    def trials(self, subject: int, sessions) -> TrialTable:
        """The trial table of ``subject`` for the given 1-based ``sessions`` (in that order)."""
        self.check_subject(subject)
        sessions = np.asarray(list(sessions), dtype=np.int64)
        j = np.arange(TRIALS_PER_SESSION)
        t = ((sessions[:, None] - 1) * TRIALS_PER_SESSION + j[None, :]).reshape(-1)
        if t.size and (t.min() < 0 or t.max() >= N_DESIGN_TRIALS):
            raise InputError(f"{self.source}: sessions {sessions.tolist()} exceed the 30000-trial design")
        k10 = self.masterordering[t]
        return TrialTable(
            nsd_id=self.subjectim[subject - 1, k10 - 1] - 1,
            session=np.repeat(sessions, TRIALS_PER_SESSION),
            trial=t,
            repeat=self.repeat[t],
            is_test=k10 <= N_SHARED,
        )


def available_sessions(paths: NSDPaths, subject: int) -> list[int]:
    """Sessions acquired for ``subject``, read from its ``behav/responses.tsv`` (SESSION column)."""
    f = paths.responses(subject)
    if not f.is_file():
        if not paths.ppdata(subject).is_dir():
            raise InputError(f"{paths.ppdata(subject)}: subject {subject} has no data in this NSD root")
        raise InputError(f"{f}: responses file not found; it lists the subject's acquired sessions")
    return sorted(set(int(s) for s in _responses_column(f, ("SESSION",))["SESSION"]))


_RESPONSE_COLUMNS_READ = ("SESSION", "73KID")


def _responses_column(path: Path, names) -> dict[str, np.ndarray]:
    """Columns (of ``_RESPONSE_COLUMNS_READ``) of a responses.tsv, parsed once per file version."""
    st = path.stat()
    cols = _read_responses(str(path), st.st_mtime_ns, st.st_size)
    return {n: cols[n] for n in names}


@functools.lru_cache(maxsize=4)
def _read_responses(path: str, _mtime_ns: int, _size: int) -> dict[str, np.ndarray]:
    with open(path) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in fh if line.strip()]
    missing = [n for n in _RESPONSE_COLUMNS_READ if n not in header]
    if missing:
        raise InputError(f"{path}: responses.tsv lacks column(s) {missing}; header is {header}")
    out = {}
    for name in _RESPONSE_COLUMNS_READ:
        c = header.index(name)
        try:
            out[name] = np.array([float(r[c]) for r in rows])
        except (IndexError, ValueError) as e:
            raise InputError(f"{path}: column {name} is not numeric on every row ({e})") from None
    return out


def check_responses(paths: NSDPaths, subject: int, table: TrialTable) -> None:
    """Cross-check the design's trial table against responses.tsv (73KID per trial)."""
    f = paths.responses(subject)
    cols = _responses_column(f, ("SESSION", "73KID"))
    sess, kid = cols["SESSION"].astype(np.int64), cols["73KID"]
    for s in np.unique(table.session):
        got = kid[sess == s]
        want = table.nsd_id[table.session == s] + 1
        if got.shape != want.shape or not np.array_equal(got, want):
            raise InputError(
                f"{f}: session {s} lists {got.size} trials whose 73KIDs disagree with "
                f"nsd_expdesign.mat for subject {subject} (design and data are from different releases?)"
            )


def parse_sessions(spec, available: list[int], subject: int) -> list[int]:
    """``all``, ``legacy`` (the sessions public before 2023), or ``1-3,5``-style lists."""
    avail = sorted(available)
    if spec is None or str(spec).strip() == "all":
        return avail
    spec = str(spec).strip()
    if spec == "legacy":
        n = NSD_LEGACY_SESSIONS.get(subject)
        if n is None:
            raise InputError(f"--sessions legacy: subject {subject} is not an NSD subject (1..8)")
        return [s for s in avail if s <= n]
    out: list[int] = []
    try:
        for part in spec.split(","):
            a, _, b = part.partition("-")
            lo, hi = int(a), int(b) if b else int(a)
            out.extend(range(lo, hi + 1))
    except ValueError:
        raise InputError(
            f"--sessions {spec!r}: expected 'all', 'legacy' or a list like '1-3,5'"
        ) from None
    bad = [s for s in out if s not in avail]
    if bad:
        rng = f"{avail[0]}..{avail[-1]}" if avail else "none"
        raise InputError(
            f"session(s) {bad} outside subject {subject}'s acquired sessions ({rng}, from responses.tsv)"
        )
    if len(set(out)) != len(out):
        raise InputError(f"--sessions {spec!r} names a session twice")
    return out


# ------------------------------------------------------------------------------------------ ROIs
@dataclass(frozen=True)
class RoiMask:
    name: str
    labels: tuple[int, ...]
    mask: np.ndarray  # (X, Y, Z) bool
    affine: np.ndarray  # (4, 4)
    path: Path

    @property
    def ijk(self) -> np.ndarray:
        """(n_voxels, 3) indices of the ROI voxels in C order of the (X, Y, Z) grid."""
        return np.argwhere(self.mask)


def _load_nifti(path: Path, what: str):
    import nibabel as nib

    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as e:
        raise InputError(f"{path}: cannot read {what} ({type(e).__name__}: {e}); truncated or corrupt?") from None
    return img, data


def load_roi(paths: NSDPaths, subject: int, spec: str = "nsdgeneral") -> RoiMask:
    """``spec`` is ``name`` or ``name:label[,label]``; ``name`` may carry ``lh.``/``rh.``.

    Without labels, ``nsdgeneral`` selects label 1 and other ROIs every positive label.
    """
    name, _, lab = spec.partition(":")
    path = paths.roi(subject, name)
    if not path.is_file():
        roi_dir = paths.roi_dir(subject)
        known = sorted(p.name[: -len(".nii.gz")] for p in roi_dir.glob("*.nii.gz")) if roi_dir.is_dir() else []
        raise InputError(
            f"{path}: unknown ROI {name!r} for subject {subject}; available: {', '.join(known) or 'none'}"
        )
    img, data = _load_nifti(path, f"ROI {name!r}")
    if data.ndim != 3:
        raise InputError(f"{path}: ROI volume must be 3-D, got shape {data.shape}")
    if lab:
        try:
            labels = tuple(int(x) for x in lab.split(","))
        except ValueError:
            raise InputError(f"ROI {spec!r}: labels must be integers, e.g. 'prf-visualrois:1,2'") from None
    else:
        labels = (1,) if name.split(".")[-1] == "nsdgeneral" else tuple(
            int(v) for v in np.unique(data) if v >= 1
        )
    mask = np.isin(np.rint(data).astype(np.int64), labels) & np.isfinite(data)
    if not mask.any():
        raise InputError(f"{path}: ROI {spec!r} is empty (no voxel has label {list(labels)})")
    return RoiMask(name=name, labels=labels, mask=mask, affine=img.affine, path=path)


def check_grid(roi: RoiMask, shape, affine, source: Path, what: str) -> None:
    if tuple(shape) != roi.mask.shape:
        raise InputError(
            f"{roi.path}: ROI grid {roi.mask.shape} differs from the {what} grid {tuple(shape)} of {source}"
        )
    if affine is not None and not np.allclose(affine, roi.affine, atol=1e-3):
        raise InputError(
            f"{roi.path}: ROI affine differs from the {what} affine of {source}:\n"
            f"{np.round(roi.affine, 3)}\nvs\n{np.round(affine, 3)}"
        )


# ----------------------------------------------------------------------------------------- betas
def _check_finite(arr: np.ndarray, path: Path, ijk: np.ndarray) -> None:
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            t, v = np.argwhere(bad)[0]
            raise InputError(
                f"{path}: {int(bad.sum())} NaN/inf beta values in the ROI "
                f"(first at trial {t}, voxel ijk {tuple(int(x) for x in ijk[v])})"
            )


def _volume_shape_hdf5(dset) -> tuple[int, int, int]:
    t, z, y, x = dset.shape
    return (x, y, z)


def read_roi_betas_hdf5(path: Path, ijk: np.ndarray, *, roi: RoiMask | None = None) -> np.ndarray:
    """(n_trials, n_voxels) betas of the voxels ``ijk`` from an NSD ``.hdf5`` session, raw dtype.

    NSD's file holds ``/betas`` as (750, Z, Y, X) with one chunk per voxel (all its trials), so
    reading a voxel is reading one chunk. Uncompressed single-voxel chunks are read directly
    (``read_direct_chunk``, no selection machinery); any other chunking falls back to reading
    z-slabs of the ROI's bounding box.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: beta file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: cannot open HDF5 ({e}); truncated or corrupt?") from None
    with f:
        if "betas" not in f:
            raise InputError(f"{path}: no dataset /betas (found {list(f.keys())})")
        dset = f["betas"]
        if dset.ndim != 4:
            raise InputError(f"{path}: /betas must be 4-D (trials, Z, Y, X), got shape {dset.shape}")
        if roi is not None:
            check_grid(roi, _volume_shape_hdf5(dset), None, path, "beta")
        try:
            out = _read_voxel_chunks(dset, ijk)
        except OSError as e:
            raise InputError(f"{path}: reading the ROI voxels failed ({e}); truncated or corrupt?") from None
    _check_finite(out, path, ijk)
    return out


def _read_voxel_chunks(dset, ijk: np.ndarray) -> np.ndarray:
    n_t = dset.shape[0]
    dtype = dset.dtype
    plist = dset.id.get_create_plist()
    direct = dset.chunks == (n_t, 1, 1, 1) and plist.get_nfilters() == 0
    if direct:
        rows = np.empty((len(ijk), n_t), dtype=dtype)  # voxel-major: each chunk lands in a row
        raw = rows.view(np.uint8)
        read = dset.id.read_direct_chunk
        get_info = dset.id.get_chunk_info_by_coord
        for v, (i, j, k) in enumerate(ijk.tolist()):
            try:
                read((0, k, j, i), out=raw[v])
            except (OSError, KeyError, ValueError, RuntimeError):
                # an unallocated chunk holds the fill value (h5py raises RuntimeError for it)
                if get_info((0, k, j, i)).byte_offset is not None:
                    raise
                rows[v] = dset.fillvalue
        return rows.T  # (n_trials, n_voxels) view
    out = np.empty((n_t, len(ijk)), dtype=dtype)
    lo, hi = ijk.min(0), ijk.max(0) + 1
    for z in np.unique(ijk[:, 2]):
        sel = np.flatnonzero(ijk[:, 2] == z)
        slab = dset[:, z, lo[1]:hi[1], lo[0]:hi[0]]  # (T, Y', X')
        out[:, sel] = slab[:, ijk[sel, 1] - lo[1], ijk[sel, 0] - lo[0]]
    return out


_GZ_BLOCK = 8 << 20


def _gzip_reader(path: Path):
    try:
        from isal import igzip as gz  # ISA-L: ~2x faster inflate than zlib
    except ImportError:  # pragma: no cover - isal is a dependency
        import gzip as gz
    return gz.open(path, "rb")


def nifti_header(path: Path):
    """Parse a (gzipped) NIfTI-1 header without touching the data."""
    import nibabel as nib

    path = Path(path)
    opener = _gzip_reader if path.name.endswith(".gz") else (lambda p: open(p, "rb"))
    try:
        with opener(path) as fh:
            raw = fh.read(348)
        hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw), check=True)
    except (OSError, EOFError, zlib.error, ValueError, nib.spatialimages.HeaderDataError) as e:
        raise InputError(f"{path}: not a readable NIfTI-1 file ({e}); truncated or corrupt?") from None
    return hdr


def read_roi_betas_nifti(path: Path, ijk: np.ndarray, *, roi: RoiMask | None = None) -> np.ndarray:
    """(n_trials, n_voxels) betas of ``ijk`` from an NSD ``.nii.gz`` session, raw dtype.

    Streams the gzip once, one 3-D volume (one trial) at a time, keeping only the ROI voxels:
    memory is one volume plus the (n_trials, n_voxels) result, never the 4-D array.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: beta file not found")
    hdr = nifti_header(path)
    shape = hdr.get_data_shape()
    if len(shape) != 4:
        raise InputError(f"{path}: betas must be 4-D (X, Y, Z, trials), got shape {shape}")
    slope, inter = hdr.get_slope_inter()
    if (slope not in (None, 1.0)) or (inter not in (None, 0.0)):
        raise InputError(
            f"{path}: scl_slope={slope} scl_inter={inter}; NSD betas are stored unscaled "
            f"(int16 = PSC x 300, scl_slope 0) and scaled files are not supported"
        )
    if roi is not None:
        check_grid(roi, shape[:3], hdr.get_best_affine(), path, "beta")
    dtype = hdr.get_data_dtype()
    nx, ny, nz, n_t = shape
    vol_bytes = nx * ny * nz * dtype.itemsize
    flat = ijk[:, 0] + nx * (ijk[:, 1] + ny * ijk[:, 2])  # Fortran order on disk
    out = np.empty((n_t, len(ijk)), dtype=dtype)
    per_block = max(1, _GZ_BLOCK // vol_bytes)  # whole volumes per read: large reads inflate fastest
    try:
        with _gzip_reader(path) as fh:
            skip = int(hdr["vox_offset"])
            if len(fh.read(skip)) != skip:
                raise EOFError("file ends inside the header")
            t = 0
            while t < n_t:
                k = min(per_block, n_t - t)
                block = fh.read(k * vol_bytes)
                if len(block) != k * vol_bytes:
                    raise EOFError(f"data ends in volume {t + len(block) // vol_bytes} of {n_t}")
                out[t : t + k] = np.frombuffer(block, dtype=dtype).reshape(k, -1)[:, flat]
                t += k
            fh.read(1)  # reach the gzip trailer so its CRC and length are checked
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{path}: truncated or corrupt gzip/NIfTI ({e})") from None
    _check_finite(out, path, ijk)
    return out


def read_roi_betas(path: Path, ijk: np.ndarray, fmt: str, *, roi: RoiMask | None = None) -> np.ndarray:
    readers = {"hdf5": read_roi_betas_hdf5, "nifti": read_roi_betas_nifti}
    if fmt not in readers:
        raise InputError(f"unknown beta format {fmt!r}; expected one of {sorted(readers)}")
    return readers[fmt](path, ijk, roi=roi)
