"""Top-k retrieval among random candidates: the field's protocol (MindEye, MindEye2).

For each of ``n_draws`` draws, ``n_candidates`` test items are chosen at random (without
replacement; all of them when there are fewer); within the draw, each brain embedding is matched
to the image embedding of highest cosine similarity (brain→image), and each image embedding to
the brain embedding of highest similarity (image→brain). Top-1 accuracy is averaged over the
items of a draw and then over the draws. Embeddings are flattened (tokens (T, W) → T·W) and
L2-normalised here. Ties count as misses unless the true item comes first (``argmax``).

MindEye's code (MedARC-AI/MindEyeV2 ``final_evaluations.ipynb``) names them the other way round
from what the words suggest: its ``fwd_sim = batchwise_cosine_similarity(brain, clip)`` is
``((brain @ clip.T) / norms).T``, whose rows are the images, and ``topk`` takes each row's best
column, so its "fwd" retrieval, which MindEye2 reports as "Image retrieval", is image→brain here
(``image_to_brain``); its "bwd" ("Brain retrieval") is brain→image (``brain_to_image``). The
report puts each published column beside the figure computed the same way.
"""

from __future__ import annotations

import numpy as np

from ..decode import cosine_similarity

__all__ = ["retrieval"]


def retrieval(brain, image, *, n_candidates: int = 300, n_draws: int = 30, seed: int = 0,
              k: int = 1, similarity: np.ndarray | None = None, loglik: bool = False,
              per_item: bool = False) -> dict:
    """``{"brain_to_image": top-k, "image_to_brain": top-k, "n_candidates", "n_draws", "n"}``.

    Row ``i`` of ``brain`` and of ``image`` belong to the same test image. ``similarity`` may be
    given instead (``(n, n)``, higher = more similar, rows = brain, columns = images), e.g. a
    log-likelihood matrix (the oracle). With ``loglik``, image→brain uses the log posterior within
    each draw (each row normalised over the draw's candidates), the Bayes choice of a brain sample
    for an image.
    """
    sim = cosine_similarity(brain, image) if similarity is None else np.asarray(similarity, np.float64)
    n = sim.shape[0]
    if sim.shape != (n, n) or n == 0:
        raise ValueError(f"expected matching non-empty brain and image rows, got similarity {sim.shape}")
    m = min(int(n_candidates), n)
    rng = np.random.default_rng(seed)
    b2i, i2b = [], []
    seen = np.zeros(n)
    hits = {"b2i": np.zeros(n), "i2b": np.zeros(n)}
    for _ in range(int(n_draws)):
        idx = np.sort(rng.choice(n, m, replace=False))
        s = sim[np.ix_(idx, idx)]
        diag = np.diag(s)
        # rank of the true item: number of candidates strictly more similar (+ earlier ties)
        h = _hits(s, diag, k)
        b2i.append(np.mean(h))
        hits["b2i"][idx] += h
        if loglik:
            mx = s.max(axis=1, keepdims=True)
            s = s - (mx + np.log(np.exp(s - mx).sum(axis=1, keepdims=True)))
            diag = np.diag(s)
        h = _hits(s.T, diag, k)
        i2b.append(np.mean(h))
        hits["i2b"][idx] += h
        seen[idx] += 1
    out = {"brain_to_image": float(np.mean(b2i)), "image_to_brain": float(np.mean(i2b)),
           "n_candidates": m, "n_draws": int(n_draws), "n": n, "k": int(k)}
    if per_item:
        with np.errstate(invalid="ignore", divide="ignore"):
            out["brain_to_image_items"] = np.where(seen > 0, hits["b2i"] / seen, np.nan)
            out["image_to_brain_items"] = np.where(seen > 0, hits["i2b"] / seen, np.nan)
    return out


def _hits(s, diag, k):
    if k == 1:
        return np.argmax(s, axis=1) == np.arange(len(s))
    return (s > diag[:, None]).sum(axis=1) < k
