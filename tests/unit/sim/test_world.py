"""nsd-sim: the exact NSD layout, the design invariants, determinism, and the truth behind the betas."""

from __future__ import annotations

import json

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.io

from braindecode_pkg import io as bio
from braindecode_pkg.data import layout
from braindecode_pkg.sim import world as sim
from braindecode_pkg.sim import scenes as sc
from braindecode_pkg.errors import InputError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("nsdsim_tiny")
    cfg = sim.sim_config("tiny")
    manifest = sim.simulate(cfg, out)
    return cfg, out, manifest, layout.NSDPaths(out / "nsd")


def _design(paths):
    d = scipy.io.loadmat(paths.expdesign)
    return {k: d[k].astype(np.int64) for k in ("masterordering", "subjectim", "sharedix", "stimpattern", "basiccnt")}


def _truth(out, subject):
    with h5py.File(out / "sim_truth" / f"{layout.subj_name(subject)}.h5", "r") as f:
        t = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
        t["attributes"] = {k: f["attributes"][k][()] for k in f["attributes"]}
        t["rho"] = float(f["noise_basis"].attrs["spatial_noise_fraction"])
    return t


def _responses(paths, subject):
    return pd.read_csv(paths.responses(subject), sep="\t")


def _roi_betas(paths, subject, session, ijk):
    """(750, n_voxels) PSC of the ROI voxels from the hdf5 betas (h5 axes t, z, y, x)."""
    with h5py.File(paths.betas(subject, session, "hdf5"), "r") as f:
        b = f["betas"][()]
    return b[:, ijk[:, 2], ijk[:, 1], ijk[:, 0]].astype(np.float64) / layout.PSC_SCALE


# --------------------------------------------------------------------------------------------
# configuration


def test_sim_config_rejects_unknown_preset_key_and_bad_values():
    with pytest.raises(InputError, match="'huge'"):
        sim.sim_config("huge")
    with pytest.raises(InputError, match="'sesions'"):
        sim.sim_config("tiny", sesions=3)
    with pytest.raises(InputError, match="n_test_images"):
        sim.sim_config("tiny", n_test_images=600)  # 2 sessions hold at most 500 images
    with pytest.raises(InputError, match="subjects"):
        sim.sim_config("tiny", subjects=[1, 9])
    with pytest.raises(InputError, match="'mp4'"):
        sim.sim_config("tiny", formats=["hdf5", "mp4"])
    with pytest.raises(InputError, match="volume_shape"):
        sim.sim_config("tiny", volume_shape={1: (12, 12, 12)})  # subjects 2, 3 missing
    with pytest.raises(InputError, match="roi_voxels"):
        sim.simulate(sim.sim_config("tiny", subjects=[1], roi_voxels=5000), "/nonexistent-never-written")


def test_sim_config_overrides_and_dicts():
    shapes = {1: (10, 11, 12), 2: [12, 11, 10], 3: (11, 11, 11)}
    cfg = sim.sim_config("tiny", seed=7, sessions={"1": 2, 2: 1, 3: 1}, volume_shape=shapes)
    assert cfg.seed == 7 and cfg.n_sessions(1) == 2 and cfg.n_sessions(2) == 1
    assert sim.subject_geometry(cfg, 2)[0] == (12, 11, 10)
    assert cfg.subjects == (1, 2, 3) and cfg.formats == ("hdf5", "nifti")


def test_preset_geometry():
    tiny = sim.sim_config("tiny")
    geo = [sim.subject_geometry(tiny, s) for s in tiny.subjects]
    assert len({g[0] for g in geo}) == 3 and len({g[1] for g in geo}) == 3
    assert all(all(10 <= a <= 14 for a in g[0]) and 60 <= g[1] <= 100 for g in geo)
    default = sim.sim_config("default")
    geo = [sim.subject_geometry(default, s) for s in default.subjects]
    assert len(geo) == 4 and len({g[0] for g in geo}) == 4 and len({g[1] for g in geo}) == 4
    assert all(1500 <= g[1] <= 2500 and abs(g[0][1] - 48) <= 4 for g in geo)
    bench = sim.sim_config("bench")
    assert bench.subjects == (1,) and bench.n_sessions(1) == 1
    assert sim.subject_geometry(bench, 1) == ((81, 104, 83), 15724)


# --------------------------------------------------------------------------------------------
# layout


def test_layout_files_and_headers(tiny):
    cfg, out, _, paths = tiny
    assert paths.expdesign.is_file() and paths.stim_info.is_file() and paths.stimuli.is_file()
    for split in ("train2017", "val2017"):
        assert paths.captions(split).is_file()
    for s in cfg.subjects:
        shape, n_roi = sim.subject_geometry(cfg, s)
        aff = layout.nsd_affine(shape)
        mask_img = nib.load(paths.brainmask(s))
        mask = np.asarray(mask_img.dataobj)
        assert mask.dtype == np.int16 and mask.shape == shape and set(np.unique(mask)) == {0, 1}
        for name in ("nsdgeneral", "lh.nsdgeneral", "rh.nsdgeneral"):
            img = nib.load(paths.roi(s, name))
            assert img.get_data_dtype() == np.float64 and img.shape == shape
            assert set(np.unique(np.asarray(img.dataobj))) <= {-1.0, 0.0, 1.0}
        roi = np.asarray(nib.load(paths.roi(s, "nsdgeneral")).dataobj)
        lh = np.asarray(nib.load(paths.roi(s, "lh.nsdgeneral")).dataobj)
        rh = np.asarray(nib.load(paths.roi(s, "rh.nsdgeneral")).dataobj)
        assert (roi == 1).sum() == n_roi and ((lh == 1) | (rh == 1)).sum() == n_roi
        assert not ((lh == 1) & (rh == 1)).any()
        assert (lh == 1).sum() > 0 and (rh == 1).sum() > 0
        assert mask[roi == 1].all() and mask[roi >= 0].all()
        # posterior: the ROI sits at the low-y (posterior, RAS) end of the brain
        assert np.argwhere(roi == 1)[:, 1].mean() < np.argwhere(mask == 1)[:, 1].mean() - 1
        ncsnr = nib.load(paths.beta_meta(s, "ncsnr"))
        assert ncsnr.get_data_dtype() == np.float32 and ncsnr.shape == shape
        for sess in range(1, cfg.n_sessions(s) + 1):
            img = nib.load(paths.betas(s, sess, "nifti"))
            h = img.header
            assert img.shape == shape + (750,) and img.get_data_dtype() == np.int16
            assert int(h["sform_code"]) == 1 and int(h["qform_code"]) == 0
            np.testing.assert_allclose(img.affine, aff, atol=1e-5)
            np.testing.assert_allclose(h["pixdim"][4], 4 / 3, rtol=1e-6)
            assert img.dataobj.slope == 1.0 and img.dataobj.inter == 0.0  # scl_slope 0: no scaling
            nii = np.asarray(img.dataobj)
            assert nii.dtype == np.int16
            with h5py.File(paths.betas(s, sess, "hdf5"), "r") as f:
                d = f["betas"]
                assert d.dtype == np.int16 and d.shape == (750,) + shape[::-1]
                assert d.chunks == (750, 1, 1, 1) and d.compression is None
                x, y, z = np.argwhere(roi == 1)[0]
                assert np.array_equal(d[:, z, y, x], nii[x, y, z, :])
                h5 = d[()]
            assert np.array_equal(h5, nii.transpose(3, 2, 1, 0))  # h5[t, z, y, x] == nii[x, y, z, t]
            assert (nii[mask == 0] == 0).all() and (nii[mask == 1] != 0).mean() > 0.99
    # raw NIfTI header of a beta file as written (nibabel normalises scl_slope on load)
    import gzip

    with gzip.open(paths.betas(1, 1, "nifti")) as g:
        raw = nib.Nifti1Header(g.read(348), check=False)
    assert float(raw["scl_slope"]) == 0.0 and float(raw["vox_offset"]) == 352.0


def test_stimulus_files(tiny):
    cfg, out, _, paths = tiny
    info = pd.read_csv(paths.stim_info, index_col=0)
    expected = ["cocoId", "cocoSplit", "cropBox", "loss", "nsdId", "flagged", "BOLD5000", "shared1000"]
    expected += [f"subject{s}" for s in range(1, 9)]
    expected += [f"subject{s}_rep{r}" for s in range(1, 9) for r in range(3)]
    assert list(info.columns) == expected and len(info) == 73000
    assert (info.index == np.arange(73000)).all() and (info["nsdId"] == np.arange(73000)).all()
    assert info["cocoId"].is_unique and set(info["cocoSplit"]) == {"train2017", "val2017"}
    assert all(info[c].dtype == bool for c in ("flagged", "BOLD5000", "shared1000"))
    assert info["cropBox"].str.fullmatch(r"\((0|[0-9.]+), (0|[0-9.]+), (0|[0-9.]+), (0|[0-9.]+)\)").all()
    assert info["shared1000"].sum() == 1000 and (info[[f"subject{s}" for s in range(1, 9)]].sum(axis=1) >= 1).all()
    with h5py.File(paths.stimuli, "r") as f:
        d = f["imgBrick"]
        assert d.shape == (73000, 425, 425, 3) and d.dtype == np.uint8 and d.chunks == (1, 425, 425, 3)
        truth = _truth(out, 1)
        shown = truth["nsd_id"]
        img = d[int(shown[3])]
        assert img.std() > 5
        # the drawn image is the scene of its attributes; an id nobody saw is not drawn
        attrs = {k: v[3:4] for k, v in truth["attributes"].items()}
        assert np.array_equal(img, sc.render_scene(attrs, 0))
        never = np.setdiff1d(np.arange(73000), np.concatenate([_truth(out, s)["nsd_id"] for s in cfg.subjects]))
        assert not d[int(never[0])].any()
        assert d.id.get_num_chunks() == len(np.unique(np.concatenate([_truth(out, s)["nsd_id"] for s in cfg.subjects])))
    # captions: 5 per drawn image, reachable through cocoId / cocoSplit, naming shapes and colours
    caps = {}
    for split in ("train2017", "val2017"):
        doc = json.loads(paths.captions(split).read_text())
        assert {"images", "annotations"} <= set(doc)
        for a in doc["annotations"]:
            caps.setdefault((split, a["image_id"]), []).append(a["caption"])
    for j, nid in enumerate(shown[:50]):
        row = info.loc[int(nid)]
        texts = caps[(row["cocoSplit"], int(row["cocoId"]))]
        assert len(texts) == 5
        shape1 = sc.SHAPES[truth["attributes"]["shape1"][j]]
        colour1 = sc.COLOURS[truth["attributes"]["colour1"][j]]
        assert all(shape1 in t and colour1 in t for t in texts)
    tsv = pd.read_csv(out / "sim_truth" / "stimuli.tsv", sep="\t")
    assert tsv["nsd_id"].is_monotonic_increasing and set(shown) <= set(tsv["nsd_id"])
    row = tsv.set_index("nsd_id").loc[int(shown[0])]
    assert row["shape1"] == sc.SHAPES[truth["attributes"]["shape1"][0]]
    assert row["background"] == sc.BACKGROUNDS[truth["attributes"]["background"][0]]


def test_design_invariants(tiny):
    cfg, out, _, paths = tiny
    d = _design(paths)
    mo, sim_, shared = d["masterordering"], d["subjectim"], d["sharedix"]
    assert mo.shape == (1, 30000) and sim_.shape == (8, 10000) and shared.shape == (1, 1000)
    assert d["stimpattern"].shape == (40, 12, 75) and d["basiccnt"].shape == (3, 40)
    assert (np.bincount(mo[0], minlength=10001)[1:] == 3).all()
    assert (sim_[:, :1000] == shared).all()
    assert len(np.unique(sim_)) == 73000 and sim_.min() == 1 and sim_.max() == 73000
    # used trials: n_test shared indices and the subject-specific ones, each complete (3×)
    used = mo[0, : 2 * 750]
    counts = np.bincount(used, minlength=10001)
    assert set(np.unique(counts[1:])) == {0, 3}
    assert (np.flatnonzero(counts[1:1001]) + 1).size == cfg.n_test_images
    assert (counts[1001:] == 3).sum() == 2 * 250 - cfg.n_test_images
    assert len({tuple(np.flatnonzero(used == k) // 750) for k in np.unique(used)}) > 1  # repeats spread over sessions
    sp = d["stimpattern"]
    assert (sp.sum((1, 2)) == 750).all() and set(np.unique(sp.sum(2))) == {62, 63}
    assert (d["basiccnt"].sum(0) == 750).all() and (d["basiccnt"].sum(1) == 10000).all()
    # trial mapping == responses.tsv; repeats == stim info
    info = pd.read_csv(paths.stim_info, index_col=0)
    for s in cfg.subjects:
        r = _responses(paths, s)
        t = np.arange(cfg.n_sessions(s) * 750)
        assert len(r) == len(t)
        k10 = mo[0, t]
        assert (r["10KID"].to_numpy() == k10).all()
        assert (r["73KID"].to_numpy() == sim_[s - 1, k10 - 1]).all()
        assert (r["SESSION"].to_numpy() == t // 750 + 1).all()
        nsd0 = r["73KID"].to_numpy() - 1
        assert (info["shared1000"].to_numpy()[nsd0] == (k10 <= 1000)).all()
        reps = info[[f"subject{s}_rep{i}" for i in range(3)]].to_numpy()[nsd0]
        assert (reps == t[:, None] + 1).any(1).all()  # each trial is one of its image's repeats
        assert (info[f"subject{s}"].to_numpy()[nsd0] == 1).all()
        assert (np.sort(reps, 1) == reps).all()
        truth = _truth(out, s)
        assert np.array_equal(truth["nsd_id"], np.unique(nsd0))


def test_responses_behaviour(tiny):
    cfg, out, _, paths = tiny
    r = _responses(paths, 2)
    assert tuple(r.columns) == layout.RESPONSES_COLUMNS
    assert (r["SUBJECT"] == 2).all() and r["RUN"].between(1, 12).all() and r["TRIAL"].between(1, 63).all()
    run_sizes = r.groupby(["SESSION", "RUN"]).size().to_numpy()
    assert set(run_sizes) == {62, 63}
    assert r["TIME"].is_monotonic_increasing
    first = ~r.duplicated("73KID")
    assert (r["ISOLD"].to_numpy() == (~first).to_numpy()).all()
    assert r.loc[first, "MEMORYRECENT"].isna().all() and (r.loc[~first, "MEMORYRECENT"] > 0).all()
    # the simulator's documented behaviour (1.5 % missing responses, false alarms 12 %), each
    # within 4 binomial standard errors of its rate
    miss = r["MISSINGDATA"] == 1
    assert abs(miss.mean() - 0.015) < 4 * np.sqrt(0.015 * 0.985 / len(r))
    assert r.loc[miss, "RT"].isna().all() and r.loc[~miss, "RT"].notna().all()
    new_ok = r.loc[~miss & first, "ISCORRECT"]  # a new image is judged correctly unless a false alarm
    assert len(new_ok) > 300 and abs(new_ok.mean() - 0.88) < 4 * np.sqrt(0.88 * 0.12 / len(new_ok))
    acc = r.loc[~miss, "ISCORRECT"]
    assert 0.6 < acc.mean() < 0.95
    hit_recent = r.loc[~miss & (r["MEMORYRECENT"] < 100), "ISCORRECT"].mean()
    hit_far = r.loc[~miss & (r["MEMORYRECENT"] > 600), "ISCORRECT"].mean()
    assert hit_recent > hit_far


# --------------------------------------------------------------------------------------------
# determinism and the manifest


def test_manifest_lists_every_file(tiny):
    cfg, out, manifest, _ = tiny
    doc = json.loads(manifest.read_text())
    assert doc["sim_version"] == sim.SIM_VERSION and doc["seed"] == cfg.seed
    files = {f["path"]: f for f in doc["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk - set(files) == {"sim_truth/manifest.json"}
    assert not [p for p in on_disk if ".tmp-" in p]
    for rel in ("nsd/nsddata/experiments/nsd/nsd_expdesign.mat", "sim_truth/subj01.h5"):
        assert files[rel]["sha256"] == bio.sha256_file(out / rel)
    assert sim.sim_config("tiny", **doc["config"]) == cfg  # the manifest reproduces the config


def test_same_seed_same_bytes(tiny, tmp_path):
    cfg, out, manifest, _ = tiny
    again = sim.simulate(cfg, tmp_path / "again")
    fa = {f["path"]: f["sha256"] for f in json.loads(again.read_text())["files"]}
    fm = {f["path"]: f["sha256"] for f in json.loads(manifest.read_text())["files"]}
    assert [p for p in fa if fa[p] != fm.get(p)] == []  # names the file that differs
    assert again.read_bytes() == manifest.read_bytes()


def test_other_subjects_do_not_change_a_subject_and_the_seed_changes_everything(tiny, tmp_path):
    cfg, out, manifest, _ = tiny
    full = {f["path"]: f["sha256"] for f in json.loads(manifest.read_text())["files"]}
    alone = sim.sim_config("tiny", subjects=[1])
    a = {f["path"]: f["sha256"] for f in json.loads(sim.simulate(alone, tmp_path / "a").read_text())["files"]}
    mine = [p for p in a if "subj01" in p]
    assert len(mine) == 11  # truth, responses, brainmask, 3 ROIs, ncsnr, 2 sessions × 2 formats
    assert all(a[p] == full[p] for p in mine)
    assert a["nsd/nsddata/experiments/nsd/nsd_expdesign.mat"] == full["nsd/nsddata/experiments/nsd/nsd_expdesign.mat"]
    assert a["nsd/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"] != full["nsd/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"]
    other = sim.sim_config("tiny", subjects=[1], seed=cfg.seed + 1)
    b = {f["path"]: f["sha256"] for f in json.loads(sim.simulate(other, tmp_path / "b").read_text())["files"]}
    assert set(a) == set(b)
    assert [p for p in a if a[p] == b[p]] == []


# --------------------------------------------------------------------------------------------
# the truth behind the betas


def test_subjects_differ(tiny):
    cfg, out, _, paths = tiny
    shapes = {nib.load(paths.brainmask(s)).shape for s in cfg.subjects}
    counts = {len(_truth(out, s)["voxel_ijk"]) for s in cfg.subjects}
    assert len(shapes) == len(counts) == len(cfg.subjects)


def test_truth_contents(tiny):
    cfg, out, _, paths = tiny
    for s in cfg.subjects:
        t = _truth(out, s)
        n_img, n_vox = len(t["nsd_id"]), len(t["voxel_ijk"])
        roi = np.asarray(nib.load(paths.roi(s, "nsdgeneral")).dataobj)
        assert np.array_equal(t["voxel_ijk"], np.argwhere(roi == 1))  # C order of the grid
        assert t["mu"].shape == (n_img, n_vox) and t["mu"].dtype == np.float32
        assert t["session_gain"].shape == t["session_offset"].shape == (cfg.n_sessions(s), n_vox)
        assert t["noise_cov"].shape == (n_vox, n_vox)
        for k, v in t["attributes"].items():
            assert len(v) == n_img, k
        world = sim.world_scenes(cfg)
        assert np.array_equal(t["attributes"]["colour2"], world["colour2"][t["nsd_id"]])
        ncsnr_nii = np.asarray(nib.load(paths.beta_meta(s, "ncsnr")).dataobj)
        np.testing.assert_allclose(ncsnr_nii[tuple(t["voxel_ijk"].T)], t["ncsnr"], rtol=1e-6)
        assert (ncsnr_nii[roi != 1] == 0).all()
        # the generative ncsnr = sd of mu over images / noise sd (up to the sampling of images)
        emp = t["mu"].std(0) / t["noise_sd"]
        assert np.corrcoef(emp, t["ncsnr"])[0, 1] > 0.95
        np.testing.assert_allclose(np.median(emp / t["ncsnr"]), 1.0, atol=0.15)
        # the covariance is exactly the documented one
        L = t["noise_basis"].astype(np.float64)
        cov = t["rho"] * L @ L.T + (1 - t["rho"]) * np.eye(n_vox)
        cov *= np.outer(t["noise_sd"], t["noise_sd"])
        np.testing.assert_allclose(t["noise_cov"], cov, rtol=1e-5, atol=1e-6)


def _trial_model(cfg, out, paths, subject):
    t = _truth(out, subject)
    r = _responses(paths, subject)
    img = np.searchsorted(t["nsd_id"], r["73KID"].to_numpy() - 1)
    sess = r["SESSION"].to_numpy() - 1
    betas = np.concatenate([_roi_betas(paths, subject, s + 1, t["voxel_ijk"]) for s in range(cfg.n_sessions(subject))])
    expected = t["session_gain"][sess] * t["mu"][img] + t["session_offset"][sess]
    return t, img, sess, betas, expected


def test_betas_reproduce_truth(tiny):
    cfg, out, paths = tiny[0], tiny[1], tiny[3]
    t, img, sess, betas, expected = _trial_model(cfg, out, paths, 1)
    z_right, offset_est = [], []
    for s in range(cfg.n_sessions(1)):
        m = sess == s
        ids, inv, cnt = np.unique(img[m], return_inverse=True, return_counts=True)
        keep = cnt >= 2
        sums = np.zeros((len(ids), betas.shape[1]))
        np.add.at(sums, inv, betas[m])
        mean = sums[keep] / cnt[keep, None]
        se = t["noise_sd"] / np.sqrt(cnt[keep, None])
        want = t["session_gain"][s] * t["mu"][ids[keep]] + t["session_offset"][s]
        z_right.append((mean - want) / se)
        offset_est.append((mean - t["session_gain"][s] * t["mu"][ids[keep]]).mean(0))
    z = np.concatenate(z_right)
    assert z.size > 20000
    assert abs(z.mean()) < 0.03 and 0.97 < z.std() < 1.03
    assert 0.85 < z.std(0).min() and z.std(0).max() < 1.15  # every voxel, not just on average
    # the session offsets are real and recoverable (so per-session normalisation matters)
    est, true = np.concatenate(offset_est), t["session_offset"].ravel()
    assert np.corrcoef(est, true)[0, 1] > 0.9 and true.std() > 0.2


def test_noise_covariance_matches_truth(tiny):
    cfg, out, paths = tiny[0], tiny[1], tiny[3]
    t, img, sess, betas, expected = _trial_model(cfg, out, paths, 2)
    resid = betas - expected
    emp = np.cov(resid, rowvar=False)
    off = ~np.eye(len(emp), dtype=bool)
    assert np.corrcoef(emp[off], t["noise_cov"][off])[0, 1] > 0.8
    ratio = np.diag(emp) / np.diag(t["noise_cov"])
    assert 0.9 < np.median(ratio) < 1.1 and ratio.min() > 0.75 and ratio.max() < 1.3
    assert np.median(np.abs(emp[off])) > 0.01 * np.median(np.diag(emp))  # the noise is correlated


def test_nsd_ncsnr_estimate_tracks_truth(tiny):
    cfg, out, paths = tiny[0], tiny[1], tiny[3]
    for s in cfg.subjects:
        t = _truth(out, s)
        r = _responses(paths, s)
        z = []
        for k in range(cfg.n_sessions(s)):
            b = _roi_betas(paths, s, k + 1, t["voxel_ijk"])
            z.append((b - b.mean(0)) / b.std(0))
        z = np.concatenate(z)
        nid = r["73KID"].to_numpy()
        ids, inv, cnt = np.unique(nid, return_inverse=True, return_counts=True)
        assert (cnt == 3).all() and len(ids) > 300  # tiny: every image 3 times
        grouped = z[np.argsort(inv, kind="stable")].reshape(len(ids), 3, z.shape[1])
        noise_var = grouped.var(1, ddof=1).mean(0)
        est = np.sqrt(np.maximum(0, 1 - noise_var)) / np.sqrt(noise_var)
        r_est = np.corrcoef(est, t["ncsnr"])[0, 1]
        assert r_est > 0.85, (s, r_est)
        assert abs(np.median(est) - np.median(t["ncsnr"])) < 0.1


def test_early_voxels_see_their_receptive_field(tiny):
    cfg, out, paths = tiny[0], tiny[1], tiny[3]
    t = _truth(out, 1)
    with h5py.File(paths.stimuli, "r") as f:  # luminance in 10-px blocks, (n, y, x)
        lum = np.stack([
            f["imgBrick"][int(i), :420, :420].astype(np.float32).mean(-1).reshape(42, 10, 42, 10).mean((1, 3))
            for i in t["nsd_id"]
        ])
    lum -= lum.mean((1, 2), keepdims=True)  # local luminance contrast
    c = (np.arange(42) + 0.5) / 42

    def rf_lum(x, y, sig):
        w = np.exp(-((c[:, None] - y) ** 2 + (c[None, :] - x) ** 2) / (2 * sig**2))
        return (lum * w).sum((1, 2)) / w.sum()

    early = np.flatnonzero(t["early"])
    assert len(early) >= 15 and np.isnan(t["rf_xy"][~t["early"]]).all()
    own, mirrored = [], []
    for v in early:
        x, y = t["rf_xy"][v]
        sig = t["rf_sigma"][v]
        own.append(np.corrcoef(t["mu"][:, v], rf_lum(x, y, sig))[0, 1])
        mirrored.append(np.corrcoef(t["mu"][:, v], rf_lum(1 - x, 1 - y, sig))[0, 1])
    own, mirrored = np.array(own), np.array(mirrored)
    assert np.median(own) > 0.5, np.median(own)
    assert np.median(own - mirrored) > 0.5
    # retinotopy: left-hemisphere (low x) early voxels see the right visual field
    left = t["voxel_ijk"][early, 0] < sim.subject_geometry(cfg, 1)[0][0] / 2
    assert t["rf_xy"][early[left], 0].mean() > 0.5 > t["rf_xy"][early[~left], 0].mean()


def test_hdf5_all_chunks_allocates_like_nsd(tiny, tmp_path):
    """bench's NSD-like .hdf5: every chunk allocated (zeros outside the brain), same values."""
    cfg, out, _, paths = tiny
    full = sim.sim_config("tiny", subjects=[1], formats=["hdf5"], hdf5_all_chunks=True)
    p2 = layout.NSDPaths(tmp_path / "nsd")
    sim.simulate(full, tmp_path)
    with h5py.File(paths.betas(1, 1, "hdf5")) as a, h5py.File(p2.betas(1, 1, "hdf5")) as b:
        n_vox = int(np.prod(a["betas"].shape[1:]))
        assert b["betas"].id.get_num_chunks() == n_vox > a["betas"].id.get_num_chunks()
        assert np.array_equal(a["betas"][()], b["betas"][()])
    assert p2.betas(1, 1, "hdf5").stat().st_size > n_vox * 750 * 2
