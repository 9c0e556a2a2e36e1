"""Ridge (leave-one-image-out CV), and what every method is scored with: the retrieval protocol and
the nsd-sim oracle (tiny hand-made truth: 11 voxels, 3 sessions, 9 images)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from braindecode_pkg.brain import ridge
from braindecode_pkg.errors import InputError
from braindecode_pkg.evaluate.oracle import oracle_loglik, oracle_retrieval
from braindecode_pkg.evaluate.retrieval import retrieval


def _explicit_logo(X, Y, groups, alpha):
    """Leave-one-group-out squared error per column, fitting ridge with intercept each time."""
    err = np.zeros(Y.shape[1])
    for g in np.unique(groups):
        te = groups == g
        xm, ym = X[~te].mean(0), Y[~te].mean(0)
        Xc, Yc = X[~te] - xm, Y[~te] - ym
        W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
        err += (((X[te] - xm) @ W + ym - Y[te]) ** 2).sum(0)
    return err / len(X)


@pytest.mark.parametrize("n,p", [(41, 13), (17, 29)])  # primal (n > p) and dual (n < p) paths
def test_ridge_cv_is_exact_leave_one_image_out(n, p):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, p))
    Y = X @ rng.normal(size=(p, 5)) + rng.normal(size=(n, 5))
    groups = rng.integers(0, n // 2, n)  # repeats of an image share a group
    alphas = [0.3, 3.0, 30.0]
    r = ridge.ridge_cv(X, Y, groups=groups, alphas=alphas)
    for a, got in zip(alphas, r["cv_mse"]):
        np.testing.assert_allclose(got, _explicit_logo(X, Y, groups, a).mean(), rtol=1e-9)
    best = alphas[int(np.argmin([_explicit_logo(X, Y, groups, a).mean() for a in alphas]))]
    assert r["alpha"] == best
    # the final fit is ridge with intercept at the chosen penalty
    xm, ym = X.mean(0), Y.mean(0)
    W = np.linalg.solve((X - xm).T @ (X - xm) + best * np.eye(p), (X - xm).T @ (Y - ym))
    np.testing.assert_allclose(r["coef"], W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r["intercept"], ym - xm @ W, rtol=1e-4, atol=1e-5)


def test_ridge_recovers_signal_and_picks_a_penalty_against_noise():
    rng = np.random.default_rng(2)
    W = rng.normal(size=(19, 4))
    X = rng.normal(size=(300, 19))
    r = ridge.ridge_cv(X, X @ W + 0.01 * rng.normal(size=(300, 4)), alphas=np.logspace(-3, 3, 7))
    np.testing.assert_allclose(r["coef"], W, atol=0.01)
    r = ridge.ridge_cv(X, rng.normal(size=(300, 4)), alphas=np.logspace(-3, 3, 7))
    assert r["alpha"] == 1e3  # pure noise: the strongest penalty
    with pytest.raises(InputError):
        ridge.ridge_cv(X, X[:10])


def test_ridge_regime_save_load_predict(tmp_path):
    from tests.unit.brain.test_train import write_toy

    toy = write_toy(tmp_path / "toy")
    m = ridge.fit_ridge_regime(toy["prep"][2], 2, toy["embed"], tmp_path / "r", sessions="first:2")
    assert set(m.heads) == {"pooled", "tokens"} and m.n_voxels == 23
    doc = json.loads((tmp_path / "r" / "config.json").read_text())
    assert doc["kind"] == ridge.MODEL_KIND and doc["info"]["cv"] == "leave-one-image-out"
    m2 = ridge.RidgeModel.from_pretrained(tmp_path / "r")
    x = np.random.default_rng(0).normal(size=(4, 23)).astype(np.float32)
    for h in m.heads:
        np.testing.assert_array_equal(m.predict(x)[h], m2.predict(x)[h])
    assert m.predict(x)["tokens"].shape == (4, 5, 7)
    with pytest.raises(InputError, match=r"expects \(n, 23\) voxels"):
        m.predict(np.zeros((2, 37)))


# ---------------------------------------------------------------------------------- retrieval
def test_retrieval_protocol():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(40, 6))
    r = retrieval(img + 1e-3 * rng.normal(size=img.shape), img, n_candidates=30, n_draws=5)
    assert r["brain_to_image"] == 1.0 and r["image_to_brain"] == 1.0 and r["n_candidates"] == 30
    r = retrieval(rng.normal(size=(400, 6)), rng.normal(size=(400, 6)), n_candidates=300, n_draws=30)
    assert 0 < r["brain_to_image"] < 0.02  # chance is 1/300
    tok = rng.normal(size=(12, 3, 4))  # tokens are flattened; fewer items than candidates: all of them
    r = retrieval(tok, tok, n_candidates=300)
    assert r["n_candidates"] == 12 and r["brain_to_image"] == 1.0
    # the two directions differ: brain 2 sits nearer image 1 than image 2, yet is image 2's nearest brain
    e = np.eye(3)
    b = np.stack([e[0], e[0] + 0.1 * e[1], e[2]])
    r = retrieval(b, e, n_draws=1)
    assert r["brain_to_image"] == pytest.approx(2 / 3) and r["image_to_brain"] == 1.0
    assert retrieval(b, e, n_draws=1, k=2)["brain_to_image"] == 1.0


# ---------------------------------------------------------------------------------- oracle
def _write_truth(tmp_path, snr: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    V, S, n_img = 11, 3, 9
    ids = np.array([5, 8, 13, 21, 34, 55, 89, 144, 233])
    mu = rng.normal(size=(n_img, V)) * snr
    gain = np.exp(rng.normal(0, 0.1, (S, V)))
    offset = rng.normal(0, 1, (S, V))
    L = rng.normal(size=(V, V)) * 0.3
    cov = np.eye(V) + L @ L.T
    trials = np.repeat(np.arange(n_img), 3)
    sess = np.tile(np.arange(1, S + 1), n_img)
    noise = rng.multivariate_normal(np.zeros(V), cov, size=len(trials))
    betas = gain[sess - 1] * mu[trials] + offset[sess - 1] + noise
    ijk = np.stack([np.arange(V), np.zeros(V, int), np.zeros(V, int)], 1)
    with h5py.File(tmp_path / "truth.h5", "w") as f:
        f["nsd_id"], f["mu"], f["voxel_ijk"] = ids, mu.astype(np.float32), ijk
        f["session_gain"], f["session_offset"], f["noise_cov"] = gain, offset, cov.astype(np.float32)
    with h5py.File(tmp_path / "psc.h5", "w") as f:
        f["betas"] = betas.astype(np.float32)
        f["nsd_id"], f["session"] = ids[trials], sess
        f["is_test"] = np.ones(len(trials), bool)
        f["repeat"] = np.tile(np.arange(3), n_img)
        f["voxel_ijk"] = ijk
        f.attrs["subject"], f.attrs["normalisation"] = 1, "none"
    return dict(ids=ids, mu=mu, gain=gain, offset=offset, cov=cov, betas=betas, trials=trials, sess=sess)


def test_oracle_loglik_is_the_gaussian_likelihood(tmp_path):
    from scipy.stats import multivariate_normal

    t = _write_truth(tmp_path, snr=0.5)
    ids, L = oracle_loglik(tmp_path / "truth.h5", tmp_path / "psc.h5")
    assert np.array_equal(ids, t["ids"])
    ref = np.zeros_like(L)
    for i in range(len(ids)):
        for j in range(len(ids)):
            rows = np.flatnonzero(t["trials"] == i)
            ref[i, j] = sum(multivariate_normal.logpdf(t["betas"][r], t["gain"][t["sess"][r] - 1] * t["mu"][j]
                                                       + t["offset"][t["sess"][r] - 1], t["cov"]) for r in rows)
    # equal up to a constant per row (terms that do not depend on the candidate)
    np.testing.assert_allclose(L - L[:, :1], ref - ref[:, :1], rtol=1e-4, atol=1e-3)


def test_oracle_retrieval_limits(tmp_path):
    _write_truth(tmp_path, snr=20.0)
    r = oracle_retrieval(tmp_path / "truth.h5", tmp_path / "psc.h5", n_candidates=300, n_draws=3)
    assert r["brain_to_image"] == 1.0 and r["image_to_brain"] == 1.0 and r["n_candidates"] == 9
    _write_truth(tmp_path, snr=0.0)
    r = oracle_retrieval(tmp_path / "truth.h5", tmp_path / "psc.h5", n_draws=3)
    assert r["brain_to_image"] < 0.5  # no signal: chance-level (1/9) give or take ties
    with h5py.File(tmp_path / "psc.h5", "a") as f:
        f.attrs["normalisation"] = "session"
    with pytest.raises(InputError, match="needs PSC betas"):
        oracle_retrieval(tmp_path / "truth.h5", tmp_path / "psc.h5")
