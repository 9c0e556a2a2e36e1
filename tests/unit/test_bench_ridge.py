"""benchmarks/bench_ridge.py at a tiny scale: today's method is exact leave-one-image-out ridge, and
the himalaya paths report what they chose and how long their folds took (skipped without himalaya)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.brain.test_ridge import _explicit_logo

SCALE = 0.005  # 50 images x 3 repeats, 79 voxels -> 5 columns


@pytest.fixture(autouse=True)
def one_blas_thread():
    """numpy's BLAS on one thread: its threads spin against each other on a busy 2-core machine
    (the explicit references below take 10 s instead of 0.6 s)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_ridge")


@pytest.fixture(scope="module")
def data(bench):
    return bench.make_data(SCALE)


def _ridge(X, Y, alpha):
    xm, ym = X.mean(0), Y.mean(0)
    W = np.linalg.solve((X - xm).T @ (X - xm) + alpha * np.eye(X.shape[1]), (X - xm).T @ (Y - ym))
    return W, ym - xm @ W


def test_synthetic_data_has_the_real_layout(bench, data):
    images, p, d, n_test = bench.shapes(SCALE)
    assert data["X"].shape == (3 * images, p) and data["Y"].shape == (3 * images, d)
    assert data["X"].dtype == np.float32 and data["X_test"].shape == (3 * n_test, p)
    g = data["groups"]
    assert np.all(np.bincount(g) == 3)  # 3 repeats per image, the same targets for each
    assert np.array_equal(data["Y"][g == 7][0], data["Y"][g == 7][2])
    assert bench.shapes(1.0)[:3] == (10_000, 15_724, 1024)


def test_today_is_explicit_leave_one_image_out(bench, data, one_thread):
    from braindecode_pkg.brain.ridge import DEFAULT_ALPHAS

    r = bench.measure("today", SCALE, data=data)
    X, Y = data["X"].astype(np.float64), data["Y"].astype(np.float64)
    errs = [_explicit_logo(X, Y, data["groups"], a).mean() for a in DEFAULT_ALPHAS]
    assert r["alpha"] == DEFAULT_ALPHAS[int(np.argmin(errs))]
    W, b = _ridge(X, Y, r["alpha"])
    np.testing.assert_allclose(r["pred"], data["X_test"] @ W + b, atol=1e-4)
    assert r["fit_s"] > 0 and r["peak_rss_mib"] >= r["rss_before_mib"] > 0 and r["cv"].startswith("leave-one-image")


def test_himalaya_paths_report_their_choice(bench, data, one_thread):
    pytest.importorskip("himalaya", reason="himalaya is optional (pip install -e '.[bench]')")
    from braindecode_pkg.brain.ridge import DEFAULT_ALPHAS

    X, Y, g = data["X"].astype(np.float64), data["Y"].astype(np.float64), data["groups"]
    r = bench.measure("hima-gkf5", SCALE, data=data)
    assert len(r["fold_s"]) == 5 and r["refit_s"] >= 0 and r["cv"] == "GroupKFold(5)"
    # its penalty: the best mean-over-folds error of explicit ridge fits on the same 5 folds
    folds = bench._group_kfold(g, 5)
    errs = []
    for a in DEFAULT_ALPHAS:
        e = []
        for tr, te in folds:
            W, b = _ridge(X[tr], Y[tr], a)
            e.append(((X[te] @ W + b - Y[te]) ** 2).mean())
        errs.append(np.mean(e))
    assert r["alpha"] == pytest.approx(DEFAULT_ALPHAS[int(np.argmin(errs))], rel=1e-5)
    W, b = _ridge(X, Y, r["alpha"])
    np.testing.assert_allclose(r["pred"], data["X_test"] @ W + b, atol=1e-3)  # float32 himalaya

    r = bench.measure("hima-logo", SCALE, data=data, logo_folds=2)
    assert len(r["fold_s"]) == 2 and r["alpha"] is None and r["images"] == 50
    assert r["projected_s"] == pytest.approx(r["setup_s"] + 50 * np.mean(r["fold_s"]) + r["refit_s"])
    with pytest.raises(ValueError, match="today's alpha"):
        bench.measure("hima-fixed", SCALE, data=data)
