"""The nsd-sim oracle: Bayes-optimal image identification from the measured betas, given the truth.

nsd-sim draws a trial's PSC beta in session ``s`` as ``x = gain[s] ⊙ mu[image] + offset[s] + e``
with ``e ~ N(0, Σ)`` independent across trials (``sim_truth/subjAA.h5``: ``mu``,
``session_gain``, ``session_offset``, ``noise_cov``). Knowing all of that, the best any decoder
can do to tell which of the candidate images produced a test image's trials (all its repeats) is
to pick the candidate of highest likelihood

    log p(x_1..x_R | j) = Σ_r −½ (x_r − g_{s_r} ⊙ mu_j − o_{s_r})ᵀ Σ⁻¹ (x_r − g_{s_r} ⊙ mu_j − o_{s_r}) + const,

(uniform prior over candidates). :func:`oracle_loglik` returns that matrix (test images ×
candidate images); :func:`oracle_retrieval` scores it with the same protocol as the decoders
(:func:`~.retrieval.retrieval`: brain→image takes the row maximum, image→brain the column maximum
of the row-normalised log posterior within each draw). The oracle is the information ceiling of
the simulated data, not a pass line: decoders are reported as a fraction of it.

Inputs are PSC betas — the preprocess stage run with ``normalisation="none"`` (z-scoring is an
invertible per-session affine map estimated from the data, so it carries the same information,
but the truth is in PSC units).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .retrieval import retrieval

__all__ = ["oracle_loglik", "oracle_retrieval"]


def oracle_loglik(truth, psc, *, split: str = "test", dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """``(nsd_ids, L)``: ``L[i, j]`` = log-likelihood (up to a per-row constant) of all trials of
    test image ``i`` under candidate image ``j`` (the same sorted test images)."""
    import h5py

    from ..brain.data import load_subject, test_groups

    truth = Path(truth)
    if not truth.is_file():
        raise InputError(f"{truth}: nsd-sim truth file not found")
    tr = load_subject(psc, split=split)
    with h5py.File(psc, "r") as f:
        norm = f.attrs.get("normalisation", "none")
    if norm != "none":
        raise InputError(f"{psc}: betas normalised as {norm!r}; the oracle needs PSC betas "
                         f"(preprocess --normalisation none)")
    with h5py.File(truth, "r") as f:
        if "noise_cov" not in f:
            raise InputError(f"{truth}: no noise_cov (written for presets up to noise_cov_max_voxels voxels)")
        ids_t = f["nsd_id"][:].astype(np.int64)
        ijk_t = f["voxel_ijk"][:]
        gain = f["session_gain"][:].astype(dtype)
        offset = f["session_offset"][:].astype(dtype)
        cov = f["noise_cov"][:].astype(dtype)
        ids, groups = test_groups(tr)
        rows = np.searchsorted(ids_t, ids)
        if (rows >= len(ids_t)).any() or (ids_t[np.minimum(rows, len(ids_t) - 1)] != ids).any():
            raise InputError(f"{truth}: mu lacks some test images of {psc}")
        mu = f["mu"][np.sort(rows)].astype(dtype)  # rows are sorted: ids sorted, ids_t sorted
    with h5py.File(psc, "r") as f:
        ijk = f["voxel_ijk"][:]
    if ijk.shape != ijk_t.shape or (ijk != ijk_t).any():
        raise InputError(f"{psc}: voxels differ from the truth's voxel_ijk (another ROI?)")
    chol = np.linalg.cholesky(cov)

    def prec(m):  # Σ⁻¹ m for m (V, k)
        from scipy.linalg import cho_solve

        return cho_solve((chol, True), m)

    x = tr.betas.astype(dtype) - offset[tr.session - 1]
    y = prec(x.T).T * gain[tr.session - 1]  # (n_trials, V): g_s ⊙ Σ⁻¹ (x − o_s)
    n = len(ids)
    cross = np.zeros((n, n), dtype)
    counts = np.zeros((n, gain.shape[0]), dtype)
    for i, g in enumerate(groups):
        cross[i] = y[g].sum(0) @ mu.T
        np.add.at(counts[i], tr.session[g] - 1, 1)
    quad = np.zeros((gain.shape[0], n), dtype)
    for s in np.flatnonzero(counts.sum(0)):
        m = (gain[s][:, None] * mu.T)  # (V, n)
        quad[s] = np.einsum("vn,vn->n", m, prec(m))
    return ids, cross - 0.5 * counts @ quad


def oracle_retrieval(truth, psc, *, n_candidates: int = 300, n_draws: int = 30, seed: int = 0) -> dict:
    """The oracle's top-1 retrieval (see the module docstring) for one subject."""
    ids, L = oracle_loglik(truth, psc)
    out = retrieval(None, None, similarity=L, n_candidates=n_candidates, n_draws=n_draws, seed=seed,
                    loglik=True)
    out["nsd_id"] = ids
    return out
