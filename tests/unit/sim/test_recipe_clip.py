"""The nsd-sim CLIP training recipe at toy scale: the loss falls, the saved folder loads, reruns agree."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from braindecode_pkg import cli  # noqa: E402
from braindecode_pkg.decoders import clip as mclip  # noqa: E402
from braindecode_pkg.sim.recipes import clip as train_clip  # noqa: E402
from braindecode_pkg.sim.arch import SIM_MODEL_CFG  # noqa: E402

TOY = train_clip.Recipe(steps=25, batch_size=32, lr=3e-3, warmup=3, n_train=96, n_heldout=40, threads=1, eval_every=10)


def test_training_lowers_the_loss_and_saves_a_loadable_local_dir(tmp_path):
    out = tmp_path / "clip"
    s = train_clip.train(out, seed=3, recipe=TOY, model_cfg=train_clip.TINY_MODEL_CFG,
                         cache_dir=tmp_path / "cache", progress=False)
    losses = s["losses"]
    assert len(losses) == TOY.steps and np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.3
    doc = json.loads((out / "open_clip_config.json").read_text())
    assert doc["model_cfg"] == train_clip.TINY_MODEL_CFG
    assert doc["braindecode"]["seed"] == 3 and doc["braindecode"]["recipe"]["steps"] == TOY.steps
    assert s["heldout"]["n_candidates"] == 40
    assert [c["step"] for c in s["heldout_curve"]] == [10, 20]
    enc = mclip.ClipEncoder.load({"local_dir": str(out)})
    held = train_clip.scene_set(3, train_clip._P_HELDOUT, TOY.n_heldout, 1, enc, tmp_path / "cache")
    again = train_clip.evaluate(enc, held)
    assert again["image_to_caption_top1"] == s["heldout"]["image_to_caption_top1"]
    # the recorded figures by hand from the saved model: with 40 candidates of 40 every draw is
    # the whole set, so top-1 is the fraction of images whose own first caption is the most
    # similar (and of captions whose own image is)
    with torch.inference_mode():
        img = enc.encode_pixels(enc.to_tensor(held["images"]), what=("pooled",))["pooled"]
    txt = enc.encode_text([c[0] for c in held["captions"]])
    sim = img @ txt.T  # unit rows: cosine
    top1 = lambda m: float(np.mean(np.argmax(m, axis=1) == np.arange(len(m))))  # noqa: E731
    assert s["heldout"]["image_to_caption_top1"] == pytest.approx(top1(sim), abs=1e-12)
    assert s["heldout"]["caption_to_image_top1"] == pytest.approx(top1(sim.T), abs=1e-12)
    # same seed, same bytes (CPU, one thread); the rendered scenes came from the cache
    out2 = tmp_path / "clip2"
    train_clip.train(out2, seed=3, recipe=TOY, model_cfg=train_clip.TINY_MODEL_CFG,
                     cache_dir=tmp_path / "cache", progress=False)
    assert (out / "open_clip_model.safetensors").read_bytes() == (out2 / "open_clip_model.safetensors").read_bytes()


def test_minutes_shortens_the_run_after_the_warmup(tmp_path):
    recipe = train_clip.Recipe(steps=10**6, batch_size=16, warmup=2, n_train=32, n_heldout=20)
    s = train_clip.train(None, seed=0, recipe=recipe, model_cfg=train_clip.TINY_MODEL_CFG,
                         cache_dir=tmp_path, progress=False, minutes=0.01)
    assert s["steps_run"] == recipe.warmup + 6 == s["recipe"]["steps"] == len(s["losses"])


def test_heldout_scenes_are_not_training_scenes():
    tr, _ = train_clip.draw_scenes(0, train_clip._P_TRAIN, 50)
    ho, _ = train_clip.draw_scenes(0, train_clip._P_HELDOUT, 50)
    assert not np.intersect1d(tr["x1"], ho["x1"]).size and not np.intersect1d(tr["bg_seed"], ho["bg_seed"]).size


def test_retrieval_top1():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert train_clip.retrieval_top1(a, a) == 1.0
    assert train_clip.retrieval_top1(a, rng.normal(size=(400, 8))) < 0.05
    assert train_clip.retrieval_top1(a[:50], a[:50], n_candidates=300) == 1.0  # fewer rows than candidates


def test_cli_train_clip(tmp_path, monkeypatch):
    calls = {}

    def fake_train(out, **kw):
        calls.update(kw, out=out)
        return {"steps_run": kw["recipe"].steps, "seconds": {"train": 1.0},
                "heldout": {"image_to_caption_top1": 0.5, "caption_to_image_top1": 0.4, "n_candidates": 300, "n_draws": 30}}

    monkeypatch.setattr(train_clip, "train", fake_train)
    rc = cli.main(["train-clip", "--out", str(tmp_path / "c"), "--steps", "7", "--seed", "2", "--minutes", "1.5",
                   "--cache", ""])
    assert rc == 0
    assert calls["recipe"] == dataclasses.replace(train_clip.Recipe(), steps=7)
    assert calls["seed"] == 2 and calls["minutes"] == 1.5 and calls["cache_dir"] is False
    assert calls["command"].startswith("braindecode-pkg train-clip --out")


def test_twin_batches_train_and_the_gpu_batch_path_matches_the_cpu_one(tmp_path):
    recipe = dataclasses.replace(TOY, steps=6, eval_every=0, twin_fraction=0.5)
    s = train_clip.train(tmp_path / "clip", seed=1, recipe=recipe, model_cfg=train_clip.TINY_MODEL_CFG,
                         cache_dir=tmp_path / "cache", progress=False)
    assert len(s["losses"]) == 6 and np.isfinite(s["losses"]).all() and s["recipe"]["twin_fraction"] == 0.5
    assert s["device"] == "cpu"
    enc = mclip.ClipEncoder.load({"local_dir": str(tmp_path / "clip")})
    base = train_clip.scene_set(1, train_clip._P_TRAIN, TOY.n_train, 5, enc, tmp_path / "cache")
    twins = train_clip.scene_set(1, train_clip._P_TRAIN, TOY.n_train, 5, enc, tmp_path / "cache",
                                 twin_purpose=train_clip._P_TWIN)
    # twins: the same scenes with other shapes, rendered and captioned as such
    assert (twins["attrs"]["colour1"] == base["attrs"]["colour1"]).all()
    assert (twins["attrs"]["shape1"] != base["attrs"]["shape1"]).any()
    assert (twins["images"] != base["images"]).any() and twins["captions"] != base["captions"]
    # the GPU path (uint8 images and tokens resident, normalised per batch) computes the same batches
    tok = enc.tokenizer
    cpu = train_clip._Batches(twins, lambda t, context_length: tok(t), 32, 5, "cpu", enc)
    gpu = train_clip._Batches(twins, lambda t, context_length: tok(t), 32, 5, "cpu", enc)
    gpu.on_cpu, gpu.gpu_images = False, torch.from_numpy(twins["images"])
    idx, c = np.array([3, 0, 7]), np.array([4, 1, 0])
    torch.testing.assert_close(gpu.pixels(idx), cpu.pixels(idx), rtol=0, atol=1e-6)
    assert torch.equal(gpu.text(idx, c), cpu.text(idx, c))
    assert cpu.text(idx, c).shape[1] == int(cpu.lengths[idx, c].max())
    padded = train_clip._cat_tokens([cpu.text(idx[:1], c[:1]), cpu.text(idx, c)])
    assert padded.shape == (4, cpu.text(idx, c).shape[1]) and (padded[0, cpu.lengths[3, 4]:] == 0).all()


def test_the_accelerator_path_runs_end_to_end(tmp_path, monkeypatch):
    """The GPU path (images resident as uint8 and normalised per batch, bf16 autocast, twins),
    run on the CPU by declaring the CPU an accelerator: it trains the CPU path's steps (the same
    losses up to bf16's rounding) and saves fp32 weights."""
    recipe = dataclasses.replace(TOY, steps=5, eval_every=0, twin_fraction=0.5)
    cpu = train_clip.train(None, seed=2, recipe=recipe, model_cfg=train_clip.TINY_MODEL_CFG,
                           cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.setattr(train_clip, "_accelerated", lambda device: True)
    s = train_clip.train(tmp_path / "clip", seed=2, recipe=recipe, model_cfg=train_clip.TINY_MODEL_CFG,
                         cache_dir=tmp_path / "cache", progress=False)
    assert len(s["losses"]) == 5
    np.testing.assert_allclose(s["losses"], cpu["losses"], rtol=0.02)
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "clip" / "open_clip_model.safetensors"))
    assert all(v.dtype == torch.float32 for v in w.values() if v.is_floating_point())


def test_object_pairs_marks_each_objects_shape_and_colour():
    from braindecode_pkg.sim import scenes as sc

    nc = len(sc.COLOURS)
    attrs = {"background": np.zeros(3, np.int8),
             "shape1": np.array([2, 7, 4], np.int8), "colour1": np.array([5, 0, 3], np.int8),
             "shape2": np.array([-1, 1, 4], np.int8), "colour2": np.array([-1, 6, 3], np.int8),
             "size1": np.array([1, 0, 2], np.int8), "size2": np.array([-1, 2, 0], np.int8)}
    y = train_clip.object_pairs(attrs)
    assert y.shape == (3, len(sc.SHAPES) * nc) and y.dtype == np.float32
    assert np.flatnonzero(y[0]).tolist() == [2 * nc + 5]  # one object: one pair
    assert np.flatnonzero(y[1]).tolist() == [1 * nc + 6, 7 * nc + 0]  # a white square and a red ring
    assert np.flatnonzero(y[2]).tolist() == [4 * nc + 3]  # two yellow stars: one pair
    ns = len(sc.SIZES)
    y = train_clip.object_pairs(attrs, with_size=True)
    assert y.shape == (3, len(sc.SHAPES) * nc * ns)
    assert np.flatnonzero(y[0]).tolist() == [(2 * nc + 5) * ns + 1]  # a medium purple triangle
    assert np.flatnonzero(y[1]).tolist() == [(1 * nc + 6) * ns + 2, (7 * nc + 0) * ns + 0]
    assert np.flatnonzero(y[2]).tolist() == [(4 * nc + 3) * ns + 0, (4 * nc + 3) * ns + 2]  # small and large


def test_attr_loss_adds_its_term_and_leaves_the_clip_init_and_data_order_alone(tmp_path):
    recipe = dataclasses.replace(TOY, steps=4, eval_every=0, attr_weight=1.0, twin_fraction=0.5)
    cache = tmp_path / "cache"
    s = train_clip.train(None, seed=1, recipe=recipe, model_cfg=train_clip.TINY_MODEL_CFG, cache_dir=cache, progress=False)
    base = train_clip.train(None, seed=1, recipe=dataclasses.replace(recipe, attr_weight=0.0),
                            model_cfg=train_clip.TINY_MODEL_CFG, cache_dir=cache, progress=False)
    assert s["recipe"]["attr_weight"] == 1.0
    # step 1 sees the same weights and batch, so the losses differ by exactly the auxiliary term:
    # the cross-entropy of a fresh head's near-uniform softmax over the 64 pairs, about log 64
    extra = s["losses"][0] - base["losses"][0]
    assert abs(extra - np.log(64)) < 0.6
    assert np.isfinite(s["losses"]).all() and "shape_probe_two_objects" not in s["heldout"]  # 40 held-out scenes


def test_cli_finetune_preset_needs_init(tmp_path, capsys):
    rc = cli.main(["train-clip", "--preset", "default-attr", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc != 0 and "--preset default-attr fine-tunes a CLIP" in err and "--preset default" in err
    assert not (tmp_path / "c").exists()
    recipe, cfg = train_clip.PRESETS["default-attr"]
    assert cfg == SIM_MODEL_CFG and recipe.attr_weight == 1.0 and recipe.steps == 1200


def test_cli_tiny_attr_finetunes_the_clip_it_is_given(tmp_path):
    from braindecode_pkg.io import sha256_file

    base = tmp_path / "base"
    train_clip.train(base, seed=0, recipe=dataclasses.replace(TOY, steps=3, eval_every=0),
                     model_cfg=train_clip.TINY_MODEL_CFG, cache_dir=tmp_path / "cache", progress=False)
    out = tmp_path / "attr"
    assert cli.main(["train-clip", "--preset", "tiny-attr", "--init", str(base), "--out", str(out),
                     "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    rec = json.loads((out / "open_clip_config.json").read_text())["braindecode"]
    assert rec["recipe"]["attr_weight"] == 1.0 and rec["steps_run"] == train_clip.PRESETS["tiny-attr"][0].steps
    assert rec["init"]["weights_sha256"] == sha256_file(base / "open_clip_model.safetensors")
    a = mclip.read_state_dict(base / "open_clip_model.safetensors")
    b = mclip.read_state_dict(out / "open_clip_model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)  # the head is not saved
