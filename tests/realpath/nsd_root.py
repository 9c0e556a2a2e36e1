"""An NSD-format root that is not nsd-sim: written with scipy, nibabel, h5py, json and csv only.

:func:`write_nsd_root` writes, under ``root``, the real NSD release's file names, formats, dtypes
and axis orders (``/work/shared/NSD_FORMAT.md``), independently of ``braindecode_pkg.sim`` and of
every writer of the package (it imports nothing from ``braindecode_pkg``):

- ``nsddata/experiments/nsd/nsd_expdesign.mat``: MAT v5 (``scipy.io.savemat``, zlib-compressed as
  MATLAB's default ``save`` writes), doubles, 1-based: ``masterordering`` (1, 30000) (each 10k index
  3 times), ``subjectim`` (8, 10000) (columns 0..999 = ``sharedix``, the same for every subject;
  the 73,000 ids partitioned 1000 + 8 x 9000 as in NSD), ``sharedix`` (1, 1000), ``stimpattern``
  (40, 12, 75) (63 stimulus slots in odd runs, 62 in even ones: 750 per session), ``basiccnt``
  (3, 40) (per session, trials that are an image's first / second / third presentation).
- ``nsddata/experiments/nsd/nsd_stim_info_merged.csv``: 73,000 rows, unnamed index column, the real
  columns (``cocoId``, ``cocoSplit``, ``cropBox``, ``loss``, ``nsdId``, ``flagged``, ``BOLD5000``,
  ``shared1000``, ``subject1..8``, ``subjectS_repR``: 1-based global trial of each repeat).
- ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``: ``imgBrick`` uint8 (73000, 425, 425, 3) with
  one gzip chunk per image, only the shown images written (unwritten chunks take no space and
  read as 0); ``annotations/captions_{train2017,val2017}.json``: COCO caption JSON for the shown
  images (and a few unshown ones), 5 or 6 captions each, looked up via ``cocoId``/``cocoSplit``.
- per subject ``nsddata/ppdata/subjAA/behav/responses.tsv`` (the real 19-column header, one row
  per stimulus trial of its acquired sessions); ``func1pt8mm/brainmask.nii.gz`` (int16 0/1);
  ``func1pt8mm/roi/{,lh.,rh.}nsdgeneral.nii.gz`` and ``{,lh.,rh.}prf-visualrois.nii.gz``
  (float64, -1 / 0 / labels);
- ``nsddata_betas/ppdata/subjAA/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.nii.gz``
  (int16 (X, Y, Z, 750), sform code 1, qform code 0, affine ``diag(1.8)`` with offset
  ``(1 - o) * 1.8``, ``scl_slope`` 0, ``pixdim[4]`` 4/3) and ``betas_sessionNN.hdf5`` (``/betas``
  int16 (750, Z, Y, X), chunks (750, 1, 1, 1), no compression), and ``ncsnr.nii.gz``.

Every session has NSD's 750 trials: the package's loader hard-codes them
(``braindecode_pkg/data/layout.py`` ``TRIALS_PER_SESSION``) and so does the real data; the
volumes are tiny instead (about 10 x 10 x 9 voxels).

The planted signal: each image is a ``grid`` x ``grid`` picture of uniform colour blocks, so its
feature vector ``f`` (the mean RGB of each block, in [0, 1]; ``3 * grid**2`` numbers) determines the
image exactly. Each nsdgeneral voxel's percent signal change on a trial is
``offset[s, v] + gain[s, v] * (amp[v] * w[v] . x + noise_sd[v] * e)`` with ``e`` standard normal and
``x`` the shown image's response features standardised over the shown images (each dimension mean
0, sd 1; by default ``x`` is ``f``; ``encode`` may give another vector per image, e.g. a CLIP
embedding of the picture), ``w[v] ~ N(0, 1 / dim x)``: a random linear function of the image, trial
noise, and a per-session offset and gain per voxel (so z-scoring within each session matters). Other brain voxels carry
the same offsets and noise but no signal; voxels outside the brainmask are 0. Stored as
``rint(psc * 300)`` int16. Everything is a deterministic function of ``seed``; files carry no
time stamps (gzip mtime 0, h5py ``track_times=False``), so the same arguments write the same bytes.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

# facts of the real release (NSD_FORMAT.md), restated here so the fixture shares nothing with the package
TRIALS_PER_SESSION = 750
RUNS_PER_SESSION = 12
SLOTS_PER_RUN = 75
N_DESIGN_SESSIONS = 40
N_DESIGN_TRIALS = 30000
N_DESIGN_SUBJECTS = 8
N_10K = 10000
N_73K = 73000
N_SHARED_DESIGN = 1000
IMAGE_SIZE = 425
PSC_SCALE = 300.0
VOXEL_MM = 1.8
RESOLUTION = "func1pt8mm"
BETA_VERSION = "betas_fithrf_GLMdenoise_RR"
RESPONSES_HEADER = (
    "SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID", "TIME", "ISOLD", "ISCORRECT", "RT",
    "CHANGEMIND", "MEMORYRECENT", "MEMORYFIRST", "ISOLDCURRENT", "ISCORRECTCURRENT", "TOTAL1",
    "TOTAL2", "BUTTON", "MISSINGDATA",
)
STIM_INFO_COLUMNS = (
    ["", "cocoId", "cocoSplit", "cropBox", "loss", "nsdId", "flagged", "BOLD5000", "shared1000"]
    + [f"subject{s}" for s in range(1, 9)]
    + [f"subject{s}_rep{r}" for s in range(1, 9) for r in range(3)]
)
N_PRF_LABELS = 7  # prf-visualrois: V1v, V1d, V2v, V2d, V3v, V3d, hV4

#: subject -> ((X, Y, Z) volume shape, sessions acquired); distinct shapes, ROI sizes, sessions
DEFAULT_SUBJECTS = {1: ((9, 11, 7), 3), 2: ((10, 8, 12), 2), 5: ((11, 10, 8), 2)}

_COLOURS = {
    "red": (200, 30, 30), "green": (30, 160, 50), "blue": (30, 60, 200), "yellow": (230, 220, 40),
    "orange": (240, 140, 20), "purple": (130, 40, 160), "pink": (240, 150, 190), "brown": (120, 75, 30),
    "black": (20, 20, 20), "white": (235, 235, 235), "grey": (128, 128, 128), "cyan": (40, 200, 210),
}


# ------------------------------------------------------------------------------------- paths
def subj_name(subject: int) -> str:
    return f"subj{int(subject):02d}"


def nsd_paths(root: Path, subject: int | None = None) -> dict[str, Path]:
    """The files of the tree by role (real NSD names); per subject when ``subject`` is given."""
    root = Path(root)
    exp = root / "nsddata/experiments/nsd"
    stim = root / "nsddata_stimuli/stimuli/nsd"
    p = {
        "expdesign": exp / "nsd_expdesign.mat", "stim_info": exp / "nsd_stim_info_merged.csv",
        "stimuli": stim / "nsd_stimuli.hdf5",
        "captions_train2017": stim / "annotations/captions_train2017.json",
        "captions_val2017": stim / "annotations/captions_val2017.json",
    }
    if subject is not None:
        pp = root / "nsddata/ppdata" / subj_name(subject)
        p.update({
            "responses": pp / "behav/responses.tsv", "func": pp / RESOLUTION,
            "brainmask": pp / RESOLUTION / "brainmask.nii.gz", "roi_dir": pp / RESOLUTION / "roi",
            "betas_dir": root / "nsddata_betas/ppdata" / subj_name(subject) / RESOLUTION / BETA_VERSION,
        })
    return p


def roi_path(root: Path, subject: int, name: str) -> Path:
    return nsd_paths(root, subject)["roi_dir"] / f"{name}.nii.gz"


def betas_path(root: Path, subject: int, session: int, fmt: str) -> Path:
    ext = {"hdf5": ".hdf5", "nifti": ".nii.gz"}[fmt]
    return nsd_paths(root, subject)["betas_dir"] / f"betas_session{int(session):02d}{ext}"


def nsd_affine(shape) -> np.ndarray:
    """NSD's func affine: diag(1.8) with offset (1 - o) * 1.8, o = (1 + [X, Y, Z]) / 2."""
    o = (1.0 + np.asarray(shape[:3], float)) / 2.0
    aff = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    aff[:3, 3] = (1.0 - o) * VOXEL_MM
    return aff


# ------------------------------------------------------------------------------------ design
def make_design(rng, n_sessions_max: int, n_sessions_min: int, n_shared: int) -> dict:
    """The 30000-trial design: the first ``n_sessions_max`` sessions use ``n_shared`` shared 10k
    indices (all 3 repeats within the first ``n_sessions_min`` sessions) and subject-specific
    indices (> 1000) 3 times each; the rest of the 10k indices fill the later sessions."""
    n_first = TRIALS_PER_SESSION * n_sessions_max
    if not 1 <= n_shared <= N_SHARED_DESIGN or 3 * n_shared > TRIALS_PER_SESSION * n_sessions_min:
        raise ValueError(f"n_shared={n_shared}: need 1..1000 and 3 * n_shared <= 750 * (fewest sessions)")
    n_train = n_first // 3 - n_shared
    if n_train < 1 or n_train > N_10K - N_SHARED_DESIGN:
        raise ValueError(f"{n_sessions_max} sessions with {n_shared} shared images leave {n_train} training images")
    shared_k = rng.choice(np.arange(1, N_SHARED_DESIGN + 1), n_shared, replace=False)
    train_k = rng.choice(np.arange(N_SHARED_DESIGN + 1, N_10K + 1), n_train, replace=False)
    first = np.zeros(n_first, np.int64)
    pos = rng.choice(TRIALS_PER_SESSION * n_sessions_min, 3 * n_shared, replace=False)
    first[pos] = rng.permutation(np.repeat(shared_k, 3))
    first[np.setdiff1d(np.arange(n_first), pos)] = rng.permutation(np.repeat(train_k, 3))
    others = np.setdiff1d(np.arange(1, N_10K + 1), np.r_[shared_k, train_k])
    mo = np.r_[first, rng.permutation(np.repeat(others, 3))]
    # repeat (0, 1, 2) of every design trial: how often its 10k index was shown before
    repeat = np.zeros(N_DESIGN_TRIALS, np.int64)
    seen = np.zeros(N_10K + 1, np.int64)
    for t, k in enumerate(mo.tolist()):
        repeat[t] = seen[k]
        seen[k] += 1
    perm = rng.permutation(np.arange(1, N_73K + 1))
    sharedix = perm[:N_SHARED_DESIGN]
    subjectim = np.stack([np.r_[sharedix, perm[N_SHARED_DESIGN + 9000 * s: N_SHARED_DESIGN + 9000 * (s + 1)]]
                          for s in range(N_DESIGN_SUBJECTS)])
    stimpattern = np.zeros((N_DESIGN_SESSIONS, RUNS_PER_SESSION, SLOTS_PER_RUN), np.int64)
    for s in range(N_DESIGN_SESSIONS):
        for r in range(RUNS_PER_SESSION):
            n_stim = 63 if r % 2 == 0 else 62  # runs 1, 3, ... (1-based) have 63 stimulus trials
            stimpattern[s, r, np.sort(rng.choice(np.arange(3, SLOTS_PER_RUN - 3), n_stim, replace=False))] = 1
    basiccnt = np.zeros((3, N_DESIGN_SESSIONS), np.int64)
    np.add.at(basiccnt, (repeat, np.arange(N_DESIGN_TRIALS) // TRIALS_PER_SESSION), 1)
    return {"masterordering": mo, "subjectim": subjectim, "sharedix": sharedix, "stimpattern": stimpattern,
            "basiccnt": basiccnt, "repeat": repeat, "shared_k10": np.sort(shared_k)}


def trial_table(design: dict, subject: int, n_sessions: int) -> dict[str, np.ndarray]:
    """What the subject's beta files hold, trial by trial (0-based nsd ids, 1-based sessions)."""
    t = np.arange(TRIALS_PER_SESSION * n_sessions)
    k10 = design["masterordering"][t]
    return {
        "nsd_id": design["subjectim"][subject - 1, k10 - 1] - 1,
        "session": t // TRIALS_PER_SESSION + 1,
        "trial": t,
        "repeat": design["repeat"][t],
        "is_test": k10 <= N_SHARED_DESIGN,
        "k10": k10,
    }


def write_expdesign(path: Path, design: dict) -> None:
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    mat = {
        "masterordering": design["masterordering"][None].astype(np.float64),
        "subjectim": design["subjectim"].astype(np.float64),
        "sharedix": design["sharedix"][None].astype(np.float64),
        "stimpattern": design["stimpattern"].astype(np.float64),
        "basiccnt": design["basiccnt"].astype(np.float64),
    }
    scipy.io.savemat(path, mat, format="5", do_compression=True)
    # the 116-byte header text holds the time of writing: fix it, so the same seed gives the same bytes
    text = b"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Thu Jan 16 12:00:00 2020"
    with open(path, "r+b") as fh:
        assert fh.read(10) == b"MATLAB 5.0"
        fh.seek(0)
        fh.write(text.ljust(116, b" "))


# ---------------------------------------------------------------------------- stimulus table
def make_coco(rng) -> tuple[np.ndarray, np.ndarray]:
    """A unique COCO id and a split (``train2017`` / ``val2017``) for each of the 73,000 images."""
    coco = rng.choice(np.arange(9, 600000), N_73K, replace=False)
    split = np.where(rng.random(N_73K) < 0.12, "val2017", "train2017")
    return coco, split


def _strs(a: np.ndarray) -> np.ndarray:
    """Non-negative ints as decimal strings (object array), through a lookup table: fast."""
    a = np.asarray(a, np.int64)
    lut = np.array([str(i) for i in range(int(a.max()) + 1)], dtype=object)
    return lut[a]


def write_stim_info(path: Path, rng, design: dict, coco: np.ndarray, split: np.ndarray) -> None:
    shared = np.zeros(N_73K, np.int64)
    shared[design["sharedix"] - 1] = 1
    member = np.zeros((N_DESIGN_SUBJECTS, N_73K), np.int64)
    reps = np.zeros((N_DESIGN_SUBJECTS, N_73K, 3), np.int64)
    mo, rep = design["masterordering"], design["repeat"]
    for s in range(N_DESIGN_SUBJECTS):
        member[s, design["subjectim"][s] - 1] = 1
        ids = design["subjectim"][s, mo - 1] - 1
        reps[s, ids, rep] = np.arange(1, N_DESIGN_TRIALS + 1)
    # cropBox: a string tuple of 4 fractions; it holds commas, so it is quoted as csv writes it
    crops = np.array(['"(0, 0, 0.1671875, 0.1671875)"', '"(0.1671875, 0.1671875, 0, 0)"', '"(0, 0, 0.125, 0.125)"',
                      '"(0.0859375, 0.0859375, 0, 0)"', '"(0, 0, 0, 0)"'], dtype=object)
    losses = np.array([repr(round(float(x), 6)) for x in np.linspace(0, 0.25, 251)], dtype=object)
    tf = np.array(["False", "True"], dtype=object)
    ids = _strs(np.arange(N_73K))
    cols = [ids, _strs(coco), split.astype(object), crops[rng.integers(0, len(crops), N_73K)],
            losses[rng.integers(0, len(losses), N_73K)], ids, tf[(rng.random(N_73K) < 0.01).astype(int)],
            tf[(rng.random(N_73K) < 0.02).astype(int)], tf[shared]]
    cols += [_strs(member[s]) for s in range(N_DESIGN_SUBJECTS)]
    cols += [_strs(reps[s, :, r]) for s in range(N_DESIGN_SUBJECTS) for r in range(3)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        fh.write(",".join(STIM_INFO_COLUMNS) + "\n")
        fh.write("\n".join(map(",".join, zip(*cols))) + "\n")


# ------------------------------------------------------------------------- images, captions
def block_edges(grid: int) -> np.ndarray:
    return np.linspace(0, IMAGE_SIZE, grid + 1).round().astype(int)


def render(colours: np.ndarray) -> np.ndarray:
    """The (425, 425, 3) uint8 picture of a (grid, grid, 3) uint8 array of block colours."""
    w = np.diff(block_edges(colours.shape[0]))
    return np.repeat(np.repeat(colours, w, axis=0), w, axis=1)


def _render_bytes(colours: np.ndarray) -> bytes:
    """``render(colours).tobytes()``, fast: one row per block row, repeated."""
    w = np.diff(block_edges(colours.shape[0]))
    return b"".join(np.repeat(colours[r], w, axis=0).tobytes() * int(w[r]) for r in range(colours.shape[0]))


def write_stimuli(path: Path, ids: np.ndarray, colours: np.ndarray) -> None:
    """``imgBrick`` at NSD's full shape, one gzip chunk per image; only ``ids`` written."""
    import h5py

    try:  # ISA-L's zlib: the same deflate stream format, 10x faster than zlib at level 1
        from isal import isal_zlib as zlib
    except ImportError:  # pragma: no cover
        import zlib

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("imgBrick", shape=(N_73K, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8,
                             chunks=(1, IMAGE_SIZE, IMAGE_SIZE, 3), compression="gzip", compression_opts=1,
                             track_times=False)
        for i, c in zip(ids.tolist(), colours):
            d.id.write_direct_chunk((int(i), 0, 0, 0), zlib.compress(_render_bytes(c), 1))


def _colour_name(rgb) -> str:
    names = list(_COLOURS)
    ref = np.array([_COLOURS[n] for n in names], float)
    return names[int(np.argmin(((ref - np.asarray(rgb, float)) ** 2).sum(1)))]


def _block_names(grid: int) -> list[str]:
    if grid == 2:
        return ["top left", "top right", "bottom left", "bottom right"]
    return [f"row {r + 1} column {c + 1}" for r in range(grid) for c in range(grid)]


def make_captions(colours: np.ndarray, rng) -> list[str]:
    """Six COCO-style captions of one picture (the colours of its blocks, in words)."""
    g = colours.shape[0]
    names = [_colour_name(c) for c in colours.reshape(-1, 3)]
    where = _block_names(g)
    a, b = int(rng.integers(len(names))), int(rng.integers(len(names)))
    caps = [
        f"A {names[0]} block in the {where[0]} and a {names[-1]} block in the {where[-1]}.",
        f"{g * g} coloured squares: " + ", ".join(names[:-1]) + f" and {names[-1]}.",
        f"An abstract picture split into squares, the {where[a]} one {names[a]}.",
        f"{names[b].capitalize()} at the {where[b]} next to {names[(b + 1) % len(names)]}. ",
        f"a flat image of {names[a]} and {names[b]} squares\n",
        f"Blocks of colour with {names[len(names) // 2]} in the {where[len(names) // 2]}.",
    ]
    return caps


def write_captions(root: Path, rng, ids: np.ndarray, colours: np.ndarray, coco: np.ndarray,
                   split: np.ndarray, extra_ids: np.ndarray, extra_colours: np.ndarray) -> dict[int, list[str]]:
    """COCO caption JSON per split for ``ids`` (and distractor ``extra_ids``); returns, per shown
    nsd id, its first 5 captions by annotation id, stripped (what a reader should find)."""
    docs = {sp: {"info": {"description": "COCO 2017 Dataset (fixture)", "version": "1.0", "year": 2017},
                 "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4,
                               "name": "Attribution License"}],
                 "images": [], "annotations": []} for sp in ("train2017", "val2017")}
    ann_ids = rng.choice(np.arange(1, 900000), 6 * (len(ids) + len(extra_ids)), replace=False).tolist()
    expected = {}
    for n, (i, c) in enumerate(zip(np.r_[ids, extra_ids].tolist(), np.r_[colours, extra_colours])):
        doc = docs[str(split[i])]
        cid = int(coco[i])
        doc["images"].append({"license": 4, "file_name": f"{cid:012d}.jpg", "height": 425, "width": 425,
                              "date_captured": "2013-11-14 16:28:13", "id": cid})
        caps = make_captions(c, rng)[: 6 if n % 7 == 0 else 5]
        mine = ann_ids[6 * n: 6 * n + len(caps)]
        doc["annotations"] += [{"image_id": cid, "id": int(a), "caption": t} for a, t in zip(mine, caps)]
        if n < len(ids):
            expected[int(i)] = [t.strip() for _, t in sorted(zip(mine, caps))][:5]
    for sp, doc in docs.items():
        order = rng.permutation(len(doc["annotations"]))  # COCO's annotations are not grouped by image
        doc["annotations"] = [doc["annotations"][k] for k in order]
        p = nsd_paths(root)[f"captions_{sp}"]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc), encoding="utf-8")
    return expected


# ------------------------------------------------------------------------------- volumes
def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, *, tr: float | None = None) -> None:
    """NIfTI-1 as NSD writes it: sform code 1, qform code 0, ``scl_slope`` 0; gzip with mtime 0."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=0)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    if tr is not None:
        hdr.set_zooms((VOXEL_MM, VOXEL_MM, VOXEL_MM, tr))
    hdr["scl_slope"], hdr["scl_inter"] = 0.0, 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def make_volumes(rng, shape) -> dict[str, np.ndarray]:
    """Brainmask (an ellipsoid), cortex (its outer shell) and the ROI label volumes of one subject.

    nsdgeneral = most of the posterior cortex; prf-visualrois labels 1..7 inside it. Hemisphere
    files: -1 outside that hemisphere's cortex (RAS+: left is world x < 0)."""
    X, Y, Z = shape
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    c = (np.asarray(shape) - 1) / 2.0
    r = np.sqrt(((i - c[0]) / (0.5 * X)) ** 2 + ((j - c[1]) / (0.5 * Y)) ** 2 + ((k - c[2]) / (0.5 * Z)) ** 2)
    brain = r <= 1.0
    cortex = brain & (r > 0.35)
    general = cortex & (j < 0.65 * Y) & (rng.random(shape) < 0.85)
    prf = np.where(general & (j < 0.4 * Y), rng.integers(1, N_PRF_LABELS + 1, size=shape), 0)
    world_x = VOXEL_MM * (i + 1 - (1 + X) / 2.0)
    left = world_x < 0
    vols = {"brainmask": brain.astype(np.int16)}
    for name, lab in (("nsdgeneral", general.astype(float)), ("prf-visualrois", prf.astype(float))):
        both = np.where(cortex, lab, -1.0)
        vols[name] = both
        vols[f"lh.{name}"] = np.where(left, both, -1.0)
        vols[f"rh.{name}"] = np.where(~left, both, -1.0)
    return vols


def plant_betas(rng, vols: dict, table: dict, signal: float, n_sessions: int) -> dict:
    """PSC * 300 int16 betas (X, Y, Z, trials) of every session, and the parameters drawn."""
    brain = vols["brainmask"] == 1
    roi = vols["nsdgeneral"] == 1
    b_ijk = np.argwhere(brain)  # C order
    in_roi = roi[brain]
    n_b, n_f = len(b_ijk), table["response"].shape[1]
    n_v = int(in_roi.sum())
    w = rng.normal(0.0, np.sqrt(1.0 / n_f), size=(n_v, n_f))  # var(w . x) ~ 1: x is standardised
    noise_sd = np.exp(rng.normal(0.0, 0.25, n_b))
    amp = signal * noise_sd[in_roi] * rng.uniform(0.25, 1.0, n_v)
    offset = rng.normal(0.0, 1.0, (n_sessions, n_b)) + rng.normal(0.0, 0.7, (n_sessions, 1))
    gain = rng.uniform(0.6, 1.5, (n_sessions, n_b)) * rng.uniform(0.8, 1.25, (n_sessions, 1))
    sig = table["response"] @ w.T * amp  # (trials, n_v), noiseless response
    sessions = []
    for s in range(n_sessions):
        rows = table["session"] == s + 1
        x = noise_sd * rng.standard_normal((int(rows.sum()), n_b))
        x[:, in_roi] += sig[rows]
        psc = offset[s] + gain[s] * x
        vol = np.zeros(brain.shape + (int(rows.sum()),), np.int16)
        vol[b_ijk[:, 0], b_ijk[:, 1], b_ijk[:, 2]] = np.clip(np.rint(psc * PSC_SCALE), -32768, 32767).astype(np.int16).T
        sessions.append(vol)
    ncsnr = np.zeros(brain.shape, np.float32)
    roi_ijk = b_ijk[in_roi]
    ncsnr[roi_ijk[:, 0], roi_ijk[:, 1], roi_ijk[:, 2]] = amp / noise_sd[in_roi]
    return {"betas": sessions, "weights": w, "amplitude": amp, "noise_sd": noise_sd[in_roi],
            "session_offset": offset[:, in_roi], "session_gain": gain[:, in_roi], "roi_ijk": roi_ijk,
            "ncsnr": ncsnr}


def write_betas(root: Path, subject: int, session: int, vol: np.ndarray, affine: np.ndarray, formats) -> None:
    import h5py

    if "nifti" in formats:
        save_nifti(betas_path(root, subject, session, "nifti"), vol, affine, tr=4.0 / 3.0)
    if "hdf5" in formats:
        p = betas_path(root, subject, session, "hdf5")
        p.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(p, "w") as f:  # MATLAB wrote (X, Y, Z, 750) column-major: h5py sees (750, Z, Y, X)
            f.create_dataset("betas", data=np.ascontiguousarray(vol.transpose(3, 2, 1, 0)),
                             chunks=(vol.shape[3], 1, 1, 1), track_times=False)


def write_responses(path: Path, rng, subject: int, table: dict, design: dict) -> None:
    """One row per stimulus trial, chronological, NSD's header; 1-based ids, ``NaN`` for missing."""
    n = len(table["trial"])
    sess = table["session"]
    run_of, trial_of = [], []
    for s in np.unique(sess):
        pat = design["stimpattern"][s - 1]
        for r in range(RUNS_PER_SESSION):
            m = int(pat[r].sum())
            run_of += [r + 1] * m
            trial_of += list(range(1, m + 1))
    last_seen: dict[int, int] = {}
    first_seen: dict[int, int] = {}
    seen_in_session: set = set()
    missing = rng.random(n) < 0.01
    lines = ["\t".join(RESPONSES_HEADER)]
    for t in range(n):
        nid = int(table["nsd_id"][t]) + 1
        if t % TRIALS_PER_SESSION == 0:
            seen_in_session = set()
        is_old = int(nid in last_seen)
        recent = t - last_seen[nid] if is_old else "NaN"
        first = t - first_seen[nid] if is_old else "NaN"
        old_cur = int(nid in seen_in_session)
        time = 737000 + 7 * int(sess[t]) + run_of[t] * 0.004 + trial_of[t] * 4.6e-5
        row = [subject, int(sess[t]), run_of[t], trial_of[t], nid, int(table["k10"][t]), f"{time:.10f}", is_old]
        if missing[t]:  # ISCORRECT .. MISSINGDATA of a trial without a response
            row += ["NaN", "NaN", 0, recent, first, old_cur, "NaN", 0, 0, "NaN", 1]
        else:
            correct = int(rng.random() < 0.8)
            row += [correct, f"{rng.uniform(450, 1500):.1f}", 0, recent, first, old_cur,
                    int(rng.random() < 0.8), 1, 0, 1 + int(is_old == correct), 0]
        lines.append("\t".join(str(v) for v in row))
        last_seen[nid] = t
        first_seen.setdefault(nid, t)
        seen_in_session.add(nid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------- main
def write_nsd_root(root, *, subjects=None, n_shared: int = 100, grid: int = 2, signal: float = 0.8,
                   seed: int = 0, formats=("hdf5", "nifti"), encode=None) -> dict:
    """Write an NSD-format tree under ``root`` (see the module docstring); return what was planted.

    ``subjects``: ``{subject (1..8): ((X, Y, Z), n_sessions)}`` (default :data:`DEFAULT_SUBJECTS`).
    ``n_shared``: shared (test) images shown to every subject, 3 times each within the sessions of
    the subject with the fewest. ``grid``: blocks per side of each picture (features: ``3 * grid**2``).
    ``signal``: the largest ratio of a voxel's signal sd to its trial-noise sd (each voxel draws
    ``signal * U(0.25, 1)``). ``formats``: which beta files (both by default, as NSD has).
    ``encode``: optional callable ``colours (n, grid, grid, 3) uint8 -> (n, D) array`` giving the
    vectors the voxels respond to linearly instead of the block colours (``render(c)`` draws the
    425 x 425 picture of ``colours[i]``; e.g. a CLIP's image embedding, so that a linear brain
    model can reach that CLIP's space); its (standardised) output is returned as ``response``.

    Returns a dict: ``root``; ``subjects`` {s: {"volume_shape", "sessions" (list, 1-based),
    "affine", "n_voxels" (nsdgeneral == 1), "roi_ijk" ((n_voxels, 3), C order), "roi_counts"
    (per ROI file name: voxels == 1 / labelled), "trials" {nsd_id (0-based), session, trial (0-based
    global), repeat, is_test, k10}, "train_ids", "weights" ((n_voxels, F)), "amplitude",
    "noise_sd", "session_offset", "session_gain" ((n_sessions, n_voxels), PSC)}}; ``test_ids``
    (sorted 0-based nsd ids of the shared images shown; the same for every subject);
    ``shown_ids`` (sorted, every image shown to a subject); ``features`` ((len(shown_ids), F) in
    [0, 1], row i = image shown_ids[i]) and ``feature_names``; ``response`` ((len(shown_ids), D),
    what the voxels read, standardised: ``features`` standardised unless ``encode``); ``colours`` ((n, grid, grid, 3)
    uint8); ``captions`` {nsd id: first 5 captions by annotation id}; ``coco_id`` / ``coco_split``
    (per 73k id); ``design`` (the .mat's arrays, 1-based as stored, plus ``repeat``); ``signal``;
    ``seed``; ``bytes`` (size of the tree).
    """
    root = Path(root)
    subjects = dict(DEFAULT_SUBJECTS if subjects is None else subjects)
    for s, (shape, n_sess) in subjects.items():
        if not 1 <= int(s) <= N_DESIGN_SUBJECTS or len(shape) != 3 or not 1 <= n_sess <= N_DESIGN_SESSIONS:
            raise ValueError(f"subject {s}: {(shape, n_sess)} is not ((X, Y, Z), 1..40 sessions) of subjects 1..8")
    rng = np.random.default_rng([seed, 0])
    n_max = max(n for _, n in subjects.values())
    n_min = min(n for _, n in subjects.values())
    design = make_design(rng, n_max, n_min, n_shared)
    write_expdesign(nsd_paths(root)["expdesign"], design)
    coco, split = make_coco(rng)
    write_stim_info(nsd_paths(root)["stim_info"], rng, design, coco, split)

    tables = {s: trial_table(design, s, n) for s, (_, n) in subjects.items()}
    shown = np.unique(np.concatenate([t["nsd_id"] for t in tables.values()]))
    colours = rng.integers(0, 256, size=(len(shown), grid, grid, 3)).astype(np.uint8)
    features = colours.reshape(len(shown), -1).astype(np.float64) / 255.0
    write_stimuli(nsd_paths(root)["stimuli"], shown, colours)
    response = features if encode is None else np.asarray(encode(colours), np.float64).reshape(len(shown), -1)
    sd = response.std(0)
    response = (response - response.mean(0)) / np.where(sd > 0, sd, 1.0)
    extra = rng.choice(np.setdiff1d(np.arange(N_73K), shown), 40, replace=False)
    extra_colours = rng.integers(0, 256, size=(len(extra), grid, grid, 3)).astype(np.uint8)
    captions = write_captions(root, rng, shown, colours, coco, split, extra, extra_colours)

    out_subjects = {}
    for s, (shape, n_sess) in subjects.items():
        out_subjects[s] = _write_subject(root, s, tuple(int(x) for x in shape), n_sess, tables[s], design,
                                         shown, response, signal, seed, formats)
    test_ids = np.unique(design["subjectim"][0, design["shared_k10"] - 1] - 1)
    names = [f"{w}_{ch}" for w in _block_names(grid) for ch in "RGB"]
    return {
        "root": root, "subjects": out_subjects, "test_ids": test_ids, "shown_ids": shown,
        "features": features, "feature_names": names, "response": response, "colours": colours,
        "captions": captions,
        "coco_id": coco, "coco_split": split, "design": design,
        "signal": {"signal": signal, "grid": grid, "n_features": features.shape[1],
                   "response_dim": response.shape[1], "encoded": encode is not None, "psc_scale": PSC_SCALE},
        "seed": seed, "bytes": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
    }


def _write_subject(root, s, shape, n_sess, table, design, shown, response, signal, seed, formats) -> dict:
    rng = np.random.default_rng([seed, 1, s])
    paths = nsd_paths(root, s)
    affine = nsd_affine(shape)
    vols = make_volumes(rng, shape)
    save_nifti(paths["brainmask"], vols["brainmask"], affine)
    for name, v in vols.items():
        if name != "brainmask":
            save_nifti(roi_path(root, s, name), v, affine)
    table = dict(table)
    table["response"] = response[np.searchsorted(shown, table["nsd_id"])]
    planted = plant_betas(rng, vols, table, signal, n_sess)
    for k, vol in enumerate(planted.pop("betas")):
        write_betas(root, s, k + 1, vol, affine, formats)
    save_nifti(paths["betas_dir"] / "ncsnr.nii.gz", planted.pop("ncsnr"), affine)
    write_responses(paths["responses"], rng, s, table, design)
    del table["response"]
    roi_counts = {name: int((v >= 1).sum()) for name, v in vols.items() if name != "brainmask"}
    return {
        "volume_shape": shape, "sessions": list(range(1, n_sess + 1)), "affine": affine,
        "n_voxels": int((vols["nsdgeneral"] == 1).sum()), "roi_counts": roi_counts,
        "trials": table, "train_ids": np.unique(table["nsd_id"][~table["is_test"]]), **planted,
    }


def lookup_features(info: dict, nsd_ids) -> np.ndarray:
    """The planted features of 0-based ``nsd_ids`` (rows of ``info["features"]``)."""
    ids = np.asarray(nsd_ids, np.int64)
    pos = np.searchsorted(info["shown_ids"], ids)
    if (pos >= len(info["shown_ids"])).any() or (info["shown_ids"][np.minimum(pos, len(info["shown_ids"]) - 1)] != ids).any():
        raise KeyError("nsd ids not shown in this root")
    return info["features"][pos]


if __name__ == "__main__":  # python tests/realpath/nsd_root.py OUT: write one and print its size and time
    import sys
    import time

    t0 = time.perf_counter()
    info = write_nsd_root(Path(sys.argv[1]))
    print(f"{info['bytes'] / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s; shown {len(info['shown_ids'])} images, "
          + ", ".join(f"subj{s:02d} {d['volume_shape']} {len(d['sessions'])} sessions {d['n_voxels']} voxels"
                      for s, d in info["subjects"].items()))
