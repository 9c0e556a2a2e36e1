"""The real path end to end (issue 20): an NSD-format root that is not nsd-sim
(``tests/realpath/nsd_root.py``), tiny weights in the formats real checkpoints come in
(``tests/realpath/weights.py``: an open_clip ``CLIP`` in open_clip's local-dir layout, a
``StableUnCLIPImg2ImgPipeline`` folder written by ``save_pretrained``, a GPT-2 folder), and a copy
of ``config/nsd.yaml`` pointed at them, run through the whole workflow as a user runs it, one
``snakemake``: preprocess → embed → the ClipCap mapper trained on the embed file with the GPT-2
(rule train_captioner) → pretrain / adapt / scratch / ridge → infer → decode → evaluate →
report. Marked slow; ``.ci/run`` runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from tests.realpath import weights as W
from tests.realpath.nsd_root import render, write_nsd_root

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
#: subject 5 is held out and adapted from its first session (a subject id that is not a position)
SUBJECTS = {1: ((9, 11, 7), 3), 2: ((10, 8, 12), 2), 5: ((11, 10, 8), 2)}

pytestmark = pytest.mark.slow


def _snakemake(work: Path, config: Path, *targets: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*SNAKEMAKE, *targets, "--directory", str(work), "--cores", "2", "--configfile",
                           str(config)], capture_output=True, text=True, timeout=2400, env=env)


def _encoder(clip_dir: Path):
    """The fixture CLIP's pooled embedding of each rendered stimulus: what the planted voxels read."""
    from braindecode_pkg.decoders.clip import ClipEncoder

    enc = ClipEncoder.load({"local_dir": str(clip_dir)})

    def encode(colours):
        out = []
        for a in range(0, len(colours), 64):
            imgs = np.stack([render(c) for c in colours[a:a + 64]])
            out.append(enc.encode_images(imgs, what=("pooled",))["pooled"])
        return np.concatenate(out)

    return encode


def _config(work: Path, root: Path, models: dict) -> Path:
    """config/nsd.yaml as a user copies it, pointed at the fixture root and weights, sized for CI."""
    cfg = yaml.safe_load((REPO / "config/nsd.yaml").read_text())
    cfg.update({"nsd_root": str(root), "subjects": sorted(SUBJECTS), "results": "results"})
    cfg["models"] = {**cfg.get("models", {}), **models}
    # nsd.yaml's recipe (the prior, the latent head, img2img, best of n) at the fixture's size
    brain = cfg["brain"]
    brain.update(heldout=5, sessions=[1], validation={"images": 20, "seed": 0})
    brain["pretrain"]["model"].update(width=48, n_blocks=1, adapter_rank=16,
                                      prior={"width": 32, "depth": 1, "timesteps": 20, "sample_steps": 4})
    brain["pretrain"]["train"] = {"steps": 400, "batch_size": 64, "lr": 0.003}
    for r in ("adapt", "scratch"):
        brain[r]["train"] = {"steps": 60, "batch_size": 64}
    cfg["decode"].update(max_images=8, num_inference_steps=2, n_samples=2, batch_size=8)
    cfg["resources"] = {"default": {"cpus": 1, "mem_mb": 4000, "runtime": 60, "gpus": 0, "partition": None}}
    path = work / "real.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    weights = base / "weights"
    clip_dir = W.write_open_clip_local_dir(weights / "CLIP-tiny", formats=("safetensors",))
    judge_dir = W.write_open_clip_local_dir(weights / "CLIP-judge", seed=7, formats=("safetensors",))
    pipe_dir = W.write_unclip_pipeline(weights / "stable-diffusion-2-1-unclip", embed_dim=W.CLIP_EMBED_DIM,
                                       variants=(), with_bin=False)
    gpt2 = W.write_gpt2(weights / "gpt2", with_bin=False)
    root = base / "nsd"
    info = write_nsd_root(root, subjects=SUBJECTS, encode=_encoder(clip_dir), signal=1.5)
    work = base / "work"
    work.mkdir()
    missing = weights / "captioner"
    models = W.models_section(clip_local_dir=clip_dir, pipeline_dir=pipe_dir, captioner_dir=missing, lm_dir=gpt2)
    models["judge_clip"] = {"local_dir": str(judge_dir)}
    # a mapper folder that does not exist stops the workflow before any job, named
    r = _snakemake(work, _config(work, root, models), "-n")
    assert r.returncode != 0 and str(missing) in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    # the mapper trained by the workflow on its embed file, never on the shared 1000 (the brain test set)
    models["captioner"] = {"lm": str(gpt2), "train": {"steps": 30, "batch_size": 8, "seed": 0}}
    config = _config(work, root, models)
    r = _snakemake(work, config)
    assert r.returncode == 0, r.stderr[-6000:]
    return {"work": work, "res": work / "results", "info": info, "models": models, "weights": weights,
            "config": yaml.safe_load(config.read_text())}


def test_every_stage_writes_outputs_that_verify(real_run):
    from braindecode_pkg.embed.stimuli import verify_embeddings

    res, info = real_run["res"], real_run["info"]
    for s, planted in info["subjects"].items():
        with h5py.File(res / f"prep/subj{s:02d}.h5") as f:
            assert f["betas"].shape == (len(planted["trials"]["nsd_id"]), planted["n_voxels"])
            assert np.array_equal(f["nsd_id"][...], planted["trials"]["nsd_id"])
            assert np.array_equal(f["voxel_ijk"][...], planted["roi_ijk"])
            assert f["is_test"][...].sum() == 3 * len(info["test_ids"])
    verify_embeddings(res / "embed/clip.h5")
    with h5py.File(res / "embed/clip.h5") as e:
        assert e["nsd_id"][...].tolist() == info["shown_ids"].tolist()
        assert e["image_pooled"].shape == (len(info["shown_ids"]), W.CLIP_EMBED_DIM)
    for m in ("pretrain", "adapt-k1", "scratch-k1"):
        assert (res / f"models/brain/{m}/model.safetensors").is_file()
    for m, s in [("pretrain", 1), ("pretrain", 2), ("ridge-all", 1), ("adapt-k1", 5), ("scratch-k1", 5),
                 ("ridge-k1", 5), ("true_embedding", 5)]:
        with h5py.File(res / f"brain/{m}/subj{s:02d}.h5") as f:
            assert f["nsd_id"][...].tolist() == info["test_ids"].tolist()
        d = res / f"decode/{m}/subj{s:02d}"
        with h5py.File(d / "decode.h5") as f:
            assert f.attrs["n_reconstructed"] == 8
            # the brain models' prior samples, from their blurry images; ridge and the truth as they are
            brain_model = m.split("-")[0] in ("pretrain", "adapt", "scratch")
            assert f.attrs["decoded"] == ("prior" if brain_model else "pooled"), m
            assert bool(f.attrs["img2img"]) == (brain_model or m == "true_embedding"), m
            assert f["sample_similarity"].shape == (8, 2)
        assert len(list((d / "images").glob("*.png"))) == 8
        assert len((d / "captions.tsv").read_text().splitlines()) == 1 + len(info["test_ids"])
    assert (res / "report/index.html").stat().st_size > 10_000


def _metric(res: Path, method: str, metric: str, subject: str = "mean") -> float:
    import csv

    with open(res / "eval/metrics.tsv") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["method"] == method and row["metric"] == metric and row["subject"] == subject:
                return float(row["value"])
    raise AssertionError(f"no {method} {metric} {subject} in metrics.tsv")


def test_retrieval_reads_the_planted_signal(real_run):
    res = real_run["res"]
    chance = 1 / len(real_run["info"]["test_ids"])  # 100 candidates: every test image
    assert _metric(res, "true_embedding", "retrieval_brain2image_top1") == 1.0
    for method, subject in [("pretrained", "mean"), ("ridge", "mean"), ("adapted-k1", "subj05")]:
        assert _metric(res, method, "retrieval_brain2image_top1", subject) > 10 * chance, method


def test_the_trained_caption_decoder_held_out_the_test_images_and_names_its_clip(real_run):
    import json

    res = real_run["res"]
    doc = json.loads((res / "models/captioner/config.json").read_text())
    assert doc["braindecode"]["heldout_nsd_ids"] == "exclude_ids"  # NSD's shared 1000, never trained on
    assert (real_run["work"] / doc["braindecode"]["pairs"]).resolve() == (res / "embed/clip.h5").resolve()
    with h5py.File(res / "embed/clip.h5") as e:
        assert doc["clip"]["weights_sha256"] == e.attrs["weights_sha256"]
        assert doc["clip"]["config"] == json.loads(e.attrs["clip_config"])


def test_report_lists_the_real_weights_with_their_hashes(real_run):
    from braindecode_pkg.io import sha256_file

    html = (real_run["res"] / "report/index.html").read_text()
    w = real_run["weights"]
    for f in [w / "CLIP-tiny/open_clip_model.safetensors",
              w / "stable-diffusion-2-1-unclip/unet/diffusion_pytorch_model.safetensors",
              w / "gpt2/model.safetensors", real_run["res"] / "models/captioner/model.safetensors"]:
        assert str(f.parent) in html, f
        assert sha256_file(f) in html, f
