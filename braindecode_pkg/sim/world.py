"""nsd-sim: a simulated Natural Scenes Dataset, written in the exact real layout, with its truth.

``simulate(sim_config("tiny"), out)`` writes ``out/nsd/`` (an NSD root: design, stimulus table,
stimuli, captions, behaviour, masks, ROIs, single-trial betas in ``.nii.gz`` and ``.hdf5``) and
``out/sim_truth/`` (what generated it), ending with ``out/sim_truth/manifest.json``. The same
config gives byte-identical files; every file is written under a temporary name and renamed.

Design
    One ``masterordering`` for all subjects, as in NSD. The first ``max(sessions) * 750`` trials
    hold ``n_test_images`` of the shared 1000 (10k-index ≤ 1000) and ``250 * max(sessions) -
    n_test_images`` subject-specific indices, each 3 times, shuffled over those trials (so
    repeats spread over sessions); the rest of the 30,000 trials hold the remaining
    occurrences. ``subjectim`` partitions the 73k ids: 1,000 shared plus 9,000 per subject.
    A subject with fewer sessions than the maximum sees only a prefix (some images < 3 times).

Scenes
    Every one of the 73,000 ids has a scene (:mod:`.scenes`), a function of the seed and the id
    only; only the images shown to the configured subjects are drawn into ``imgBrick`` and given
    captions (five, seeded per id).

Brain model (per subject; voxels = ROI voxels in C order of the (X, Y, Z) grid, ``roi == 1``)
    Geometry: an ellipsoid-ish brainmask (~34 % of the box; bench: 236,666 voxels), a
    cortical shell (``roi`` value 0 where not nsdgeneral, −1 elsewhere), and an
    ``nsdgeneral`` ROI = the configured number of shell voxels nearest a posterior pole (with a
    smooth jitter of the boundary). The ``early_fraction`` of ROI voxels nearest the pole are
    early visual; the rest are "later".

    Early voxels have isotropic Gaussian receptive fields on four image channels computed at
    42×42 (luminance, red–green and blue–yellow opponency, each relative to the image mean, and
    edge energy; :func:`image_channels`). Retinotopy: the RF centre follows the voxel's
    direction from the pole in the (x, z) plane (left hemisphere → right visual field, dorsal →
    lower field) and its eccentricity grows with the lateral distance; the RF size grows with
    eccentricity. Each voxel weights the (standardised) channels:
    luminance U(0.6, 1), opponent channels N(0, 0.4²), edges U(0.2, 0.8).

    Later voxels read a latent space of dimension ``latent_dim`` shared by all subjects:
    ``z = tanh(W f + b)`` with ``f`` the scene's attribute vector (per object one-hot shape and
    colour, size, position, summed over objects; one-hot background; number of objects) and
    ``W, b`` fixed by the seed. Each subject mixes ``z`` into its voxels with its own matrix
    (spatially smooth plus independent parts).

    Each voxel's raw response is standardised with the mean and sd over a fixed reference set of
    256 scenes (so ``mu`` of an image does not depend on which other images were shown), and
    ``mu = baseline + amplitude * response`` (PSC), ``amplitude = ncsnr * noise_sd``. So the
    generative single-trial ncsnr (sd of mu over the scene distribution / noise sd) is
    ``ncsnr``, drawn from a **gamma distribution** (``ncsnr_shape``, ``ncsnr_scale``; default
    shape 1.6, scale 0.2: median ≈ 0.25, mean 0.32, 99th percentile ≈ 1.2, ~7 % below 0.05)
    through a Gaussian copula whose field is half spatially smooth, half "nearer the pole is
    better" (so early visual voxels tend to be the most reliable, as in NSD).
    ``noise_sd`` is log-uniform in ``noise_sd_range``; ``baseline`` ~ N(1.5, 1).

    A trial's PSC beta in session ``s`` is ``gain[s] * mu[image] + offset[s] + noise`` with
    noise ~ N(0, Σ) independent across trials, ``Σ = D((1-ρ)I + ρ L Lᵀ)D``, ``D =
    diag(noise_sd)``, ``ρ = spatial_noise_fraction`` and ``L`` (``noise_basis``) Gaussian bumps
    of width ``spatial_noise_length`` voxels at random ROI positions, rows normalised to unit
    length (so ``diag Σ = noise_sd²``). ``log gain`` and ``offset`` are random walks over
    sessions (steps: half global, half per voxel in variance; sds ``drift_gain_sd``,
    ``drift_offset_sd``). Brainmask voxels outside the ROI get a baseline, an offset walk and
    independent noise. Stored value: ``int16(clip(round(300 * PSC)))``; 0 outside the brainmask.

Truth (``sim_truth/subjAA.h5``): ``nsd_id`` (sorted, every image the subject saw), ``mu``,
``voxel_ijk``, ``session_gain``, ``session_offset``, ``noise_sd``, ``ncsnr``, ``baseline``,
``noise_basis`` (and attribute ``spatial_noise_fraction``), ``noise_cov`` when there are at most
``noise_cov_max_voxels`` voxels, ``early``, ``rf_xy``, ``rf_sigma``, ``channel_weights``
(NaN for later voxels) and ``attributes/*`` (the scene table of ``nsd_id``). ``stimuli.tsv``
lists every drawn image with readable attributes.

Behaviour (``responses.tsv``): the old/new recognition task; P("old") decays with the trials
since the last presentation, false alarms ~12 %, ~1.5 % missing responses (NaN), RT lognormal.
Codings not verified against NSD and chosen here: ``BUTTON`` 1 = new, 2 = old; ``TOTAL1`` =
button presses in the trial (2 after a change of mind), ``TOTAL2`` = 1 (0 when missing);
``TIME`` = MATLAB datenum-style days.

Bytes: gzip streams use zlib (deterministic; ISA-L's output was seen to vary between runs),
mtime 0 and no file name; beta NIfTIs are deflated with the RLE strategy in fixed 4 MiB blocks
by two threads (one gzip member, like pigz); HDF5 objects are created with ``track_times=False``;
the MATLAB header text is fixed.

Random streams are ``np.random.default_rng(SeedSequence([seed, subject, purpose, ...]))``
(subject 0 = the world), so adding a subject leaves the others unchanged as long as
``max(sessions)`` and ``n_test_images`` (which fix the design) are unchanged.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import io as _io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .. import io as bio
from ..errors import InputError
from ..data import layout
from . import scenes as sc
from .shipped import SIM_VERSION

# purposes of the random streams (never renumber: it changes every output)
_P_DESIGN, _P_SCENES, _P_LATENT, _P_REFERENCE, _P_CAPTIONS, _P_STIMINFO = 1, 2, 3, 4, 5, 6
_P_GEOMETRY, _P_VOXELS, _P_MIXING, _P_DRIFT, _P_BEHAVIOUR, _P_SESSION, _P_BRAIN = 11, 12, 13, 14, 15, 16, 17

N_REFERENCE = 256
FEATURE_RES = 42
CHANNELS = ("luminance", "red_green", "blue_yellow", "edges")
TR_SECONDS = 4.0 / 3.0
_BRAIN_RADIUS = 0.85  # ellipsoid semi-axes as a fraction of the half box (→ ~34 % of the box)
_CORTEX_INNER = 0.75  # normalised radius where the cortical shell starts
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: nsd-sim, Created by: braindecode_pkg " + SIM_VERSION.encode()


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


# ============================================================================================
# configuration


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated NSD; see :data:`PRESETS` and :func:`sim_config`.

    ``sessions``, ``volume_shape`` and ``roi_voxels`` are either one value or a dict subject →
    value. One ``volume_shape`` / ``roi_voxels`` is subject 1's; the others are derived from it
    by NSD's relative differences between subjects (made distinct), see :func:`subject_geometry`.
    """

    seed: int = 0
    subjects: tuple = (1, 2, 3, 4)
    sessions: object = 6
    volume_shape: object = (40, 48, 40)
    roi_voxels: object = 2000
    n_test_images: int = 300
    ncsnr_shape: float = 1.6  # gamma shape of the generative ncsnr
    ncsnr_scale: float = 0.2  # gamma scale
    noise_sd_range: tuple = (1.5, 4.0)  # PSC, log-uniform per voxel
    spatial_noise_fraction: float = 0.4  # ρ: share of the noise variance that is spatially smooth
    spatial_noise_length: float = 2.0  # voxels, width of the smooth noise bumps
    drift_gain_sd: float = 0.08  # sd of a session step of log gain
    drift_offset_sd: float = 0.4  # PSC, sd of a session step of the offset
    early_fraction: float = 0.35
    latent_dim: int = 32
    noise_cov_max_voxels: int = 4000
    formats: tuple = ("hdf5", "nifti")
    # allocate every chunk of the .hdf5 betas (zeros outside the brainmask), as NSD's own files
    # (1.05 GB a session at subject-1 size); False writes only brainmask chunks (smaller files)
    hdf5_all_chunks: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, dict):
                d[k] = {str(s): (list(x) if isinstance(x, tuple) else x) for s, x in sorted(v.items())}
            elif isinstance(v, tuple):
                d[k] = list(v)
        return d

    def n_sessions(self, subject: int) -> int:
        return int(self.sessions[subject] if isinstance(self.sessions, dict) else self.sessions)


PRESETS: dict[str, SimConfig] = {
    # unit tests: 3 subjects × 2 sessions, ~12³ volumes, 73–80 ROI voxels; a few seconds
    "tiny": SimConfig(
        subjects=(1, 2, 3), sessions=2, volume_shape=(12, 13, 11), roi_voxels=80,
        n_test_images=40, latent_dim=16,
    ),
    # the embedded default run
    "default": SimConfig(volume_shape=(38, 46, 38)),
    # one real-sized session of subject 1 (I/O benchmarks)
    "bench": SimConfig(
        subjects=(1,), sessions=1, volume_shape=(81, 104, 83), roi_voxels=15724,
        n_test_images=100, latent_dim=64, hdf5_all_chunks=True,
    ),
}


def sim_config(preset: str = "default", **overrides) -> SimConfig:
    """A preset with some fields replaced; validated (raises :class:`InputError`)."""
    if preset not in PRESETS:
        raise InputError(f"unknown nsd-sim preset {preset!r}; expected one of {sorted(PRESETS)}")
    names = [f.name for f in dataclasses.fields(SimConfig)]
    for key in overrides:
        if key not in names:
            raise InputError(f"unknown nsd-sim config key {key!r}; expected one of {names}")
    cfg = dataclasses.replace(PRESETS[preset], **overrides)
    return _normalise(cfg)


def _per_subject(name, value, subjects, conv):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            try:
                out[int(k)] = conv(v)
            except (TypeError, ValueError):
                raise InputError(f"nsd-sim {name}[{k!r}] = {v!r} is not valid") from None
        missing = [s for s in subjects if s not in out]
        if missing:
            raise InputError(f"nsd-sim {name} has no value for subject(s) {missing}")
        return out
    try:
        return conv(value)
    except (TypeError, ValueError):
        raise InputError(f"nsd-sim {name} = {value!r} is not valid") from None


def _shape3(v):
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(v)
    return t


def _normalise(cfg: SimConfig) -> SimConfig:
    subjects = cfg.subjects
    if isinstance(subjects, int):
        subjects = (subjects,)
    subjects = tuple(sorted({int(s) for s in subjects}))
    if not subjects or any(s < 1 or s > layout.N_DESIGN_SUBJECTS for s in subjects):
        raise InputError(f"nsd-sim subjects {list(cfg.subjects)} must be ids in 1..8")
    sessions = _per_subject("sessions", cfg.sessions, subjects, int)
    shape = _per_subject("volume_shape", cfg.volume_shape, subjects, _shape3)
    roi = _per_subject("roi_voxels", cfg.roi_voxels, subjects, int)
    formats = (cfg.formats,) if isinstance(cfg.formats, str) else tuple(cfg.formats)
    cfg = dataclasses.replace(
        cfg, subjects=subjects, sessions=sessions, volume_shape=shape, roi_voxels=roi,
        formats=formats, noise_sd_range=tuple(float(x) for x in cfg.noise_sd_range),
        seed=int(cfg.seed), n_test_images=int(cfg.n_test_images), latent_dim=int(cfg.latent_dim),
        hdf5_all_chunks=bool(cfg.hdf5_all_chunks),
    )
    for s in subjects:
        n = cfg.n_sessions(s)
        if not 1 <= n <= 40:
            raise InputError(f"nsd-sim sessions for subject {s} = {n}; expected 1..40")
    for fmt in formats:
        if fmt not in layout.BETA_FORMATS:
            raise InputError(f"unknown nsd-sim beta format {fmt!r}; expected a subset of {list(layout.BETA_FORMATS)}")
    if not formats:
        raise InputError("nsd-sim formats is empty; expected a subset of ['hdf5', 'nifti']")
    smax = max(cfg.n_sessions(s) for s in subjects)
    n_own = 250 * smax - cfg.n_test_images
    if not 0 <= cfg.n_test_images <= layout.N_SHARED or not 0 <= n_own <= 9000:
        lo, hi = max(0, 250 * smax - 9000), min(1000, 250 * smax)
        raise InputError(
            f"nsd-sim n_test_images = {cfg.n_test_images} does not fit {smax} session(s); "
            f"expected {lo}..{hi} (the first {smax}×750 trials hold every shown image 3 times)"
        )
    lo, hi = cfg.noise_sd_range
    checks = [
        (0 < lo <= hi, "noise_sd_range", cfg.noise_sd_range),
        (cfg.ncsnr_shape > 0 and cfg.ncsnr_scale > 0, "ncsnr_shape/ncsnr_scale", (cfg.ncsnr_shape, cfg.ncsnr_scale)),
        (0 <= cfg.spatial_noise_fraction < 1, "spatial_noise_fraction", cfg.spatial_noise_fraction),
        (cfg.spatial_noise_length > 0, "spatial_noise_length", cfg.spatial_noise_length),
        (cfg.drift_gain_sd >= 0, "drift_gain_sd", cfg.drift_gain_sd),
        (cfg.drift_offset_sd >= 0, "drift_offset_sd", cfg.drift_offset_sd),
        (0 < cfg.early_fraction < 1, "early_fraction", cfg.early_fraction),
        (cfg.latent_dim >= 1, "latent_dim", cfg.latent_dim),
    ]
    for ok, name, value in checks:
        if not ok:
            raise InputError(f"nsd-sim {name} = {value!r} is out of range")
    for s in subjects:
        vs, nr = subject_geometry(cfg, s)
        if min(vs) < 6:
            raise InputError(f"nsd-sim volume_shape {vs} of subject {s} is too small (each axis ≥ 6)")
        if nr < 8:
            raise InputError(f"nsd-sim roi_voxels = {nr} for subject {s}; expected at least 8")
    return cfg


def subject_geometry(cfg: SimConfig, subject: int) -> tuple[tuple[int, int, int], int]:
    """(volume shape, ROI voxel count) of a subject.

    A dict gives them directly. One value is subject 1's; subject s adds NSD's difference
    between subject s and subject 1, scaled by value / NSD subject 1 (so the bench's
    (81, 104, 83) and 15,724 give NSD's own numbers), then bumped until no two of the eight
    subjects coincide (depends only on the value and the id, never on the other subjects).
    """
    subject = int(subject)
    if isinstance(cfg.volume_shape, dict):
        shape = tuple(cfg.volume_shape[subject])
    else:
        base = np.array(cfg.volume_shape, float)
        ref = np.array(layout.NSD_VOLUME_SHAPE[1], float)
        used = []
        for s in range(1, subject + 1):
            diff = np.array(layout.NSD_VOLUME_SHAPE[s], float) - ref
            sh = [int(x) for x in np.round(base + diff * base / ref)]
            while tuple(sh) in used:
                sh[s % 3] += 1
            used.append(tuple(sh))
        shape = used[-1]
    if isinstance(cfg.roi_voxels, dict):
        count = int(cfg.roi_voxels[subject])
    else:
        base = float(cfg.roi_voxels)
        used_n = []
        for s in range(1, subject + 1):
            n = int(round(base * layout.NSD_NSDGENERAL_VOXELS[s] / layout.NSD_NSDGENERAL_VOXELS[1]))
            while n in used_n:
                n += 1
            used_n.append(n)
        count = used_n[-1]
    return shape, count


# ============================================================================================
# design


def make_design(cfg: SimConfig) -> dict[str, np.ndarray]:
    """The NSD design arrays (1-based values, int64): ``masterordering`` (30000,),
    ``subjectim`` (8, 10000), ``sharedix`` (1000,), ``stimpattern`` (40, 12, 75), ``basiccnt`` (3, 40)."""
    rng = _rng(cfg.seed, 0, _P_DESIGN)
    perm = rng.permutation(layout.N_IMAGES_73K) + 1
    shared = np.sort(perm[: layout.N_SHARED])
    subjectim = np.empty((layout.N_DESIGN_SUBJECTS, layout.N_IMAGES_10K), np.int64)
    per = layout.N_IMAGES_10K - layout.N_SHARED
    for s in range(layout.N_DESIGN_SUBJECTS):
        own = perm[layout.N_SHARED + per * s: layout.N_SHARED + per * (s + 1)]
        subjectim[s] = np.concatenate([shared, np.sort(own)])
    smax = max(cfg.n_sessions(s) for s in cfg.subjects)
    n_used = smax * layout.TRIALS_PER_SESSION
    n_own = n_used // 3 - cfg.n_test_images
    test = np.sort(rng.choice(layout.N_SHARED, cfg.n_test_images, replace=False)) + 1
    own = np.sort(rng.choice(per, n_own, replace=False)) + 1 + layout.N_SHARED
    used = np.concatenate([test, own])
    first = rng.permutation(np.repeat(used, 3))
    rest_idx = np.setdiff1d(np.arange(1, layout.N_IMAGES_10K + 1), used)
    rest = rng.permutation(np.repeat(rest_idx, 3))
    mo = np.concatenate([first, rest]).astype(np.int64)
    # stimulus slots: 63 (odd runs) or 62 (even runs) of 75, first and last 3 slots blank
    stimpattern = np.zeros((40, layout.RUNS_PER_SESSION, layout.SLOTS_PER_RUN), np.int64)
    for s in range(40):
        for r in range(layout.RUNS_PER_SESSION):
            n = 63 if r % 2 == 0 else 62
            slots = np.sort(rng.choice(np.arange(3, layout.SLOTS_PER_RUN - 3), n, replace=False))
            stimpattern[s, r, slots] = 1
    # basiccnt: per session, number of first / second / third presentations
    occ = _occurrence_number(mo)
    basiccnt = np.zeros((3, 40), np.int64)
    sess = np.arange(layout.N_DESIGN_TRIALS) // layout.TRIALS_PER_SESSION
    np.add.at(basiccnt, (occ, sess), 1)
    return {"masterordering": mo, "subjectim": subjectim, "sharedix": shared,
            "stimpattern": stimpattern, "basiccnt": basiccnt}


def _occurrence_number(seq: np.ndarray) -> np.ndarray:
    """0 for the first occurrence of a value in ``seq``, 1 for the second, ..."""
    order = np.argsort(seq, kind="stable")
    s = seq[order]
    start = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    run_start = np.repeat(start, np.diff(np.r_[start, len(s)]))
    occ = np.empty(len(seq), np.int64)
    occ[order] = np.arange(len(s)) - run_start
    return occ


def subject_trials(design: dict, subject: int, n_sessions: int) -> tuple[np.ndarray, np.ndarray]:
    """(10k index 1-based, 73k id 0-based) of each acquired trial of a subject, in trial order."""
    k10 = design["masterordering"][: n_sessions * layout.TRIALS_PER_SESSION]
    nsd = design["subjectim"][subject - 1, k10 - 1] - 1
    return k10, nsd


# ============================================================================================
# stimulus scenes and the brain model's image features


def world_scenes(cfg: SimConfig) -> dict[str, np.ndarray]:
    """The scene attribute table of all 73,000 ids (row = 0-based nsd id)."""
    return sc.sample_scenes(_rng(cfg.seed, 0, _P_SCENES), layout.N_IMAGES_73K)


def image_channels(img) -> np.ndarray:
    """(4, 42, 42) float32 channels of a 425² RGB uint8 image (array or PIL image).

    Channels: luminance, R−G, (R+G)/2−B (each minus its mean over the image: local contrast,
    so a bright background does not drive every receptive field alike) and edge energy. The
    image is averaged over 5×5 blocks (85²), cropped to 84² (the last row and column are
    dropped), edge energy is the gradient magnitude of luminance there, then 2×2 blocks are
    averaged: 42×42, one value per 10 px.
    """
    from PIL import Image

    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
    a = np.asarray(im.reduce(5), np.float32)[:84, :84] * np.float32(1 / 255.0)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    lum = (r + g + b) * np.float32(1 / 3.0)
    gy, gx = np.gradient(lum)
    ch = np.stack([lum, r - g, (r + g) * np.float32(0.5) - b, np.hypot(gx, gy)])
    ch = (ch[:, ::2, ::2] + ch[:, 1::2, ::2] + ch[:, ::2, 1::2] + ch[:, 1::2, 1::2]) * np.float32(0.25)
    ch[:3] -= ch[:3].mean(axis=(1, 2), keepdims=True)  # local contrast: relative to the image mean
    return ch


def attribute_features(attrs: dict[str, np.ndarray]) -> np.ndarray:
    """(n, 26) vector of each scene: per object [one-hot shape, one-hot colour, size, x, y]
    summed over objects, then one-hot background and (n_objects − 1.5)."""
    n = len(attrs["background"])
    per = len(sc.SHAPES) + len(sc.COLOURS) + 3
    f = np.zeros((n, per + len(sc.BACKGROUNDS) + 1))
    rows = np.arange(n)
    for k in (1, 2):
        present = attrs[f"shape{k}"] >= 0
        r = rows[present]
        f[r, attrs[f"shape{k}"][present].astype(int)] += 1
        f[r, len(sc.SHAPES) + attrs[f"colour{k}"][present].astype(int)] += 1
        f[r, per - 3] += (attrs[f"radius{k}"][present] - 0.14) / 0.06
        f[r, per - 2] += attrs[f"x{k}"][present] - 0.5
        f[r, per - 1] += attrs[f"y{k}"][present] - 0.5
    f[rows, per + attrs["background"].astype(int)] = 1
    f[:, -1] = attrs["n_objects"] - 1.5
    return f


def latent(cfg: SimConfig, attrs: dict[str, np.ndarray]) -> np.ndarray:
    """(n, latent_dim) shared latent of scenes: tanh(W f + b), W and b from the world seed."""
    f = attribute_features(attrs)
    rng = _rng(cfg.seed, 0, _P_LATENT)
    w = rng.normal(0, 0.5, (cfg.latent_dim, f.shape[1]))
    b = rng.normal(0, 0.3, cfg.latent_dim)
    return np.tanh(f @ w.T + b)


class _Reference:
    """A fixed set of scenes whose responses standardise every voxel (a function of the seed)."""

    _cache: dict = {}

    def __init__(self, cfg: SimConfig):
        self.attrs = sc.sample_scenes(_rng(cfg.seed, 0, _P_REFERENCE), N_REFERENCE)
        key = (cfg.seed, SIM_VERSION)
        if key not in self._cache:  # rendering takes ~1 s; keep the last one
            self._cache.clear()
            self._cache[key] = np.stack(
                [image_channels(sc.render_scene(self.attrs, i, pil=True)) for i in range(N_REFERENCE)]
            )
        self.channels = self._cache[key]
        self.latent = latent(cfg, self.attrs)


# ============================================================================================
# brain geometry and voxel parameters


def _smooth_field(rng, shape, n_waves=6, max_freq=1.5):
    """A smooth random field over a box: a sum of low-frequency cosines (unit-ish amplitude)."""
    axes = [np.linspace(-0.5, 0.5, n) for n in shape]
    grid = np.meshgrid(*axes, indexing="ij")
    out = np.zeros(shape)
    for _ in range(n_waves):
        w = rng.normal(0, max_freq / 2, 3)
        out += np.cos(2 * np.pi * sum(wi * g for wi, g in zip(w, grid)) + rng.uniform(0, 2 * np.pi))
    return out / np.sqrt(n_waves / 2)


@dataclasses.dataclass
class Brain:
    """Volumes and per-voxel parameters of one simulated subject (voxels = ROI, C order)."""

    subject: int
    shape: tuple
    brainmask: np.ndarray  # bool (X, Y, Z)
    roi_label: np.ndarray  # float64 (X, Y, Z): -1 / 0 / 1
    hemi_left: np.ndarray  # bool (X, Y, Z)
    voxel_ijk: np.ndarray  # (n, 3)
    early: np.ndarray  # bool (n,)
    rf_xy: np.ndarray  # (n, 2), NaN for later voxels
    rf_sigma: np.ndarray  # (n,)
    channel_weights: np.ndarray  # (n, 4)
    mixing: np.ndarray  # (n, latent_dim), zero rows for early voxels
    ncsnr: np.ndarray
    noise_sd: np.ndarray
    baseline: np.ndarray
    noise_basis: np.ndarray  # (n, K) float32, rows unit norm
    gain: np.ndarray  # (n_sessions, n)
    offset: np.ndarray  # (n_sessions, n)

    @property
    def n_voxels(self) -> int:
        return len(self.voxel_ijk)


def _geometry(cfg: SimConfig, subject: int) -> dict:
    """Brainmask, cortex, ROI and pole of a subject (raises InputError if the ROI cannot fit)."""
    shape, n_roi = subject_geometry(cfg, subject)
    g = _rng(cfg.seed, subject, _P_GEOMETRY)
    c = (np.array(shape) - 1) / 2.0
    semi = _BRAIN_RADIUS * np.array(shape) / 2.0
    idx = np.indices(shape, dtype=np.float32)
    rho = np.sqrt(sum(((idx[a] - c[a]) / semi[a]) ** 2 for a in range(3)))
    rho_eff = rho * (1 + 0.05 * _smooth_field(g, shape))
    brain = rho_eff <= 1.0
    cortex = brain & (rho_eff >= _CORTEX_INNER)
    # posterior pole (low y in RAS), slightly superior
    pole = np.array([c[0], c[1] - semi[1], c[2] + 0.15 * semi[2]])
    dist = np.sqrt(sum((idx[a] - pole[a]) ** 2 for a in range(3)))
    score = dist + 0.6 * _smooth_field(g, shape, max_freq=3.0)
    cand = np.flatnonzero(cortex.ravel())
    if n_roi > len(cand):
        raise InputError(
            f"nsd-sim roi_voxels = {n_roi} for subject {subject} exceeds the {len(cand)} cortex voxels "
            f"of its volume {shape}; use a larger volume_shape or fewer roi_voxels"
        )
    chosen = cand[np.argsort(score.ravel()[cand], kind="stable")[:n_roi]]
    roi = np.zeros(int(np.prod(shape)), bool)
    roi[chosen] = True
    return {"shape": shape, "brain": brain, "cortex": cortex, "roi": roi.reshape(shape), "score": score,
            "pole": pole}


def make_brain(cfg: SimConfig, subject: int) -> Brain:
    """Geometry and voxel parameters of a subject (see the module docstring)."""
    from scipy import ndimage, special

    geo = _geometry(cfg, subject)
    shape, brain, cortex, roi, score, pole = (geo[k] for k in ("shape", "brain", "cortex", "roi", "score", "pole"))
    label = np.where(cortex, 0.0, -1.0)
    label[roi] = 1.0
    hemi_left = np.broadcast_to((np.arange(shape[0]) < shape[0] / 2.0)[:, None, None], shape).copy()

    ijk = np.argwhere(roi)  # C order
    n = len(ijk)
    vscore = score[roi]
    n_early = max(1, int(round(cfg.early_fraction * n)))
    early = np.zeros(n, bool)
    early[np.argsort(vscore, kind="stable")[:n_early]] = True

    v = _rng(cfg.seed, subject, _P_VOXELS)
    # retinotopy
    d = ijk - pole
    lat = np.hypot(d[:, 0], d[:, 2])
    lat_max = max(lat[early].max(), 1e-9)
    ecc = 0.02 + 0.45 * (lat / lat_max) ** 1.3
    phi = np.arctan2(d[:, 2], d[:, 0])
    rf_x = np.clip(0.5 - ecc * np.cos(phi) + v.normal(0, 0.02, n), 0.02, 0.98)
    rf_y = np.clip(0.5 + ecc * np.sin(phi) + v.normal(0, 0.02, n), 0.02, 0.98)
    rf_sigma = (0.03 + 0.2 * ecc) * np.exp(v.normal(0, 0.1, n))
    w = np.column_stack([v.uniform(0.6, 1.0, n), v.normal(0, 0.4, n), v.normal(0, 0.4, n), v.uniform(0.2, 0.8, n)])
    rf_xy = np.column_stack([rf_x, rf_y])
    rf_xy[~early] = np.nan
    rf_sigma[~early] = np.nan
    w[~early] = np.nan
    # SNR: gamma marginal through a Gaussian copula (half smooth field, half nearness to the pole)
    z_s = ndimage.gaussian_filter(v.standard_normal(shape), 2.0)[roi]
    z_p = -vscore
    z = _standardise(z_s) + _standardise(z_p)
    u = special.ndtr(_standardise(z))
    ncsnr = cfg.ncsnr_scale * special.gammaincinv(cfg.ncsnr_shape, u)  # gamma quantile
    lo, hi = cfg.noise_sd_range
    noise_sd = np.exp(v.uniform(np.log(lo), np.log(hi), n))
    baseline = v.normal(1.5, 1.0, n)
    # spatially smooth noise basis
    ell = cfg.spatial_noise_length
    k = int(min(n, max(4, np.ceil(n / (2.0 * ell**3)))))
    centres = ijk[v.choice(n, k, replace=False)] + v.uniform(-0.5, 0.5, (k, 3))
    d2 = ((ijk[:, None, :] - centres[None, :, :]) ** 2).sum(-1) if n * k < 4e6 else _sqdist_blocks(ijk, centres)
    basis = np.exp(-d2 / (2 * ell**2))
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    basis = basis.astype(np.float32)
    # mixing of the shared latent into later voxels: spatially smooth + independent parts
    m = _rng(cfg.seed, subject, _P_MIXING)
    lo_b, hi_b = ijk.min(0), ijk.max(0) + 1
    box = tuple(hi_b - lo_b)
    loc = tuple((ijk - lo_b).T)
    smooth = np.empty((n, cfg.latent_dim))
    for j in range(cfg.latent_dim):
        smooth[:, j] = ndimage.gaussian_filter(m.standard_normal(box), 1.5)[loc]
    mixing = np.sqrt(0.7) * _standardise(smooth, axis=0) + np.sqrt(0.3) * m.standard_normal((n, cfg.latent_dim))
    mixing[early] = 0.0
    # session drift: random walks of log gain and offset (half global, half per voxel)
    dr = _rng(cfg.seed, subject, _P_DRIFT)
    ns = cfg.n_sessions(subject)
    h = np.sqrt(0.5)
    g_sd, o_sd = h * cfg.drift_gain_sd, h * cfg.drift_offset_sd
    log_gain = np.cumsum(dr.normal(0, g_sd, (ns, 1)) + dr.normal(0, g_sd, (ns, n)), 0)
    offset = np.cumsum(dr.normal(0, o_sd, (ns, 1)) + dr.normal(0, o_sd, (ns, n)), 0)
    return Brain(
        subject=subject, shape=shape, brainmask=brain, roi_label=label, hemi_left=hemi_left,
        voxel_ijk=ijk.astype(np.int64), early=early, rf_xy=rf_xy, rf_sigma=rf_sigma,
        channel_weights=w, mixing=mixing, ncsnr=ncsnr, noise_sd=noise_sd, baseline=baseline,
        noise_basis=basis, gain=np.exp(log_gain), offset=offset,
    )


def _sqdist_blocks(a, b, block=2048):
    out = np.empty((len(a), len(b)))
    for i in range(0, len(a), block):
        out[i:i + block] = ((a[i:i + block, None, :] - b[None, :, :]) ** 2).sum(-1)
    return out


def _standardise(x, axis=None):
    x = np.asarray(x, float)
    return (x - x.mean(axis=axis, keepdims=axis is not None)) / (x.std(axis=axis, keepdims=axis is not None) + 1e-12)


def noise_cov(brain: Brain, rho: float) -> np.ndarray:
    """Σ = D((1-ρ)I + ρ L Lᵀ)D of a subject's trial noise (float64)."""
    basis = brain.noise_basis.astype(np.float64)
    cov = rho * (basis @ basis.T)
    cov[np.diag_indices_from(cov)] += 1 - rho
    return cov * brain.noise_sd[:, None] * brain.noise_sd[None, :]


def _rf_matrix(brain: Brain) -> np.ndarray:
    """(n_early, 42*42) Gaussian receptive fields, each summing to 1."""
    n = FEATURE_RES
    centres = (np.arange(n) + 0.5) / n
    xy = brain.rf_xy[brain.early]
    sig = brain.rf_sigma[brain.early]
    gx = np.exp(-((centres[None, :] - xy[:, 0:1]) ** 2) / (2 * sig[:, None] ** 2))
    gy = np.exp(-((centres[None, :] - xy[:, 1:2]) ** 2) / (2 * sig[:, None] ** 2))
    rf = gy[:, :, None] * gx[:, None, :]  # (v, y, x)
    rf = rf.reshape(len(xy), -1)
    return rf / rf.sum(1, keepdims=True)


def responses(cfg: SimConfig, brain: Brain, channels: np.ndarray, lat: np.ndarray, ref: _Reference) -> np.ndarray:
    """Standardised response (n_images, n_voxels) to images given their channels and latents."""
    out = np.empty((len(lat), brain.n_voxels))
    rf = _rf_matrix(brain).astype(np.float32)
    w = brain.channel_weights[brain.early]

    def early_raw(ch):
        ch = np.ascontiguousarray(ch, np.float32).reshape(len(ch), 4, -1)
        return np.stack([ch[:, c] @ rf.T for c in range(4)], -1).astype(np.float64)  # (i, v, c)

    fr = early_raw(ref.channels)
    m, s = fr.mean(0), fr.std(0) + 1e-9
    raw = (((early_raw(channels) - m) / s) * w).sum(-1)
    rr = (((fr - m) / s) * w).sum(-1)
    out[:, brain.early] = (raw - rr.mean(0)) / (rr.std(0) + 1e-9)
    mix = brain.mixing[~brain.early]
    raw = lat @ mix.T
    rr = ref.latent @ mix.T
    out[:, ~brain.early] = (raw - rr.mean(0)) / (rr.std(0) + 1e-9)
    return out


def expected_psc(brain: Brain, resp: np.ndarray) -> np.ndarray:
    """mu = baseline + ncsnr * noise_sd * response (PSC)."""
    return brain.baseline + (brain.ncsnr * brain.noise_sd) * resp


# ============================================================================================
# writers (every file through io.atomic_path; deterministic bytes)


class _Written:
    """Relative paths of every file written, for the manifest."""

    def __init__(self, root: Path):
        self.root = root
        self.paths: list[Path] = []

    def add(self, path: Path) -> Path:
        self.paths.append(Path(path))
        return Path(path)


def _nifti_header(shape, dtype, affine, tr=None) -> bytes:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_sform(affine, code=1)
    hdr.set_qform(affine, code=0)
    hdr.set_xyzt_units("mm", "sec")
    zooms = [float(abs(affine[0, 0])), float(abs(affine[1, 1])), float(abs(affine[2, 2]))]
    if len(shape) == 4:
        zooms.append(float(tr))
    hdr.set_zooms(zooms)
    hdr["vox_offset"] = 352
    hdr["scl_slope"] = 0.0
    hdr["scl_inter"] = 0.0
    return hdr.binaryblock + b"\x00\x00\x00\x00"


class _GzipWriter:
    """A deterministic gzip stream (mtime 0, no file name) compressed by zlib in parallel blocks.

    Like pigz: the data is cut into fixed blocks, each deflated independently in a thread pool
    (zlib releases the GIL) and ended with a sync flush, the last one with a final block; the
    pieces form one valid deflate stream inside one gzip member. zlib is deterministic (ISA-L
    is not: its output can differ from run to run), and the fixed block size makes the bytes a
    function of the data alone.
    """

    _BLOCK = 1 << 22

    def __init__(self, path: Path, level: int = 1, threads: int = 2, strategy: int = zlib.Z_DEFAULT_STRATEGY):
        self._f = open(path, "wb")
        self._f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # magic, deflate, no flags, mtime 0, OS unknown
        self._level = level
        self._strategy = strategy
        self._crc = 0
        self._size = 0
        self._buf = bytearray()
        self._pool = cf.ThreadPoolExecutor(threads)
        self._threads = threads
        self._pending: list = []

    @staticmethod
    def _deflate(data: bytes, level: int, strategy: int, last: bool) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
        return c.compress(data) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            self._f.write(self._pending.pop(0).result())

    def write(self, b) -> None:
        b = memoryview(b).cast("B")
        self._crc = zlib.crc32(b, self._crc)
        self._size += len(b)
        self._buf += b
        while len(self._buf) >= self._BLOCK:
            block = bytes(self._buf[: self._BLOCK])
            del self._buf[: self._BLOCK]
            self._pending.append(self._pool.submit(self._deflate, block, self._level, self._strategy, False))
            self._drain(2 * self._threads)

    def close(self) -> None:
        try:
            self._pending.append(self._pool.submit(self._deflate, bytes(self._buf), self._level, self._strategy, True))
            self._drain(0)
            self._f.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown()
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self._pool.shutdown(cancel_futures=True)
            self._f.close()


def _write_nifti(path: Path, data: np.ndarray, affine, written: _Written, level: int = 6) -> None:
    with bio.atomic_path(path) as tmp, _GzipWriter(tmp, level, threads=1) as gz:
        gz.write(_nifti_header(data.shape, data.dtype, affine))
        gz.write(np.asarray(data).tobytes(order="F"))
    written.add(path)


def _h5(f, name, data, **kw):
    return f.create_dataset(name, data=data, track_times=False, **kw)


def _write_expdesign(path: Path, design: dict, written: _Written) -> None:
    import scipy.io

    mat = {
        "masterordering": design["masterordering"][None, :].astype(np.float64),
        "subjectim": design["subjectim"].astype(np.float64),
        "sharedix": design["sharedix"][None, :].astype(np.float64),
        "stimpattern": design["stimpattern"].astype(np.float64),
        "basiccnt": design["basiccnt"].astype(np.float64),
    }
    buf = _io.BytesIO()
    scipy.io.savemat(buf, mat, format="5", do_compression=False)
    b = bytearray(buf.getvalue())
    b[:116] = _MAT_HEADER.ljust(116, b" ")[:116]
    with bio.atomic_path(path) as tmp:
        tmp.write_bytes(bytes(b))
    written.add(path)


def _write_stim_info(path: Path, cfg: SimConfig, design: dict, written: _Written) -> dict[str, np.ndarray]:
    """nsd_stim_info_merged.csv; returns the cocoId and cocoSplit arrays."""
    rng = _rng(cfg.seed, 0, _P_STIMINFO)
    n = layout.N_IMAGES_73K
    coco = rng.choice(581929, n, replace=False) + 1
    split = np.where(rng.random(n) < 0.07, "val2017", "train2017")
    crop = rng.integers(0, 121, n) / 640.0
    portrait = rng.random(n) < 0.25
    crop_box = [
        f"(0, 0, {c!r}, {c!r})" if not p else f"({c!r}, {c!r}, 0, 0)"
        for c, p in zip(crop.tolist(), portrait.tolist())
    ]
    crop_box = [s.replace("0.0,", "0,").replace("0.0)", "0)") for s in crop_box]
    loss = np.round(rng.beta(1.0, 12.0, n) * (crop > 0), 6)
    shared = np.zeros(n, bool)
    shared[design["sharedix"] - 1] = True
    cols: dict[str, object] = {
        "cocoId": coco, "cocoSplit": split, "cropBox": crop_box, "loss": loss,
        "nsdId": np.arange(n), "flagged": rng.random(n) < 0.003, "BOLD5000": rng.random(n) < 0.015,
        "shared1000": shared,
    }
    # repeats: the three positions (1-based global trials) of each 10k index in masterordering
    pos = np.argsort(design["masterordering"], kind="stable").reshape(layout.N_IMAGES_10K, 3) + 1
    reps = np.zeros((layout.N_DESIGN_SUBJECTS, n, 3), np.int64)
    member = np.zeros((layout.N_DESIGN_SUBJECTS, n), np.int64)
    for s in range(layout.N_DESIGN_SUBJECTS):
        ids = design["subjectim"][s] - 1
        member[s, ids] = 1
        reps[s, ids] = pos
    for s in range(layout.N_DESIGN_SUBJECTS):
        cols[f"subject{s + 1}"] = member[s]
    for s in range(layout.N_DESIGN_SUBJECTS):
        for r in range(3):
            cols[f"subject{s + 1}_rep{r}"] = reps[s, :, r]
    # written by hand (pandas takes seconds): an unnamed index column, then the columns above;
    # cropBox quoted (it holds commas), bools as True/False, floats as repr
    text = []
    for k, v in cols.items():
        if k == "cropBox":
            text.append([f'"{x}"' for x in v])
        elif k == "loss":
            text.append([repr(x) for x in np.asarray(v, float).tolist()])
        elif np.asarray(v).dtype == bool:
            text.append(np.where(v, "True", "False").tolist())
        else:
            text.append([str(x) for x in np.asarray(v).tolist()])
    lines = ["," + ",".join(cols)]
    lines += [",".join(r) for r in zip(map(str, range(n)), *text)]
    with bio.atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    written.add(path)
    return {"cocoId": coco, "cocoSplit": split}


def _write_stimuli(path: Path, cfg: SimConfig, attrs: dict, ids: np.ndarray, written: _Written) -> np.ndarray:
    """imgBrick with only ``ids`` drawn (sorted); returns their (n, 4, 42, 42) channels."""
    import h5py

    s = layout.IMAGE_SIZE
    channels = np.empty((len(ids), 4, FEATURE_RES, FEATURE_RES), np.float32)
    with bio.atomic_path(path) as tmp, h5py.File(tmp, "w") as f, cf.ThreadPoolExecutor(2) as pool:
        dset = f.create_dataset(
            "imgBrick", shape=(layout.N_IMAGES_73K, s, s, 3), dtype=np.uint8, chunks=(1, s, s, 3),
            compression="gzip", compression_opts=1, track_times=False,
        )
        pending: list = []

        def flush(keep):
            while len(pending) > keep:
                nsd, fut = pending.pop(0)
                dset.id.write_direct_chunk((int(nsd), 0, 0, 0), fut.result())

        for j, nsd in enumerate(ids):
            img = sc.render_scene(attrs, int(nsd), pil=True)
            pending.append((nsd, pool.submit(zlib.compress, np.asarray(img), 1)))  # zlib: deterministic
            channels[j] = image_channels(img)
            flush(6)
        flush(0)
    written.add(path)
    return channels


def _write_captions(nsd: layout.NSDPaths, cfg: SimConfig, attrs, ids, coco, written: _Written) -> None:
    out = {sp: {"info": {"description": "nsd-sim procedural captions", "version": SIM_VERSION},
                "licenses": [], "images": [], "annotations": []} for sp in ("train2017", "val2017")}
    for nid in ids.tolist():
        split = str(coco["cocoSplit"][nid])
        cid = int(coco["cocoId"][nid])
        out[split]["images"].append(
            {"id": cid, "file_name": f"{cid:012d}.jpg", "height": layout.IMAGE_SIZE, "width": layout.IMAGE_SIZE}
        )
        caps = sc.make_captions(attrs, nid, _rng(cfg.seed, 0, _P_CAPTIONS, nid), n=5)
        for j, text in enumerate(caps):
            out[split]["annotations"].append({"image_id": cid, "id": (nid + 1) * 10 + j, "caption": text})
    for split, doc in out.items():
        path = nsd.captions(split)
        with bio.atomic_path(path) as tmp:
            tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        written.add(path)


def _write_stimuli_tsv(path: Path, attrs, ids, coco, written: _Written) -> None:
    import pandas as pd

    sub = sc.subset(attrs, ids)
    cols = {"nsd_id": ids, "cocoId": coco["cocoId"][ids], "cocoSplit": coco["cocoSplit"][ids]}
    cols.update(sc.readable(sub))
    with bio.atomic_path(path) as tmp:
        pd.DataFrame(cols).to_csv(tmp, sep="\t", index=False, lineterminator="\n", float_format="%.6f")
    written.add(path)


def _behaviour(cfg: SimConfig, design: dict, subject: int) -> list[list]:
    """Rows of responses.tsv (values, NaN for missing) for a subject's acquired trials."""
    ns = cfg.n_sessions(subject)
    k10, nsd = subject_trials(design, subject, ns)
    n = len(k10)
    rng = _rng(cfg.seed, subject, _P_BEHAVIOUR)
    last_seen: dict[int, int] = {}
    first_seen: dict[int, int] = {}
    rows = []
    day0 = 737425.0 + 3 * subject
    # run, trial within run and slot of every stimulus trial of every session (from stimpattern)
    runs, trials, slots = [], [], []
    for sess in range(ns):
        r_idx, s_idx = np.nonzero(design["stimpattern"][sess])
        runs.append(r_idx)
        slots.append(s_idx)
        trials.append(np.concatenate([np.arange(c) for c in design["stimpattern"][sess].sum(1)]))
    runs, trials, slots = (np.concatenate(x).tolist() for x in (runs, trials, slots))
    for t in range(n):
        sess = t // layout.TRIALS_PER_SESSION
        run, trial_in_run, slot = runs[t], trials[t], slots[t]
        time = day0 + 7 * sess + (10 * 3600 + run * 360 + slot * 4.0) / 86400.0
        key = int(k10[t])
        recent = t - last_seen[key] if key in last_seen else np.nan
        first = t - first_seen[key] if key in first_seen else np.nan
        is_old = int(key in last_seen)
        is_old_cur = int(key in last_seen and last_seen[key] >= sess * layout.TRIALS_PER_SESSION)
        p_old = min(0.95, 0.6 * np.exp(-recent / 3000.0) + 0.35) if is_old else 0.12
        missing = rng.random() < 0.015
        said_old = rng.random() < p_old
        change = rng.random() < 0.03
        rt = float(np.round(np.exp(rng.normal(np.log(850 if said_old == bool(is_old) else 1050), 0.25)), 3))
        if missing:
            row = [subject, sess + 1, run + 1, trial_in_run + 1, int(nsd[t]) + 1, key, time, is_old, np.nan,
                   np.nan, np.nan, recent, first, is_old_cur, np.nan, 0, 0, np.nan, 1]
        else:
            row = [subject, sess + 1, run + 1, trial_in_run + 1, int(nsd[t]) + 1, key, time, is_old,
                   int(said_old == bool(is_old)), rt, int(change), recent, first, is_old_cur,
                   int(said_old == bool(is_old_cur)), 2 if change else 1, 1, 2 if said_old else 1, 0]
        rows.append(row)
        first_seen.setdefault(key, t)
        last_seen[key] = t
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        if np.isnan(v):
            return "NaN"
        return repr(v) if not v.is_integer() else str(int(v))
    return str(int(v))


def _write_responses(path: Path, rows: list[list], written: _Written) -> None:
    lines = ["\t".join(layout.RESPONSES_COLUMNS)]
    for r in rows:
        r = list(r)
        r[6] = f"{r[6]:.6f}"  # TIME (days)
        lines.append("\t".join(x if isinstance(x, str) else _fmt(x) for x in r))
    with bio.atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    written.add(path)


def _session_betas(cfg: SimConfig, brain: Brain, mu: np.ndarray, img_index: np.ndarray, session: int,
                   bg: dict, mask_roi_pos: np.ndarray) -> np.ndarray:
    """(750, n_mask) int16 betas of one session (brainmask voxels in C order)."""
    rng = _rng(cfg.seed, brain.subject, _P_SESSION, session)
    s = session - 1
    rho = cfg.spatial_noise_fraction
    n_t = len(img_index)
    e1 = rng.standard_normal((n_t, brain.n_voxels))
    e2 = rng.standard_normal((n_t, brain.noise_basis.shape[1]))
    noise = (np.sqrt(1 - rho) * e1 + np.sqrt(rho) * (e2 @ brain.noise_basis.astype(np.float64).T)) * brain.noise_sd
    roi = (brain.gain[s] * mu[img_index] + brain.offset[s] + noise) * layout.PSC_SCALE
    # every brainmask voxel gets baseline + offset + noise (float32, in blocks of trials to bound
    # memory); the ROI columns are then replaced by the model above
    out = np.empty((n_t, bg["n_mask"]), np.int16)
    scale = (bg["sd"] * np.float32(layout.PSC_SCALE)).astype(np.float32)
    level = ((bg["baseline"] + bg["offset"][s]) * layout.PSC_SCALE).astype(np.float32)
    step = max(1, int(40e6 // max(1, bg["n_mask"])))
    for a in range(0, n_t, step):
        b = min(n_t, a + step)
        x = rng.standard_normal((b - a, bg["n_mask"]), dtype=np.float32)
        x *= scale
        x += level
        x[:, mask_roi_pos] = roi[a:b]
        np.rint(x, out=x)
        np.clip(x, -32768, 32767, out=x)
        out[a:b] = x
    return out


def _write_betas_nifti(path: Path, arr: np.ndarray, shape, fidx: np.ndarray) -> Path:
    """int16 (X, Y, Z, T) NIfTI-1, one volume at a time (Fortran order), RLE-deflated in blocks."""
    affine = layout.nsd_affine(shape, layout.voxel_size_mm("func1pt8mm"))
    n_t = arr.shape[0]
    vol = np.zeros(int(np.prod(shape)), np.int16)
    with bio.atomic_path(path) as tmp, _GzipWriter(tmp, 1, strategy=zlib.Z_RLE) as gz:
        gz.write(_nifti_header(tuple(shape) + (n_t,), np.int16, affine, tr=TR_SECONDS))
        for t in range(n_t):
            vol[fidx] = arr[t]
            gz.write(vol.tobytes())
    return path


def _write_betas_hdf5(path: Path, arr: np.ndarray, shape, ijk_mask: np.ndarray, all_chunks: bool) -> Path:
    """/betas (T, Z, Y, X) int16, chunks (T, 1, 1, 1), uncompressed; brainmask chunks written
    directly. With ``all_chunks`` every chunk is allocated up front and filled with 0, as in
    NSD's files; otherwise chunks outside the brainmask stay unallocated (read as 0)."""
    import h5py

    n_t = arr.shape[0]
    X, Y, Z = shape
    offsets = [(0, z, y, x) for x, y, z in ijk_mask.tolist()]
    with bio.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((n_t, 1, 1, 1))
        dcpl.set_fill_value(np.zeros((), np.int16))
        dcpl.set_obj_track_times(False)
        if all_chunks:
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
        space = h5py.h5s.create_simple((n_t, Z, Y, X))
        dsid = h5py.h5d.create(f.id, b"betas", h5py.h5t.STD_I16LE, space, dcpl=dcpl)
        write = dsid.write_direct_chunk
        step = 20_000
        for a in range(0, arr.shape[1], step):
            block = np.ascontiguousarray(arr[:, a:a + step].T)
            for off, row in zip(offsets[a:a + step], block):
                write(off, row)
    return path


def _write_truth(path: Path, cfg: SimConfig, brain: Brain, ids, mu, attrs, written: _Written) -> None:
    import h5py

    with bio.atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _h5(f, "nsd_id", ids.astype(np.int64))
        _h5(f, "mu", mu.astype(np.float32))
        _h5(f, "voxel_ijk", brain.voxel_ijk)
        _h5(f, "session_gain", brain.gain)
        _h5(f, "session_offset", brain.offset)
        _h5(f, "noise_sd", brain.noise_sd)
        _h5(f, "ncsnr", brain.ncsnr)
        _h5(f, "baseline", brain.baseline)
        nb = _h5(f, "noise_basis", brain.noise_basis)
        nb.attrs["spatial_noise_fraction"] = cfg.spatial_noise_fraction
        if brain.n_voxels <= cfg.noise_cov_max_voxels:
            _h5(f, "noise_cov", noise_cov(brain, cfg.spatial_noise_fraction).astype(np.float32))
        _h5(f, "early", brain.early)
        _h5(f, "rf_xy", brain.rf_xy)
        _h5(f, "rf_sigma", brain.rf_sigma)
        cw = _h5(f, "channel_weights", brain.channel_weights)
        cw.attrs["channels"] = ",".join(CHANNELS)
        g = f.create_group("attributes")
        for k, v in sc.subset(attrs, ids).items():
            _h5(g, k, v)
        for name, table in (("shapes", sc.SHAPES), ("colours", sc.COLOURS), ("sizes", sc.SIZES),
                            ("backgrounds", sc.BACKGROUNDS)):
            g.attrs[name] = ",".join(table)
        f.attrs["subject"] = brain.subject
        f.attrs["volume_shape"] = np.array(brain.shape, np.int64)
        f.attrs["n_sessions"] = cfg.n_sessions(brain.subject)
        f.attrs["sim_version"] = SIM_VERSION
        f.attrs["beta"] = "gain[s] * mu[image] + offset[s] + noise, noise ~ N(0, noise_cov); PSC = int16 / 300"
    written.add(path)


# ============================================================================================
# the whole dataset


def simulate(cfg: SimConfig, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/nsd`` (NSD layout) and ``out_dir/sim_truth``; return the manifest path."""
    cfg = _normalise(cfg)
    out_dir = Path(out_dir)
    truth_dir = out_dir / "sim_truth"
    manifest = truth_dir / "manifest.json"
    if manifest.exists():
        manifest.unlink()  # a half-rewritten dataset must never look complete
    nsd = layout.NSDPaths(out_dir / "nsd")
    written = _Written(out_dir)
    hashes: list[bio.BackgroundHashes] = []

    def hash_new(start):
        paths = {p.relative_to(out_dir).as_posix(): p for p in written.paths[start:]}
        hashes.append(bio.BackgroundHashes(paths))
        return len(written.paths)

    for subject in cfg.subjects:  # fail before writing anything if an ROI cannot fit
        _geometry(cfg, subject)
    design = make_design(cfg)
    _write_expdesign(nsd.expdesign, design, written)
    coco = _write_stim_info(nsd.stim_info, cfg, design, written)
    attrs = world_scenes(cfg)
    shown = {s: subject_trials(design, s, cfg.n_sessions(s))[1] for s in cfg.subjects}
    ids = np.unique(np.concatenate(list(shown.values())))
    channels = _write_stimuli(nsd.stimuli, cfg, attrs, ids, written)
    _write_captions(nsd, cfg, attrs, ids, coco, written)
    _write_stimuli_tsv(truth_dir / "stimuli.tsv", attrs, ids, coco, written)
    done = hash_new(0)
    ref = _Reference(cfg)
    lat_all = latent(cfg, sc.subset(attrs, ids))

    for subject in cfg.subjects:
        brain = make_brain(cfg, subject)
        sids = np.unique(shown[subject])
        rows = np.searchsorted(ids, sids)
        mu = expected_psc(brain, responses(cfg, brain, channels[rows], lat_all[rows], ref))
        mu = mu.astype(np.float32).astype(np.float64)  # the betas use exactly the stored truth
        _write_truth(truth_dir / f"{layout.subj_name(subject)}.h5", cfg, brain, sids, mu, attrs, written)
        _write_responses(nsd.responses(subject), _behaviour(cfg, design, subject), written)
        _write_subject_volumes(cfg, nsd, brain, written)
        done = hash_new(done)
        _write_subject_betas(cfg, nsd, brain, mu, np.searchsorted(sids, shown[subject]), written)
        done = hash_new(done)

    digests: dict[str, str] = {}
    for h in hashes:
        digests.update(h.result())
    files = [
        {"path": rel, "sha256": digests[rel], "bytes": (out_dir / rel).stat().st_size}
        for rel in sorted(digests)
    ]
    doc = {
        "generator": "braindecode_pkg.sim.world",
        "sim_version": SIM_VERSION,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "nsd_root": "nsd",
        "subjects": {
            layout.subj_name(s): {
                "volume_shape": list(subject_geometry(cfg, s)[0]),
                "roi_voxels": subject_geometry(cfg, s)[1],
                "sessions": cfg.n_sessions(s),
                "n_images": int(len(np.unique(shown[s]))),
            }
            for s in cfg.subjects
        },
        "files": files,
    }
    with bio.atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return manifest


def _write_subject_volumes(cfg: SimConfig, nsd: layout.NSDPaths, brain: Brain, written: _Written) -> None:
    affine = layout.nsd_affine(brain.shape, layout.voxel_size_mm(nsd.resolution))
    subject = brain.subject
    _write_nifti(nsd.brainmask(subject), brain.brainmask.astype(np.int16), affine, written)
    label = brain.roi_label
    _write_nifti(nsd.roi(subject, "nsdgeneral"), label.astype(np.float64), affine, written)
    for hemi, inside in (("lh", brain.hemi_left), ("rh", ~brain.hemi_left)):
        _write_nifti(nsd.roi(subject, f"{hemi}.nsdgeneral"), np.where(inside, label, -1.0), affine, written)
    ncsnr = np.zeros(brain.shape, np.float32)
    ncsnr[tuple(brain.voxel_ijk.T)] = brain.ncsnr
    _write_nifti(nsd.beta_meta(subject, "ncsnr"), ncsnr, affine, written)


def _write_subject_betas(cfg, nsd, brain: Brain, mu, img_index, written: _Written) -> None:
    shape = brain.shape
    mask_flat = brain.brainmask.ravel()
    mask_idx = np.flatnonzero(mask_flat)  # C order
    ijk_mask = np.argwhere(brain.brainmask)
    fidx = np.ravel_multi_index(tuple(ijk_mask.T), shape, order="F")
    roi_flat = (brain.roi_label == 1).ravel()
    mask_roi_pos = np.flatnonzero(roi_flat[mask_idx])
    rng = _rng(cfg.seed, brain.subject, _P_BRAIN)
    lo, hi = cfg.noise_sd_range
    ns = cfg.n_sessions(brain.subject)
    n_mask = len(mask_idx)
    bg = {  # per brainmask voxel (values at ROI positions are unused)
        "n_mask": n_mask,
        "sd": np.exp(rng.uniform(np.log(lo), np.log(hi), n_mask)).astype(np.float32),
        "baseline": rng.normal(0.8, 1.0, n_mask),
        "offset": np.cumsum(rng.normal(0, cfg.drift_offset_sd, (ns, n_mask)), 0),
    }
    t_per = layout.TRIALS_PER_SESSION
    with cf.ThreadPoolExecutor(1) as pool:
        for session in range(1, ns + 1):
            idx = img_index[(session - 1) * t_per: session * t_per]
            arr = _session_betas(cfg, brain, mu, idx, session, bg, mask_roi_pos)
            # the NIfTI (zlib, GIL released) in a thread while this thread writes the HDF5 chunks
            nii = None
            if "nifti" in cfg.formats:
                nii = pool.submit(_write_betas_nifti, nsd.betas(brain.subject, session, "nifti"), arr, shape, fidx)
            if "hdf5" in cfg.formats:
                path = nsd.betas(brain.subject, session, "hdf5")
                _write_betas_hdf5(path, arr, shape, ijk_mask, cfg.hdf5_all_chunks)
                written.add(path)
            if nii is not None:
                written.add(nii.result())
            del arr
