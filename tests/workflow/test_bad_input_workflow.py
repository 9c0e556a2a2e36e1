"""Issue #6 item 5 at the workflow: bad input stops ``snakemake`` while it parses, before any job,
with one message naming the config key, the file or value and what is wrong."""

from __future__ import annotations

import os
import pickle
import shutil

import h5py
import numpy as np
import pytest

from braindecode_pkg.data.layout import NSDPaths
from tests.conftest import PickleBomb
from tests.workflow.test_workflow import run_snakemake


def _config(tmp_path, nsd_root, subjects="[1, 2]", extra=""):
    f = tmp_path / "cfg.yaml"
    f.write_text(f"nsd_root: {nsd_root}\nsubjects: {subjects}\nbrain: {{heldout: 2}}\n{extra}")
    return f


def _bad(tmp_path, sim_root, case):
    """A copy of the tiny NSD root (hard links) with one bad input; returns (config, expected text)."""
    root = tmp_path / "nsd"
    shutil.copytree(sim_root, root, copy_function=os.link)
    paths = NSDPaths(root)
    if case == "subject":
        return _config(tmp_path, root, "[1, 2, 5]"), "config nsd_root: subject(s) 5 absent from the data"
    if case == "brick":
        paths.stimuli.unlink()
        with h5py.File(paths.stimuli, "w") as f:
            f.create_dataset("imgBrick", shape=(40, 3, 8, 8), dtype=np.uint8)
        return _config(tmp_path, root), f"{paths.stimuli}: imgBrick has shape (40, 3, 8, 8)"
    if case == "captions":
        paths.captions("train2017").unlink()
        paths.captions("train2017").write_text("image_id\tcaption\n")
        return _config(tmp_path, root), f"{paths.captions('train2017')}: not a COCO caption file"
    if case == "pickle":
        evil = tmp_path / "alexnet.pth"
        evil.write_bytes(pickle.dumps({"features.0.weight": PickleBomb(tmp_path / "UNPICKLED")}))
        extra = f"evaluate: {{feature_weights: {{alexnet: {evil}}}}}\n"
        return (_config(tmp_path, root, extra=extra),
                f"config evaluate.feature_weights.alexnet: {evil}: evaluate.feature_weights.alexnet file is a plain "
                "Python pickle")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["subject", "brick", "captions", "pickle"])
def test_bad_input_stops_the_workflow_before_any_job(tmp_path, sim_root, case):
    cfg, expected = _bad(tmp_path, sim_root, case)
    r = run_snakemake(tmp_path, "--configfile", str(cfg), "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert expected in out, out[-2000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "UNPICKLED").exists()


def test_good_real_layout_root_passes_the_checks(tmp_path, sim_root):
    r = run_snakemake(tmp_path, "--configfile", str(_config(tmp_path, sim_root)), "-n")
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
