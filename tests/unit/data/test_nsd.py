"""The real-layout loader against hand-computed cases (files written by nibabel/h5py/scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from braindecode_pkg.data import nsd
from braindecode_pkg.data.layout import NSDPaths, nsd_affine
from braindecode_pkg.data.matfile import loadmat
from braindecode_pkg.errors import InputError


def test_paths_follow_nsd_names(tmp_path):
    p = NSDPaths(tmp_path, resolution="func1mm", beta_version="betas_assumehrf")
    assert p.betas(3, 7, "hdf5") == tmp_path / (
        "nsddata_betas/ppdata/subj03/func1mm/betas_assumehrf/betas_session07.hdf5"
    )
    assert p.betas(8, 40, "nifti").name == "betas_session40.nii.gz"
    assert p.roi(2, "lh.nsdgeneral") == tmp_path / "nsddata/ppdata/subj02/func1mm/roi/lh.nsdgeneral.nii.gz"
    assert p.expdesign == tmp_path / "nsddata/experiments/nsd/nsd_expdesign.mat"
    with pytest.raises(InputError, match="unknown beta version 'betas_x'"):
        NSDPaths(tmp_path, beta_version="betas_x")


def test_nsd_affine_centres_the_volume():
    aff = nsd_affine((81, 104, 83))
    assert np.allclose(np.diag(aff)[:3], 1.8)
    # voxel index (o - 1) (0-based centre) maps to the origin
    centre = (np.array([81, 104, 83]) + 1) / 2 - 1
    assert np.allclose(aff[:3, :3] @ centre + aff[:3, 3], 0)
    assert np.allclose(aff[:3, 3], (1 - (1 + np.array([81, 104, 83])) / 2) * 1.8)


def test_trial_table_hand_cases(mini_nsd):
    design = nsd.NSDDesign.load(mini_nsd["paths"].expdesign)
    tab = design.trials(1, [1, 2])
    assert len(tab) == 1500
    # trial 0: k10=5 (shared) -> subjectim[0, 4] = 100 -> nsd_id 99, first presentation
    assert (tab.nsd_id[0], tab.session[0], tab.trial[0], tab.repeat[0], tab.is_test[0]) == (99, 1, 0, 0, True)
    assert (tab.nsd_id[10], tab.repeat[10], tab.is_test[10]) == (99, 1, True)
    assert (tab.nsd_id[800], tab.session[800], tab.trial[800], tab.repeat[800]) == (99, 2, 800, 2)
    # trials 1, 2, 1499: k10=2001 (not shared) -> 73000 -> nsd_id 72999
    assert tab.nsd_id[[1, 2, 1499]].tolist() == [72999] * 3
    assert tab.repeat[[1, 2, 1499]].tolist() == [0, 1, 2]
    assert not tab.is_test[[1, 2, 1499]].any()
    # session 2 alone: global trials 750..1499
    tab2 = design.trials(1, [2])
    assert tab2.trial[0] == 750 and tab2.trial[-1] == 1499 and (tab2.session == 2).all()
    assert tab2.nsd_id[-1] == 72999 and tab2.repeat[-1] == 2
    # the general rule: nsd_id = subjectim[s-1, k10-1] - 1, test <=> k10 <= 1000
    mo, si = mini_nsd["mo"], mini_nsd["subjectim"]
    assert np.array_equal(tab.nsd_id, si[0, mo[:1500] - 1] - 1)
    assert np.array_equal(tab.is_test, mo[:1500] <= 1000)
    # every 10k image occurs 3 times in the design: repeats are 0, 1, 2 for each
    assert np.bincount(design.repeat).tolist() == [10000, 10000, 10000]


def test_design_other_subject_and_absent_subject(mini_nsd):
    design = nsd.NSDDesign.load(mini_nsd["paths"].expdesign)
    tab = design.trials(8, [1])
    assert tab.nsd_id[0] == mini_nsd["subjectim"][7, 4] - 1
    with pytest.raises(InputError, match=r"nsd_expdesign.mat: subject 9 is absent from the design"):
        design.trials(9, [1])


def test_sessions_specs(mini_nsd):
    paths = mini_nsd["paths"]
    avail = nsd.available_sessions(paths, 1)
    assert avail == [1, 2]
    assert nsd.parse_sessions("all", avail, 1) == [1, 2]
    assert nsd.parse_sessions("2", avail, 1) == [2]
    assert nsd.parse_sessions("1-2", avail, 1) == [1, 2]
    assert nsd.parse_sessions("legacy", list(range(1, 41)), 1) == list(range(1, 38))
    assert nsd.parse_sessions("legacy", list(range(1, 31)), 4) == list(range(1, 28))
    with pytest.raises(InputError, match=r"session\(s\) \[3\] outside subject 1's acquired sessions \(1..2"):
        nsd.parse_sessions("1-3", avail, 1)
    with pytest.raises(InputError, match="expected 'all', 'legacy'"):
        nsd.parse_sessions("first", avail, 1)
    with pytest.raises(InputError, match="subject 5 has no data"):
        nsd.available_sessions(paths, 5)


def test_roi_by_name_and_label(mini_nsd):
    paths = mini_nsd["paths"]
    roi = nsd.load_roi(paths, 1, "nsdgeneral")
    assert roi.mask.shape == (7, 6, 5)
    assert [tuple(x) for x in roi.ijk] == mini_nsd["roi_ijk"]  # C order of (X, Y, Z)
    assert nsd.load_roi(paths, 1, "prf-visualrois:2").ijk.tolist() == [[2, 1, 1], [4, 1, 2]]
    assert len(nsd.load_roi(paths, 1, "prf-visualrois").ijk) == 3
    with pytest.raises(InputError, match=r"unknown ROI 'floc-faces'.*available: nsdgeneral, prf-visualrois"):
        nsd.load_roi(paths, 1, "floc-faces")
    with pytest.raises(InputError, match=r"prf-visualrois.nii.gz: ROI 'prf-visualrois:7' is empty"):
        nsd.load_roi(paths, 1, "prf-visualrois:7")


@pytest.mark.parametrize("fmt", ["hdf5", "nifti"])
def test_read_roi_betas_both_formats(mini_nsd, fmt):
    paths = mini_nsd["paths"]
    roi = nsd.load_roi(paths, 1)
    for s, vol in enumerate(mini_nsd["vols"], start=1):
        got = nsd.read_roi_betas(paths.betas(1, s, fmt), roi.ijk, fmt, roi=roi)
        want = np.stack([vol[i, j, k, :] for i, j, k in roi.ijk], axis=1)
        assert got.dtype == np.int16 and got.shape == (750, 9)
        assert np.array_equal(got, want)


def test_hdf5_axis_order_matches_nifti(mini_nsd):
    import h5py
    import nibabel as nib

    paths = mini_nsd["paths"]
    nii = np.asarray(nib.load(paths.betas(1, 1, "nifti")).dataobj)
    with h5py.File(paths.betas(1, 1, "hdf5")) as f:
        h5 = f["betas"][...]
    assert h5.shape == (750, 5, 6, 7)
    for t, x, y, z in [(0, 1, 1, 1), (749, 5, 4, 3), (17, 2, 4, 2)]:
        assert h5[t, z, y, x] == nii[x, y, z, t]


def test_hdf5_generic_chunking_path(mini_nsd, tmp_path):
    """Files chunked otherwise than one voxel per chunk are read through the slab path."""
    import h5py

    vol = mini_nsd["vols"][0]
    f = tmp_path / "other_chunks.hdf5"
    with h5py.File(f, "w") as h:
        h.create_dataset("betas", data=vol.transpose(3, 2, 1, 0), chunks=(50, 2, 3, 2), compression="gzip")
    roi = nsd.load_roi(mini_nsd["paths"], 1)
    got = nsd.read_roi_betas_hdf5(f, roi.ijk)
    assert np.array_equal(got, np.stack([vol[i, j, k] for i, j, k in roi.ijk], axis=1))


def test_matfile_reader_matches_scipy(tmp_path):
    rng = np.random.default_rng(0)
    data = {
        "masterordering": rng.integers(1, 10001, (1, 30000)).astype(float),
        "subjectim": rng.integers(1, 73001, (8, 10000)).astype(float),
        "stimpattern": rng.integers(0, 2, (40, 12, 75)).astype(np.uint8),
        "small": np.int16(3),
        "text": "skipped",
    }
    for comp in (False, True):
        f = tmp_path / f"d{comp}.mat"
        scipy.io.savemat(f, data, do_compression=comp)
        ours, ref = loadmat(f), scipy.io.loadmat(f)
        assert set(ours) == {"masterordering", "subjectim", "stimpattern", "small"}
        for k, v in ours.items():
            assert v.shape == ref[k].shape and v.dtype == ref[k].dtype and np.array_equal(v, ref[k])
    assert set(loadmat(f, ["subjectim"])) == {"subjectim"}


def test_matfile_rejects_v73_and_garbage(tmp_path):
    from braindecode_pkg.data.matfile import MatFileError

    f = tmp_path / "x.mat"
    f.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600))
    with pytest.raises(MatFileError, match="v7.3"):
        loadmat(f)
    f.write_bytes(b"not a mat file" * 20)
    with pytest.raises(MatFileError, match="not a MATLAB 5.0 MAT-file"):
        loadmat(f)


def test_hdf5_unallocated_chunk_reads_as_fill(tmp_path):
    """A voxel whose chunk was never written (fill value 0) reads as zeros, like h5py would."""
    import h5py

    f = tmp_path / "sparse.hdf5"
    rng = np.random.default_rng(3)
    col = rng.integers(-500, 500, 750).astype(np.int16)
    with h5py.File(f, "w") as h:
        d = h.create_dataset("betas", shape=(750, 4, 3, 2), dtype=np.int16, chunks=(750, 1, 1, 1))
        d.id.write_direct_chunk((0, 3, 2, 1), col.tobytes())  # voxel x=1, y=2, z=3
    got = nsd.read_roi_betas_hdf5(f, np.array([[1, 2, 3], [0, 0, 0]]))
    assert np.array_equal(got[:, 0], col) and (got[:, 1] == 0).all()
    with h5py.File(f) as h:
        assert np.array_equal(got[:, 1], h["betas"][:, 0, 0, 0]) and np.array_equal(got[:, 0], h["betas"][:, 3, 2, 1])
