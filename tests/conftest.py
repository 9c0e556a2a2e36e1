"""Shared fixtures: a hand-built miniature NSD root written with nibabel/h5py/scipy directly.

It is deliberately independent of nsd-sim's writer, so the loader is checked against files
produced by the standard libraries too. Distinct sizes everywhere: volume (7, 6, 5), 2 sessions of
750 trials, ROI of 9 voxels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BRAINDECODE_HASH_CACHE", "none")

SHAPE = (7, 6, 5)
N_SESSIONS = 2
T = 750


def hand_design():
    """A full-size design whose first trials are set by hand (see test_nsd_loader)."""
    rng = np.random.default_rng(7)
    mo = np.repeat(np.arange(1, 10001), 3)
    rng.shuffle(mo)
    # hand-placed: k10=5 (shared) at trials 0, 10, 800; k10=2001 at trials 1, 2, 1499
    for k in (5, 2001):
        mo = mo[mo != k]
    mo = list(mo)
    for t, k in sorted([(0, 5), (10, 5), (800, 5), (1, 2001), (2, 2001), (1499, 2001)]):
        mo.insert(t, k)
    mo = np.asarray(mo)
    subjectim = np.zeros((8, 10000), dtype=np.int64)
    shared = rng.choice(np.arange(1, 73001), 1000, replace=False)
    rest = np.setdiff1d(np.arange(1, 73001), shared)
    rng.shuffle(rest)
    for s in range(8):
        subjectim[s, :1000] = shared
        subjectim[s, 1000:] = rest[s * 9000 : (s + 1) * 9000]
    subjectim[0, 4] = 100  # subject 1, k10=5 -> 73k id 100 -> nsd_id 99
    subjectim[0, 2000] = 73000  # subject 1, k10=2001 -> nsd_id 72999
    return mo, subjectim


def write_mini_nsd(root: Path, *, float_betas: bool = False) -> dict:
    import h5py
    import nibabel as nib
    import scipy.io

    from braindecode_pkg.data.layout import RESPONSES_COLUMNS, NSDPaths, nsd_affine

    paths = NSDPaths(root)
    mo, subjectim = hand_design()
    paths.expdesign.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        paths.expdesign,
        {"masterordering": mo[None].astype(float), "subjectim": subjectim.astype(float),
         "sharedix": subjectim[0, :1000][None].astype(float), "stimpattern": np.ones((40, 12, 75))},
        do_compression=True,
    )
    subject = 1
    aff = nsd_affine(SHAPE)
    rng = np.random.default_rng(11)
    brain = np.zeros(SHAPE, np.int16)
    brain[1:6, 1:5, 1:4] = 1
    roi = np.full(SHAPE, -1.0)
    roi[brain == 1] = 0.0
    roi_ijk = [(1, 1, 1), (1, 2, 3), (2, 1, 1), (2, 4, 2), (3, 3, 3), (4, 1, 2), (4, 4, 1), (5, 2, 2), (5, 4, 3)]
    for ijk in roi_ijk:
        roi[ijk] = 1.0
    paths.roi_dir(subject).mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(brain, aff), paths.brainmask(subject))
    nib.save(nib.Nifti1Image(roi, aff), paths.roi(subject, "nsdgeneral"))
    vis = np.where(brain == 1, 0.0, -1.0)
    vis[1, 1, 1], vis[2, 1, 1], vis[4, 1, 2] = 1, 2, 2
    nib.save(nib.Nifti1Image(vis, aff), paths.roi(subject, "prf-visualrois"))
    paths.betas_dir(subject).mkdir(parents=True, exist_ok=True)
    vols = []
    for s in range(1, N_SESSIONS + 1):
        # per-session offset and gain so that z-scoring per session matters
        vol = rng.normal(50 * s, 300 * s, size=SHAPE + (T,)) * brain[..., None]
        vol = np.rint(vol).astype(np.float32 if float_betas else np.int16)
        vols.append(vol)
        img = nib.Nifti1Image(vol, aff)
        img.header.set_sform(aff, code=1)
        img.header.set_qform(aff, code=0)
        nib.save(img, paths.betas(subject, s, "nifti"))
        with h5py.File(paths.betas(subject, s, "hdf5"), "w") as f:
            f.create_dataset("betas", data=vol.transpose(3, 2, 1, 0), chunks=(T, 1, 1, 1))
    paths.responses(subject).parent.mkdir(parents=True, exist_ok=True)
    with open(paths.responses(subject), "w") as fh:
        fh.write("\t".join(RESPONSES_COLUMNS) + "\n")
        for t in range(N_SESSIONS * T):
            k10 = mo[t]
            row = [1, t // T + 1, (t % T) // 63 + 1, t % 63 + 1, subjectim[0, k10 - 1], k10]
            row += ["NaN"] * (len(RESPONSES_COLUMNS) - len(row))
            fh.write("\t".join(str(v) for v in row) + "\n")
    return {"root": root, "paths": paths, "vols": vols, "roi_ijk": roi_ijk, "mo": mo, "subjectim": subjectim}


@pytest.fixture
def mini_nsd(tmp_path) -> dict:
    return write_mini_nsd(tmp_path / "nsd")


@pytest.fixture
def one_thread():
    """torch on one thread for the test (the suite's processes share 2 cores); restored after."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


class PickleBomb:
    """Unpickling this runs ``touch MARKER``: a file that must never appear (weights loaders and
    checks must refuse pickles without unpickling them)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory):
    """nsd-sim's tiny preset, subjects 1 and 2, one session: an NSD root in the real layout."""
    from braindecode_pkg.sim import world as sim

    root = tmp_path_factory.mktemp("sim2") / "sim"
    sim.simulate(sim.sim_config("tiny", subjects=(1, 2), sessions=1), root)
    return root / "nsd"


def _load_benchmark(name: str):
    """``benchmarks/NAME.py`` imported as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def load_benchmark():
    """The loader of benchmark scripts as modules: ``load_benchmark("gpu_check")``."""
    return _load_benchmark
