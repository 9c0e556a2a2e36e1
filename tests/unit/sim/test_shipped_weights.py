"""The nsd-sim models shipped in braindecode_pkg/sim/weights/nsd-sim-1.0 against issue 3's ceilings.

Each model's figures are measured again here from its weights, on held-out scenes of the stream
its training run held out (300 / 120 / 40 scenes: small sets, so the bars here are a few
standard errors below the figures): issue 3's bars are met, and the figures recorded beside the
weights by their training run (2,000 / 1,000 / 200 scenes) agree with these measurements within
sampling error, so a record that the weights do not bear out fails. ``-m slow`` measures the
recorded figures again on the training run's whole held-out sets. And the weights are what
``braindecode-pkg train-sim-models`` makes: ``stages.json`` records every run of the chain, each
the chain's command, each starting from the one before. Full measurements: ``make bench-ceilings``.
"""

from __future__ import annotations

import json
import math
import os
import shlex

import numpy as np

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from braindecode_pkg import cli  # noqa: E402
from braindecode_pkg.io import sha256_file  # noqa: E402
from braindecode_pkg.decoders import clip as mclip  # noqa: E402
from braindecode_pkg.evaluate.images import clip_features, two_way  # noqa: E402
from braindecode_pkg.sim import scenes as sc  # noqa: E402
from braindecode_pkg.sim.attributes import sim_attribute_scores  # noqa: E402
from braindecode_pkg.sim.recipes import chain as sim_chain  # noqa: E402
from braindecode_pkg.sim.recipes import captioner as tcap  # noqa: E402
from braindecode_pkg.sim.recipes import clip as train_clip  # noqa: E402
from braindecode_pkg.sim.recipes import image_decoder as tid  # noqa: E402
from braindecode_pkg.decoders.captioner import SHIPPED_SIM_CAPTIONER, Captioner  # noqa: E402
from braindecode_pkg.decoders.image_decoder import SHIPPED_SIM_DECODER, ImageDecoder  # noqa: E402

SHIPPED = mclip.SHIPPED_SIM_CLIP.parent

SEED = 0  # the shipped models' training seed


def _agrees(recorded: float, measured: float, n_recorded: int, n_measured: int, grain: float = 0.0) -> bool:
    """Two estimates of one rate agree: within 4 standard errors of their difference (binomial,
    at their mean) plus ``grain`` (one item of the smaller set, for rates near 0 or 1)."""
    p = (recorded + measured) / 2
    return abs(recorded - measured) <= 4 * math.sqrt(p * (1 - p) * (1 / n_recorded + 1 / n_measured)) + grain


def _clip_record():
    return json.loads((mclip.SHIPPED_SIM_CLIP / "open_clip_config.json").read_text())["braindecode"]


def _captioner_record():
    return json.loads((SHIPPED_SIM_CAPTIONER / "config.json").read_text())["braindecode"]


def _decoder_record():
    return json.loads((SHIPPED_SIM_DECODER / "braindecode.json").read_text())


@pytest.fixture(scope="module")
def clip():
    torch.set_num_threads(2)
    return mclip.ClipEncoder.load("sim")


def test_clip_retrieval_measured_again(clip):
    rec = _clip_record()
    assert rec["seed"] == SEED and rec["heldout_stream"] == [SEED, train_clip._P_HELDOUT]
    assert rec["heldout"]["n_heldout"] == 2000 and rec["heldout"]["n_candidates"] == 300
    held = train_clip.scene_set(SEED, train_clip._P_HELDOUT, 300, 1, clip, cache_dir=False)
    m = train_clip.evaluate(clip, held, n_candidates=300, n_draws=1)  # the 300 are one draw
    # 0.957 and 0.933 here: issue 3's bar is 0.8
    assert m["image_to_caption_top1"] >= 0.8 and m["caption_to_image_top1"] >= 0.8
    for k in ("image_to_caption_top1", "caption_to_image_top1"):
        assert _agrees(rec["heldout"][k], m[k], 2000, 300), (k, rec["heldout"][k], m[k])


def test_captioner_attributes_measured_again(clip):
    """Greedy captions of the true embeddings name the scenes' colours, counts and shapes (issue
    3: shape and colour >= 0.8, recorded on 1,000 scenes), and not those of other scenes."""
    rec = _captioner_record()
    a = rec["heldout"]["attributes"]
    assert rec["seed"] == SEED and rec["heldout_stream"] == [SEED, tcap._P_HELDOUT] and a["n"] == 1000
    cap = Captioner.load("sim")
    held = tcap.sim_pairs(clip, SEED, tcap._P_HELDOUT, 120, 1, cache_dir=False)
    caps = cap.generate(held["embeds"], max_new_tokens=rec["recipe"]["max_caption_tokens"])
    m = sim_attribute_scores(caps, held["attrs"])
    m0 = sim_attribute_scores(caps, {k: np.roll(v, 1) for k, v in held["attrs"].items()})  # other scenes'
    # 0.82 / 1.0 / 1.0 here; on 120 scenes a shape rate of 0.81 has a standard error of 0.036
    assert m["colour"] >= 0.95 and m["count"] >= 0.95 and m["shape"] >= 0.7
    assert m["colour"] > m0["colour"] + 0.5 and m["shape"] > m0["shape"] + 0.4
    assert a["shape"] >= 0.8 and a["colour"] >= 0.8
    for k in ("shape", "colour", "count", "objects"):
        assert _agrees(a[k], m[k], 1000, 120, grain=1 / 120), (k, a[k], m[k])


def test_image_decoder_two_way_measured_again(clip):
    """The first 40 of the 200 held-out scenes the decoder's training run scored, decoded again
    with the run's sampling and seeds (the recorded run's own images, up to the device's
    rounding): two-way identification by CLIP of the images generated from the true embeddings
    (issue 3: >= 0.85) and of img2img from a blurred stimulus, which must beat the blurred start."""
    rec = _decoder_record()
    s, r = rec["sampling"], rec["recipe"]
    assert rec["seed"] == SEED and rec["heldout_stream"] == [tid._STREAM, SEED, tid._P_HELDOUT]
    assert rec["heldout"]["n_heldout"] == r["n_heldout"] == 200
    dec = ImageDecoder.load("sim")
    assert dec.defaults() == s  # what the decode stage samples with
    k = 40  # the run's scene table of 200, its first k rendered
    attrs = sc.sample_scenes(tid._rng(SEED, tid._P_HELDOUT), 200)
    images, emb = tid.render_scenes(attrs, r["image_size"], clip, rows=np.arange(k))
    kw = dict(guidance_scale=s["guidance_scale"], num_inference_steps=s["num_inference_steps"], seed=rec["seed"])
    gen = dec.generate(emb, **kw)
    assert gen.shape == (k, r["image_size"], r["image_size"], 3)
    blurred = tid.blur(images, r["eval_blur"])
    i2i = dec.generate(emb, blurred, strength=s["strength"], **kw)
    f = {name: clip_features(clip, x, 425) for name, x in (("generated", gen), ("img2img", i2i), ("blurred", blurred))}
    tw = {name: two_way(x, emb) for name, x in f.items()}
    # here: generated 0.92, img2img 0.90, blurred 0.66 (standard errors 0.03, 0.03, 0.04);
    # the generated images against other scenes' embeddings: 0.46
    assert tw["generated"].mean() >= 0.8 and tw["img2img"].mean() >= 0.8
    assert tw["generated"].mean() > two_way(f["generated"], emb[::-1]).mean() + 0.25
    assert tw["img2img"].mean() > tw["blurred"].mean() + 0.1
    assert rec["heldout"]["two_way_generated"] >= 0.85
    for name in ("generated", "img2img", "blurred"):
        got, want = tw[name].mean(), rec["heldout"][f"two_way_{name}"]
        assert abs(got - want) <= 4 * tw[name].std() / math.sqrt(k), (name, want, got)


@pytest.mark.slow
def test_recorded_heldout_figures_measured_again_in_full(clip):
    """The records' figures, measured again on the whole held-out sets of the training runs (the
    same scenes, seeds and settings): equal up to the training device's rounding."""
    rec = _clip_record()
    held = train_clip.scene_set(SEED, train_clip._P_HELDOUT, rec["heldout"]["n_heldout"], 1, clip, cache_dir=False)
    m = train_clip.evaluate(clip, held, n_candidates=rec["heldout"]["n_candidates"], n_draws=rec["heldout"]["n_draws"])
    for k in ("image_to_caption_top1", "caption_to_image_top1"):
        assert m[k] == pytest.approx(rec["heldout"][k], abs=0.005), k
    rec = _captioner_record()
    held = tcap.sim_pairs(clip, SEED, tcap._P_HELDOUT, rec["heldout"]["attributes"]["n"], 1, cache_dir=False)
    m = tcap.evaluate(Captioner.load("sim"), held, max_new_tokens=rec["recipe"]["max_caption_tokens"])
    for k in ("shape", "colour", "count", "objects"):
        assert m["attributes"][k] == pytest.approx(rec["heldout"]["attributes"][k], abs=0.01), k
    assert m["loss"] == pytest.approx(rec["heldout"]["loss"], rel=0.01)
    rec = _decoder_record()
    held = tid.scene_set(SEED, tid._P_HELDOUT, rec["heldout"]["n_heldout"], rec["recipe"]["image_size"], clip,
                         cache_dir=False)
    m = tid.evaluate(ImageDecoder.load("sim"), clip, held, tid.Recipe(**rec["recipe"]), seed=rec["seed"])
    for k in ("two_way_generated", "two_way_img2img", "two_way_blurred", "two_way_stimulus"):
        assert m[k] == pytest.approx(rec["heldout"][k], abs=0.02), k


def test_shipped_models_are_the_last_stages_of_the_training_chain():
    """stages.json: each run is the chain's stage (options alike; paths and threads aside), each
    fine-tune started from the weights of the stage the chain names, each decoder read the CLIP
    stage the chain names, and the last ones are the files shipped here."""
    recorded = json.loads((SHIPPED / "stages.json").read_text())["stages"]
    chain = sim_chain.stages("default")
    assert [r["stage"] for r in recorded] == [s.name for s in chain]
    by = {r["stage"]: r for r in recorded}
    parser = cli.build_parser()
    local = {"out", "threads", "workers", "quiet", "init", "sim_clip", "cache", "argv", "func"}

    def options(argv):
        opts = {k: v for k, v in vars(parser.parse_args(argv)).items() if k not in local}
        return {**opts, "preset": opts["preset"] or "default"}  # train-captioner's default on nsd-sim

    for stage, rec in zip(chain, recorded):
        ran = shlex.split(rec["command"])[1:]
        assert options(ran) == options([*stage.args, "--out", "x"]), stage.name
    assert sim_chain.lineage_errors(recorded) == []
    # every stage of the chain, judge included: the shipped models are all four final ones
    assert [e["stage"] for e in recorded] == [s.name for s in sim_chain.stages()]
    assert by["clip"]["weights_sha256"] == sha256_file(SHIPPED / "clip/open_clip_model.safetensors")
    assert by["image_decoder"]["unet_sha256"] == sha256_file(
        SHIPPED / "image_decoder/unet/diffusion_pytorch_model.safetensors")
    assert by["image_decoder"]["vae_sha256"] == by["image_decoder-1"]["vae_sha256"] == sha256_file(
        SHIPPED / "image_decoder/vae/diffusion_pytorch_model.safetensors")
    assert by["captioner"]["mapper_sha256"] == sha256_file(SHIPPED / "captioner/model.safetensors")
