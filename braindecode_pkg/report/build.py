"""Assemble ``results/report/index.html``: one self-contained page (every image a PNG data URI)."""

from __future__ import annotations

import csv
import datetime
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..errors import InputError
from .metrics import (Metrics, metrics_tables, parse_k_method, protocol_table, published_table, read_metrics)
from .page import Markup, h, img, join, page

__all__ = ["build_report", "read_train_log", "retrieval_panels", "summary_text"]

RETRIEVAL_METRIC = "retrieval_brain2image_top1"
CEILINGS = ("true_embedding", "oracle")


def read_train_log(path) -> tuple[np.ndarray, np.ndarray] | None:
    """(step, loss) of a ``train_log.tsv`` (or of a model folder holding one); ``None`` if absent.
    Rows that do not parse (a repeated header after a resume) are skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / "train_log.tsv"
    if not p.is_file():
        return None
    steps, loss = [], []
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            r = csv.DictReader(fh, delimiter="\t")
            if not {"step", "loss"} <= set(r.fieldnames or []):
                raise InputError(f"{p}: a training log needs columns step and loss, got {r.fieldnames}")
            for d in r:
                try:
                    s, v = float(d["step"]), float(d["loss"])
                except (TypeError, ValueError):
                    continue
                steps.append(s)
                loss.append(v)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{p}: cannot read the training log ({e})") from None
    if not steps:
        return None
    return np.asarray(steps), np.asarray(loss)


def retrieval_panels(mt: Metrics, metric: str = RETRIEVAL_METRIC) -> dict:
    """Per subject with any ``adapted|scratch|ridge-kK`` row of ``metric``: the series against K and
    the subject's oracle. ``mean`` only if no single subject has such rows."""
    def panel(subj):
        series: dict[str, list] = {}
        for r in mt.rows:
            if r.subject != subj or r.metric != metric or r.value is None:
                continue
            k = parse_k_method(r.method)
            if k is not None:
                series.setdefault(k[0], []).append((k[1], r.value, r.ci_low, r.ci_high))
        o = mt.get(subj, "oracle", metric)
        return {"series": series, "oracle": None if o is None else o.value}

    subjects = [s for s in mt.subjects if s != "mean"]
    out = {s: p for s in subjects if (p := panel(s))["series"]}
    if not out and "mean" in mt.subjects:
        p = panel("mean")
        if p["series"]:
            out["mean over subjects"] = p
    return out


def _pct(v, lo=None, hi=None) -> str:
    s = f"{100 * v:.1f}%"
    if lo is not None and hi is not None:
        s += f" [{100 * lo:.1f}, {100 * hi:.1f}]"
    return s


def summary_text(mt: Metrics, simulated: bool = False) -> str:
    subjects = [s for s in mt.subjects if s != "mean"]
    methods = [m for m in mt.methods if m not in CEILINGS]
    parts = [f"This report covers {len(subjects)} subject(s) ({', '.join(subjects) or 'none'}) and "
             f"{len(methods)} decoding method(s) ({', '.join(methods) or 'none'}), scored on the held-out test "
             f"images with bootstrap confidence intervals."]
    where = "mean" if "mean" in mt.subjects else (subjects[0] if subjects else None)
    if where is not None:
        best = None
        for m in methods:
            r = mt.get(where, m, RETRIEVAL_METRIC)
            if r is not None and r.value is not None and (best is None or r.value > best.value):
                best = r
        if best is not None:
            who = "averaged over subjects" if where == "mean" else f"for {where}"
            s = (f"Best brain→image retrieval (top-1) {who}: {best.method} with "
                 f"{_pct(best.value, best.ci_low, best.ci_high)}")
            o = mt.get(where, "oracle", RETRIEVAL_METRIC)
            if o is not None and o.value:
                s += f", {100 * best.value / o.value:.0f}% of the nsd-sim oracle's {_pct(o.value)}"
            parts.append(s + ".")
    panels = retrieval_panels(mt)
    for subj, p in panels.items():
        ks = sorted({k for pts in p["series"].values() for k, *_ in pts})
        k0 = ks[0]
        vals = []
        for fam in ("adapted", "scratch", "ridge"):
            pt = [q for q in p["series"].get(fam, []) if q[0] == k0]
            if pt:
                vals.append(f"{fam} {_pct(pt[0][1])}")
        if len(vals) > 1:
            parts.append(f"With {k0} session(s) of {subj}: " + ", ".join(vals) + ".")
    if simulated:
        parts.append("Numbers on simulated data (nsd-sim) are judged against each other and the oracle, "
                     "not against published results on real NSD.")
    return " ".join(parts)


def _brain_maps_section(brain_maps: Mapping | None) -> tuple[Markup, list[str], int]:
    from .brainmaps import voxel_volume
    from .figures import brain_map_png

    if not brain_maps:
        return join(), ["No brain maps were given."], 0
    import nibabel as nib

    out, n = [], 0
    for label in sorted(brain_maps):
        e = brain_maps[label]
        what = e.get("what") or "per-voxel importance"
        src = e.get("source")
        out.append(h("h3", label))
        if "values" not in e:
            out.append(h("p", e.get("note") or "No per-voxel weights for this subject.", class_="note"))
            continue
        missing = [k for k in ("voxel_ijk", "volume_shape", "affine") if e.get(k) is None]
        if missing:
            raise InputError(f"brain map {label!r}: missing {missing} (from the subject's prep file)")
        vol = voxel_volume(e["values"], e["voxel_ijk"], e["volume_shape"], e["affine"])
        bg = e.get("bg_img")
        if bg is not None and not hasattr(bg, "affine"):
            if not Path(bg).is_file():
                raise InputError(f"{bg}: background image for the brain map of {label!r} not found")
            bg = nib.load(str(bg))
        png = brain_map_png(vol, f"{label}: {what}", bg_img=bg)
        cap = f"{what} in {label}'s own volume space" + (f"; from {src}" if src else "") + (
            "" if bg is not None else "; background: the mapped voxels' mask (no anatomical image given)")
        out.append(h("figure", img(png, f"brain map {label}"), h("figcaption", cap)))
        n += 1
    return join(out), [], n


def _section(anchor: str, title: str, body, notes=()) -> Markup:
    return h("section", h("h2", title, id=anchor), [h("p", x, class_="note") for x in notes], body)


def build_report(out_html, *, metrics_tsv, decode_dirs: Mapping[tuple[str, str], Path] | None = None,
                 stimuli: str | Path | Callable[[np.ndarray], np.ndarray] | None = None,
                 true_captions: Mapping[int, list[str]] | None = None, brain_maps: Mapping[str, dict] | None = None,
                 train_logs: Mapping[str, Path] | None = None, config: Mapping | None = None,
                 inputs: Mapping[str, str] | None = None, max_grid: int = 12, title: str = "fMRI → CLIP decoding report",
                 simulated: bool = False, thumb: int = 160, repo_dir=None,
                 parts: Mapping[str, dict] | None = None) -> Path:
    """Write the report to ``out_html`` atomically and return its path.

    ``metrics_tsv``: ``results/eval/metrics.tsv`` (required). ``decode_dirs``: ``{(method, subject):
    results/decode/{method}/{subject}}`` (each needs ``images/``; see :func:`.grid.find_decode_dirs`).
    ``stimuli``: ``nsd_stimuli.hdf5`` or a callable ``ids → (n, S, S, 3) uint8``, or ``None``.
    ``true_captions``: ``{nsd_id: [caption, ...]}``. ``brain_maps``: ``{label: entry}`` with entries
    from :func:`.brainmaps.brain_map_entry`. ``train_logs``: ``{label: train_log.tsv or model folder}``.
    ``config``: the run's config mapping. ``inputs``: ``{name: sha256}``. ``max_grid``: rows per method
    in the image grid. ``simulated``: label the published rows as not comparable to nsd-sim.
    ``parts``: ``metrics.json``'s ``parts`` (``{"method/subjAA": info}``: the infer protocol,
    retrieval head, image chain and judge CLIP each row was scored with; see
    :func:`.metrics.protocol_table`), or ``None``.
    """
    from ..io import atomic_path
    from .figures import retrieval_vs_sessions_png, training_curves_png
    from .grid import Stimuli, grid_section
    from .provenance import git_commit, package_versions, provenance_section

    out_html = Path(out_html)
    mt = read_metrics(metrics_tsv)
    stim = Stimuli(stimuli)
    nav = [("metrics", "Metrics"), ("grid", "Images & captions"), ("brain", "Brain maps"),
           ("training", "Training curves"), ("sessions", "Retrieval vs sessions"), ("provenance", "Provenance")]
    body = [h("h1", title),
            h("p", f"Generated {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} "
                   f"from {Path(metrics_tsv)}.", class_="note"),
            h("p", summary_text(mt, simulated), class_="summary"),
            h("nav", [h("a", t, href=f"#{a}") for a, t in nav])]

    parts = dict(parts or {})
    tables, notes = metrics_tables(mt, parts)
    proto = protocol_table(parts)
    if proto:
        proto = join(h("h3", "Evaluation protocol of each row"), proto)
    body.append(_section("metrics", "Metrics", join(tables, proto, h("h3", "Published results"),
                                                    published_table(simulated)), notes))

    grid, notes, _ = grid_section(dict(decode_dirs or {}), stim, dict(true_captions or {}), int(max_grid), thumb=thumb)
    body.append(_section("grid", "Images & captions", grid, notes))

    maps, notes, _ = _brain_maps_section(brain_maps)
    body.append(_section("brain", "Brain maps", maps, notes))

    curves, notes = {}, []
    for label, p in (train_logs or {}).items():
        c = read_train_log(p)
        if c is None:
            notes.append(f"{label}: no training log at {p}.")
        else:
            curves[label] = c
    if curves:
        fig = h("figure", img(training_curves_png(curves), "training loss against step"),
                h("figcaption", "Training loss against step (faint: every step; solid: running mean)."))
    else:
        fig = join()
        notes.append("No training logs: no training curves.")
    body.append(_section("training", "Training curves", fig, notes))

    panels = retrieval_panels(mt)
    if panels:
        oracle = any(p["oracle"] is not None for p in panels.values())
        fig = h("figure", img(retrieval_vs_sessions_png(panels), "retrieval against training sessions"),
                h("figcaption", "brain→image retrieval (top-1) of the held-out subject against the number "
                                "of its sessions used (K): adapted from the shared model, trained from scratch, "
                                "ridge; bars: confidence intervals" + ("; dashed: the nsd-sim oracle." if oracle
                                                                       else ".")))
        notes = [] if oracle else ["No oracle rows: no ceiling line."]
    else:
        fig, notes = join(), ["No adapted-kK / scratch-kK / ridge-kK retrieval rows: nothing to plot against K."]
    body.append(_section("sessions", "Retrieval vs sessions", fig, notes))

    prov, notes = provenance_section(config, dict(inputs or {}), git_commit(repo_dir), package_versions(),
                                     parts=parts)
    body.append(_section("provenance", "Provenance", prov, []))

    doc = page(title, join(body))
    with atomic_path(out_html) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return out_html

