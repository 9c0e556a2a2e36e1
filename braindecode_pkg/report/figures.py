"""Figures drawn headless (Agg, no pyplot window, nothing downloaded) and returned as PNG bytes."""

from __future__ import annotations

import io
import sys
import warnings

import numpy as np

__all__ = ["training_curves_png", "retrieval_vs_sessions_png", "brain_map_png"]

FAMILY_STYLE = {"adapted": ("tab:blue", "o"), "scratch": ("tab:orange", "s"), "ridge": ("tab:green", "^")}


def _agg():
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")


def _figure(w: float, h: float):
    _agg()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or len(y) < 2 * n:
        return y
    c = np.cumsum(np.r_[0.0, y])
    out = (c[n:] - c[:-n]) / n
    return np.r_[np.full(n - 1, np.nan), out]


def training_curves_png(curves: dict) -> bytes:
    """Loss against step, one line per model: ``curves`` maps a label to ``(steps, loss)`` arrays.
    The raw loss is drawn faint, a running mean (1/50 of the run) on top; log scale if all > 0."""
    fig = _figure(8, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    positive = True
    for i, (label, (steps, loss)) in enumerate(curves.items()):
        steps, loss = np.asarray(steps, float), np.asarray(loss, float)
        color = f"C{i % 10}"
        ax.plot(steps, loss, color=color, alpha=0.25, lw=0.8)
        ax.plot(steps, _smooth(loss, max(1, len(loss) // 50)), color=color, lw=1.6, label=label)
        positive &= bool(np.all(loss[np.isfinite(loss)] > 0))
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig)


def retrieval_vs_sessions_png(panels: dict, metric_label: str = "image retrieval, top-1 (%)") -> bytes:
    """One panel per subject: ``panels[subject] = {"series": {family: [(K, value, lo, hi), ...]},
    "oracle": value or None}`` with fractions; drawn as percentages with CI error bars."""
    n = len(panels)
    fig = _figure(4.6 * n + 0.4, 3.8)
    ks_all = sorted({k for p in panels.values() for s in p["series"].values() for k, *_ in s})
    for j, (subject, p) in enumerate(panels.items()):
        ax = fig.add_subplot(1, n, j + 1)
        for fam, pts in p["series"].items():
            pts = sorted(pts)
            k = np.array([q[0] for q in pts], float)
            v = np.array([q[1] for q in pts], float) * 100
            lo = np.array([np.nan if q[2] is None else q[2] for q in pts], float) * 100
            hi = np.array([np.nan if q[3] is None else q[3] for q in pts], float) * 100
            err = np.vstack([np.nan_to_num(v - lo), np.nan_to_num(hi - v)])
            color, marker = FAMILY_STYLE.get(fam, (None, "o"))
            ax.errorbar(k, v, yerr=err, color=color, marker=marker, capsize=3, lw=1.5, label=fam)
        if p.get("oracle") is not None:
            ax.axhline(100 * p["oracle"], color="k", ls="--", lw=1.2, label="oracle")
        ax.set_xticks(ks_all)
        ax.set_xlabel("training sessions of the held-out subject (K)")
        if j == 0:
            ax.set_ylabel(metric_label)
        ax.set_title(subject)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def _cuts(img, n: int) -> list[float]:
    """World z of ``n`` axial cuts spread over the mapped voxels (non-zero, finite)."""
    data = np.asarray(img.dataobj)
    ijk = np.argwhere(np.isfinite(data) & (data != 0))
    if not len(ijk):
        ijk = np.argwhere(np.ones(data.shape, bool))
    z = (img.affine[:3, :3] @ ijk.T + img.affine[:3, 3:4])[2]
    qs = np.quantile(z, (np.arange(n) + 0.5) / n)
    out = []
    for q in qs:  # snap to voxel centres, drop duplicates (thin volumes)
        c = float(z[np.argmin(np.abs(z - q))])
        if c not in out:
            out.append(c)
    return out


def brain_map_png(img, title: str, bg_img=None, n_cuts: int = 6) -> bytes:
    """Axial cuts of a per-voxel map with nilearn, in the subject's own space: over ``bg_img``
    (e.g. the subject's mean EPI) if given, else over the mapped voxels' mask in grey (no MNI template,
    nothing downloaded)."""
    _agg()
    import nibabel as nib
    from nilearn import plotting

    data = np.asarray(img.dataobj, np.float32)
    inside = np.isfinite(data) & (data != 0)
    if bg_img is None:
        bg_img = nib.Nifti1Image(inside.astype(np.float32), img.affine)
    clean = nib.Nifti1Image(np.where(np.isfinite(data), data, 0).astype(np.float32), img.affine)
    vmax = float(np.nanmax(data[inside])) if inside.any() else 1.0
    cuts = _cuts(clean, n_cuts)
    fig = _figure(2.0 * len(cuts) + 1.5, 2.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        display = plotting.plot_stat_map(
            clean, bg_img=bg_img, display_mode="z", cut_coords=cuts, figure=fig, title=title,
            cmap="inferno", symmetric_cbar=False, vmin=0.0, vmax=vmax if vmax > 0 else 1.0, threshold=None,
            black_bg=True, draw_cross=False, annotate=True, colorbar=True, dim=0, resampling_interpolation="nearest")
        png = _png(fig)
    del display  # not a pyplot figure: nothing to close
    return png
