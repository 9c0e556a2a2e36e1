"""The NSD-format root of ``nsd_root.py`` (not nsd-sim): its files read back with independent
readers (scipy.io.loadmat, nibabel, h5py, pandas, json), the package's root checks and readers on
it, ``braindecode-pkg preprocess`` on every subject from both beta formats, and a ridge from the
preprocessed training trials to the planted image features."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .nsd_root import (
    RESPONSES_HEADER,
    STIM_INFO_COLUMNS,
    betas_path,
    lookup_features,
    nsd_paths,
    roi_path,
    write_nsd_root,
)

T = 750  # trials per NSD session


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_nsd_root(tmp_path_factory.mktemp("realpath") / "nsd")


def _read_prep(path) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f.keys()}
        out["attrs"] = dict(f.attrs)
    return out


@pytest.fixture(scope="module")
def prep(fx, tmp_path_factory):
    """``braindecode-pkg preprocess`` of every subject from each format: {(subject, fmt): contents}."""
    from braindecode_pkg import cli

    out_dir = tmp_path_factory.mktemp("realpath-prep")
    got = {}
    for s in fx["subjects"]:
        for fmt in ("hdf5", "nifti"):
            out = out_dir / f"subj{s:02d}-{fmt}.h5"
            rc = cli.main(["preprocess", "--nsd-root", str(fx["root"]), "--subject", str(s), "--out", str(out),
                           "--format", fmt, "--quiet", "--hash-cache", ""])
            assert rc == 0, (s, fmt)
            got[(s, fmt)] = _read_prep(out)
    return got


def _expected_affine(shape):
    """NSD_FORMAT.md: diag(1.8), offset (1 - o) * 1.8 with o = (1 + [X, Y, Z]) / 2."""
    aff = np.diag([1.8, 1.8, 1.8, 1.0])
    aff[:3, 3] = (1 - (1 + np.asarray(shape, float)) / 2) * 1.8
    return aff


def _nii(path):
    import nibabel as nib

    img = nib.load(str(path))
    return img, np.asarray(img.dataobj)


def _raw_header(path):
    """The NIfTI-1 header as stored (``nib.load`` resets scl_slope / scl_inter in its copy)."""
    import gzip
    import io

    import nibabel as nib

    with gzip.open(path, "rb") as fh:
        return nib.Nifti1Header.from_fileobj(io.BytesIO(fh.read(348)))


# ------------------------------------------------------------------------------- the files
def test_expdesign_reads_with_scipy_and_the_package_reader(fx):
    import scipy.io

    from braindecode_pkg.data.matfile import loadmat
    from braindecode_pkg.data.nsd import NSDDesign

    path = nsd_paths(fx["root"])["expdesign"]
    m = scipy.io.loadmat(path)
    shapes = {"masterordering": (1, 30000), "subjectim": (8, 10000), "sharedix": (1, 1000),
              "stimpattern": (40, 12, 75), "basiccnt": (3, 40)}
    assert {k: m[k].shape for k in shapes} == shapes
    assert all(m[k].dtype == np.float64 for k in shapes)
    mo = m["masterordering"][0].astype(np.int64)
    si = m["subjectim"].astype(np.int64)
    assert np.array_equal(np.bincount(mo, minlength=10001)[1:], np.full(10000, 3))  # each 10k index 3 times
    assert (si[:, :1000] == m["sharedix"].astype(np.int64)).all()  # shared columns identical across subjects
    assert np.array_equal(np.sort(np.r_[si[0, :1000], si[:, 1000:].ravel()]), np.arange(1, 73001))
    pat = m["stimpattern"]
    assert (pat.sum(axis=(1, 2)) == T).all() and set(np.unique(pat.sum(2))) == {62, 63}
    assert (m["basiccnt"].sum(0) == T).all()
    pkg = loadmat(path)
    for k in shapes:
        assert pkg[k].shape == m[k].shape and np.array_equal(pkg[k], m[k]), k
    design = NSDDesign.load(path)
    for s, d in fx["subjects"].items():
        tab = design.trials(s, d["sessions"])
        for k in ("nsd_id", "session", "trial", "repeat", "is_test"):
            assert np.array_equal(getattr(tab, k), d["trials"][k]), (s, k)


def test_beta_files_are_nsd_int16_and_the_hdf5_is_the_nifti_transposed(fx):
    import h5py

    rng = np.random.default_rng(0)
    for s, d in fx["subjects"].items():
        shape = d["volume_shape"]
        _, brain = _nii(nsd_paths(fx["root"], s)["brainmask"])
        for sess in d["sessions"]:
            img, nii = _nii(betas_path(fx["root"], s, sess, "nifti"))
            hdr = img.header
            assert nii.dtype == np.int16 and nii.shape == (*shape, T)
            assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 0
            assert np.allclose(img.affine, _expected_affine(shape)) and np.allclose(hdr.get_sform(), _expected_affine(shape))
            raw_hdr = _raw_header(betas_path(fx["root"], s, sess, "nifti"))  # nib.load's header drops scl_*
            assert float(raw_hdr["scl_slope"]) == 0.0 and raw_hdr.get_slope_inter() == (None, None)
            assert int(raw_hdr["vox_offset"]) == 352 and raw_hdr.get_data_dtype() == np.int16
            assert np.isclose(hdr["pixdim"][4], 4 / 3)
            with h5py.File(betas_path(fx["root"], s, sess, "hdf5"), "r") as f:
                ds = f["betas"]
                assert ds.dtype == np.int16 and ds.shape == (T, shape[2], shape[1], shape[0])
                assert ds.chunks == (T, 1, 1, 1) and ds.compression is None
                h5 = ds[()]
            assert np.array_equal(h5, nii.transpose(3, 2, 1, 0))
            for _ in range(20):
                x, y, z, t = (int(rng.integers(n)) for n in (*shape, T))
                assert h5[t, z, y, x] == nii[x, y, z, t]
            assert not nii[brain == 0].any()  # 0 outside the brainmask
            assert (nii[brain == 1] != 0).mean() > 0.99
            psc = nii[brain == 1] / 300.0
            assert 0.3 < psc.std() < 10 and np.abs(psc).max() < 50


def test_roi_volumes_and_brainmask(fx):
    counts = []
    for s, d in fx["subjects"].items():
        bimg, brain = _nii(nsd_paths(fx["root"], s)["brainmask"])
        assert brain.dtype == np.int16 and set(np.unique(brain)) == {0, 1}
        img, gen = _nii(roi_path(fx["root"], s, "nsdgeneral"))
        assert gen.dtype == np.float64 and set(np.unique(gen)) == {-1.0, 0.0, 1.0}
        assert np.allclose(img.affine, _expected_affine(d["volume_shape"])) and np.allclose(bimg.affine, img.affine)
        assert gen.shape == d["volume_shape"] and (brain[gen >= 0] == 1).all()
        _, lh = _nii(roi_path(fx["root"], s, "lh.nsdgeneral"))
        _, rh = _nii(roi_path(fx["root"], s, "rh.nsdgeneral"))
        assert np.array_equal(gen == 1, (lh == 1) | (rh == 1)) and not ((lh == 1) & (rh == 1)).any()
        world_x = (img.affine @ np.c_[np.argwhere(lh == 1), np.ones(int((lh == 1).sum()))].T)[0]
        assert (world_x < 0).all() and (lh == 1).any() and (rh == 1).any()  # RAS+: left is x < 0
        _, prf = _nii(roi_path(fx["root"], s, "prf-visualrois"))
        assert set(np.unique(prf[prf >= 1])) <= set(range(1, 8)) and (gen[prf >= 1] == 1).all()
        assert int((gen == 1).sum()) == d["n_voxels"] and np.array_equal(np.argwhere(gen == 1), d["roi_ijk"])
        counts.append(d["n_voxels"])
    assert len(set(counts)) == len(counts)  # every subject its own voxel count
    assert len({d["volume_shape"] for d in fx["subjects"].values()}) == len(counts)
    assert len({len(d["sessions"]) for d in fx["subjects"].values()}) > 1


def test_stimuli_stim_info_and_captions(fx):
    import h5py
    import pandas as pd

    root = fx["root"]
    with h5py.File(nsd_paths(root)["stimuli"], "r") as f:
        ds = f["imgBrick"]
        assert ds.shape == (73000, 425, 425, 3) and ds.dtype == np.uint8 and ds.chunks == (1, 425, 425, 3)
        ids = fx["test_ids"][:10]
        imgs = ds[np.sort(ids)]
        unshown = int(np.setdiff1d(np.arange(73000), fx["shown_ids"])[0])
        assert not ds[unshown].any()
    g = fx["signal"]["grid"]
    edges = np.linspace(0, 425, g + 1).round().astype(int)
    for i, img in zip(np.sort(ids), imgs):
        means = [img[edges[r]:edges[r + 1], edges[c]:edges[c + 1]].reshape(-1, 3).mean(0)
                 for r in range(g) for c in range(g)]
        assert np.allclose(np.ravel(means) / 255.0, lookup_features(fx, [i])[0])

    df = pd.read_csv(nsd_paths(root)["stim_info"])
    assert list(df.columns) == ["Unnamed: 0"] + STIM_INFO_COLUMNS[1:] and len(df) == 73000
    assert (df["nsdId"].to_numpy() == np.arange(73000)).all() and df["shared1000"].dtype == bool
    sharedix = fx["design"]["sharedix"]
    assert np.array_equal(np.flatnonzero(df["shared1000"].to_numpy()), np.sort(sharedix - 1))
    assert set(df["cocoSplit"]) == {"train2017", "val2017"} and df["cocoId"].is_unique
    for s, d in fx["subjects"].items():
        tr = d["trials"]
        assert (df[f"subject{s}"].to_numpy()[tr["nsd_id"]] == 1).all()
        reps = df[[f"subject{s}_rep{r}" for r in range(3)]].to_numpy()
        assert np.array_equal(reps[tr["nsd_id"], tr["repeat"]], tr["trial"] + 1)  # 1-based global trial

    docs = {sp: json.loads(nsd_paths(root)[f"captions_{sp}"].read_text()) for sp in ("train2017", "val2017")}
    by = {sp: {} for sp in docs}
    for sp, doc in docs.items():
        assert {"images", "annotations"} <= set(doc)
        for a in doc["annotations"]:
            by[sp].setdefault(a["image_id"], []).append((a["id"], a["caption"]))
    for i in fx["shown_ids"]:
        row = df.iloc[int(i)]
        caps = sorted(by[row["cocoSplit"]][int(row["cocoId"])])
        assert len(caps) >= 5 and [c.strip() for _, c in caps[:5]] == fx["captions"][int(i)]
    assert {df.iloc[int(i)]["cocoSplit"] for i in fx["shown_ids"]} == {"train2017", "val2017"}


def test_responses_tsv(fx):
    import pandas as pd

    for s, d in fx["subjects"].items():
        df = pd.read_csv(nsd_paths(fx["root"], s)["responses"], sep="\t")
        assert tuple(df.columns) == RESPONSES_HEADER and len(df) == T * len(d["sessions"])
        assert (df["SUBJECT"] == s).all() and sorted(df["SESSION"].unique()) == d["sessions"]
        assert np.array_equal(df["73KID"].to_numpy() - 1, d["trials"]["nsd_id"])
        assert np.array_equal(df["10KID"].to_numpy(), d["trials"]["k10"])
        per_run = df.groupby(["SESSION", "RUN"]).size()
        assert set(per_run) == {62, 63} and len(per_run) == 12 * len(d["sessions"])
        assert df["ISOLD"].to_numpy().sum() == (d["trials"]["repeat"] > 0).sum()


def test_shared_and_training_images(fx):
    test = set(fx["test_ids"].tolist())
    trains = []
    for s, d in fx["subjects"].items():
        tr = d["trials"]
        ids, n = np.unique(tr["nsd_id"][tr["is_test"]], return_counts=True)
        assert set(ids.tolist()) == test and (n == 3).all()  # every shared image 3 times, every subject
        trains.append(set(d["train_ids"].tolist()))
        assert not trains[-1] & test
    assert all(not (a & b) for k, a in enumerate(trains) for b in trains[k + 1:])  # each subject's own


# ---------------------------------------------------------------------------- the package
def test_package_root_checks_and_readers(fx):
    from braindecode_pkg.data.layout import NSDPaths, check_root
    from braindecode_pkg.data.stimuli import check_image_brick, check_nsd_root
    from braindecode_pkg.embed.stimuli import read_captions, shown_images
    from braindecode_pkg.errors import InputError

    root, subjects = fx["root"], sorted(fx["subjects"])
    for fmt in ("hdf5", "nifti"):
        check_root(root, subjects, fmt=fmt)
        check_root(root, [1], fmt=fmt, sessions="1-3")
    check_nsd_root(root, subjects)
    check_image_brick(nsd_paths(root)["stimuli"], fx["shown_ids"])
    with pytest.raises(InputError, match="betas_session03"):
        check_root(root, [2], sessions="1-3")  # subject 2 has 2 sessions
    with pytest.raises(InputError, match="subject"):
        check_nsd_root(root, [3])
    paths = NSDPaths(root)
    ids = shown_images(paths, subjects)
    assert np.array_equal(ids, fx["shown_ids"])
    caps = read_captions(paths, ids)
    assert [caps[k] for k in range(len(ids))] == [fx["captions"][int(i)] for i in ids]


@pytest.mark.parametrize("subject", [1, 2, 5])
def test_preprocess_both_formats(fx, prep, subject):
    d = fx["subjects"][subject]
    a, b = prep[(subject, "hdf5")], prep[(subject, "nifti")]
    for k in ("betas", "nsd_id", "session", "trial", "repeat", "is_test", "voxel_ijk"):
        assert np.array_equal(a[k], b[k]), k
    for k in ("nsd_id", "session", "trial", "repeat", "is_test"):
        assert np.array_equal(a[k], d["trials"][k]), k
    _, roi = _nii(roi_path(fx["root"], subject, "nsdgeneral"))
    ijk = np.argwhere(roi == 1)
    assert a["betas"].shape == (T * len(d["sessions"]), int((roi == 1).sum())) == (len(d["trials"]["trial"]), d["n_voxels"])
    assert np.array_equal(a["voxel_ijk"], ijk)
    assert np.allclose(a["attrs"]["affine"], _expected_affine(d["volume_shape"]))
    assert tuple(a["attrs"]["volume_shape"]) == d["volume_shape"]
    assert list(a["attrs"]["sessions"]) == d["sessions"] and a["attrs"]["normalisation"] == "session"
    z = a["betas"].astype(np.float64)
    raw_means = []
    for sess in d["sessions"]:
        rows = a["session"] == sess
        assert np.allclose(z[rows].mean(0), 0, atol=1e-4) and np.allclose(z[rows].std(0), 1, atol=1e-4)
        _, nii = _nii(betas_path(fx["root"], subject, sess, "nifti"))
        raw = nii[ijk[:, 0], ijk[:, 1], ijk[:, 2], :].T.astype(np.float64)  # (750, voxels)
        ref = (raw - raw.mean(0)) / raw.std(0)
        assert np.allclose(z[rows], ref, atol=5e-5)
        raw_means.append(raw.mean(0) / 300.0)
    # the planted per-session offsets are large: without per-session z-scoring sessions would differ
    assert np.abs(np.diff(raw_means, axis=0)).mean() > 0.5


def test_preprocess_hemisphere_roi(fx, tmp_path):
    from braindecode_pkg import cli

    out = tmp_path / "lh.h5"
    assert cli.main(["preprocess", "--nsd-root", str(fx["root"]), "--subject", "2", "--out", str(out),
                     "--roi", "lh.nsdgeneral", "--quiet", "--hash-cache", ""]) == 0
    got = _read_prep(out)
    _, lh = _nii(roi_path(fx["root"], 2, "lh.nsdgeneral"))
    assert np.array_equal(got["voxel_ijk"], np.argwhere(lh == 1))
    assert 0 < got["betas"].shape[1] == fx["subjects"][2]["roi_counts"]["lh.nsdgeneral"] < fx["subjects"][2]["n_voxels"]


def _ridge(x, y, lam):
    """argmin |x w - y|^2 + lam |w|^2, by lstsq on the normal equations."""
    return np.linalg.lstsq(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y, rcond=None)[0]


@pytest.mark.parametrize("subject", [1, 2, 5])
def test_ridge_from_preprocessed_betas_recovers_the_planted_features(fx, prep, subject):
    p = prep[(subject, "hdf5")]
    z, ids, test = p["betas"].astype(np.float64), p["nsd_id"], p["is_test"]
    y = lookup_features(fx, ids[~test])
    mu = y.mean(0)
    w = _ridge(z[~test], y - mu, lam=0.1 * (~test).sum())
    test_ids = fx["test_ids"]
    zt = np.stack([z[test & (ids == i)].mean(0) for i in test_ids])  # the 3 repeats averaged
    pred, true = zt @ w + mu, lookup_features(fx, test_ids)
    r = [np.corrcoef(pred[:, k], true[:, k])[0, 1] for k in range(true.shape[1])]
    print(f"subj{subject:02d} feature r min {min(r):.3f} mean {np.mean(r):.3f}", end=" ")
    assert min(r) > 0.8 and np.mean(r) > 0.9, r
    # identification: each test image's prediction is nearest (correlation) its own features
    pc = pred - pred.mean(1, keepdims=True)
    tc = true - true.mean(1, keepdims=True)
    sim = (pc / np.linalg.norm(pc, axis=1, keepdims=True)) @ (tc / np.linalg.norm(tc, axis=1, keepdims=True)).T
    top1 = (sim.argmax(1) == np.arange(len(test_ids))).mean()
    print(f"top-1 {top1:.2f}", end=" ")
    assert top1 > 0.7, top1  # chance: 1 / 100
    # and the same ridge on shuffled training labels does not
    perm = np.random.default_rng(0).permutation((~test).sum())
    w0 = _ridge(z[~test], (y - mu)[perm], lam=0.1 * (~test).sum())
    r0 = [np.corrcoef((zt @ w0)[:, k], true[:, k])[0, 1] for k in range(true.shape[1])]
    print(f"shuffled |r| {np.mean(np.abs(r0)):.3f}")
    assert np.mean(np.abs(r0)) < 0.25, r0


def test_same_seed_same_bytes(tmp_path):
    small = {3: ((6, 5, 4), 1)}
    a = write_nsd_root(tmp_path / "a", subjects=small, n_shared=20, seed=3)
    b = write_nsd_root(tmp_path / "b", subjects=small, n_shared=20, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert np.array_equal(a["features"], b["features"]) and np.array_equal(a["shown_ids"], b["shown_ids"])
    assert len(a["test_ids"]) == 20 and a["subjects"][3]["sessions"] == [1]


def test_encode_plants_the_given_vectors(tmp_path):
    """With ``encode``, voxels read those vectors (here a fixed nonlinear map of the colours that
    is not linear in them): a ridge from the preprocessed betas recovers them on the test images."""
    from braindecode_pkg import cli

    proj = np.random.default_rng(1).normal(size=(12, 16))

    def encode(colours):
        return np.tanh(3 * (colours.reshape(len(colours), -1) / 255.0 - 0.5) @ proj) ** 3

    fx = write_nsd_root(tmp_path / "nsd", subjects={4: ((8, 9, 8), 1)}, n_shared=60, seed=2, encode=encode,
                        formats=("hdf5",))
    resp = fx["response"]
    assert resp.shape == (len(fx["shown_ids"]), 16) and np.allclose(resp.mean(0), 0) and np.allclose(resp.std(0), 1)
    out = tmp_path / "p.h5"
    assert cli.main(["preprocess", "--nsd-root", str(fx["root"]), "--subject", "4", "--out", str(out),
                     "--quiet", "--hash-cache", ""]) == 0
    p = _read_prep(out)
    z, ids, test = p["betas"].astype(np.float64), p["nsd_id"], p["is_test"]
    pos = np.searchsorted(fx["shown_ids"], ids)
    w = _ridge(z[~test], resp[pos[~test]], lam=0.1 * (~test).sum())
    tid = fx["test_ids"]
    pred = np.stack([z[test & (ids == i)].mean(0) for i in tid]) @ w
    true = resp[np.searchsorted(fx["shown_ids"], tid)]
    r = [np.corrcoef(pred[:, k], true[:, k])[0, 1] for k in range(true.shape[1])]
    print(f"encode: r mean {np.mean(r):.3f} min {min(r):.3f}")
    assert np.mean(r) > 0.7, r
