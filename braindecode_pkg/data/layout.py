"""Paths and fixed facts of the NSD release layout (see NSD_FORMAT.md).

One module that both the real loader (:mod:`.nsd`) and the simulator
(:mod:`braindecode_pkg.sim.world`) use, so that every test of the loader on simulated data is also
a test of the real layout. Subjects and sessions are 1-based, as in NSD's file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRIALS_PER_SESSION = 750
RUNS_PER_SESSION = 12
SLOTS_PER_RUN = 75
N_IMAGES_73K = 73000
N_IMAGES_10K = 10000
N_SHARED = 1000
N_DESIGN_TRIALS = 30000
N_DESIGN_SUBJECTS = 8
IMAGE_SIZE = 425
PSC_SCALE = 300.0  # betas are int16 = percent signal change * 300

#: sessions acquired per subject in the full (2023) release
NSD_SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
#: sessions public before the 2023 release; most papers before 2024 use these ("legacy")
NSD_LEGACY_SESSIONS = {1: 37, 2: 37, 3: 29, 4: 27, 5: 37, 6: 29, 7: 37, 8: 27}
#: volume shape (X, Y, Z) of the func1pt8mm grid per subject
NSD_VOLUME_SHAPE = {
    1: (81, 104, 83), 2: (82, 106, 84), 3: (81, 106, 82), 4: (85, 99, 80),
    5: (79, 97, 78), 6: (85, 113, 83), 7: (78, 95, 81), 8: (80, 103, 78),
}
#: nsdgeneral voxel counts (roi == 1) per subject at 1.8 mm
NSD_NSDGENERAL_VOXELS = {
    1: 15724, 2: 14278, 3: 15226, 4: 13153, 5: 13039, 6: 17907, 7: 12682, 8: 14386,
}

BETA_VERSIONS = ("betas_fithrf_GLMdenoise_RR", "betas_fithrf", "betas_assumehrf")
RESOLUTIONS = ("func1pt8mm", "func1mm")
BETA_FORMATS = ("hdf5", "nifti")

RESPONSES_COLUMNS = (
    "SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID", "TIME", "ISOLD", "ISCORRECT", "RT",
    "CHANGEMIND", "MEMORYRECENT", "MEMORYFIRST", "ISOLDCURRENT", "ISCORRECTCURRENT", "TOTAL1",
    "TOTAL2", "BUTTON", "MISSINGDATA",
)


def subj_name(subject: int) -> str:
    return f"subj{int(subject):02d}"


def voxel_size_mm(resolution: str) -> float:
    return {"func1pt8mm": 1.8, "func1mm": 1.0}[resolution]


def nsd_affine(volume_shape, voxel_mm: float = 1.8):
    """The affine NSD writes into its func volumes: diag(voxel) with offset (1 - o) * voxel.

    ``o = (1 + [X, Y, Z]) / 2`` (1-based centre), so the volume is centred on the origin (RAS+).
    """
    import numpy as np

    o = (1.0 + np.asarray(volume_shape[:3], dtype=float)) / 2.0
    aff = np.eye(4)
    aff[:3, :3] *= voxel_mm
    aff[:3, 3] = (1.0 - o) * voxel_mm
    return aff


@dataclass(frozen=True)
class NSDPaths:
    """Every path of an NSD root, for one resolution and beta version."""

    root: Path
    resolution: str = "func1pt8mm"
    beta_version: str = "betas_fithrf_GLMdenoise_RR"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if self.resolution not in RESOLUTIONS:
            from ..errors import InputError

            raise InputError(f"unknown resolution {self.resolution!r}; expected one of {RESOLUTIONS}")
        if self.beta_version not in BETA_VERSIONS:
            from ..errors import InputError

            raise InputError(
                f"unknown beta version {self.beta_version!r}; expected one of {BETA_VERSIONS}"
            )

    # experiment-wide files
    @property
    def expdesign(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_expdesign.mat"

    @property
    def stim_info(self) -> Path:
        return self.root / "nsddata/experiments/nsd/nsd_stim_info_merged.csv"

    @property
    def stimuli(self) -> Path:
        return self.root / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"

    def captions(self, split: str) -> Path:
        return self.root / f"nsddata_stimuli/stimuli/nsd/annotations/captions_{split}.json"

    # per subject
    def ppdata(self, subject: int) -> Path:
        return self.root / "nsddata/ppdata" / subj_name(subject)

    def responses(self, subject: int) -> Path:
        return self.ppdata(subject) / "behav/responses.tsv"

    def func_dir(self, subject: int) -> Path:
        return self.ppdata(subject) / self.resolution

    def brainmask(self, subject: int) -> Path:
        return self.func_dir(subject) / "brainmask.nii.gz"

    def roi_dir(self, subject: int) -> Path:
        return self.func_dir(subject) / "roi"

    def roi(self, subject: int, name: str) -> Path:
        """``name`` may carry a hemisphere prefix: ``nsdgeneral``, ``lh.nsdgeneral``."""
        return self.roi_dir(subject) / f"{name}.nii.gz"

    def betas_dir(self, subject: int) -> Path:
        return self.root / "nsddata_betas/ppdata" / subj_name(subject) / self.resolution / self.beta_version

    def betas(self, subject: int, session: int, fmt: str = "hdf5") -> Path:
        ext = {"hdf5": ".hdf5", "nifti": ".nii.gz"}
        if fmt not in ext:
            from ..errors import InputError

            raise InputError(f"unknown beta format {fmt!r}; expected one of {BETA_FORMATS}")
        return self.betas_dir(subject) / f"betas_session{int(session):02d}{ext[fmt]}"

    def beta_meta(self, subject: int, name: str) -> Path:
        """Per-voxel metadata beside the betas: ``ncsnr``, ``R2``, ``meanbeta``..."""
        return self.betas_dir(subject) / f"{name}.nii.gz"


def check_root(root, subjects, *, roi: str = "nsdgeneral", fmt: str = "hdf5", sessions: str = "all",
               resolution: str = "func1pt8mm", beta_version: str = "betas_fithrf_GLMdenoise_RR") -> None:
    """Check, before any job is planned, that ``root`` has the files a run on it starts from: the
    design, stimulus table and stimuli, and per subject its responses, the ROI volume and the beta
    files of the sessions (with ``all``/``legacy``, which ``responses.tsv`` resolves when the stage
    runs, session 1). Only existence is checked; raises ``InputError`` naming the first missing
    path and how many more are missing."""
    from ..errors import InputError

    p = NSDPaths(root, resolution=resolution, beta_version=beta_version)
    if not p.root.is_dir():
        raise InputError(f"{p.root}: NSD root not found (the folder that holds nsddata/, nsddata_betas/, "
                         "nsddata_stimuli/)")
    want = [p.expdesign, p.stim_info, p.stimuli]
    for s in subjects:
        if str(sessions).strip() in ("all", "legacy"):
            listed = [1]
        else:
            listed = []
            for part in str(sessions).split(","):
                a, _, b = part.partition("-")
                listed += range(int(a), int(b or a) + 1)
        want += [p.responses(s), p.roi(s, roi.partition(":")[0])] + [p.betas(s, n, fmt) for n in listed]
    missing = [f for f in want if not f.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more missing files)" if len(missing) > 1 else ""
        raise InputError(f"{missing[0]}: not found under the NSD root {p.root}{more}")
