"""The published table's columns beside the metrics computed the same way, MindEye2's evaluation
protocol, and the report's marks of which rows follow it."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from braindecode_pkg.evaluate.retrieval import retrieval
from braindecode_pkg.report import published as pub
from braindecode_pkg.report.build import build_report

# Unit brain embeddings against the image embeddings e_0, e_1, e_2, so cos(brain i, image j) =
# BRAIN[i, j]. Rows (brain): 0 -> image 0 (hit), 1 -> image 0 (miss), 2 -> image 2 (hit): 2/3.
# Columns (images): image 0 -> brain 1 (0.935 > 0.745: miss), image 1 -> brain 0 (miss),
# image 2 -> brain 2 (hit): 1/3.
_RAW = np.array([[0.9, 0.8, 0.1], [0.95, 0.3, 0.2], [0.1, 0.2, 0.7]])
BRAIN = _RAW / np.linalg.norm(_RAW, axis=1, keepdims=True)
IMAGE = np.eye(3)


def _mindeye_batchwise_cosine_similarity(Z, B):
    """MedARC-AI/MindEyeV2 src/utils.py, in numpy: ``((Z @ B.T) / (|Z| |B|)).T``."""
    Z = Z.reshape(len(Z), -1)
    B = B.reshape(len(B), -1).T
    return ((Z @ B) / (np.linalg.norm(Z, axis=1, keepdims=True) @ np.linalg.norm(B, axis=0, keepdims=True))).T


def _mindeye_top1(similarities, labels):
    """src/utils.py ``topk(similarities, labels, k=1)``: each row's best column is its label."""
    return float(np.mean(np.argsort(similarities, axis=1)[:, -1] == labels))


def test_image_retrieval_column_is_mindeyes_fwd_which_is_image_to_brain():
    labels = np.arange(3)
    # final_evaluations.ipynb: emb = CLIP-Image, emb_ = CLIP-Brain
    fwd = _mindeye_top1(_mindeye_batchwise_cosine_similarity(BRAIN, IMAGE), labels)  # fwd_sim (emb_, emb)
    bwd = _mindeye_top1(_mindeye_batchwise_cosine_similarity(IMAGE, BRAIN), labels)  # bwd_sim (emb, emb_)
    assert (fwd, bwd) == (pytest.approx(1 / 3), pytest.approx(2 / 3))  # the two directions differ here
    r = retrieval(BRAIN, IMAGE, n_candidates=3, n_draws=1)
    assert r["image_to_brain"] == pytest.approx(fwd) and r["brain_to_image"] == pytest.approx(bwd)
    columns = dict((label, metric) for metric, label in pub.COLUMNS)
    assert columns["Image retrieval"] == "retrieval_image2brain_top1"
    assert columns["Brain retrieval"] == "retrieval_brain2image_top1"
    # the published values keep the paper's order: MindEye2 (40 h) image 98.8, brain 98.3
    assert dict(pub.ROWS)["MindEye2 (40 h)"]["retrieval_image2brain_top1"] == 0.988


def _info(**over):
    info = {"protocol": "avg_outputs", "n": 1000, "n_reconstructed": 1000,
            "retrieval": {"n_candidates": 300, "n_draws": 30, "n": 1000, "head": "tokens", "width": 425984},
            "image_protocol": {"base": 256, "antialias": False, "name": "MindEye"},
            "judge_clip": {"name": "ViT-L-14-quickgelu", "family": "ViT-L-14", "weights": "/w/vitl.bin",
                           "weights_sha256": "cd" * 32, "sim": False, "is_decoding_clip": False},
            "decoding_clip": {"model": "ViT-bigG-14", "weights_sha256": "ef" * 32}}
    for k, v in over.items():
        info[k] = {**info[k], **v} if isinstance(v, dict) and k in info else v
    return info


def test_protocol_differences_name_each_departure():
    assert pub.protocol_differences(_info()) == []
    d = pub.protocol_differences(_info(retrieval={"head": "pooled"}, image_protocol={"base": None, "antialias": True},
                                       judge_clip={"family": "nsd-sim-clip"}, n=300, n_reconstructed=100))
    assert d == ["retrieval on pooled, not tokens", "image chain one antialiased resize, not 256 px without "
                 "antialiasing", "judge nsd-sim-clip, not ViT-L-14", "100 of 300 test images reconstructed, "
                 "not all 1,000"]
    assert pub.protocol_differences(_info(n_reconstructed=999)) == ["999 of 1000 test images reconstructed, "
                                                                     "not all 1,000"]
    assert pub.protocol_differences({"n": 300, "retrieval": {"head": "pooled"}}) is None  # the oracle's info


def test_report_marks_the_rows_that_follow_the_published_protocol(tmp_path):
    rows = [("subj01", "pretrained", "retrieval_image2brain_top1", "0.9", "0.8", "0.95"),
            ("subj01", "ridge", "retrieval_image2brain_top1", "0.4", "0.3", "0.5"),
            ("subj01", "pretrained", "twoway_clip", "0.8", "0.7", "0.9"),
            ("subj01", "oracle", "retrieval_image2brain_top1", "0.95", "0.9", "0.99")]
    tsv = tmp_path / "metrics.tsv"
    with open(tsv, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["subject", "method", "metric", "value", "ci_low", "ci_high"])
        w.writerows(rows)
    recipe = {"decoded": "prior", "img2img": True, "strength": 0.7, "n_samples": 4, "select_by": "source",
              "num_inference_steps": None, "guidance_scale": 5.0}
    parts = {"pretrained/subj01": _info(decode_recipe=recipe), "ridge/subj01": _info(retrieval={"head": "pooled"}),
             "oracle/subj01": {"n": 1000}}
    out = build_report(tmp_path / "index.html", metrics_tsv=tsv, decode_dirs=None, stimuli=None, true_captions=None,
                       brain_maps=None, train_logs=None, config=None, inputs=None, simulated=False, parts=parts)
    html = out.read_text()
    # retrieval and image tables: one protocol cell per row; the oracle records no protocol
    assert html.count('class="protocol follows"') == 2  # pretrained in both tables
    assert html.count('class="protocol differs" title="retrieval on pooled, not tokens"') == 1
    assert "Evaluation protocol of each row" in html and "no: retrieval on pooled, not tokens" in html
    # which decode recipe made each row's images and captions (a part without one says so)
    assert ("prior samples; img2img from the blurry image at strength 0.7; best of 4 by the decoding CLIP "
            "against the prior sample; steps decoder default, guidance 5") in html
    assert html.count('<td class="text">?</td>') == 1  # ridge's part records no recipe
    assert "MindEye&#x27;s chain (every image to 256 px first" in html
    assert "tokens (the flattened predicted tokens against the embed file&#x27;s image_tokens), infer protocol " \
        "avg_outputs (pretrained/subj01); pooled (the predicted pooled embedding against" in html
    # provenance: the judge, its weights and checksum, beside the decoding CLIP
    prov = html[html.index('id="provenance"'):]
    assert "ViT-L-14-quickgelu (ViT-L-14)" in prov and "/w/vitl.bin" in prov and "cd" * 32 in prov
    assert "ViT-bigG-14" in prov and "pretrained/subj01, ridge/subj01" in prov
    # the published table says which of this report's metrics each retrieval column is
    assert 'title="retrieval_image2brain_top1 (image→brain)">Image retrieval' in html
    without = build_report(tmp_path / "bare.html", metrics_tsv=tsv, decode_dirs=None, stimuli=None,
                           true_captions=None, brain_maps=None, train_logs=None, config=None, inputs=None,
                           simulated=False).read_text()
    assert 'class="protocol' not in without and "No evaluation info (metrics.json) given" in without
    assert "No judge recorded" in without


def test_parts_info_comes_from_metrics_json(tmp_path):
    from braindecode_pkg.errors import InputError
    from braindecode_pkg.evaluate.collect import collect
    from braindecode_pkg.evaluate.score import Scores, write_part
    from braindecode_pkg.report.from_results import read_parts_info

    s = Scores("adapt-k1", "subj04", np.arange(4), info=_info(n=4, n_reconstructed=4))
    s.add("retrieval_image2brain_top1", [1, 0, 1, 1], 0.75, kind="corpus")
    collect([write_part(s, tmp_path / "p.h5")], tmp_path / "metrics.tsv", tmp_path / "metrics.json")
    parts = read_parts_info(tmp_path / "metrics.json")
    assert list(parts) == ["adapted-k1/subj04"]
    assert pub.protocol_differences(parts["adapted-k1/subj04"]) == ["4 of 4 test images reconstructed, "
                                                                     "not all 1,000"]
    with pytest.raises(InputError, match="metrics.json: not found"):
        read_parts_info(tmp_path / "none" / "metrics.json")
