"""build_report on tiny fixture files of the pipeline's layout.

Distinct sizes so that a swapped image cannot pass: stimuli 12×12, reconstructions of
``pretrained`` 20×18 and of ``adapted-k1`` 22×16, blurry 14×10 (all under the thumbnail size, so
kept as they are); 40 stimuli; subj01 has 13 voxels in a (6, 5, 4) volume, subj02 7 in (5, 7, 3).
"""

from __future__ import annotations

import base64
import csv
import io
from html.parser import HTMLParser

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from braindecode_pkg.decode import DecodeSettings, recipe_attrs
from braindecode_pkg.errors import InputError
from braindecode_pkg.brain.model import BrainConfig, BrainModel
from braindecode_pkg.report.brainmaps import brain_map_entry
from braindecode_pkg.report.build import build_report
from braindecode_pkg.report.grid import find_decode_dirs
from braindecode_pkg.report.page import h
from braindecode_pkg.brain.ridge import RidgeModel

VOID = {"img", "br", "hr", "meta", "col", "wbr", "input", "link"}
AFF1 = np.diag([1.8, 1.8, 1.8, 1.0])
AFF2 = np.array([[2.0, 0, 0, -4.0], [0, 2.0, 0, 1.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1.0]])
PRE_IDS = [31, 4, 17, 9, 22]          # pretrained/subj01 decode.h5 order (unsorted on purpose)
ADA_IDS = [30, 6, 12, 25]             # adapted-k1/subj02: ids from file names only
MAX_GRID = 3

# fmt: (subject, method, metric, value, lo, hi)
METRICS = [
    ("subj01", "pretrained", "retrieval_brain2image_top1", "0.8312", "0.8021", "0.8593"),
    ("subj01", "pretrained", "retrieval_image2brain_top1", "0.7", "0.65", "0.75"),
    ("subj01", "pretrained", "pixcorr", "0.2345", "0.2", "0.27"),
    ("subj01", "pretrained", "twoway_alexnet2", "unavailable", "", ""),
    ("subj01", "pretrained", "bleu1", "0.41", "0.38", "0.44"),
    ("subj01", "ridge", "retrieval_brain2image_top1", "0.31", "0.28", "0.34"),
    ("subj01", "oracle", "retrieval_brain2image_top1", "0.9", "0.88", "0.92"),
    ("subj01", "true_embedding", "bleu1", "0.66", "0.6", "0.7"),
    ("subj02", "adapted-k1", "retrieval_brain2image_top1", "0.40", "0.35", "0.45"),
    ("subj02", "adapted-k2", "retrieval_brain2image_top1", "0.55", "0.5", "0.6"),
    ("subj02", "scratch-k1", "retrieval_brain2image_top1", "0.12", "0.1", "0.15"),
    ("subj02", "scratch-k2", "retrieval_brain2image_top1", "0.21", "0.18", "0.25"),
    ("subj02", "ridge-k1", "retrieval_brain2image_top1", "0.15", "", ""),
    ("subj02", "oracle", "retrieval_brain2image_top1", "0.7", "0.66", "0.74"),
    ("subj02", "adapted-k1", "twoway_alexnet2", "unavailable", "", ""),
    ("mean", "pretrained", "retrieval_brain2image_top1", "0.6", "0.55", "0.65"),
    ("mean", "pretrained", "twoway_alexnet2", "unavailable", "", ""),
    ("mean", "pretrained", "ssim", "nan", "nan", "nan"),
]


class Checker(HTMLParser):
    """Nesting check (every non-void tag closed in order) and collection of img/href/src."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.imgs, self.links, self.tags, self.text = [], [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a)
        for k in ("src", "href"):
            if k in a:
                self.links.append((tag, k, a[k]))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void <{tag}>")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _png(path, w, hgt, seed):
    arr = np.random.default_rng(seed).integers(0, 255, (hgt, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def make_inputs(root):
    _tsv(root / "eval/metrics.tsv", ["subject", "method", "metric", "value", "ci_low", "ci_high"], METRICS)
    dec = root / "decode"
    d = dec / "pretrain/subj01"  # the infer stage's folder names; the table says "pretrained"
    for i in PRE_IDS:
        _png(d / f"images/{i:05d}.png", 20, 18, i)
    for i in (4, 17):  # blurry for two of the three shown (4, 9, 17)
        _png(d / f"blurry/{i:05d}.png", 14, 10, 100 + i)
    _tsv(d / "captions.tsv", ["nsd_id", "caption"], [[i, f"pred {i} <script>x</script>"] for i in PRE_IDS])
    with h5py.File(d / "decode.h5", "w") as f:
        f["nsd_id"] = np.array(PRE_IDS, np.int64)
        f.attrs["n_reconstructed"] = len(PRE_IDS)
        f.attrs.update(recipe_attrs(DecodeSettings(n_samples=4, img2img=True, strength=0.7,
                                                   num_inference_steps=8), "prior", True))
        f["retrieved"] = np.array([[i, (i + 1) % 40, (i + 2) % 40, (i + 3) % 40, 0] for i in PRE_IDS], np.int64)
    for i in (1, 2):  # a second subject of the same method: not the one shown
        _png(dec / f"pretrain/subj02/images/{i:05d}.png", 8, 8, i)
    for i in ADA_IDS:
        _png(dec / f"adapt-k1/subj02/images/{i:05d}.png", 22, 16, 50 + i)
    stim = root / "nsd_stimuli.hdf5"
    with h5py.File(stim, "w") as f:
        f["imgBrick"] = np.random.default_rng(3).integers(0, 255, (40, 12, 12, 3), dtype=np.uint8)

    # models: subj01 in a pretrained brain model (linear adapters), subj02 ridge, subj03 a pool adapter
    torch.manual_seed(0)
    BrainModel(BrainConfig(subjects={"subj01": 13}, width=16, n_blocks=1, pooled_dim=6)).save_pretrained(root / "m/pre")
    BrainModel(BrainConfig(subjects={"subj03": None}, adapter="pool", pool_size=8, width=16, n_blocks=1,
                           pooled_dim=6)).save_pretrained(root / "m/pool")
    rng = np.random.default_rng(2)
    RidgeModel("subj02", 7, {"pooled": (6,)}, {"pooled": rng.normal(size=(7, 6)).astype(np.float32)},
               {"pooled": np.zeros(6, np.float32)}).save_pretrained(root / "m/ridge")
    (root / "prep").mkdir()
    for s, shape, aff, n in (("subj01", (6, 5, 4), AFF1, 13), ("subj02", (5, 7, 3), AFF2, 7)):
        with h5py.File(root / f"prep/{s}.h5", "w") as f:
            f["voxel_ijk"] = np.argwhere(np.ones(shape, bool))[::5][:n]
            f.attrs["affine"] = aff
            f.attrs["volume_shape"] = np.array(shape)
    log = ["step\tepoch\tlr\tloss\tclip\ttemperature\tmixco\tsamples_per_s\tseconds"]
    log += [f"{s}\t{s / 10:.4f}\t0.001\t{2.0 / (1 + s):.6f}\t0.5\t0.05\t1\t100.0\t{s / 10:.2f}" for s in range(1, 31)]
    (root / "m/pre/train_log.tsv").write_text("\n".join(log) + "\n")
    (root / "m/ada").mkdir()
    (root / "m/ada/train_log.tsv").write_text("\n".join(log[:11]) + "\n")
    return {
        "metrics_tsv": root / "eval/metrics.tsv",
        "decode_dirs": find_decode_dirs(dec),
        "stimuli": stim,
        "true_captions": {4: ["a red <b>circle</b> & a square", "second"], 9: ["blue triangle"]},
        "brain_maps": {"subj01": brain_map_entry(root / "m/pre", "subj01", root / "prep/subj01.h5"),
                       "subj02": brain_map_entry(root / "m/ridge", "subj02", root / "prep/subj02.h5"),
                       "subj03": brain_map_entry(root / "m/pool", "subj03", root / "prep/none.h5")},
        "train_logs": {"pretrain": root / "m/pre/train_log.tsv", "adapt-k1": root / "m/ada",
                       "scratch-k1": root / "m/missing"},
        "config": {"seed": 7, "subjects": [1, 2], "note": "<i>not markup</i>"},
        "inputs": {"nsd_stimuli.hdf5": "ab" * 32},
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    kw = make_inputs(root)
    out = build_report(root / "report/index.html", max_grid=MAX_GRID, simulated=True, **kw)
    html = out.read_text(encoding="utf-8")
    p = Checker()
    p.feed(html)
    p.close()
    return {"root": root, "out": out, "html": html, "parsed": p, "kw": kw}


def _decode(src):
    assert src.startswith("data:image/png;base64,"), src[:40]
    im = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
    im.load()
    assert im.format == "PNG"
    return im.size


def test_report_is_well_formed_and_self_contained(report):
    p = report["parsed"]
    assert p.errors == [] and p.stack == []
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    for tag, attr, v in p.links:
        assert (attr == "src" and v.startswith("data:image/png;base64,")) or (attr == "href" and v.startswith("#")), \
            (tag, attr, v[:60])
    assert not [f for f in report["out"].parent.iterdir() if f.name != "index.html"]  # no temp file left


def test_every_image_is_an_embedded_png_and_the_counts_match(report):
    sizes = [_decode(a["src"]) for a in report["parsed"].imgs]
    counts = {s: sizes.count(s) for s in set(sizes)}
    # grid, pretrained/subj01: ids 4, 9, 17: 3 stimuli + 3×5 retrieved + 3 recon + 2 blurry
    # grid, adapted-k1/subj02: ids 6, 12, 25: 3 stimuli + 3 recon (no blurry, no retrieval)
    assert counts.pop((12, 12)) == 3 + 15 + 3
    assert counts.pop((20, 18)) == 3
    assert counts.pop((22, 16)) == 3
    assert counts.pop((14, 10)) == 2
    assert (8, 8) not in counts  # pretrained/subj02 is not the first subject with that method
    # the rest are figures: brain maps of subj01 and subj02 (not the pool adapter), one training
    # figure, one retrieval-vs-sessions figure
    assert sum(counts.values()) == 2 + 1 + 1
    assert all(w > 200 for w, _ in counts)


def test_grid_rows_are_the_first_sorted_ids_and_text_is_escaped(report):
    html, text = report["html"], "".join(report["parsed"].text)
    assert set(report["kw"]["decode_dirs"]) == {("pretrained", "subj01"), ("pretrained", "subj02"),
                                                ("adapted-k1", "subj02")}
    assert "<code>pretrained</code> — subj01" in html and "<code>adapted-k1</code> — subj02" in html
    # the recipe of the folders that record one (pretrained's decode.h5; adapted-k1 has none)
    assert html.count("Decoded from: ") == 1
    assert ("Decoded from: prior samples; img2img from the blurry image at strength 0.7; best of 4 by the "
            "decoding CLIP against the brain model&#x27;s pooled embedding; steps 8, guidance decoder default.") in html
    for i in (4, 9, 17):
        assert f"reconstruction {i}" in html
    for i in (22, 31):
        assert f"reconstruction {i}\"" not in html
    assert "pred 4 <script>x</script>" in text and "<script>" not in html
    assert "a red <b>circle</b> & a square" in text and "&lt;b&gt;circle" in html
    assert html.count('class="retr hit"') == 3  # the seen image is among its own top 5
    assert "&lt;i&gt;not markup&lt;/i&gt;" in html  # config is escaped too


def test_metrics_values_ci_unavailable_and_oracle_fraction(report):
    html = report["html"]
    assert "83.1% [80.2, 85.9]" in html
    assert "0.234 [0.200, 0.270]" in html       # non-fraction metrics with three decimals
    assert "15.0%</td>" in html                  # ridge-k1 has no CI: value alone
    assert html.count('<td class="unavailable">unavailable</td>') == 3
    assert html.count('<td class="unavailable">n/a</td>') == 1  # a "nan" the evaluator may write
    assert "92.4%" in html                       # 0.8312 / 0.9 of subj01's oracle
    assert "100.0%" not in html                  # the oracle is not divided by itself
    for bad in ("nan", "None"):
        assert f">{bad}" not in html


def test_published_rows_are_labelled_and_sourced(report):
    html = report["html"]
    assert "Published on real NSD, not comparable to nsd-sim" in html
    for name in ("MindEye2 (40 h)", "MindEye2 (1 h)", "MindEye1", "Brain-Diffuser"):
        assert f"<td>{name}</td>" in html
    assert "98.8%" in html and "57.4%" in html and "arxiv.org/abs/2403.11207" in html


def test_sections_in_order_with_notes_and_provenance(report):
    html = report["html"]
    order = [html.index(f'id="{a}"') for a in ("metrics", "grid", "brain", "training", "sessions", "provenance")]
    assert order == sorted(order)
    assert "pool adapter" in html and "scratch-k1: no training log" in html
    assert "ab" * 32 in html and "numpy" in html and "git commit" in html
    assert "seed: 7" in html


def test_missing_required_inputs_raise_input_error(tmp_path, report):
    kw = dict(report["kw"])
    out = tmp_path / "r/index.html"
    with pytest.raises(InputError, match="metrics.tsv"):
        build_report(out, **{**kw, "metrics_tsv": tmp_path / "metrics.tsv"})
    with pytest.raises(InputError, match="images"):
        build_report(out, **{**kw, "decode_dirs": {("ridge", "subj01"): tmp_path / "nowhere"}})
    d = report["root"] / "decode/pretrain/subj01"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "images").mkdir()
    with h5py.File(bad / "decode.h5", "w") as f:
        f["nsd_id"] = np.array([5], np.int64)
        f.attrs["n_reconstructed"] = 1
        f.attrs.update(recipe_attrs(DecodeSettings(), "pooled", False))
    with pytest.raises(InputError, match="00005.png"):
        build_report(out, **{**kw, "decode_dirs": {("pretrained", "subj01"): bad}})
    assert d.is_dir() and not out.exists()


def test_only_metrics_given_still_builds(tmp_path):
    rows = [r for r in METRICS if r[1] in ("pretrained", "ridge")]
    _tsv(tmp_path / "m.tsv", ["subject", "method", "metric", "value", "ci_low", "ci_high"], rows)
    out = build_report(tmp_path / "index.html", metrics_tsv=tmp_path / "m.tsv", decode_dirs=None, stimuli=None,
                       true_captions=None, brain_maps=None, train_logs=None, config=None, inputs=None,
                       simulated=False)
    html = out.read_text()
    assert "not comparable to nsd-sim" not in html and "Published on real NSD" in html
    p = Checker()
    p.feed(html)
    assert p.errors == [] and p.imgs == []
    for note in ("No decode folders", "No brain maps", "No training logs", "nothing to plot against K",
                 "fraction-of-oracle columns are omitted"):
        assert note in html


def test_h_escapes_text_and_attributes():
    assert h("td", "<a>&", title='"x"') == '<td title="&quot;x&quot;">&lt;a&gt;&amp;</td>'
    assert h("p", h("b", "ok"), None, ["1", "2"]) == "<p><b>ok</b>12</p>"


def test_the_sessions_figure_names_the_oracle_only_when_it_is_drawn(tmp_path, report):
    assert "dashed: the nsd-sim oracle." in report["html"]  # nsd-sim rows with an oracle
    rows = [r for r in METRICS if r[1] != "oracle"]  # real NSD: no oracle
    _tsv(tmp_path / "m.tsv", ["subject", "method", "metric", "value", "ci_low", "ci_high"], rows)
    html = build_report(tmp_path / "index.html", metrics_tsv=tmp_path / "m.tsv", decode_dirs=None, stimuli=None,
                        true_captions=None, brain_maps=None, train_logs=None, config=None, inputs=None).read_text()
    assert "against the number of its sessions used" in html and "oracle." not in html
    assert "No oracle rows: no ceiling line." in html
    assert "not comparable to nsd-sim" not in html  # real NSD unless told otherwise
