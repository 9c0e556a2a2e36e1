"""Caption metrics: pycocoevalcap on hand-computed cases, corpus BLEU from per-caption counts,
CLIP-S, nsd-sim attribute accuracy and its truth-file reader.

The PTB tokenizer and METEOR run Java (skipped without it); METEOR, about 10 s to start, runs once.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from braindecode_pkg.errors import InputError
from braindecode_pkg.evaluate import captions as cap

java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java (PTB tokenizer, METEOR)")
pytest.importorskip("pycocoevalcap")

# item 0 by hand (tokens after COCO's tokenisation: lower case, no punctuation):
#   pred  a red circle on top                  (5 tokens)
#   refs  a blue circle on the left  (6)  /  a red square  (3)
#   BLEU-1: a, red, circle, on matched of 5 → 4/5; closest reference length 6 → BP e^(1 - 6/5)
#   ROUGE-L: LCS 3 (a circle on) with ref 1, 2 (a red) with ref 2; P = max(3/5, 2/5),
#            R = max(3/6, 2/3); F = (1 + 1.2²) P R / (R + 1.2² P)
# item 1: pred = its only reference, "a green star" (3 tokens)
# corpus BLEU-1 pools the counts: 7 matched of 8, lengths 8 against 6 + 3 → 7/8 e^(1 - 9/8)
PREDS = ["A red circle on top.", "a green star"]
REFS = [["A blue circle, on the left.", "a red square"], ["A green star."]]
BLEU1_0 = 0.8 * math.exp(1 - 6 / 5)
BLEU1_CORPUS = 7 / 8 * math.exp(1 - 9 / 8)
P, R = 3 / 5, 2 / 3
ROUGE_0 = (1 + 1.44) * P * R / (R + 1.44 * P)


def _meteor(h, r, matched, chunks):
    """METEOR 1.5 (``-l en -norm``: alpha .85, beta .2, gamma .6, delta .75; exact matches only
    here) from (content, function) word counts of the hypothesis ``h`` and reference ``r`` and of
    the matched words, and the number of chunks: delta weighs content against function words in
    P and R, Fmean = PR / (alpha P + (1 - alpha) R), penalty gamma (chunks / matches)^beta."""
    d, a, g, b = 0.75, 0.85, 0.6, 0.2
    m = d * matched[0] + (1 - d) * matched[1]
    p, rc = m / (d * h[0] + (1 - d) * h[1]), m / (d * r[0] + (1 - d) * r[1])
    return (1 - g * (chunks / sum(matched)) ** b) * p * rc / (a * p + (1 - a) * rc)


# METEOR by hand ("a", "on", "the" are function words): item 0 against "a red square" matches
# a, red in one chunk (content/function: pred 3/2, ref 2/1, matched 1/1); against "a blue circle
# on the left" (ref 3/3, matched circle | a, on in 2 chunks) it scores less, and the best
# reference counts. Item 1 matches all in order: 1, and a whole match counts no chunk in the
# corpus statistics, which pool the counts of each item's best reference.
METEOR_0 = _meteor((3, 2), (2, 1), (1, 1), 1)
METEOR_0_OTHER = _meteor((3, 2), (3, 3), (1, 2), 2)
METEOR_CORPUS = _meteor((3 + 2, 2 + 1), (2 + 2, 1 + 1), (1 + 2, 1 + 1), 1 + 0)
# CIDEr-D by hand: idf = log(2 items) - log(df); "a" is in both items' references (weight 0),
# every other n-gram weighs w = log 2 (so w cancels). Item 1: cosine 1 for n = 1..3, no 4-gram
# (0), no length gap: 10 * 3/4. Item 0 against ref 1: unigrams circle, on of pred |2w| and ref
# |sqrt(5) w|: 1/sqrt(5); bigram "circle on": 1/(2 sqrt(5)); none longer; bigram counts 4 vs 5:
# exp(-1/72). Against ref 2: red and "a red", each 1/(2 sqrt(2)); bigram counts 4 vs 2:
# exp(-4/72). Mean over n = 1..4 and the 2 references, times 10.
CIDER_1 = 7.5
CIDER_0 = 10 / 8 * ((1 / math.sqrt(5) + 1 / (2 * math.sqrt(5))) * math.exp(-1 / 72)
                    + 2 / (2 * math.sqrt(2)) * math.exp(-4 / 72))


@java
def test_tokenize_is_coco_ptb_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    caps = ["A Red Circle, on the LEFT.", "", "It's a dog's toy -- isn't it?", "two  stars;\nnight"]
    ref = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(caps)})
    got = cap.tokenize(caps)
    assert got == [ref[i][0] for i in range(len(caps))]
    assert got[0] == "a red circle on the left" and got[1] == ""


@java
def test_coco_metrics_hand_values_and_meteor():
    out = cap.coco_metrics(PREDS, REFS)
    assert list(out) == list(cap.COCO_METRICS)
    for name, (corpus, per) in out.items():
        assert isinstance(corpus, float) and per.shape == (2,), name
    b1, b1_items = out["bleu1"]
    assert b1 == pytest.approx(BLEU1_CORPUS, abs=1e-8)
    np.testing.assert_allclose(b1_items, [BLEU1_0, 1.0], atol=1e-8)
    rl, rl_items = out["rougeL"]
    np.testing.assert_allclose(rl_items, [ROUGE_0, 1.0], atol=1e-12)
    assert rl == pytest.approx((ROUGE_0 + 1) / 2)
    m, m_items = out["meteor"]
    assert METEOR_0_OTHER < METEOR_0
    np.testing.assert_allclose(m_items, [METEOR_0, 1.0], atol=1e-9)
    assert m == pytest.approx(METEOR_CORPUS, abs=1e-9)
    c, c_items = out["cider"]
    np.testing.assert_allclose(c_items, [CIDER_0, CIDER_1], atol=1e-9)
    assert c == pytest.approx((CIDER_0 + CIDER_1) / 2, abs=1e-9)


@java
def test_identical_captions_score_one():
    # at least 4 tokens each, or sentence BLEU-4 has no 4-gram to match
    refs = [["a red circle on the left"], ["two blue stars at night"], ["a big yellow ring"]]
    out = cap.coco_metrics([r[0] for r in refs], refs, names=("bleu1", "bleu4", "rougeL"))
    assert list(out) == ["bleu1", "bleu4", "rougeL"]
    for name, (corpus, per) in out.items():
        assert corpus == pytest.approx(1.0, abs=1e-6), name
        np.testing.assert_allclose(per, 1.0, atol=1e-6)


def test_corpus_bleu_from_stats_matches_pycocoevalcap():
    # already tokenised, so no Java needed
    preds = ["a red circle on top", "a green star", "two stars", "a blue ring near a blue ring"]
    refs = [["a blue circle on the left", "a red square"], ["a green star"], ["two white stars at night"],
            ["a blue ring", "one ring that is blue"]]
    stats = cap.bleu_stats(preds, refs, tokenized=True)
    assert stats["guess"].shape == (4, 4)
    out = cap.coco_metrics(preds, refs, names=("bleu1", "bleu2", "bleu3", "bleu4"), tokenized=True)
    np.testing.assert_allclose(cap.corpus_bleu(stats), [out[f"bleu{k}"][0] for k in range(1, 5)], rtol=1e-12)
    np.testing.assert_allclose(cap.corpus_bleu(stats, [0, 1])[0], BLEU1_CORPUS, atol=1e-8)
    # a resample is the corpus of the resampled captions
    idx = np.array([[3, 3, 0, 2], [1, 0, 0, 1]])
    got = cap.corpus_bleu(stats, idx)
    assert got.shape == (2, 4)
    for row, g in zip(idx, got):
        sub = cap.coco_metrics([preds[i] for i in row], [refs[i] for i in row],
                               names=("bleu1", "bleu2", "bleu3", "bleu4"), tokenized=True)
        np.testing.assert_allclose(g, [sub[f"bleu{k}"][0] for k in range(1, 5)], rtol=1e-12)


def test_coco_metrics_input_errors():
    with pytest.raises(InputError, match="2 predicted captions for 1 reference sets"):
        cap.coco_metrics(["a", "b"], [["a"]], tokenized=True)
    with pytest.raises(InputError, match="unknown caption metrics.*spice"):
        cap.coco_metrics(["a"], [["a"]], names=("spice",))
    with pytest.raises(InputError, match="no reference captions for items"):
        cap.coco_metrics(["a"], [[]], tokenized=True)


def test_clip_s_hand_values():
    t = np.array([[3.0, 4.0], [1.0, 0.0], [1.0, 1.0]])
    v = np.array([[4.0, 3.0], [-2.0, 0.0], [5.0, 0.0]])
    # cos: 24/25, -1 (clipped to 0), 1/sqrt(2)
    np.testing.assert_allclose(cap.clip_s(t, v), [2.5 * 0.96, 0.0, 2.5 / math.sqrt(2)], atol=1e-12)
    np.testing.assert_allclose(cap.clip_s(t, v, w=1.0), [0.96, 0.0, 1 / math.sqrt(2)], atol=1e-12)
    with pytest.raises(ValueError, match="zero embeddings at rows"):
        cap.clip_s(t, np.zeros_like(v))


def _attrs():
    from braindecode_pkg.sim import scenes as sc

    S, C = sc.SHAPES.index, sc.COLOURS.index
    return {  # red circle | blue square + green star | yellow circle | yellow circle
        "n_objects": np.array([1, 2, 1, 1], np.int8),
        "shape1": np.array([S("circle"), S("square"), S("circle"), S("circle")], np.int8),
        "colour1": np.array([C("red"), C("blue"), C("yellow"), C("yellow")], np.int8),
        "size1": np.array([0, 1, 2, 0], np.int8),
        "shape2": np.array([-1, S("star"), -1, -1], np.int8),
        "colour2": np.array([-1, C("green"), -1, -1], np.int8),
        "size2": np.array([-1, 2, -1, -1], np.int8),
    }


def test_attr_acc_hand_values():
    captions = ["A red circle.",  # all three right
                "a blue star and a green square",  # shapes, colours and count right (binding wrong)
                "a red circle and a blue circle",  # shapes {circle, circle}, colours, count: all wrong
                "a yellow square in the middle"]  # colour and count right, shape wrong
    np.testing.assert_allclose(cap.attr_acc(captions, _attrs()), [1.0, 1.0, 0.0, 2 / 3])


def test_read_sim_attributes(tmp_path):
    h5py = pytest.importorskip("h5py")
    attrs = _attrs()
    ids = np.array([3, 8, 20, 41])
    with h5py.File(tmp_path / "subj01.h5", "w") as f:
        f["nsd_id"] = ids
        g = f.create_group("attributes")
        for k, v in attrs.items():
            g[k] = v
        g.attrs["shapes"] = "circle,square"
    got = cap.read_sim_attributes(tmp_path / "subj01.h5", [20, 3])
    assert set(got) == set(attrs)
    for k, v in attrs.items():
        np.testing.assert_array_equal(got[k], v[[2, 0]])
    with pytest.raises(InputError, match=r"subj01.h5: no attributes for nsd id 5 \(and 1 more\)"):
        cap.read_sim_attributes(tmp_path / "subj01.h5", [3, 5, 42])
    with pytest.raises(InputError, match="subj02.h5: nsd-sim truth file not found"):
        cap.read_sim_attributes(tmp_path / "subj02.h5", [3])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["nsd_id"] = ids
    with pytest.raises(InputError, match="other.h5: no nsd_id / attributes table"):
        cap.read_sim_attributes(tmp_path / "other.h5", [3])
