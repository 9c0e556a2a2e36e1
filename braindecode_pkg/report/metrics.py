"""Reading ``metrics.tsv`` and rendering it: method/metric order, value formatting, the tables.

``metrics.tsv`` is long format with columns ``subject method metric value ci_low ci_high``.
``value`` is a number or the string ``unavailable`` (the metric's weights are not configured; its
CI columns are then empty): it is rendered as "unavailable", never as a number. Retrieval and
two-way identification (and the nsd-sim attribute accuracy) are fractions and are shown as
percentages, like the papers do ("83.1% [80.2, 85.9]"); the rest with three decimals.

Retrieval has two directions, named by what is matched to what: ``brain→image`` (each brain
sample's most similar image; MindEye's "bwd", MindEye2's "Brain retrieval" column) and
``image→brain`` (each image's most similar brain sample; MindEye's "fwd", which MindEye2 reports
as "Image retrieval"; see :mod:`.published`). The published table puts each column beside the
metric computed the same way.

With the parts' ``info`` (``metrics.json``), each metric row says whether it followed MindEye2's
evaluation protocol (:func:`.published.protocol_differences`: retrieval head, image chain, judge
family, all 1,000 test images), and the notes name the image chain, the retrieval head and the
judge CLIP of the tables.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from pathlib import Path

from ..decode import recipe_text
from ..errors import InputError
from .page import Markup, h, join

__all__ = ["MetricRow", "Metrics", "read_metrics", "format_value", "metric_label", "method_sort_key",
           "parse_k_method", "METRIC_ORDER", "METRIC_GROUPS", "REQUIRED_COLUMNS", "is_percent", "protocol_table",
           "row_protocol", "evaluation_notes"]

REQUIRED_COLUMNS = ("subject", "method", "metric", "value", "ci_low", "ci_high")

# metric → (short label, description)
METRIC_INFO = {
    "retrieval_brain2image_top1": ("brain→image", "top-1 of the right image given the brain sample (MindEye's bwd; "
                                                   "MindEye2's 'Brain retrieval' column)"),
    "retrieval_image2brain_top1": ("image→brain", "top-1 of the right brain sample given the image (MindEye's fwd; "
                                                   "MindEye2's 'Image retrieval' column)"),
    "pixcorr": ("PixCorr", "pixelwise Pearson correlation"),
    "ssim": ("SSIM", "structural similarity"),
    "twoway_clip": ("CLIP", "two-way identification, the judge CLIP's features"),
    "twoway_alexnet2": ("Alex(2)", "two-way identification, AlexNet layer 2"),
    "twoway_alexnet5": ("Alex(5)", "two-way identification, AlexNet layer 5"),
    "twoway_inception": ("Incep", "two-way identification, InceptionV3"),
    "dist_effnet": ("Eff ↓", "EfficientNet-B1 correlation distance (lower is better)"),
    "dist_swav": ("SwAV ↓", "SwAV-ResNet50 correlation distance (lower is better)"),
    "bleu1": ("BLEU-1", "BLEU-1"),
    "bleu2": ("BLEU-2", "BLEU-2"),
    "bleu3": ("BLEU-3", "BLEU-3"),
    "bleu4": ("BLEU-4", "BLEU-4"),
    "meteor": ("METEOR", "METEOR"),
    "rougeL": ("ROUGE-L", "ROUGE-L"),
    "cider": ("CIDEr", "CIDEr"),
    "clip_s": ("CLIP-S", "CLIPScore of the predicted caption against the seen image (the judge CLIP)"),
    "attr_acc": ("Attr. acc.", "nsd-sim: fraction of the scene's attributes named correctly"),
}
METRIC_GROUPS = (
    ("Retrieval", ("retrieval_brain2image_top1", "retrieval_image2brain_top1")),
    ("Images", ("pixcorr", "ssim", "twoway_alexnet2", "twoway_alexnet5", "twoway_inception", "twoway_clip",
                "dist_effnet", "dist_swav")),
    ("Captions", ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider", "clip_s", "attr_acc")),
)
METRIC_ORDER = tuple(m for _, ms in METRIC_GROUPS for m in ms)
RETRIEVAL = METRIC_GROUPS[0][1]
_K_METHOD = re.compile(r"^(adapted|scratch|ridge)-k(\d+)$")
_METHOD_RANK = {"pretrained": 0, "ridge": 1, "adapted": 2, "scratch": 3, "ridge-k": 4, "true_embedding": 8, "oracle": 9}
METHOD_INFO = {
    "pretrained": "the shared model, trained on all sessions of the training subjects",
    "ridge": "ridge regression per subject on all its training sessions",
    "adapted": "held-out subject: the shared model adapted from its first K session(s)",
    "scratch": "held-out subject: a model trained from scratch on its first K session(s)",
    "ridge-k": "held-out subject: ridge fit on its first K session(s)",
    "true_embedding": "the decoders fed the true CLIP embeddings (the decoders' ceiling)",
    "oracle": "nsd-sim's Bayes-optimal identification from the measured betas (the information ceiling)",
}


def is_percent(metric: str) -> bool:
    return metric.startswith(("retrieval_", "twoway_")) or metric == "attr_acc"


def metric_label(metric: str) -> str:
    return METRIC_INFO.get(metric, (metric, ""))[0]


def parse_k_method(method: str) -> tuple[str, int] | None:
    """``"adapted-k2"`` → ``("adapted", 2)``; other methods → ``None``."""
    m = _K_METHOD.match(method)
    return (m.group(1), int(m.group(2))) if m else None


def method_sort_key(method: str):
    k = parse_k_method(method)
    if k is not None:
        base = "ridge-k" if k[0] == "ridge" else k[0]
        return (_METHOD_RANK[base], k[1], method)
    return (_METHOD_RANK.get(method, 7), 0, method)


def method_description(method: str) -> str:
    k = parse_k_method(method)
    if k is not None:
        return METHOD_INFO["ridge-k" if k[0] == "ridge" else k[0]].replace("K", str(k[1]))
    return METHOD_INFO.get(method, "")


def subject_sort_key(subject: str):
    return (subject != "mean", subject)


@dataclasses.dataclass(frozen=True)
class MetricRow:
    subject: str
    method: str
    metric: str
    raw: str                  # the value column as written
    value: float | None       # None when not a finite number (e.g. "unavailable")
    ci_low: float | None
    ci_high: float | None

    @property
    def unavailable(self) -> bool:
        return self.raw.strip().lower() == "unavailable"


def _num(s: str) -> float | None:
    s = (s or "").strip()
    if not s:
        return None
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


class Metrics:
    """The rows of one ``metrics.tsv``, indexed by (subject, method, metric)."""

    def __init__(self, rows: list[MetricRow], path: Path | None = None):
        self.rows = rows
        self.path = path
        self._by = {(r.subject, r.method, r.metric): r for r in rows}

    def get(self, subject: str, method: str, metric: str) -> MetricRow | None:
        return self._by.get((subject, method, metric))

    @property
    def subjects(self) -> list[str]:
        return sorted({r.subject for r in self.rows}, key=subject_sort_key)

    @property
    def methods(self) -> list[str]:
        return sorted({r.method for r in self.rows}, key=method_sort_key)

    @property
    def metrics(self) -> list[str]:
        have = {r.metric for r in self.rows}
        return [m for m in METRIC_ORDER if m in have] + sorted(have - set(METRIC_ORDER))

    def methods_of(self, subject: str) -> list[str]:
        return sorted({r.method for r in self.rows if r.subject == subject}, key=method_sort_key)


def read_metrics(path) -> Metrics:
    """Read ``metrics.tsv``; :class:`InputError` naming the file if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: metrics table not found (written by `braindecode-pkg evaluate`)")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
            rows = []
            for i, d in enumerate(reader, start=2):
                if not (d.get("subject") and d.get("method") and d.get("metric")):
                    raise InputError(f"{path}, line {i}: empty subject, method or metric")
                raw = (d.get("value") or "").strip()
                rows.append(MetricRow(d["subject"].strip(), d["method"].strip(), d["metric"].strip(), raw,
                                      _num(raw), _num(d.get("ci_low")), _num(d.get("ci_high"))))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read the metrics table ({e})") from None
    if not rows:
        raise InputError(f"{path}: the metrics table has no rows")
    return Metrics(rows, path)


def format_value(metric: str, row: MetricRow | None, with_ci: bool = True) -> tuple[str, str]:
    """(text, css class) of one cell: "83.1% [80.2, 85.9]", "0.322 [0.301, 0.340]", "unavailable", "—"."""
    if row is None:
        return "—", "num"
    if row.unavailable:
        return "unavailable", "unavailable"
    if row.value is None:
        raw = row.raw.strip()
        return ("n/a" if raw.lower() in ("nan", "") else raw), "unavailable"
    pct = is_percent(metric)
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
    text = f(row.value) + ("%" if pct else "")
    if with_ci and row.ci_low is not None and row.ci_high is not None:
        text += f" [{f(row.ci_low)}, {f(row.ci_high)}]"
    return text, "num"


def _header(metrics: list[str], extra: list[str]) -> Markup:
    cells = [h("th", "method")]
    cells += [h("th", metric_label(m), title=METRIC_INFO.get(m, (m, m))[1] or m) for m in metrics]
    cells += [h("th", e) for e in extra]
    return h("tr", cells)


def row_protocol(parts: dict | None, subject: str, method: str) -> list[str] | None:
    """What of MindEye2's protocol the row (subject, method) does not share (``[]``: it follows it);
    the mean row: every subject's part; ``None`` without parts' info for it."""
    from .published import protocol_differences

    if not parts:
        return None
    keys = [k for k in parts if k.split("/")[0] == method and (subject == "mean" or k.split("/")[-1] == subject)]
    diffs = [protocol_differences(parts[k]) for k in keys]
    if not diffs or any(d is None for d in diffs):
        return None
    return list(dict.fromkeys(x for d in diffs for x in d))


def _protocol_cell(parts, subject, method) -> Markup:
    d = row_protocol(parts, subject, method)
    if d is None:
        return h("td", "—", class_="num")
    if not d:
        return h("td", "MindEye2's", class_="protocol follows", title="follows MindEye2's evaluation protocol")
    return h("td", "differs", class_="protocol differs", title="; ".join(d))


def metrics_tables(mt: Metrics, parts: dict | None = None) -> tuple[Markup, list[str]]:
    """One table per metric group (retrieval, images, captions); rows: per subject (mean first) the
    methods. Retrieval gets a "fraction of oracle" column per retrieval metric where that subject has
    an oracle row. With ``parts`` (``metrics.json``'s ``parts``: ``{"method/subjAA": info}``) the
    retrieval and image tables get a "protocol" column: whether the row follows MindEye2's
    evaluation protocol (its title says what differs). Returns the HTML and notes."""
    notes = []
    out = []
    have = set(mt.metrics)
    groups = [(name, [m for m in ms if m in have]) for name, ms in METRIC_GROUPS]
    other = [m for m in mt.metrics if m not in METRIC_ORDER]
    if other:
        groups.append(("Other", other))
    has_oracle = any(r.method == "oracle" for r in mt.rows)
    for name, ms in groups:
        if not ms:
            continue
        oracle_cols = [m for m in ms if m in RETRIEVAL] if has_oracle else []
        extra = [f"{metric_label(m)} ÷ oracle" for m in oracle_cols]
        with_protocol = bool(parts) and name in ("Retrieval", "Images")
        extra += ["protocol"] if with_protocol else []
        rows = [_header(ms, extra)]
        ncol = 1 + len(ms) + len(extra)
        for subj in mt.subjects:
            methods = [m for m in mt.methods_of(subj) if any(mt.get(subj, m, x) for x in ms)]
            if not methods:
                continue
            rows.append(h("tr", h("th", "mean over subjects" if subj == "mean" else subj, colspan=ncol),
                          class_="subject"))
            for meth in methods:
                cells = [h("td", h("code", meth), title=method_description(meth) or None)]
                for m in ms:
                    text, cls = format_value(m, mt.get(subj, meth, m))
                    cells.append(h("td", text, class_=cls))
                for m in oracle_cols:
                    r, o = mt.get(subj, meth, m), mt.get(subj, "oracle", m)
                    if (meth == "oracle" or r is None or o is None or r.value is None or o.value is None
                            or o.value <= 0):
                        cells.append(h("td", "—", class_="num"))
                    else:
                        cells.append(h("td", f"{100 * r.value / o.value:.1f}%", class_="num"))
                if with_protocol:
                    cells.append(_protocol_cell(parts, subj, meth))
                rows.append(h("tr", cells))
        out.append(h("h3", name))
        out.append(h("div", h("table", rows, class_="metrics"), class_="scroll"))
    if not has_oracle and any(m in have for m in RETRIEVAL):
        notes.append("No oracle rows in the metrics table: the fraction-of-oracle columns are omitted.")
    elif has_oracle:
        notes.append("÷ oracle: the method's value divided by the oracle's point estimate for the same subject "
                     "(the oracle's own uncertainty is not propagated).")
    notes.append("Brackets: bootstrap confidence interval. Percentages: retrieval (top-1), two-way identification"
                 " and attribute accuracy; Eff and SwAV are distances (lower is better). Retrieval: brain→image "
                 "matches each brain sample to its most similar test image, image→brain each image to its most "
                 "similar brain sample (MindEye's fwd, which MindEye2 reports as 'Image retrieval').")
    notes += evaluation_notes(parts)
    return join(out), notes


def _distinct(parts: dict, what) -> dict[str, list[str]]:
    """{description: [row keys]} of one property of the parts that record a protocol."""
    out: dict[str, list[str]] = {}
    for key, info in sorted(parts.items()):
        if info and "image_protocol" in info:
            out.setdefault(what(info), []).append(key)
    return out


def _chain_text(info) -> str:
    c = info["image_protocol"]
    if c.get("base") == 256 and c.get("antialias") is False:
        return "MindEye's chain (every image to 256 px first, then each metric's size; no antialiasing)"
    if c.get("base") is None and c.get("antialias") is True:
        return "one antialiased resize to each metric's size"
    return f"a first resize to {c.get('base')} px, antialiasing {'on' if c.get('antialias') else 'off'}"


def _judge_text(info) -> str:
    j = info.get("judge_clip") or {}
    text = f"{j.get('name', '?')} ({j.get('weights', '?')})"
    if j.get("is_decoding_clip"):
        text += ", the decoding CLIP itself: best-of-n selection inflates these"
    return text


def evaluation_notes(parts: dict | None) -> list[str]:
    """Notes naming, for the rows that record it, the image chain of PixCorr, SSIM and the feature
    nets, the retrieval head, and the judge CLIP of two-way CLIP and CLIP-S."""
    if not parts:
        return ["No evaluation info (metrics.json) given: the image chain, retrieval head and judge of the rows "
                "are not shown."]

    def say(label, groups):
        if not groups:
            return []
        if len(groups) == 1:
            return [f"{label}: {next(iter(groups))} (every row)."]
        return [f"{label}: " + "; ".join(f"{d} ({', '.join(keys)})" for d, keys in groups.items()) + "."]

    def head(i):
        h_ = i["retrieval"].get("head", "pooled")
        what = ("the flattened predicted tokens against the embed file's image_tokens" if h_ == "tokens" else
                "the predicted pooled embedding against the embed file's image_pooled")
        return f"{h_} ({what}), infer protocol {i.get('protocol', '?')}"

    heads = _distinct(parts, head)
    return (say("Image chain of PixCorr, SSIM and the feature nets", _distinct(parts, _chain_text))
            + say("Retrieval head and infer protocol", heads)
            + say("Judge CLIP of two-way CLIP and CLIP-S", _distinct(parts, _judge_text))
            + ["Protocol column: 'MindEye2's' where the row was scored as MindEye2's Table 1 was (retrieval on "
               "tokens, MindEye's image chain, an OpenAI ViT-L/14 judge, all 1,000 test images reconstructed); "
               "'differs' otherwise (hover for what)."])


def protocol_table(parts: dict | None) -> Markup:
    """Per (method, subject) part: the infer protocol scored, retrieval head, image chain, judge,
    images reconstructed, the decode recipe that made them, and whether it follows MindEye2's
    protocol."""
    from .published import protocol_differences

    if not parts:
        return join()
    head = h("tr", [h("th", x) for x in ("method", "subject", "protocol", "retrieval", "image chain", "judge CLIP",
                                         "reconstructed", "decode recipe", "MindEye2's protocol")])
    rows = [head]

    def key(k):
        method, _, subj = k.partition("/")
        return (method_sort_key(method), subj)

    for k in sorted(parts, key=key):
        info = parts[k] or {}
        d = protocol_differences(info)
        if d is None:
            continue
        method, _, subj = k.partition("/")
        ch = info["image_protocol"]
        rows.append(h("tr", h("td", h("code", method)), h("td", subj), h("td", info.get("protocol", "?")),
                      h("td", info["retrieval"].get("head", "pooled")),
                      h("td", f"base {ch.get('base')}, antialias {'on' if ch.get('antialias') else 'off'}"),
                      h("td", (info.get("judge_clip") or {}).get("name", "?"),
                        title=(info.get("judge_clip") or {}).get("weights")),
                      h("td", f"{info.get('n_reconstructed', '?')} of {info.get('n', '?')}", class_="num"),
                      h("td", recipe_text(info["decode_recipe"]) if info.get("decode_recipe") else "?",
                        class_="text"),
                      h("td", "yes" if not d else "no: " + "; ".join(d))))
    if len(rows) == 1:
        return join()
    return h("div", h("table", rows, class_="protocol"), class_="scroll")


def published_table(simulated: bool = False) -> Markup:
    """The MindEye2 Table 1 rows, in a visibly separate table with its provenance."""
    from . import published as pub

    label = ("Published on real NSD, not comparable to nsd-sim" if simulated
             else "Published on real NSD (other models, other runs: compare with care)")
    cap = h("caption", label + " — " + pub.SOURCE["table"])
    rows = [h("tr", h("th", "published method"),
              [h("th", lab, title=f"{m} ({metric_label(m)})") for m, lab in pub.COLUMNS])]
    for name, vals in pub.ROWS:
        cells = [h("td", name)]
        for m, _ in pub.COLUMNS:
            v = vals.get(m)
            if v is None:
                cells.append(h("td", "—", class_="num"))
            else:
                text, cls = format_value(m, MetricRow("", name, m, str(v), float(v), None, None), with_ci=False)
                cells.append(h("td", text, class_=cls))
        rows.append(h("tr", cells))
    src = h("p", "Source: ", pub.SOURCE["citation"], ", ", pub.SOURCE["table"], ". ",
            h("code", pub.SOURCE["url"]), ". 'Image retrieval' is MindEye's fwd retrieval, which its code computes "
            "as image→brain (each image's most similar brain sample): this report's image→brain; 'Brain retrieval' "
            "is brain→image. Scored with MindEye2's protocol: retrieval on the flattened ViT-bigG tokens, every "
            "image to 256 px first without antialiasing, two-way CLIP judged by OpenAI's ViT-L/14, all 1,000 "
            "shared test images.", class_="note")
    return join(h("div", h("table", cap, rows, class_="published"), class_="scroll"), src)
