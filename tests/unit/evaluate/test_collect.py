"""Parts → metrics.tsv: method names, per-subject and mean rows, bootstrap CIs, unavailable metrics."""

import csv
import json

import numpy as np
import pytest

from braindecode_pkg.evaluate.bootstrap import bootstrap_ci
from braindecode_pkg.evaluate.captions import corpus_bleu
from braindecode_pkg.evaluate.collect import N_BOOT, collect, method_label
from braindecode_pkg.evaluate.retrieval import retrieval
from braindecode_pkg.evaluate.score import Scores, read_part, write_part


def test_method_labels():
    assert [method_label(m) for m in ("pretrain", "ridge-all", "adapt-k2", "scratch-k1", "ridge-k4",
                                      "true_embedding", "oracle")] == \
        ["pretrained", "ridge", "adapted-k2", "scratch-k1", "ridge-k4", "true_embedding", "oracle"]


def _bleu_stats(rng, n):
    guess = rng.integers(5, 12, size=(n, 1)) - np.arange(4)
    return {"testlen": guess[:, 0].astype(float), "reflen": rng.integers(5, 12, n).astype(float),
            "guess": guess.astype(float), "correct": np.floor(guess * rng.uniform(0.2, 0.9, (n, 4)))}


def _part(tmp_path, method, subject, n, seed):
    rng = np.random.default_rng(seed)
    s = Scores(method, subject, np.arange(n) * 3 + seed)
    s.add("pixcorr", rng.uniform(0, 0.5, n))
    s.add("retrieval_brain2image_top1", rng.integers(0, 2, n), value=0.25, kind="corpus")
    stats = _bleu_stats(rng, n)
    s.add("bleu2", rng.uniform(0, 1, n), value=float(corpus_bleu(stats)[1]), kind="corpus")
    s.extra["bleu_stats"] = stats
    s.unavailable("twoway_alexnet2", "no local weights configured")
    return write_part(s, tmp_path / f"{method}-{subject}.h5"), s


def test_part_round_trip(tmp_path):
    path, s = _part(tmp_path, "adapt-k1", "subj04", 7, 1)
    r = read_part(path)
    assert (r.method, r.subject, r.nsd_id.tolist()) == ("adapt-k1", "subj04", s.nsd_id.tolist())
    np.testing.assert_array_equal(r.metrics["pixcorr"]["items"], s.metrics["pixcorr"]["items"])
    assert r.metrics["retrieval_brain2image_top1"]["value"] == 0.25
    assert r.metrics["twoway_alexnet2"] == {"unavailable": "no local weights configured"}
    np.testing.assert_array_equal(r.extra["bleu_stats"]["correct"], s.extra["bleu_stats"]["correct"])
    with pytest.raises(ValueError, match="3 item scores for 7 test images"):
        s.add("ssim", np.zeros(3))


def test_collect_rows_and_intervals(tmp_path):
    parts = [_part(tmp_path, "pretrain", "subj01", 40, 1), _part(tmp_path, "pretrain", "subj02", 30, 2),
             _part(tmp_path, "adapt-k1", "subj03", 25, 3)]
    out = tmp_path / "eval/metrics.tsv"
    collect([p for p, _ in parts], out, tmp_path / "eval/metrics.json")
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert list(rows[0]) == ["subject", "method", "metric", "value", "ci_low", "ci_high"]
    t = {(r["subject"], r["method"], r["metric"]): r for r in rows}
    s1, s2, s3 = (s for _, s in parts)
    # per subject: the mean of the items and the percentile bootstrap of that mean (seed 0)
    r = t[("subj01", "pretrained", "pixcorr")]
    items = s1.metrics["pixcorr"]["items"]
    assert float(r["value"]) == pytest.approx(items.mean(), rel=1e-5)
    lo, hi = bootstrap_ci(items, n_boot=N_BOOT, seed=0)
    assert (float(r["ci_low"]), float(r["ci_high"])) == (pytest.approx(lo, rel=1e-5), pytest.approx(hi, rel=1e-5))
    # mean row: mean of the subjects' figures; CI resamples each subject and averages
    r = t[("mean", "pretrained", "pixcorr")]
    both = [s1.metrics["pixcorr"]["items"], s2.metrics["pixcorr"]["items"]]
    assert float(r["value"]) == pytest.approx(np.mean([b.mean() for b in both]), rel=1e-5)
    assert (float(r["ci_low"]), float(r["ci_high"])) == tuple(pytest.approx(v, rel=1e-5)
                                                              for v in bootstrap_ci(both, n_boot=N_BOOT, seed=0))
    assert ("mean", "adapted-k1", "pixcorr") not in t  # a single subject has no mean row
    # retrieval: the protocol's figure, its items' interval shifted onto it
    r = t[("subj03", "adapted-k1", "retrieval_brain2image_top1")]
    it = s3.metrics["retrieval_brain2image_top1"]["items"]
    lo, hi = bootstrap_ci(it, n_boot=N_BOOT, seed=0)
    assert float(r["value"]) == 0.25
    assert float(r["ci_low"]) == pytest.approx(lo + 0.25 - it.mean(), rel=1e-5)
    # corpus BLEU-2: recomputed exactly on each resample (a hand-rolled loop over the same draws)
    r = t[("subj01", "pretrained", "bleu2")]
    stats = s1.extra["bleu_stats"]
    rng = np.random.default_rng(0)
    reps = [corpus_bleu(stats, rng.integers(0, 40, 40))[1] for _ in range(N_BOOT)]
    direct = bootstrap_ci(np.zeros(40), statistic=lambda i: corpus_bleu(stats, i)[1], n_boot=N_BOOT, seed=0)
    assert float(r["ci_low"]) == pytest.approx(direct[0], rel=1e-5)
    assert float(r["ci_high"]) == pytest.approx(direct[1], rel=1e-5)
    assert float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"])
    assert np.percentile(reps, 2.5) < float(r["value"]) < np.percentile(reps, 97.5)
    # unavailable: the word, never a number, and no interval
    r = t[("subj02", "pretrained", "twoway_alexnet2")]
    assert (r["value"], r["ci_low"], r["ci_high"]) == ("unavailable", "", "")
    doc = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert len(doc["rows"]) == len(rows) and doc["bootstrap"]["n_boot"] == N_BOOT


def _explicit_retrieval(sim, n_candidates, n_draws, seed):
    """The protocol in plain loops: per draw, the candidates chosen as retrieval documents it (the
    same generator); within it, a row's hit is its own column scoring above every other column,
    a tie counting for the earlier one. Returns the two figures and the per-item hit rates."""
    n = len(sim)
    rng = np.random.default_rng(seed)
    hits, seen, figs = np.zeros((2, n)), np.zeros(n), [[], []]
    for _ in range(n_draws):
        idx = sorted(rng.choice(n, min(n_candidates, n), replace=False))
        for d, s in enumerate((sim, sim.T)):
            draw = []
            for i in idx:
                best = idx[0]
                for j in idx[1:]:
                    if s[i, j] > s[i, best]:
                        best = j
                draw.append(float(best == i))
                hits[d, i] += best == i
            figs[d].append(np.mean(draw))
        seen[idx] += 1
    with np.errstate(invalid="ignore"):
        return np.mean(figs[0]), np.mean(figs[1]), np.where(seen > 0, hits / seen, np.nan)


def test_per_item_retrieval_matches_the_protocol():
    rng = np.random.default_rng(0)
    brain = rng.normal(size=(12, 5))
    image = brain + rng.normal(scale=1.5, size=(12, 5))
    r = retrieval(brain, image, n_candidates=300, n_draws=3, per_item=True)  # every draw holds all 12
    assert r["brain_to_image_items"].mean() == pytest.approx(r["brain_to_image"])
    assert r["image_to_brain_items"].mean() == pytest.approx(r["image_to_brain"])
    # by hand (rows brain, columns images): row 0 ties its own column with column 1 and comes
    # first (a hit), row 1 prefers column 0, row 2 ties with the earlier column 1, row 3 prefers
    # column 0; columns: 0 and 2 are their own rows' best, column 1 is row 0's, column 3 ties
    # rows 0 and 3 (the earlier wins)
    sim = np.array([[0.9, 0.9, 0.2, 0.3],
                    [0.5, 0.4, 0.1, 0.0],
                    [0.2, 0.7, 0.7, 0.1],
                    [0.3, 0.1, 0.1, 0.3]])
    r = retrieval(None, None, similarity=sim, n_candidates=4, n_draws=1, per_item=True)
    np.testing.assert_array_equal(r["brain_to_image_items"], [1, 0, 0, 0])
    np.testing.assert_array_equal(r["image_to_brain_items"], [1, 0, 1, 0])
    assert (r["brain_to_image"], r["image_to_brain"], r["n_candidates"]) == (0.25, 0.5, 4)
    # random draws of 4 of the 12: the explicit loops over the same draws
    r = retrieval(brain, image, n_candidates=4, n_draws=5, per_item=True, seed=3)
    cos = (brain / np.linalg.norm(brain, axis=1, keepdims=True)) @ (image / np.linalg.norm(image, axis=1,
                                                                                           keepdims=True)).T
    b2i, i2b, items = _explicit_retrieval(cos, 4, 5, 3)
    assert (r["brain_to_image"], r["image_to_brain"]) == (pytest.approx(b2i), pytest.approx(i2b))
    np.testing.assert_array_equal(r["brain_to_image_items"], items[0])
    np.testing.assert_array_equal(r["image_to_brain_items"], items[1])
    assert np.isnan(items[0]).any() and not np.isnan(items[0]).all()  # some items never drawn
