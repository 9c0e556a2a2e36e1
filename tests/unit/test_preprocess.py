"""preprocess: values, both formats, the output contract, and every bad input of issue #2."""

from __future__ import annotations

import gzip
import json

import h5py
import nibabel as nib
import numpy as np
import pytest

from braindecode_pkg.cli import main
from braindecode_pkg.errors import InputError
from braindecode_pkg.preprocess import preprocess, zscore_session
from tests.conftest import write_mini_nsd


def test_zscore_hand_computed():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0], [7.0, 5.0]], np.float32)
    z, n_const = zscore_session(x.copy())
    sd = np.sqrt(np.mean((np.array([1, 3, 5, 7]) - 4.0) ** 2))  # population sd = sqrt(5)
    assert np.allclose(z[:, 0], (np.array([1, 3, 5, 7]) - 4) / sd)
    assert n_const == 1 and (z[:, 1] == 0).all()
    # statistics from rows 0 and 1 only: mean 2, sd 1
    z, _ = zscore_session(x.copy(), np.array([True, True, False, False]))
    assert np.allclose(z[:, 0], [-1, 1, 3, 5])


def read_out(path):
    with h5py.File(path) as f:
        return {k: f[k][...] for k in f}, dict(f.attrs)


def test_output_contract_and_values(mini_nsd, tmp_path):
    out = preprocess(mini_nsd["root"], 1, tmp_path / "prep/subj01.h5", progress=False)
    d, attrs = read_out(out)
    assert d["betas"].shape == (1500, 9) and d["betas"].dtype == np.float32
    assert d["nsd_id"].dtype == np.int64 and d["nsd_id"][0] == 99 and d["nsd_id"][1] == 72999
    assert d["session"].tolist() == [1] * 750 + [2] * 750
    assert np.array_equal(d["trial"], np.arange(1500))
    assert d["is_test"].dtype == bool and d["is_test"][0] and not d["is_test"][1]
    assert d["repeat"][[0, 10, 800]].tolist() == [0, 1, 2]
    assert [tuple(x) for x in d["voxel_ijk"]] == mini_nsd["roi_ijk"]
    # hand computation from the raw volumes: /300, z-score per session, population sd
    for s, vol in enumerate(mini_nsd["vols"]):
        raw = np.stack([vol[i, j, k] for i, j, k in mini_nsd["roi_ijk"]], axis=1) / 300.0
        want = (raw - raw.mean(0)) / raw.std(0)
        assert np.allclose(d["betas"][s * 750 : (s + 1) * 750], want, atol=1e-5)
    assert attrs["normalisation"] == "session" and attrs["roi"] == "nsdgeneral"
    assert attrs["beta_version"] == "betas_fithrf_GLMdenoise_RR"
    assert tuple(attrs["volume_shape"]) == (7, 6, 5)
    assert np.allclose(attrs["affine"], nib.load(mini_nsd["paths"].brainmask(1)).affine)
    sha = json.loads(attrs["source_sha256"])
    assert set(sha) == {"expdesign", "responses", "roi", "betas_session01.hdf5", "betas_session02.hdf5"}
    import hashlib

    assert sha["betas_session02.hdf5"] == hashlib.sha256(
        mini_nsd["paths"].betas(1, 2, "hdf5").read_bytes()
    ).hexdigest()


def test_both_formats_give_identical_output(mini_nsd, tmp_path):
    a = preprocess(mini_nsd["root"], 1, tmp_path / "a.h5", fmt="hdf5", progress=False)
    b = preprocess(mini_nsd["root"], 1, tmp_path / "b.h5", fmt="nifti", progress=False)
    da, _ = read_out(a)
    db, attrs = read_out(b)
    assert attrs["format"] == "nifti"
    for k in da:
        assert np.array_equal(da[k], db[k]), k


def test_session_train_normalisation_uses_non_test_trials(mini_nsd, tmp_path):
    out = preprocess(mini_nsd["root"], 1, tmp_path / "t.h5", normalisation="session-train",
                     sessions="2", dtype="float16", progress=False)
    d, attrs = read_out(out)
    assert attrs["normalisation"] == "session-train" and "non-test" in attrs["normalisation_description"]
    assert d["betas"].dtype == np.float16 and (d["session"] == 2).all()
    train = d["betas"][~d["is_test"]].astype(np.float64)
    assert np.allclose(train.mean(0), 0, atol=2e-3) and np.allclose(train.std(0), 1, atol=2e-3)
    # the test trials were not used: their mean is not forced to 0 in general
    full = preprocess(mini_nsd["root"], 1, tmp_path / "f.h5", sessions="2", progress=False)
    assert not np.allclose(read_out(full)[0]["betas"], d["betas"].astype(np.float32), atol=1e-3)


def test_roi_with_labels_and_hemisphere_names(mini_nsd, tmp_path):
    out = preprocess(mini_nsd["root"], 1, tmp_path / "v.h5", roi="prf-visualrois:2", progress=False)
    d, attrs = read_out(out)
    assert d["voxel_ijk"].tolist() == [[2, 1, 1], [4, 1, 2]] and attrs["roi_labels"].tolist() == [2]


# ----------------------------------------------------------------------------- bad input
def _no_output_left(tmp_path):
    return [p.name for p in tmp_path.rglob("*") if p.suffix == ".h5" or ".tmp-" in p.name] == []


def expect_error(tmp_path, root, match, **kw):
    out = tmp_path / "out/subj01.h5"
    kw.setdefault("subject", 1)
    with pytest.raises(InputError, match=match):
        preprocess(root, kw.pop("subject"), out, progress=False, **kw)
    assert not out.exists() and _no_output_left(tmp_path / "out" if (tmp_path / "out").exists() else tmp_path)


def test_missing_session_file(mini_nsd, tmp_path):
    mini_nsd["paths"].betas(1, 2, "hdf5").unlink()
    expect_error(tmp_path, mini_nsd["root"], r"betas_session02.hdf5: beta file not found")


def test_roi_grid_differs_from_betas(mini_nsd, tmp_path):
    p = mini_nsd["paths"].roi(1, "nsdgeneral")
    img = nib.load(p)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, :4], img.affine), p)
    expect_error(tmp_path, mini_nsd["root"], r"nsdgeneral.nii.gz: ROI grid \(7, 6, 4\) differs", fmt="nifti")
    expect_error(tmp_path, mini_nsd["root"], r"nsdgeneral.nii.gz: ROI grid \(7, 6, 4\) differs", fmt="hdf5")


def test_roi_affine_differs_from_betas(mini_nsd, tmp_path):
    p = mini_nsd["paths"].roi(1, "nsdgeneral")
    img = nib.load(p)
    aff = img.affine.copy()
    aff[0, 3] += 1.8
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), p)
    expect_error(tmp_path, mini_nsd["root"], r"nsdgeneral.nii.gz: ROI affine differs from the beta affine", fmt="nifti")
    expect_error(tmp_path, mini_nsd["root"], r"ROI affine differs from the brainmask affine", fmt="hdf5")


def test_truncated_gzip(mini_nsd, tmp_path):
    f = mini_nsd["paths"].betas(1, 2, "nifti")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    expect_error(tmp_path, mini_nsd["root"], r"betas_session02.nii.gz: truncated or corrupt", fmt="nifti")


def test_corrupt_gzip_payload(mini_nsd, tmp_path):
    f = mini_nsd["paths"].betas(1, 1, "nifti")
    raw = bytearray(gzip.decompress(f.read_bytes()))
    blob = bytearray(gzip.compress(bytes(raw), mtime=0))
    blob[len(blob) // 2] ^= 0xFF
    f.write_bytes(bytes(blob))
    expect_error(tmp_path, mini_nsd["root"], r"betas_session01.nii.gz: (truncated or corrupt|not a readable)", fmt="nifti")


def test_truncated_hdf5(mini_nsd, tmp_path):
    f = mini_nsd["paths"].betas(1, 1, "hdf5")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) * 2 // 3])
    expect_error(tmp_path, mini_nsd["root"], r"betas_session01.hdf5: .*truncated or corrupt")


@pytest.mark.parametrize("fmt", ["hdf5", "nifti"])
def test_nan_or_inf_in_betas(tmp_path, fmt):
    env = write_mini_nsd(tmp_path / "nsd", float_betas=True)
    vol = env["vols"][1].copy()
    vol[2, 4, 2, 17] = np.nan
    vol[5, 4, 3, 3] = np.inf
    p = env["paths"]
    aff = nib.load(p.brainmask(1)).affine
    nib.save(nib.Nifti1Image(vol, aff), p.betas(1, 2, "nifti"))
    with h5py.File(p.betas(1, 2, "hdf5"), "w") as f:
        f.create_dataset("betas", data=vol.transpose(3, 2, 1, 0), chunks=(750, 1, 1, 1))
    expect_error(tmp_path, env["root"],
                 rf"betas_session02.{'hdf5' if fmt == 'hdf5' else 'nii.gz'}: 2 NaN/inf beta values", fmt=fmt)


def test_empty_roi(mini_nsd, tmp_path):
    p = mini_nsd["paths"].roi(1, "nsdgeneral")
    img = nib.load(p)
    nib.save(nib.Nifti1Image(np.where(np.asarray(img.dataobj) == 1, 0.0, -1.0), img.affine), p)
    expect_error(tmp_path, mini_nsd["root"], r"nsdgeneral.nii.gz: ROI 'nsdgeneral' is empty")


def test_subject_absent_from_design(tmp_path):
    env = write_mini_nsd(tmp_path / "nsd")
    import scipy.io

    mat = scipy.io.loadmat(env["paths"].expdesign)
    mat = {k: v for k, v in mat.items() if not k.startswith("__")}
    mat["subjectim"] = mat["subjectim"][:0]  # a design that knows no subject
    scipy.io.savemat(env["paths"].expdesign, mat)
    expect_error(tmp_path, env["root"], r"nsd_expdesign.mat: subject 1 is absent from the design")


def test_unknown_roi_and_out_of_range_session(mini_nsd, tmp_path):
    expect_error(tmp_path, mini_nsd["root"], r"unknown ROI 'V9'.*available: nsdgeneral, prf-visualrois", roi="V9")
    expect_error(tmp_path, mini_nsd["root"], r"session\(s\) \[3\] outside subject 1's acquired sessions", sessions="2-3")


def test_subject_without_data(mini_nsd, tmp_path):
    expect_error(tmp_path, mini_nsd["root"], r"subj03: subject 3 has no data", subject=3)


def test_failure_mid_run_leaves_no_output(mini_nsd, tmp_path):
    """A session that fails after earlier ones were written leaves neither output nor temp file."""
    f = mini_nsd["paths"].betas(1, 2, "nifti")
    f.write_bytes(f.read_bytes()[:-200])
    out = tmp_path / "out/subj01.h5"
    with pytest.raises(InputError, match="betas_session02.nii.gz"):
        preprocess(mini_nsd["root"], 1, out, fmt="nifti", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_previous_output_survives_a_failed_rerun(mini_nsd, tmp_path):
    out = tmp_path / "out/subj01.h5"
    preprocess(mini_nsd["root"], 1, out, progress=False)
    before = out.read_bytes()
    mini_nsd["paths"].betas(1, 2, "hdf5").write_bytes(b"garbage")
    with pytest.raises(InputError):
        preprocess(mini_nsd["root"], 1, out, progress=False)
    assert out.read_bytes() == before


def test_cli_error_is_one_line(mini_nsd, tmp_path, capsys):
    rc = main(["preprocess", "--nsd-root", str(mini_nsd["root"]), "--subject", "1",
               "--out", str(tmp_path / "x.h5"), "--roi", "nope", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("braindecode-pkg preprocess: error:")
    assert "roi/nope.nii.gz: unknown ROI 'nope'" in err


def test_cli_runs(mini_nsd, tmp_path):
    out = tmp_path / "c.h5"
    assert main(["preprocess", "--nsd-root", str(mini_nsd["root"]), "--subject", "1", "--out", str(out),
                 "--format", "nifti", "--sessions", "1", "--quiet"]) == 0
    assert read_out(out)[0]["betas"].shape == (750, 9)


def test_hash_cache_reuses_digests(mini_nsd, tmp_path, monkeypatch):
    from braindecode_pkg import io as bio
    from braindecode_pkg.io import cached_sha256, sha256_file

    f = mini_nsd["paths"].betas(1, 1, "hdf5")
    cache = tmp_path / "cache"
    d = cached_sha256(f, cache)
    assert d == sha256_file(f) and len(list(cache.glob("*.json"))) == 1
    hashed = []
    monkeypatch.setattr(bio, "sha256_file", lambda p: hashed.append(p) or sha256_file(p))
    assert cached_sha256(f, cache) == d and hashed == []  # same stat: not re-hashed
    entry = next(cache.glob("*.json"))
    rec = json.loads(entry.read_text())
    rec["sha256"] = "altered"
    entry.write_text(json.dumps(rec))
    assert cached_sha256(f, cache) == d and len(hashed) == 1  # an entry altered on disk: re-hashed
    monkeypatch.undo()
    f.write_bytes(f.read_bytes() + b"\0")  # changed file: re-hashed
    assert cached_sha256(f, cache) == sha256_file(f)
