"""Ridge regression per subject from voxels to CLIP: the field's linear baseline.

:func:`ridge_cv` fits ``Y ≈ X W + b`` with the penalty chosen by **leave-one-image-out**
cross-validation: the repeats of an image are left out together (otherwise a repeat of a
validation image would sit in the training fold and the CV would pick too weak a penalty). It is
exact and costs one eigendecomposition (of ``XᵀX`` or ``XXᵀ``, whichever is smaller), as the
efficient leave-one-out of ``sklearn.linear_model.RidgeCV`` does for single samples: with
``H = X (XᵀX + αI)⁻¹ Xᵀ``, the held-out residuals of a group ``g`` are
``(I − H_gg − 1/n)⁻¹ (y_g − (HY)_g)`` (``1/n``: the intercept's share of the hat matrix, X and Y
being centred on the means of all rows). One penalty per head (``alpha_per_target=False``, the default,
scored by the total squared error over its columns) or one per output column.

Why not himalaya (issue 19; ``benchmarks/bench_ridge.py``, 2026-12-04, 2 shared cores, himalaya
0.4.11 on its torch backend in float32): its ``RidgeCV`` has no leave-one-out shortcut. It runs a
fresh thin SVD of the training rows for every fold, and then builds a (voxels × training rows)
matrix for every penalty, so exact leave-one-image-out costs it one SVD per image. At a quarter
of the real shapes (7,500 × 3,931 → 256, 2,500 images) today's fit took 220 s and peaked at
2.1 GB. himalaya's two leave-one-image-out folds took 278 s each, which projects to 8 days for
all 2,500 folds. Its ``GroupKFold(5)``, a different and cheaper CV, took 992 s (4.5×) and peaked
at 3.2 GB (1.5×). At 0.1 scale (3,000 × 1,572 → 102) it took 19× today's time; the linear
``KernelRidgeCV`` took 6×. When the penalties agree (they did at both scales), the predictions
are equal within 1e-5, well inside the 1e-4 criterion. So himalaya is not wrong. It is slower,
because one eigendecomposition here buys the exact CV for all 17 penalties. A GPU (its
``torch_cuda`` backend) speeds the same matrix algebra for both, so it would not close that gap.
At half scale this function took 736 s and peaked at 6.1 GB. At the real shapes (30,000 ×
15,724 → 1024, projected from the measured scales) it needs about 22 GB (float64), so it fits
a 24 GB machine only when that machine is nearly idle.

A fitted model is saved like the brain model: a directory with ``config.json`` (kind
``braindecode_pkg.ridge``, subject, voxel count, heads and their shapes, chosen penalties, CV
curve) and ``model.safetensors`` (``<head>.coef`` (V, D) and ``<head>.intercept`` (D,)).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["ridge_cv", "RidgeModel", "fit_ridge_regime", "DEFAULT_ALPHAS", "MODEL_KIND"]

MODEL_KIND = "braindecode_pkg.ridge"
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(0, 8, 17))


def ridge_cv(X, Y, *, groups=None, alphas=DEFAULT_ALPHAS, alpha_per_target: bool = False, threads=None) -> dict:
    """Fit ridge with leave-one-group-out CV; returns ``coef`` (p, d), ``intercept`` (d,),
    ``alpha`` (scalar or (d,)), ``cv_mse`` (n_alphas,) (mean over columns) and ``alphas``.

    ``groups`` (n,): rows with the same value are left out together (default: each row alone).
    """
    import torch

    X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    Y = torch.as_tensor(np.asarray(Y), dtype=torch.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    n, p = X.shape
    if Y.shape[0] != n:
        raise InputError(f"ridge: {n} rows of X but {Y.shape[0]} of Y")
    alphas = np.asarray(alphas, np.float64)
    if not len(alphas) or (alphas <= 0).any():
        raise InputError(f"ridge: alphas must be positive, got {alphas}")
    g = np.arange(n) if groups is None else np.asarray(groups)
    if len(g) != n:
        raise InputError(f"ridge: {len(g)} groups for {n} rows")
    _, ginv, gsize = np.unique(g, return_inverse=True, return_counts=True)
    if len(gsize) < 2:
        raise InputError("ridge: cross-validation needs at least two groups (images)")
    xm, ym = X.mean(0), Y.mean(0)
    Xc, Yc = X - xm, Y - ym
    primal = p <= n
    if primal:  # H = Z D Zᵀ, Z = X V, D = 1/(λ+α)
        lam, V = torch.linalg.eigh(Xc.T @ Xc)
        lam = lam.clamp(min=0)
        Z = Xc @ V
        ZtY = Z.T @ Yc
    else:  # I − H = α (XXᵀ + αI)⁻¹ = U diag(α/(λ+α)) Uᵀ: no cancellation when H ≈ I (n < p)
        lam, U = torch.linalg.eigh(Xc @ Xc.T)
        lam = lam.clamp(min=0)
        UtY = U.T @ Yc
    # rows of each group, by group size
    order = np.argsort(ginv, kind="stable")
    starts = np.r_[0, np.cumsum(gsize)[:-1]]
    by_size = {}
    for m in np.unique(gsize):
        sel = np.flatnonzero(gsize == m)
        by_size[int(m)] = torch.as_tensor(order[starts[sel][:, None] + np.arange(m)[None]])  # (G, m)
    errs = []
    for a in alphas:
        if primal:
            d = 1.0 / (lam + a)
            R = Yc - Z @ (d[:, None] * ZtY)
        else:
            d = a / (lam + a)
            R = U @ (d[:, None] * UtY)
        sq = torch.zeros(Y.shape[1], dtype=torch.float64)
        for m, rows in by_size.items():
            B = Z[rows] if primal else U[rows]  # (G, m, k)
            IH = torch.einsum("gik,k,gjk->gij", B, d, B)
            if primal:
                IH = torch.eye(m, dtype=torch.float64).expand_as(IH) - IH
            IH = IH - 1.0 / n  # the intercept's hat 11ᵀ/n (X, Y centred): I − H − 11ᵀ/n
            loo = torch.linalg.solve(IH, R[rows])  # (G, m, d): held-out residuals of each group
            sq += (loo ** 2).sum((0, 1))
        errs.append(sq / n)
    errs = torch.stack(errs)  # (n_alphas, d)
    if alpha_per_target:
        best = errs.argmin(0)
        alpha = torch.as_tensor(alphas)[best]
    else:
        best = int(errs.mean(1).argmin())
        alpha = torch.full((Y.shape[1],), float(alphas[best]), dtype=torch.float64)
    # final fit with the chosen alpha(s) on all rows
    if primal:
        coef = V @ (ZtY / (lam[:, None] + alpha[None, :]))
    else:
        coef = Xc.T @ (U @ (UtY / (lam[:, None] + alpha[None, :])))
    intercept = ym - xm @ coef
    idx = np.atleast_1d(np.asarray(best))
    if (idx == 0).any() or (idx == len(alphas) - 1).any():
        print(f"[ridge] the chosen penalty lies at the edge of the grid ({alphas[0]:g}..{alphas[-1]:g}); "
              f"consider widening it", file=sys.stderr)
    return {"coef": coef.float().numpy(), "intercept": intercept.float().numpy(),
            "alpha": float(alpha[0]) if not alpha_per_target else alpha.numpy(),
            "cv_mse": errs.mean(1).numpy(), "alphas": alphas}


class RidgeModel:
    """Fitted ridge maps per head: ``predict(x)`` → ``{head: (n, *shape)}``."""

    def __init__(self, subject: str, n_voxels: int, heads: dict, coef: dict, intercept: dict, info: dict | None = None):
        self.subject, self.n_voxels = subject, int(n_voxels)
        self.heads = {h: tuple(s) for h, s in heads.items()}
        self.coef, self.intercept = coef, intercept
        self.info = info or {}

    def predict(self, x) -> dict:
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_voxels:
            raise InputError(f"subject {self.subject}: betas of shape {x.shape}; the ridge model expects "
                             f"(n, {self.n_voxels}) voxels")
        return {h: (x @ self.coef[h] + self.intercept[h]).reshape(len(x), *s) for h, s in self.heads.items()}

    def save_pretrained(self, directory) -> Path:
        from safetensors.numpy import save_file

        from ..io import atomic_path

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {}
        for h in self.heads:
            state[f"{h}.coef"] = np.ascontiguousarray(self.coef[h], np.float32)
            state[f"{h}.intercept"] = np.ascontiguousarray(self.intercept[h], np.float32)
        with atomic_path(d / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"kind": MODEL_KIND})
        doc = {"kind": MODEL_KIND, "subject": self.subject, "n_voxels": self.n_voxels,
               "heads": {h: list(s) for h, s in self.heads.items()}, "info": self.info}
        with atomic_path(d / "config.json") as tmp:
            tmp.write_text(json.dumps(doc, indent=1, default=_json_default) + "\n")
        return d

    @classmethod
    def from_pretrained(cls, directory) -> "RidgeModel":
        from safetensors.numpy import load_file

        d = Path(directory)
        try:
            doc = json.loads((d / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{d / 'config.json'}: cannot read a ridge model config ({e})") from None
        if doc.get("kind") != MODEL_KIND:
            raise InputError(f"{d / 'config.json'}: not a ridge model (kind {doc.get('kind')!r})")
        w = d / "model.safetensors"
        if not w.is_file():
            raise InputError(f"{w}: ridge weights not found")
        st = load_file(str(w))
        heads = {h: tuple(s) for h, s in doc["heads"].items()}
        return cls(doc["subject"], doc["n_voxels"], heads, {h: st[f"{h}.coef"] for h in heads},
                   {h: st[f"{h}.intercept"] for h in heads}, doc.get("info"))


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def fit_ridge_regime(prep, subject, embed, out_dir, *, sessions="all", heads="available",
                     alphas=DEFAULT_ALPHAS, alpha_per_target: bool = False, threads: int | None = None,
                     validation=None) -> RidgeModel:
    """Fit ridge from one subject's training trials (``sessions``; without the ``validation``
    images) to its CLIP targets; save it."""
    import torch

    from .data import load_subject, load_targets

    if threads:
        torch.set_num_threads(int(threads))
    tr = load_subject(prep, split="train", sessions=sessions, subject=subject, validation=validation)
    tg = load_targets(embed, heads=heads, ids=np.unique(tr.nsd_id))
    rows = tg.rows(tr.nsd_id)
    coef, icpt, info_h = {}, {}, {}
    shapes = {h: s for h, s in tg.shapes().items() if h != "latent"}
    for h, s in shapes.items():
        y = np.asarray(tg.arrays[h][rows], np.float32).reshape(len(rows), -1)
        if h == "pooled":  # the targets are unit vectors; keep them so
            y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        r = ridge_cv(tr.betas, y, groups=tr.nsd_id, alphas=alphas, alpha_per_target=alpha_per_target)
        coef[h], icpt[h] = r["coef"], r["intercept"]
        info_h[h] = {"alpha": r["alpha"], "alphas": list(r["alphas"]), "cv_mse": list(r["cv_mse"])}
    info = {"prep": str(prep), "embed": str(embed), "sessions": str(sessions), "trials": len(tr),
            "images": int(len(np.unique(tr.nsd_id))), "cv": "leave-one-image-out", "heads": info_h}
    if validation is not None:
        info["validation"] = str(validation)
    model = RidgeModel(tr.key, tr.n_voxels, shapes, coef, icpt, info)
    model.save_pretrained(out_dir)
    return model
