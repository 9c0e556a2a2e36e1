"""Collect the per-(method, subject) parts into ``metrics.tsv`` and ``metrics.json``.

``metrics.tsv`` is long format, one row per (subject, method, metric), columns
``subject method metric value ci_low ci_high``: ``subject`` ``subjAA`` or ``mean`` (the mean over
the subjects that have the method, when there are several), ``value`` a number or
``unavailable`` (its CI empty). Retrieval and two-way identification are fractions in [0, 1].

Confidence intervals: 95 % percentile bootstrap over test images (:func:`.bootstrap.bootstrap_ci`,
1,000 resamples, seed 0). For the mean row each resample draws every subject's images
independently and averages the subjects. Corpus BLEU is recomputed exactly on every resample
(from per-caption n-gram counts). The other figures that are not a mean of per-image scores
(retrieval over random draws of candidates; METEOR, whose corpus score is Java METEOR's own
aggregate) get the bootstrap interval of their per-image scores' mean shifted by (figure − that
mean); with at most ``n_candidates`` test images, retrieval's figure is that mean.

Method names (the infer stage's folders → the table's): ``pretrain`` → ``pretrained``,
``ridge-all`` → ``ridge``, ``adapt-kK`` → ``adapted-kK``, ``scratch-kK`` and ``ridge-kK`` as they
are, ``true_embedding`` and ``oracle`` as they are.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from .bootstrap import bootstrap_ci
from .score import METRICS, read_part

__all__ = ["collect", "method_label", "COLUMNS"]

COLUMNS = ("subject", "method", "metric", "value", "ci_low", "ci_high")
N_BOOT = 1000


def method_label(folder: str) -> str:
    """The table's name of a method folder (see the module docstring)."""
    if folder == "pretrain":
        return "pretrained"
    if folder == "ridge-all":
        return "ridge"
    m = re.fullmatch(r"adapt-k(\d+)", folder)
    if m:
        return f"adapted-k{m.group(1)}"
    return folder


def _subject(s: str) -> str:
    s = str(s)
    return s if s.startswith("subj") else f"subj{int(s):02d}"


def _bleu_ci(stats: list[dict], k: int, seed: int):
    from .captions import corpus_bleu

    def stat(idx):
        idx = idx if isinstance(idx, list) else [idx]
        return np.mean([corpus_bleu(s, i)[..., k] for s, i in zip(stats, idx)], axis=0)

    lengths = [np.zeros(len(s["testlen"])) for s in stats]
    return bootstrap_ci(lengths if len(lengths) > 1 else lengths[0], statistic=stat, vectorized=True,
                        n_boot=N_BOOT, seed=seed)


def _ci(items, value, kind, seed):
    items = [np.asarray(x, np.float64) for x in items]
    items = [x[np.isfinite(x)] for x in items]
    if any(len(x) == 0 for x in items):
        return math.nan, math.nan
    lo, hi = bootstrap_ci(items if len(items) > 1 else items[0], n_boot=N_BOOT, seed=seed)
    if kind == "corpus":
        shift = value - float(np.mean([x.mean() for x in items]))
        lo, hi = lo + shift, hi + shift
    return float(lo), float(hi)


def collect(parts, out_tsv, out_json=None, *, seed: int = 0) -> list[dict]:
    """Rows of the metric table from part files; written to ``out_tsv`` (and ``out_json``)."""
    from ..io import atomic_path

    scores = [read_part(p) for p in parts]
    if not scores:
        raise InputError("no evaluation parts to collect")
    by_method: dict[str, list] = {}
    for s in scores:
        by_method.setdefault(method_label(s.method), []).append(s)
    rows = []
    order = {m: i for i, m in enumerate(METRICS)}
    for method, group in by_method.items():
        group = sorted(group, key=lambda s: _subject(s.subject))
        names = sorted({n for s in group for n in s.metrics}, key=lambda n: (order.get(n, len(order)), n))
        for name in names:
            have = [s for s in group if name in s.metrics]
            for s in have:
                rows.append(_row(_subject(s.subject), method, name, [s], seed))
            if len(group) > 1 and len(have) == len(group):
                rows.append(_row("mean", method, name, have, seed))
    with atomic_path(Path(out_tsv)) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\t".join(COLUMNS) + "\n")
            for r in rows:
                fh.write("\t".join(_fmt(r[c]) for c in COLUMNS) + "\n")
    if out_json is not None:
        clean = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]
        doc = {"columns": list(COLUMNS), "rows": clean, "bootstrap": {"n_boot": N_BOOT, "seed": seed, "level": 0.95},
               "parts": {f"{method_label(s.method)}/{_subject(s.subject)}": s.info for s in scores}}
        with atomic_path(Path(out_json)) as tmp:
            tmp.write_text(json.dumps(doc, indent=1, default=_json_default, allow_nan=False) + "\n")
    return rows


def _row(subject, method, name, scores, seed) -> dict:
    ms = [s.metrics[name] for s in scores]
    if any("unavailable" in m for m in ms):
        reason = next(m["unavailable"] for m in ms if "unavailable" in m)
        return {"subject": subject, "method": method, "metric": name, "value": "unavailable",
                "ci_low": None, "ci_high": None, "note": reason}
    value = float(np.mean([m["value"] for m in ms]))
    bleu = re.fullmatch(r"bleu([1-4])", name)
    if bleu and all("bleu_stats" in s.extra for s in scores):
        lo, hi = _bleu_ci([s.extra["bleu_stats"] for s in scores], int(bleu.group(1)) - 1, seed)
    else:
        lo, hi = _ci([m["items"] for m in ms], value, ms[0]["kind"], seed)
    return {"subject": subject, "method": method, "metric": name, "value": value, "ci_low": lo, "ci_high": hi}


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
