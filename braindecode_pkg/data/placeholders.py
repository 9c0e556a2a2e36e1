"""An NSD-shaped tree of placeholder files: the real release's paths, no content.

``write_placeholders(root)`` writes every file the pipeline reads from a real NSD root (see
NSD_FORMAT.md) for the 8 subjects and their sessions of the 2023 release, each an empty file, so
that a workflow configured for real NSD (``config/nsd.yaml``, ``config/nsd-mindeye2.yaml``) can be
planned (``snakemake -n``) on a machine without the 40+ GB download. With ``sized=True`` each file
whose size follows from the format (the uncompressed ``.hdf5`` betas: 750 × X × Y × Z int16, and
``nsd_stimuli.hdf5``: 73,000 × 425 × 425 × 3 uint8; data bytes, without HDF5's few kB of metadata)
gets that apparent size as a sparse file (no disk blocks where the file system supports holes);
the rest stay empty, except two that the workflow's parse-time checks read: ``nsd_stimuli.hdf5``
declares ``imgBrick`` at NSD's shape with no image written, and the caption files are COCO JSON
without annotations. Placeholders are not data: reading one fails or gives nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from . import layout

__all__ = ["write_placeholders", "placeholder_files", "ROIS"]

#: ROI volumes written per subject (the nsdgeneral ROI, whole and per hemisphere)
ROIS = ("nsdgeneral", "lh.nsdgeneral", "rh.nsdgeneral")
_META = ("ncsnr", "R2", "meanbeta")


def _sessions(subject: int, sessions) -> list[int]:
    if sessions == "all":
        return list(range(1, layout.NSD_SESSIONS[subject] + 1))
    if sessions == "legacy":
        return list(range(1, layout.NSD_LEGACY_SESSIONS[subject] + 1))
    out = sorted({int(s) for s in sessions})
    bad = [s for s in out if not 1 <= s <= layout.NSD_SESSIONS[subject]]
    if bad:
        raise InputError(f"session(s) {bad}: subject {subject} has sessions 1..{layout.NSD_SESSIONS[subject]}")
    return out


def placeholder_files(root, subjects=tuple(range(1, 9)), *, sessions="all", formats=("hdf5", "nifti"),
                      resolution: str = "func1pt8mm", beta_version: str = "betas_fithrf_GLMdenoise_RR") -> dict:
    """{path: size in bytes or None (size unknown: an empty file)} of the tree :func:`write_placeholders` writes."""
    nsd = layout.NSDPaths(root, resolution=resolution, beta_version=beta_version)
    bad = [s for s in subjects if s not in layout.NSD_SESSIONS]
    if bad:
        raise InputError(f"subject(s) {bad}: NSD has subjects 1..8")
    bad = [f for f in formats if f not in layout.BETA_FORMATS]
    if bad or not formats:
        raise InputError(f"beta format(s) {list(formats)}: expected some of {list(layout.BETA_FORMATS)}")
    if resolution != "func1pt8mm":
        raise InputError(f"resolution {resolution!r}: placeholder sizes are known for func1pt8mm only")
    n = layout.N_IMAGES_73K * layout.IMAGE_SIZE * layout.IMAGE_SIZE * 3
    files = {nsd.expdesign: None, nsd.stim_info: None, nsd.stimuli: n,
             nsd.captions("train2017"): None, nsd.captions("val2017"): None}
    for s in subjects:
        x, y, z = layout.NSD_VOLUME_SHAPE[s]
        files[nsd.responses(s)] = None
        files[nsd.brainmask(s)] = None
        files.update({nsd.roi(s, name): None for name in ROIS})
        files.update({nsd.beta_meta(s, name): None for name in _META})
        for sess in _sessions(s, sessions):
            if "hdf5" in formats:
                files[nsd.betas(s, sess, "hdf5")] = layout.TRIALS_PER_SESSION * x * y * z * 2
            if "nifti" in formats:
                files[nsd.betas(s, sess, "nifti")] = None
    return files


def write_placeholders(root, subjects=tuple(range(1, 9)), *, sessions="all", formats=("hdf5", "nifti"),
                       resolution: str = "func1pt8mm", beta_version: str = "betas_fithrf_GLMdenoise_RR",
                       sized: bool = False) -> list[Path]:
    """Write the placeholder tree under ``root`` (see the module doc); return the files written.

    Refuses to touch a file that exists with content (``root`` might be a real NSD root).
    """
    files = placeholder_files(root, subjects, sessions=sessions, formats=formats, resolution=resolution,
                              beta_version=beta_version)
    nsd = layout.NSDPaths(root, resolution=resolution, beta_version=beta_version)
    captions = {nsd.captions("train2017"), nsd.captions("val2017")}
    for path in files:
        if path.is_file() and path.stat().st_blocks > 0 and not _is_placeholder(path, nsd.stimuli, captions):
            raise InputError(f"{path}: exists with content; placeholders are written only where no data is")
    for path, size in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path == nsd.stimuli:
            _stimuli_header(path)
        elif path in captions:
            path.write_text(_CAPTIONS)
        else:
            with open(path, "wb") as fh:
                if sized and size:
                    os.ftruncate(fh.fileno(), size)
    return list(files)


_CAPTIONS = '{"annotations": []}\n'


def _is_placeholder(path: Path, stimuli: Path, captions: set) -> bool:
    """Whether a file with content is one this module wrote (the stimuli header: a few kB where
    NSD's file has 39 GB; an annotation-less caption file)."""
    if path == stimuli:
        return path.stat().st_size < (1 << 20)
    return path in captions and path.read_text(errors="replace") == _CAPTIONS


def _stimuli_header(path: Path) -> None:
    """``nsd_stimuli.hdf5`` with ``imgBrick`` declared at NSD's shape, (73000, 425, 425, 3) uint8,
    and no image written (its chunks unallocated: a few kB), so the workflow's layout check of the
    image brick passes while any read of an image gives zeros."""
    import h5py

    shape = (layout.N_IMAGES_73K, layout.IMAGE_SIZE, layout.IMAGE_SIZE, 3)
    with h5py.File(path, "w") as f:
        f.create_dataset("imgBrick", shape=shape, dtype="uint8", chunks=(1, *shape[1:]))
