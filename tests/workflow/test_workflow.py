"""Snakemake end to end on the tiny nsd-sim preset, in a temporary working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*SNAKEMAKE, "--directory", str(workdir), "--cores", "2", *args],
        capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("wf")
    r = run_snakemake(work, "--configfile", str(REPO / "config/tiny.yaml"))
    assert r.returncode == 0, r.stderr[-4000:]
    return work


def test_tiny_pipeline_outputs(tiny_run):
    res = tiny_run / "results"
    assert (res / "sim/sim_truth/manifest.json").is_file()
    for s in (1, 2, 3):
        with h5py.File(res / f"prep/subj{s:02d}.h5") as f, h5py.File(res / f"sim/sim_truth/subj{s:02d}.h5") as t:
            b = f["betas"][...]
            # the ROI voxels of the simulator's truth, in the same order
            assert np.array_equal(f["voxel_ijk"][...], t["voxel_ijk"][...])
            assert b.shape == (f["trial"].shape[0], t["voxel_ijk"].shape[0])
            assert f.attrs["normalisation"] == "session" and f.attrs["format"] == "hdf5"
            # z-scored within each session
            for sess in np.unique(f["session"][...]):
                rows = b[f["session"][...] == sess]
                assert np.allclose(rows.mean(0), 0, atol=1e-4) and np.allclose(rows.std(0), 1, atol=1e-3)
            # every trial's image is one the truth knows
            assert np.isin(f["nsd_id"][...], t["nsd_id"][...]).all()
    assert (res / "logs/preprocess/subj01.log").is_file()


def test_tiny_pipeline_embeds_every_shown_image_with_the_shipped_clip(tiny_run):
    import json

    from braindecode_pkg.decoders.clip import SHIPPED_SIM_CLIP

    res = tiny_run / "results"
    shown = set()
    for s in (1, 2, 3):
        with h5py.File(res / f"prep/subj{s:02d}.h5") as f:
            shown |= set(f["nsd_id"][...].tolist())
    dim = json.loads((SHIPPED_SIM_CLIP / "open_clip_config.json").read_text())["model_cfg"]["embed_dim"]
    with h5py.File(res / "embed/clip.h5") as e:
        assert e["nsd_id"][...].tolist() == sorted(shown)
        pooled = e["image_pooled"][...]
        assert pooled.shape == (len(shown), dim) and np.allclose(np.linalg.norm(pooled, axis=1), 1, atol=1e-4)
        assert e["image_tokens"].shape[0] == len(shown) and e["done"][...].all()
        assert (e["n_captions"][...] == 5).all() and e["text"].shape == (len(shown), 5, dim)
        assert str(SHIPPED_SIM_CLIP) in e.attrs["clip_config"]
    assert not (res / "models/nsd-sim").exists()  # shipped weights: no sim model trained


def test_tiny_pipeline_brain_embeddings_for_every_method(tiny_run):
    """tiny.yaml: subjects 1-2 pretrained on, subject 3 held out and adapted from 1 session."""
    res = tiny_run / "results"
    with h5py.File(res / "embed/clip.h5") as e:
        dim = e["image_pooled"].shape[1]
    expected = [("pretrain", 1), ("pretrain", 2), ("ridge-all", 1), ("ridge-all", 2),
                ("adapt-k1", 3), ("scratch-k1", 3), ("ridge-k1", 3)]
    for method, s in expected:
        with h5py.File(res / f"brain/{method}/subj{s:02d}.h5") as f, h5py.File(res / f"prep/subj{s:02d}.h5") as p:
            test_ids = np.unique(p["nsd_id"][...][p["is_test"][...]])
            assert f["nsd_id"][...].tolist() == test_ids.tolist()
            for protocol in ("avg_betas", "avg_outputs"):
                pooled = f[f"{protocol}/pooled"][...]
                assert pooled.shape == (len(test_ids), dim) and np.isfinite(pooled).all()
            assert f.attrs["method"] == method
    import json

    info = json.loads((res / "models/brain/adapt-k1/config.json").read_text())
    assert "3" in json.dumps(info) and (res / "models/brain/adapt-k1/train_log.tsv").is_file()


def test_tiny_pipeline_decodes_and_scores_every_method(tiny_run):
    """Decode folders for each (method, subject) and one long-format metrics table with CIs."""
    import csv

    from braindecode_pkg.decode import read_captions_tsv, read_images
    from braindecode_pkg.evaluate.score import read_part

    res = tiny_run / "results"
    methods = {"pretrain": "pretrained", "ridge-all": "ridge", "adapt-k1": "adapted-k1", "scratch-k1": "scratch-k1",
               "ridge-k1": "ridge-k1", "true_embedding": "true_embedding"}
    pairs = [(m, s) for m in ("pretrain", "ridge-all") for s in (1, 2)] + \
            [(m, 3) for m in ("adapt-k1", "scratch-k1", "ridge-k1")] + [("true_embedding", s) for s in (1, 2, 3)]
    for method, s in pairs:
        d = res / f"decode/{method}/subj{s:02d}"
        with h5py.File(d / "decode.h5") as f, h5py.File(res / f"brain/{method}/subj{s:02d}.h5") as b:
            ids = f["nsd_id"][...]
            assert ids.tolist() == b["nsd_id"][...].tolist() and f["retrieved"].shape == (len(ids), 5)
        # tiny.yaml: images of the first 24 sorted test images (decode.max_images), captions of all
        assert len(ids) > 24 and sorted(p.name for p in (d / "images").iterdir()) == [f"{i:05d}.png" for i in ids[:24]]
        assert sorted(read_captions_tsv(d / "captions.tsv")) == ids.tolist()
        # tiny.yaml trains the low-level head: brain models' reconstructions start from its blurry image
        has_latent = method in ("pretrain", "adapt-k1", "scratch-k1", "true_embedding")
        assert (d / "blurry").is_dir() == has_latent, (method, s)
        if has_latent:
            assert read_images(d / "blurry", ids[:24]).shape == (24, 32, 32, 3)
    with h5py.File(res / "embed/latent.h5") as f, h5py.File(res / "embed/clip.h5") as e:
        assert f["nsd_id"][...].tolist() == e["nsd_id"][...].tolist() and f["latent"].shape[1:] == (4, 16, 16)
    with open(res / "eval/metrics.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert list(rows[0]) == ["subject", "method", "metric", "value", "ci_low", "ci_high"]
    table = {(r["subject"], r["method"], r["metric"]): r for r in rows}
    for method, s in pairs:
        for metric in ("retrieval_brain2image_top1", "retrieval_image2brain_top1", "pixcorr", "ssim",
                       "twoway_clip", "bleu1", "bleu4", "meteor", "rougeL", "cider", "clip_s", "attr_acc"):
            r = table[(f"subj{s:02d}", methods[method], metric)]
            v, lo, hi = float(r["value"]), float(r["ci_low"]), float(r["ci_high"])
            assert np.isfinite(v) and lo <= v + 1e-9 and v <= hi + 1e-9, (method, s, metric, r)
        assert table[(f"subj{s:02d}", methods[method], "twoway_alexnet2")]["value"] == "unavailable"
    for s in (1, 2, 3):  # true embeddings retrieve their own images; the oracle is scored too
        assert float(table[(f"subj{s:02d}", "true_embedding", "retrieval_brain2image_top1")]["value"]) == 1.0
        assert (f"subj{s:02d}", "oracle", "retrieval_brain2image_top1") in table
    part = read_part(res / "eval/parts/pretrain/subj01.h5")  # image metrics of the reconstructed 24 only
    assert np.isfinite(part.metrics["ssim"]["items"][:24]).all() and np.isnan(part.metrics["ssim"]["items"][24:]).all()
    assert np.isfinite(part.metrics["cider"]["items"]).all()
    assert ("mean", "pretrained", "twoway_clip") in table and ("mean", "true_embedding", "cider") in table
    assert ("mean", "adapted-k1", "pixcorr") not in table  # one subject: no mean row


def _figures(res) -> dict:
    """``{(subject, method, metric): value}`` of metrics.tsv (numbers only)."""
    import csv

    with open(res / "eval/metrics.tsv", newline="") as fh:
        return {(r["subject"], r["method"], r["metric"]): float(r["value"])
                for r in csv.DictReader(fh, delimiter="\t") if r["value"] not in ("unavailable", "")}


BRAIN_METHODS = {1: ("pretrained", "ridge"), 2: ("pretrained", "ridge"), 3: ("adapted-k1", "scratch-k1", "ridge-k1")}
B2I = "retrieval_brain2image_top1"
#: where the true embeddings must win: they are what the decoders were trained on (retrieval both
#: ways, the reconstructions' CLIP two-way and pixels — their blurry start is the true latent's —
#: and the captions)
CEILING_METRICS = (B2I, "retrieval_image2brain_top1", "twoway_clip", "pixcorr", "ssim", "clip_s", "attr_acc",
                   "bleu1", "bleu4", "meteor", "rougeL", "cider")


def _chance(tiny_run) -> float:
    """1 / the number of retrieval candidates: all of tiny.yaml's 40 test images (fewer than 300)."""
    from braindecode_pkg.evaluate.retrieval import retrieval

    with h5py.File(tiny_run / "results/brain/pretrain/subj01.h5") as f:
        n_test = len(f["nsd_id"])
    n_cand = retrieval(np.eye(n_test), np.eye(n_test))["n_candidates"]
    assert n_test == n_cand == 40
    return 1 / n_cand


def test_tiny_pipeline_figures_rank_the_methods(tiny_run):
    """What the tiny run must show, not only that it ran. The pretrained model beats chance at
    brain→image top-1 (the mean of its two subjects; 0.05 against 1/40 when this was written);
    the true embeddings, the decoders' ceiling, beat every brain method of their subject on
    every metric of the decoder stack (e.g. CLIP two-way 0.87 against at most 0.60); the oracle
    (Bayes-optimal from the betas: 0.975) beats every brain method at brain→image retrieval."""
    t = _figures(tiny_run / "results")
    assert t[("mean", "pretrained", B2I)] > _chance(tiny_run)
    for s, methods in BRAIN_METHODS.items():
        subj = f"subj{s:02d}"
        for metric in CEILING_METRICS:
            ceiling = t[(subj, "true_embedding", metric)]
            for m in methods:
                assert ceiling > t[(subj, m, metric)], (subj, m, metric, ceiling, t[(subj, m, metric)])
        for m in methods:
            assert t[(subj, "oracle", B2I)] > t[(subj, m, B2I)], (subj, m)


@pytest.mark.xfail(strict=True, reason=(
    "on the tiny preset ridge retrieves better than the pretrained model: brain→image top-1 among "
    "40, mean of subjects 1-2, pretrained 0.050 (subj01 0.050, subj02 0.050) against ridge 0.125 "
    "(0.125, 0.125), chance 0.025; the same pretraining with 300 / 1,500 / 5,000 steps instead of "
    "30 reaches 0.0625 / 0.1125 / 0.100, still not above ridge"))
def test_tiny_pretrained_model_retrieves_better_than_ridge(tiny_run):
    t = _figures(tiny_run / "results")
    assert t[("mean", "pretrained", B2I)] > t[("mean", "ridge", B2I)]


def test_tiny_pipeline_report_is_valid_self_contained_html(tiny_run):
    from tests.unit.report.test_report import Checker, _decode

    html = (tiny_run / "results/report/index.html").read_text(encoding="utf-8")
    p = Checker()
    p.feed(html)
    p.close()
    assert p.errors == [] and p.stack == [] and "script" not in p.tags
    for tag, attr, v in p.links:  # nothing outside the page: images embedded, links in-page
        assert (attr == "src" and v.startswith("data:image/png;base64,")) or (attr == "href" and v.startswith("#"))
    sizes = [_decode(a["src"]) for a in p.imgs]  # every image it shows is a PNG that decodes
    # the grid: per method (6) the stimulus and the reconstruction of up to 12 test images, plus
    # figures (brain maps of 3 subjects, training curves, retrieval vs sessions)
    assert len(sizes) >= 6 * 2 * 12 + 3
    for name in ("pretrained", "adapted-k1", "scratch-k1", "ridge-k1", "true_embedding", "oracle", "unavailable",
                 "MindEye2"):
        assert name in html, name


def test_sim_models_trained_by_the_workflow_feed_the_embed_stage(tmp_path):
    """models.sim_weights: train (tiny recipes): the CLIP, image decoder and captioner are trained
    here by the shipped models' chain of stages, each saved in its real-checkpoint format, and
    embed uses the CLIP trained here."""
    import json

    cfg = tmp_path / "train.yaml"
    cfg.write_text("subjects: [1, 2]\nsim: {preset: tiny, seed: 0, overrides: {sessions: 1}}\n"
                   "models: {clip: sim, image_decoder: sim, captioner: sim, sim_weights: train, sim_preset: tiny}\n"
                   "brain: {heldout: null}\n")
    sim = tmp_path / "results/models/nsd-sim"
    targets = ["results/embed/clip.h5", "results/models/nsd-sim/image_decoder/model_index.json",
               "results/models/nsd-sim/captioner/config.json"]
    r = run_snakemake(tmp_path, *targets, "--configfile", str(cfg))
    assert r.returncode == 0, r.stderr[-4000:]
    clip_cfg = json.loads((sim / "clip/open_clip_config.json").read_text())
    assert (sim / "clip/open_clip_model.safetensors").is_file()
    assert json.loads((sim / "image_decoder/model_index.json").read_text())["_class_name"] == "StableUnCLIPImg2ImgPipeline"
    assert (sim / "captioner/model.safetensors").is_file() and (sim / "captioner/lm/model.safetensors").is_file()
    # the chain: the CLIP fine-tuned from its stage 2, the decoder from its stage 8, the
    # captioner on the final CLIP
    from braindecode_pkg.io import sha256_file

    def same(recorded, path):  # paths are recorded as given (relative to the workflow's folder)
        return (tmp_path / recorded).resolve() == path.resolve()

    assert same(clip_cfg["braindecode"]["init"]["local_dir"], sim / "stages/clip-2")
    dec = json.loads((sim / "image_decoder/braindecode.json").read_text())
    assert same(dec["init"]["pipeline"], sim / "stages/image_decoder-8") and dec["recipe"]["vae_steps"] == 0
    assert same(dec["clip"]["config"]["local_dir"], sim / "clip")
    cap = json.loads((sim / "captioner/config.json").read_text())
    assert cap["clip"]["weights_sha256"] == sha256_file(sim / "clip/open_clip_model.safetensors")
    assert sorted(p.name for p in (sim / "stages").iterdir()) == [
        "clip-1", "clip-2", *(f"image_decoder-{i}" for i in range(1, 9))]
    # stages.json records the chain as run (the decoder and captioner rules wrote it side by side)
    from braindecode_pkg.sim.recipes import chain as sim_chain

    runs = json.loads((sim / "stages.json").read_text())["stages"]
    assert sim_chain.lineage_errors(runs, "tiny") == []
    by = {r["stage"]: r for r in runs}
    assert by["image_decoder"]["unet_sha256"] == sha256_file(sim / "image_decoder/unet/diffusion_pytorch_model.safetensors")
    assert by["captioner"]["clip_sha256"] == by["clip"]["weights_sha256"] == sha256_file(
        sim / "clip/open_clip_model.safetensors")
    assert all(r["command"].startswith("braindecode-pkg train-") and r["minutes"] is not None for r in runs)
    with h5py.File(tmp_path / "results/embed/clip.h5") as e:
        assert e["image_pooled"].shape[1] == clip_cfg["model_cfg"]["embed_dim"]
        assert str(sim / "clip") in e.attrs["clip_config"] or "nsd-sim/clip" in e.attrs["clip_config"]


def test_rerun_has_nothing_to_do(tiny_run):
    r = run_snakemake(tiny_run, "--configfile", str(REPO / "config/tiny.yaml"), "-n")
    assert r.returncode == 0 and "Nothing to be done" in (r.stdout + r.stderr)


def test_config_failing_the_schema_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("preprocess:\n  format: mat\n")
    r = run_snakemake(tmp_path, "--configfile", str(bad), "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "preprocess" in out and "format" in out and "'mat' is not one of ['hdf5', 'nifti']" in out
    assert not (tmp_path / "results").exists()


def test_missing_real_weights_stop_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    missing = tmp_path / "no-such-unclip"
    bad.write_text(f"models: {{clip: sim, image_decoder: {{pipeline_dir: {missing}}}, captioner: sim, "
                   "sim_weights: shipped, sim_preset: default}\n")
    r = run_snakemake(tmp_path, "--configfile", str(bad), "-n")
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "models.image_decoder" in out and str(missing) in out
    assert not (tmp_path / "results").exists()


def test_real_nsd_config_builds_its_dag(tmp_path):
    """config/nsd.yaml (subjects 1, 2, 5, 7; 7 held out) plans every stage on an NSD-shaped tree of
    empty placeholder files (the workflow checks that the root holds the files the stages start from)."""
    from braindecode_pkg.data.placeholders import write_placeholders
    from tests.workflow.test_cluster_plan import placeholder_weights

    write_placeholders(tmp_path / "nsd", subjects=(1, 2, 5, 7))
    weights = placeholder_weights(tmp_path / "weights", clip_arch="ViT-H-14")
    r = run_snakemake(tmp_path, "--configfile", str(REPO / "config/nsd.yaml"), str(weights),
                      "--config", f"nsd_root={tmp_path / 'nsd'}", "-n")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for rule, count in (("preprocess", 4), ("embed", 1), ("pretrain", 1), ("adapt", 3), ("scratch", 3),
                        ("ridge", 6), ("infer", 15), ("true_embedding", 4), ("decode_subj01", 1),
                        ("decode_subj07_3", 1), ("evaluate_subj02", 1), ("evaluate_subj07_1", 1), ("collect", 1),
                        ("report", 1)):
        assert any(line.split() == [rule, str(count)] for line in out.splitlines()), (rule, out[-3000:])
    stats = out.split("Job stats")[1].split("\n\n")[0]
    assert "simulate" not in stats and "oracle" not in stats and "preprocess_psc" not in stats
