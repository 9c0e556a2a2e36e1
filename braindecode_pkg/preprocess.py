"""Preprocess one subject: ROI voxels -> percent signal change -> per-session z-score -> HDF5.

Streams one session at a time and reads only the ROI voxels of each (see
:func:`braindecode_pkg.data.nsd.read_roi_betas`). The output follows the contract of DESIGN.md
(``results/prep/subjAA.h5``). Every input is checked before the first session is read, and the
output is written to a temporary name and renamed only when complete.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .command import Command
from .data import nsd
from .data.layout import PSC_SCALE, NSDPaths
from .errors import InputError
from .io import BackgroundHashes, ContentDigest, atomic_path, default_hash_cache, fault_point, write_content_digest

NORMALISATIONS = {
    "session": "z-score each voxel within each session over all its trials",
    "session-train": "z-score each voxel within each session with the mean and sd of its "
    "non-test (non-shared1000) trials only (leakage-safe)",
    "none": "percent signal change (int16 / 300), not z-scored",
}
DTYPES = ("float32", "float16")
# the datasets the output's content checksum covers, in order
CONTENT_DATASETS = ("betas", "nsd_id", "session", "trial", "repeat", "is_test", "voxel_ijk")


def zscore_session(x: np.ndarray, fit_rows: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Z-score the columns of float32 ``x`` (trials, voxels) in place, with the mean and sd of
    ``fit_rows`` (all rows if None); returns ``(x, n_constant_voxels)``.

    Population sd (ddof=0), sums accumulated in float64. A voxel with zero sd becomes 0.
    Z-scores do not depend on the units, so raw int16 betas and PSC (int16 / 300) give the same.
    """
    fit = x if fit_rows is None else x[fit_rows]
    x -= fit.mean(axis=0, dtype=np.float64).astype(np.float32)
    fit = x if fit_rows is None else x[fit_rows]
    sd = np.sqrt(np.einsum("ij,ij->j", fit, fit, dtype=np.float64) / len(fit))
    const = sd == 0
    sd[const] = 1.0
    x *= (1.0 / sd).astype(np.float32)
    x[:, const] = 0.0
    return x, int(const.sum())


def preprocess(
    nsd_root: str | Path,
    subject: int,
    out: str | Path,
    *,
    sessions="all",
    roi: str = "nsdgeneral",
    fmt: str = "hdf5",
    normalisation: str = "session",
    beta_version: str = "betas_fithrf_GLMdenoise_RR",
    resolution: str = "func1pt8mm",
    dtype: str = "float32",
    hash_cache: Path | None | str = "default",
    progress: bool = True,
) -> Path:
    """Write ``out`` (HDF5) for one subject; returns its path. See the module docstring."""
    t0 = time.perf_counter()
    if normalisation not in NORMALISATIONS:
        raise InputError(f"unknown normalisation {normalisation!r}; expected one of {sorted(NORMALISATIONS)}")
    if dtype not in DTYPES:
        raise InputError(f"unknown output dtype {dtype!r}; expected one of {DTYPES}")
    root = Path(nsd_root)
    if not root.is_dir():
        raise InputError(f"{root}: NSD root not found")
    paths = NSDPaths(root, resolution=resolution, beta_version=beta_version)

    # --- validate everything before reading betas
    design = nsd.NSDDesign.load(paths.expdesign)
    design.check_subject(subject)
    sess = nsd.parse_sessions(sessions, nsd.available_sessions(paths, subject), subject)
    files = [paths.betas(subject, s, fmt) for s in sess]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{missing[0]}: beta file not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    table = design.trials(subject, sess)
    nsd.check_responses(paths, subject, table)
    mask = nsd.load_roi(paths, subject, roi)
    ijk = mask.ijk
    if fmt == "hdf5":  # HDF5 betas carry no affine: the ROI must share the brainmask's grid
        bm = paths.brainmask(subject)
        if bm.is_file():
            nsd.check_grid(mask, *_grid(bm), bm, "brainmask")
    if normalisation == "session-train":
        for s in sess:
            if table.is_test[table.session == s].all():
                raise InputError(f"session {s} has no non-test trials to fit session-train z-scoring")

    inputs = {"expdesign": paths.expdesign, "responses": paths.responses(subject), "roi": mask.path}
    inputs.update({f.name: f for f in files})
    cache = default_hash_cache() if hash_cache == "default" else (Path(hash_cache) if hash_cache else None)
    hashes = BackgroundHashes({k: v for k, v in inputs.items()}, cache)

    import h5py

    out = Path(out)
    n_t, n_v = len(table), len(ijk)
    n_const = 0
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        betas = h5.create_dataset(
            "betas", shape=(n_t, n_v), dtype=dtype, track_times=False,  # contiguous: fastest to write
        )
        digest = ContentDigest()  # of every dataset, fed as written: verified by the stages that read it
        digest.start("betas", np.dtype(dtype), (n_t, n_v))
        row = 0
        for k, (s, f) in enumerate(zip(sess, files)):
            raw = nsd.read_roi_betas(f, ijk, fmt, roi=mask)
            if raw.shape[0] != int((table.session == s).sum()):
                raise InputError(f"{f}: {raw.shape[0]} trials, the design has {(table.session == s).sum()}")
            z = np.asarray(raw, dtype=np.float32, order="C")  # one strided copy-and-cast
            if normalisation == "none":
                z /= np.float32(PSC_SCALE)
            else:
                fit = ~table.is_test[table.session == s] if normalisation == "session-train" else None
                z, c = zscore_session(z, fit)
                n_const = max(n_const, c)
            z = z.astype(dtype, copy=False)  # cast here: the digest hashes the stored bytes
            betas[row : row + len(z)] = z
            digest.update(z)
            row += len(z)
            # drop this session's arrays now: held until the next read replaced them, they made
            # the peak grow by one session's raw and z-scored arrays from the 2nd session on
            del raw, z
            fault_point("preprocess.session")
            if progress:
                print(
                    f"[preprocess subj{subject:02d}] session {s} ({k + 1}/{len(sess)}) "
                    f"{n_v} voxels {time.perf_counter() - t0:.1f}s",
                    file=sys.stderr, flush=True,
                )
        for name, arr in (
            ("nsd_id", table.nsd_id), ("session", table.session), ("trial", table.trial),
            ("repeat", table.repeat), ("is_test", table.is_test), ("voxel_ijk", ijk.astype(np.int64)),
        ):
            h5.create_dataset(name, data=arr, track_times=False)
            digest.add(name, h5[name][()])
        write_content_digest(h5, digest, CONTENT_DATASETS)
        a = h5.attrs
        a["subject"] = subject
        a["affine"] = mask.affine
        a["volume_shape"] = np.asarray(mask.mask.shape, dtype=np.int64)
        a["roi"] = mask.name
        a["roi_labels"] = np.asarray(mask.labels, dtype=np.int64)
        a["beta_version"] = beta_version
        a["resolution"] = resolution
        a["format"] = fmt
        a["sessions"] = np.asarray(sess, dtype=np.int64)
        a["normalisation"] = normalisation
        a["normalisation_description"] = NORMALISATIONS[normalisation]
        a["zscore_ddof"] = 0
        a["psc_scale"] = PSC_SCALE
        a["n_constant_voxels"] = n_const
        a["package_version"] = __version__
        a["source_sha256"] = json.dumps(hashes.result(), sort_keys=True)
        fault_point("preprocess.before_rename")
    if n_const and progress:
        print(f"[preprocess subj{subject:02d}] warning: {n_const} ROI voxels constant in a session (set to 0)",
              file=sys.stderr)
    return out


def _grid(path: Path):
    hdr = nsd.nifti_header(path)
    return hdr.get_data_shape()[:3], hdr.get_best_affine()


# ------------------------------------------------------------------------------- subcommand
def _arguments(s) -> None:
    s.add_argument("--nsd-root", required=True, help="NSD root (real NSD or nsd-sim's OUT/nsd)")
    s.add_argument("--subject", type=int, required=True, help="1-based subject id")
    s.add_argument("--out", required=True, help="output HDF5 file")
    s.add_argument("--sessions", default="all", help="'all', 'legacy' (pre-2023 release) or e.g. '1-3,5'")
    s.add_argument("--roi", default="nsdgeneral", help="ROI name[:label,...], e.g. nsdgeneral, lh.nsdgeneral, prf-visualrois:1,2")
    s.add_argument("--format", default="hdf5", choices=["hdf5", "nifti"], help="which beta files to read")
    s.add_argument("--normalisation", default="session", choices=["session", "session-train", "none"])
    s.add_argument("--beta-version", default="betas_fithrf_GLMdenoise_RR")
    s.add_argument("--resolution", default="func1pt8mm", choices=["func1pt8mm", "func1mm"])
    s.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    s.add_argument("--hash-cache", default=None,
                   help="folder remembering input SHA-256 by file stat ('' disables; default ~/.cache/braindecode_pkg/sha256)")
    s.add_argument("--quiet", action="store_true", help="no progress lines")


def _run(args) -> int:
    preprocess(
        args.nsd_root, args.subject, args.out, sessions=args.sessions, roi=args.roi,
        fmt=args.format, normalisation=args.normalisation, beta_version=args.beta_version,
        resolution=args.resolution, dtype=args.dtype,
        hash_cache=args.hash_cache if args.hash_cache is not None else "default",
        progress=not args.quiet,
    )
    return 0


COMMANDS = {
    "preprocess": Command("ROI betas -> PSC -> per-session z-score -> results/prep/subjAA.h5", _arguments, _run),
}
