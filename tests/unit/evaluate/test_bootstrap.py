"""Bootstrap intervals: hand-rolled loops with the same generator, subjects, callables, nan."""

from __future__ import annotations

import time

import numpy as np
import pytest

from braindecode_pkg.evaluate.bootstrap import bootstrap_ci

ITEMS = np.array([0.1, 0.9, 0.4, 0.4, 0.7, 0.2, 1.0])  # 7 items


def _loop(arrays, n_boot, seed, alpha=0.05):
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, a.size, size=(n_boot, a.size)) for a in arrays]
    reps = [np.mean([a[i[b]].mean() for a, i in zip(arrays, idx)]) for b in range(n_boot)]
    return tuple(np.quantile(reps, [alpha / 2, 1 - alpha / 2]))


def test_constant_items():
    assert bootstrap_ci(np.full(5, 0.25)) == (0.25, 0.25)
    assert bootstrap_ci([np.full(5, 2.0), np.full(3, 4.0)]) == (3.0, 3.0)


def test_matches_hand_rolled_loop_and_brackets_the_mean():
    lo, hi = bootstrap_ci(ITEMS, n_boot=500, seed=3)
    assert (lo, hi) == pytest.approx(_loop([ITEMS], 500, 3), abs=1e-12)
    assert lo < ITEMS.mean() < hi
    assert bootstrap_ci(ITEMS, n_boot=500, seed=3) == (lo, hi)  # deterministic
    assert bootstrap_ci(ITEMS, n_boot=500, seed=4) != (lo, hi)
    lo90, hi90 = bootstrap_ci(ITEMS, n_boot=500, seed=3, alpha=0.1)
    assert lo <= lo90 < hi90 <= hi
    assert bootstrap_ci(list(ITEMS), n_boot=500, seed=3) == (lo, hi)  # a list of floats is one array


def test_subjects_resampled_independently():
    a = np.array([0.0, 1.0, 0.5, 0.25, 0.75, 1.0, 0.0])  # 7 items
    b = np.array([2.0, 3.0, 2.5, 2.0, 3.5, 3.0, 2.5, 3.0, 2.0, 2.5, 3.0])  # 11 items
    lo, hi = bootstrap_ci([a, b], n_boot=400, seed=5)
    assert (lo, hi) == pytest.approx(_loop([a, b], 400, 5), abs=1e-12)
    assert lo < (a.mean() + b.mean()) / 2 < hi


def test_callable_statistics():
    med = bootstrap_ci(ITEMS, statistic=lambda idx: np.median(ITEMS[idx]), n_boot=300, seed=1)
    vec = bootstrap_ci(ITEMS, statistic=lambda idx: np.median(ITEMS[idx], axis=1), n_boot=300, seed=1,
                       vectorized=True)
    assert med == vec
    rng = np.random.default_rng(1)
    reps = [np.median(ITEMS[i]) for i in rng.integers(0, 7, size=(300, 7))]
    assert med == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    # the mean as a callable is the default
    assert bootstrap_ci(ITEMS, statistic=lambda idx: ITEMS[idx].mean(), n_boot=300, seed=1) == \
        pytest.approx(bootstrap_ci(ITEMS, n_boot=300, seed=1), abs=1e-12)
    # subjects: the callable gets one index array per subject and combines them itself
    a, b = ITEMS, ITEMS[:5] * 2
    got = bootstrap_ci([a, b], statistic=lambda ix: (a[ix[0]].mean() + b[ix[1]].mean()) / 2, n_boot=300, seed=2)
    assert got == pytest.approx(bootstrap_ci([a, b], n_boot=300, seed=2), abs=1e-12)
    with pytest.raises(ValueError, match="returned 2 values for 300"):
        bootstrap_ci(ITEMS, statistic=lambda idx: np.zeros(2), n_boot=300, vectorized=True)


def test_corpus_bleu_bootstrap():
    """The interval of corpus BLEU-1 is that of pycocoevalcap's own corpus BLEU on each resampled
    corpus (the same draws, a plain loop)."""
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu

    from braindecode_pkg.evaluate import captions as cap

    preds = ["a red circle on top", "a green star", "two stars"]
    refs = [["a blue circle on the left", "a red square"], ["a green star"], ["two white stars"]]
    stats = cap.bleu_stats(preds, refs, tokenized=True)
    lo, hi = bootstrap_ci(np.zeros(3), statistic=lambda idx: cap.corpus_bleu(stats, idx)[:, 0], vectorized=True,
                          n_boot=200)
    rng = np.random.default_rng(0)  # bootstrap_ci's default seed
    reps = []
    for row in rng.integers(0, 3, size=(200, 3)):
        score, _ = Bleu(4).compute_score({j: refs[i] for j, i in enumerate(row)},
                                         {j: [preds[i]] for j, i in enumerate(row)}, verbose=0)
        reps.append(score[0])
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-9)
    assert lo < hi  # the resamples differ: a real interval


def test_nan():
    with pytest.raises(ValueError, match="1 nan items of 7"):
        bootstrap_ci(np.r_[ITEMS[:6], np.nan])
    with pytest.raises(ValueError, match="1 nan items of 10"):
        bootstrap_ci([ITEMS, np.array([1.0, np.nan, 2.0])])
    lo, hi = bootstrap_ci(np.full(4, np.nan))
    assert np.isnan(lo) and np.isnan(hi)


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty 1-d"):
        bootstrap_ci(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci(np.zeros(0))
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(ITEMS, alpha=1.5)


def test_fast_enough():
    x = np.random.default_rng(0).random(1000)
    t = time.perf_counter()
    lo, hi = bootstrap_ci(x, n_boot=1000)
    assert time.perf_counter() - t < 0.5  # milliseconds in practice; generous on a shared machine
    assert lo < x.mean() < hi
