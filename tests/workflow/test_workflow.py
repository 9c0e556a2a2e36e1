"""Snakemake end to end on the tiny nsd-sim preset, in a temporary working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", *args],
        capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("wf")
    r = run_snakemake(work, "--configfile", str(REPO / "config/tiny.yaml"))
    assert r.returncode == 0, r.stderr[-4000:]
    return work


def test_tiny_pipeline_outputs(tiny_run):
    res = tiny_run / "results"
    assert (res / "sim/sim_truth/manifest.json").is_file()
    for s in (1, 2, 3):
        with h5py.File(res / f"prep/subj{s:02d}.h5") as f, h5py.File(res / f"sim/sim_truth/subj{s:02d}.h5") as t:
            b = f["betas"][...]
            # the ROI voxels of the simulator's truth, in the same order
            assert np.array_equal(f["voxel_ijk"][...], t["voxel_ijk"][...])
            assert b.shape == (f["trial"].shape[0], t["voxel_ijk"].shape[0])
            assert f.attrs["normalisation"] == "session" and f.attrs["format"] == "hdf5"
            # z-scored within each session
            for sess in np.unique(f["session"][...]):
                rows = b[f["session"][...] == sess]
                assert np.allclose(rows.mean(0), 0, atol=1e-4) and np.allclose(rows.std(0), 1, atol=1e-3)
            # every trial's image is one the truth knows
            assert np.isin(f["nsd_id"][...], t["nsd_id"][...]).all()
    assert (res / "logs/preprocess/subj01.log").is_file()


def test_rerun_has_nothing_to_do(tiny_run):
    r = run_snakemake(tiny_run, "--configfile", str(REPO / "config/tiny.yaml"), "-n")
    assert r.returncode == 0 and "Nothing to be done" in (r.stdout + r.stderr)


def test_config_failing_the_schema_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preprocess:\n  format: mat\n")
    r = run_snakemake(tmp_path, "--configfile", str(bad), "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "preprocess" in out and "format" in out and "'mat' is not one of ['hdf5', 'nifti']" in out
    assert not (tmp_path / "results").exists()
