"""voxel_volume puts values at their ijk with the subject's affine; adapter_importance reads the
norms of the saved weights (brain model: columns of the adapter's first linear layer; ridge: rows
of the coefficients). Distinct sizes: volume (5, 4, 3), 13 and 7 voxels, width 16, rank 5, d 6."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from braindecode_pkg.errors import InputError
from braindecode_pkg.brain.model import BrainConfig, BrainModel
from braindecode_pkg.report.brainmaps import adapter_importance, brain_map_entry, voxel_volume
from braindecode_pkg.brain.ridge import RidgeModel

AFFINE = np.array([[1.8, 0, 0, -3.6], [0, 1.8, 0, 5.4], [0, 0, 1.8, -7.2], [0, 0, 0, 1.0]])


def test_voxel_volume_places_values_and_keeps_affine():
    ijk = np.array([[0, 0, 0], [4, 3, 2], [2, 1, 0], [3, 0, 1]])
    vals = np.array([1.5, -2.0, 3.25, 7.0])
    img = voxel_volume(vals, ijk, (5, 4, 3), AFFINE)
    data = np.asarray(img.dataobj)
    assert data.shape == (5, 4, 3)
    np.testing.assert_allclose(img.affine, AFFINE)
    for (i, j, k), v in zip(ijk, vals):
        assert data[i, j, k] == v
    mask = np.zeros(data.shape, bool)
    mask[tuple(ijk.T)] = True
    assert (data[~mask] == 0).all()
    assert np.isnan(np.asarray(voxel_volume(vals, ijk, (5, 4, 3), AFFINE, fill=np.nan).dataobj)[~mask]).all()
    with pytest.raises(InputError, match="outside"):
        voxel_volume(vals, ijk + [1, 0, 0], (5, 4, 3), AFFINE)
    with pytest.raises(InputError, match="3 values for 4 voxels"):
        voxel_volume(vals[:3], ijk, (5, 4, 3), AFFINE)


@pytest.mark.parametrize("rank", [None, 5])
def test_adapter_importance_is_the_column_norm_of_the_saved_weight(tmp_path, rank):
    torch.manual_seed(0)
    model = BrainModel(BrainConfig(subjects={"subj01": 13, "subj02": 7}, width=16, n_blocks=1, pooled_dim=6,
                                   adapter_rank=rank))
    model.save_pretrained(tmp_path / "m")
    for subj, n in (("subj01", 13), (2, 7)):
        key = subj if isinstance(subj, str) else f"subj{subj:02d}"
        W = model.adapters[key].linear.weight.detach().numpy().astype(np.float64)
        assert W.shape == (rank or 16, n)
        want = np.array([np.sqrt(sum(W[r, v] ** 2 for r in range(W.shape[0]))) for v in range(n)])
        np.testing.assert_allclose(adapter_importance(tmp_path / "m", subj), want, rtol=1e-6)
    with pytest.raises(InputError, match="no adapter for subj03"):
        adapter_importance(tmp_path / "m", "subj03")


def test_pool_adapter_has_no_map_and_ridge_uses_coefficient_rows(tmp_path):
    BrainModel(BrainConfig(subjects={"subj01": None}, adapter="pool", pool_size=8, width=16, n_blocks=1,
                           pooled_dim=6)).save_pretrained(tmp_path / "pool")
    assert adapter_importance(tmp_path / "pool", "subj01") is None
    assert "pool adapter" in brain_map_entry(tmp_path / "pool", "subj01", tmp_path / "absent.h5")["note"]

    rng = np.random.default_rng(1)
    coef = {"pooled": rng.normal(size=(7, 6)).astype(np.float32), "tokens": rng.normal(size=(7, 4)).astype(np.float32)}
    RidgeModel("subj02", 7, {"pooled": (6,), "tokens": (2, 2)}, coef,
               {"pooled": np.zeros(6, np.float32), "tokens": np.zeros(4, np.float32)}).save_pretrained(tmp_path / "r")
    both = np.sqrt((coef["pooled"].astype(float) ** 2).sum(1) + (coef["tokens"].astype(float) ** 2).sum(1))
    np.testing.assert_allclose(adapter_importance(tmp_path / "r", "subj02"), both, rtol=1e-6)
    np.testing.assert_allclose(adapter_importance(tmp_path / "r", 2, head="pooled"),
                               np.linalg.norm(coef["pooled"].astype(float), axis=1), rtol=1e-6)
    with pytest.raises(InputError, match="for subj02, not subj01"):
        adapter_importance(tmp_path / "r", "subj01")

    # brain_map_entry joins the weights to the prep file's geometry, and checks the voxel count
    ijk = np.argwhere(np.ones((5, 4, 3), bool))[::9][:7]
    with h5py.File(tmp_path / "subj02.h5", "w") as f:
        f["voxel_ijk"] = ijk
        f.attrs["affine"] = AFFINE
        f.attrs["volume_shape"] = np.array([5, 4, 3])
    e = brain_map_entry(tmp_path / "r", "subj02", tmp_path / "subj02.h5")
    np.testing.assert_array_equal(e["voxel_ijk"], ijk)
    np.testing.assert_allclose(e["affine"], AFFINE)
    with h5py.File(tmp_path / "subj02.h5", "a") as f:
        del f["voxel_ijk"]
        f["voxel_ijk"] = ijk[:6]
    with pytest.raises(InputError, match="7 voxel weights"):
        brain_map_entry(tmp_path / "r", "subj02", tmp_path / "subj02.h5")
