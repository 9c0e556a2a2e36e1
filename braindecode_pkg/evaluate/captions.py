"""Caption metrics, per caption: the COCO battery (pycocoevalcap), CLIP-S, nsd-sim attributes.

:func:`coco_metrics` is what ``pycocoevalcap.eval.COCOEvalCap`` computes, without SPICE (which
downloads Stanford CoreNLP models at its first run): the predicted and the reference captions
are tokenised by the Stanford PTB tokenizer that ships inside pycocoevalcap
(``stanford-corenlp-3.4.1.jar``, ``-preserveLines -lowerCase``, then COCO's punctuation tokens
removed; the same command as ``PTBTokenizer``, with its temporary file outside the package
folder), then scored by pycocoevalcap's ``Bleu(4)`` (``closest`` reference length), ``Meteor``
(``meteor-1.5.jar``, shipped, ``-l en -norm``), ``Rouge`` (ROUGE-L, beta 1.2) and ``Cider``
(CIDEr-D: sigma 6, clipped counts, × 10; document frequencies from the references of the
evaluated set). Java must be on ``PATH``. Each metric comes as ``(corpus value, per-caption
scores)`` exactly as pycocoevalcap gives them; corpus BLEU and METEOR are not the mean of the
per-caption scores (BLEU pools n-gram counts and lengths, METEOR pools its statistics), ROUGE-L
and CIDEr are. To bootstrap corpus BLEU, resample :func:`bleu_stats` with :func:`corpus_bleu`.

:func:`clip_s` is CLIPScore (Hessel et al. 2021, reference-free): ``w · max(cos(t, v), 0)``
with ``w = 2.5``.

:func:`attr_acc` (nsd-sim only): per caption, the fraction of the three attributes shape,
colour and count that it names correctly, as
:func:`braindecode_pkg.sim.attributes.sim_attribute_scores` judges them: with T the true
(colour, shape) objects of the scene and N those the caption names, *shape* is right when the
multiset of N's shapes equals T's, *colour* likewise for colours, *count* when ``|N| = |T|``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError

#: names of :func:`coco_metrics`, in COCO's order
COCO_METRICS: tuple[str, ...] = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider")


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found on PATH: pycocoevalcap's PTB tokenizer and METEOR need a Java runtime")
    return java


def tokenize(captions) -> list[str]:
    """COCO's tokenisation of each caption (pycocoevalcap's ``PTBTokenizer``): Stanford PTB
    tokens, lower case, COCO's punctuation tokens removed, joined by single spaces."""
    from pycocoevalcap.tokenizer import ptbtokenizer as ptb

    captions = [str(c).replace("\n", " ") for c in captions]
    if not captions:
        return []
    jar = Path(ptb.__file__).with_name(ptb.STANFORD_CORENLP_3_4_1_JAR)
    fd, tmp = tempfile.mkstemp(suffix=".txt", prefix="ptb-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write("\n".join(captions).encode())
        out = subprocess.run([_java(), "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
                              "-preserveLines", "-lowerCase", tmp], capture_output=True, check=False)
    finally:
        os.remove(tmp)
    if out.returncode != 0:
        raise RuntimeError(f"PTB tokenizer failed ({out.returncode}): {out.stderr.decode(errors='replace')[-500:]}")
    lines = out.stdout.decode().split("\n")
    if len(lines) != len(captions):
        raise RuntimeError(f"PTB tokenizer gave {len(lines)} lines for {len(captions)} captions")
    punct = set(ptb.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in lines]


def _check(preds, refs):
    preds = [str(p) for p in preds]
    refs = [[str(r) for r in rs] for rs in refs]
    if len(preds) != len(refs):
        raise InputError(f"{len(preds)} predicted captions for {len(refs)} reference sets")
    empty = [i for i, rs in enumerate(refs) if not rs]
    if empty:
        raise InputError(f"no reference captions for items {empty[:5]}")
    return preds, refs


def tokenize_refs(refs) -> list[list[str]]:
    """:func:`tokenize` of every reference caption (one Java run), kept grouped per item."""
    flat = tokenize([r for rs in refs for r in rs])
    out, a = [], 0
    for rs in refs:
        out.append(flat[a:a + len(rs)])
        a += len(rs)
    return out


def tokenize_pairs(preds, refs):
    """:func:`tokenize` of the predictions and of every reference (one Java run each)."""
    return tokenize(preds), tokenize_refs(refs)


def coco_metrics(preds, refs, *, names=None, tokenized: bool = False, meteor=None) -> dict:
    """``{name: (corpus value, (n,) per-caption scores)}`` for ``names`` (default
    :data:`COCO_METRICS`).

    ``preds``: one predicted caption per item; ``refs``: the list of reference captions of each
    item. ``tokenized``: the captions are already :func:`tokenize`\\ d. METEOR starts a Java
    process (about 10 s to load its paraphrase table); leave it out of ``names`` when not needed,
    or pass a running ``pycocoevalcap`` ``Meteor()`` as ``meteor`` to reuse it across calls.
    """
    names = COCO_METRICS if names is None else tuple(names)
    bad = [m for m in names if m not in COCO_METRICS]
    if bad:
        raise InputError(f"unknown caption metrics {bad}; known: {', '.join(COCO_METRICS)}")
    preds, refs = _check(preds, refs)
    if not preds:
        raise InputError("no captions to score")
    if not tokenized:
        preds, refs = tokenize_pairs(preds, refs)
    gts = {i: list(rs) for i, rs in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    out: dict = {}
    if any(m.startswith("bleu") for m in names):
        from pycocoevalcap.bleu.bleu import Bleu

        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        for k in range(4):
            if f"bleu{k + 1}" in names:
                out[f"bleu{k + 1}"] = (float(score[k]), np.asarray(scores[k], np.float64))
    if "meteor" in names:
        from pycocoevalcap.meteor.meteor import Meteor

        if meteor is None:
            _java()
            own = Meteor()
            try:
                score, scores = own.compute_score(gts, res)
            finally:
                del own  # ends the Java process
        else:
            score, scores = meteor.compute_score(gts, res)
        out["meteor"] = (float(score), np.asarray(scores, np.float64))
    if "rougeL" in names:
        from pycocoevalcap.rouge.rouge import Rouge

        score, scores = Rouge().compute_score(gts, res)
        out["rougeL"] = (float(score), np.asarray(scores, np.float64))
    if "cider" in names:
        from pycocoevalcap.cider.cider import Cider

        score, scores = Cider().compute_score(gts, res)
        out["cider"] = (float(score), np.asarray(scores, np.float64))
    return {m: out[m] for m in names}


def bleu_stats(preds, refs, *, tokenized: bool = False) -> dict:
    """Per-caption BLEU statistics, as pycocoevalcap's ``BleuScorer`` counts them.

    ``{"testlen": (n,), "reflen": (n,) (the closest reference length, shorter on ties),
    "guess": (n, 4), "correct": (n, 4)}`` (n-grams of the prediction, and those matched with
    clipped counts, for n = 1..4). :func:`corpus_bleu` turns them, or any resample of their
    rows, into corpus BLEU-1..4.
    """
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    preds, refs = _check(preds, refs)
    if not tokenized:
        preds, refs = tokenize_pairs(preds, refs)
    n = len(preds)
    out = {"testlen": np.zeros(n), "reflen": np.zeros(n), "guess": np.zeros((n, 4)), "correct": np.zeros((n, 4))}
    for i, (p, rs) in enumerate(zip(preds, refs)):
        c = cook_test(p, cook_refs(rs))
        out["testlen"][i] = c["testlen"]
        out["reflen"][i] = min((abs(rl - c["testlen"]), rl) for rl in c["reflen"])[1]
        out["guess"][i] = c["guess"]
        out["correct"][i] = c["correct"]
    return out


def corpus_bleu(stats: dict, idx=None) -> np.ndarray:
    """Corpus BLEU-1..4 of the rows ``idx`` of :func:`bleu_stats` (all rows by default).

    ``idx``: ``(m,)`` row indices (repeats allowed) → ``(4,)``, or ``(b, m)`` → ``(b, 4)``, one
    corpus per row of ``idx`` (a vectorised bootstrap). pycocoevalcap's formula: the geometric
    mean of pooled clipped precisions (``+1e-15`` over ``+1e-9``) times the brevity penalty of
    pooled lengths.
    """
    tiny, small = 1e-15, 1e-9
    idx = np.arange(len(stats["testlen"])) if idx is None else np.asarray(idx)
    correct = stats["correct"][idx].sum(-2)  # (..., 4)
    guess = stats["guess"][idx].sum(-2)
    testlen = stats["testlen"][idx].sum(-1)
    reflen = stats["reflen"][idx].sum(-1)
    logp = np.cumsum(np.log((correct + tiny) / (guess + small)), axis=-1)
    bleu = np.exp(logp / np.arange(1, 5))
    ratio = (testlen + tiny) / (reflen + small)
    bp = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, tiny)), 1.0)
    return bleu * np.asarray(bp)[..., None]


def clip_s(text_embeds, image_embeds, w: float = 2.5) -> np.ndarray:
    """CLIPScore of each caption with its image, ``(n,)``: ``w · max(cos(text_i, image_i), 0)``."""
    t = np.asarray(text_embeds, np.float64)
    v = np.asarray(image_embeds, np.float64)
    if t.ndim != 2 or t.shape != v.shape:
        raise ValueError(f"text embeddings {t.shape} and image embeddings {v.shape}: expected equal (n, d)")
    nt, nv = np.linalg.norm(t, axis=1), np.linalg.norm(v, axis=1)
    zero = np.flatnonzero((nt == 0) | (nv == 0))
    if zero.size:
        raise ValueError(f"zero embeddings at rows {zero[:5].tolist()}: cosine undefined")
    cos = np.einsum("ij,ij->i", t, v) / (nt * nv)
    return w * np.maximum(cos, 0.0)


def attr_acc(captions, attrs: dict) -> np.ndarray:
    """nsd-sim: the fraction of {shape, colour, count} each caption names correctly, ``(n,)``
    in {0, 1/3, 2/3, 1} (module docstring). ``attrs``: the scene table rows of the captions'
    images (:func:`read_sim_attributes`)."""
    from ..sim.attributes import sim_attribute_scores

    rows = sim_attribute_scores(list(captions), attrs, per_image=True)["rows"]
    return (rows["shape"].astype(np.float64) + rows["colour"] + rows["count"]) / 3.0


def read_sim_attributes(truth_h5, nsd_ids) -> dict:
    """The ``attributes/*`` rows of ``nsd_ids`` (in that order) from nsd-sim's
    ``sim_truth/subjAA.h5`` (whose ``nsd_id`` is sorted). :class:`InputError` when the file, its
    attribute table or any of the ids is missing."""
    import h5py

    from ..brain.data import find_rows

    path = Path(truth_h5)
    if not path.is_file():
        raise InputError(f"{path}: nsd-sim truth file not found")
    ids = np.asarray(nsd_ids, np.int64).reshape(-1)
    with h5py.File(path, "r") as f:
        if "attributes" not in f or "nsd_id" not in f:
            raise InputError(f"{path}: no nsd_id / attributes table (not an nsd-sim truth file?)")
        rows = find_rows(f["nsd_id"][:], ids, path, "attributes")
        g = f["attributes"]
        return {k: g[k][:][rows] for k in g if isinstance(g[k], h5py.Dataset)}
