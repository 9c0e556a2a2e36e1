"""The image decoder: a genuine tiny Stable unCLIP pipeline directory, img2img, config errors, training.

Toy sizes only (32 px images, 12-d embeddings, a VAE and UNet of a few thousand weights), so the
file runs in seconds; nothing touches the network.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("open_clip")

from braindecode_pkg.errors import InputError  # noqa: E402
from braindecode_pkg.decoders import image_decoder as idec  # noqa: E402
from braindecode_pkg.sim.recipes import image_decoder as tid  # noqa: E402

D = 12  # embedding width: distinct from every other dimension here


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved tiny StableUnCLIPImg2ImgPipeline (random weights) and the pipeline object."""
    pipe = idec.build_unclip_pipeline(D, tid.TINY_VAE_CFG, tid.TINY_UNET_CFG, image_size=32, seed=3)
    with torch.no_grad():  # a non-trivial normaliser, so that a lost parameter would show
        pipe.image_normalizer.mean.normal_(0, 0.1)
        pipe.image_normalizer.std.uniform_(0.5, 1.5)
    d = tmp_path_factory.mktemp("unclip") / "pipe"
    idec.save_pipeline(pipe, d, info={"sampling": {"guidance_scale": 2.0, "num_inference_steps": 4}})
    return d, pipe


def _embeds(n=3, seed=0):
    e = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _init(n=3, shape=(45, 37)):
    return np.random.default_rng(7).integers(0, 256, (n, *shape, 3), dtype=np.uint8)


def test_saved_folder_is_a_diffusers_unclip_pipeline(tiny_dir):
    d, _ = tiny_dir
    index = json.loads((d / "model_index.json").read_text())
    assert index["_class_name"] == "StableUnCLIPImg2ImgPipeline"
    for comp in ("unet", "vae", "text_encoder", "image_encoder", "image_normalizer"):
        assert list((d / comp).glob("*.safetensors")), comp
        assert not list((d / comp).glob("*.bin")), comp
    unet = json.loads((d / "unet" / "config.json").read_text())
    assert unet["class_embed_type"] == "projection"
    assert unet["projection_class_embeddings_input_dim"] == 2 * D
    assert (d / "tokenizer").is_dir() and (d / "scheduler" / "scheduler_config.json").is_file()


def test_round_trip_identical_outputs(tiny_dir):
    d, pipe = tiny_dir
    before = idec.ImageDecoder(pipe, info={"sampling": {"guidance_scale": 2.0, "num_inference_steps": 4}})
    after = idec.ImageDecoder.load({"pipeline_dir": str(d)})
    assert after.embed_dim == D and after.image_size == 32
    assert after.defaults()["num_inference_steps"] == 4
    e = _embeds()
    a = before.generate(e, seed=5)
    b = after.generate(e, seed=5)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(before.generate(e, _init(), strength=0.6, seed=5),
                                  after.generate(e, _init(), strength=0.6, seed=5))


def test_generate_equals_the_pipeline_call(tiny_dir):
    """Without an initial image, generate() is StableUnCLIPImg2ImgPipeline.__call__(image_embeds=...)."""
    d, _ = tiny_dir
    dec = idec.ImageDecoder.load({"pipeline_dir": str(d), "load_image_encoder": True})
    e = _embeds()
    gens = [dec._generator(11, i) for i in range(len(e))]
    ref = dec.pipe(image_embeds=torch.from_numpy(e), prompt=[""] * 3, num_inference_steps=4, guidance_scale=2.0,
                   generator=gens, output_type="np").images
    got = dec.generate(e, seed=11, guidance_scale=2.0, num_inference_steps=4)
    np.testing.assert_array_equal(got, np.round(ref * 255).astype(np.uint8))


def test_deterministic_per_seed_and_batch_independent(tiny_dir):
    d, pipe = tiny_dir
    dec = idec.ImageDecoder(pipe)
    e = _embeds(4)
    a = dec.generate(e, seed=1, num_inference_steps=3, batch_size=4)
    np.testing.assert_array_equal(a, dec.generate(e, seed=1, num_inference_steps=3, batch_size=3))
    assert not np.array_equal(a, dec.generate(e, seed=2, num_inference_steps=3))
    assert dec.generate(e, seed=1, num_inference_steps=3, size=50).shape == (4, 50, 50, 3)


def test_guidance_changes_the_output(tiny_dir):
    _, pipe = tiny_dir
    dec = idec.ImageDecoder(pipe)
    e = _embeds()
    assert not np.array_equal(dec.generate(e, guidance_scale=1.0, num_inference_steps=3),
                              dec.generate(e, guidance_scale=4.0, num_inference_steps=3))


def test_img2img_strength(tiny_dir):
    _, pipe = tiny_dir
    dec = idec.ImageDecoder(pipe)
    e, init = _embeds(), _init()
    kw = dict(seed=0, num_inference_steps=10, guidance_scale=2.0)
    same = dec.generate(e, init, strength=0.0, **kw)
    np.testing.assert_array_equal(same, idec.resize_uint8(init, 32))  # strength 0: the start image itself
    s2, s6, s10 = (dec.generate(e, init, strength=s, **kw) for s in (0.2, 0.6, 1.0))
    free = dec.generate(e, **kw)
    assert not np.array_equal(s2, s6) and not np.array_equal(s6, s10)
    assert not np.array_equal(s10, free)  # strength 1 still starts from the encoded init image
    with pytest.raises(InputError, match="strength"):
        dec.generate(e, init, strength=1.5)
    with pytest.raises(InputError, match="init_images"):
        dec.generate(e, init[:2], strength=0.5)


def test_img2img_small_strength_stays_near_the_start(tmp_path):
    """A small strength returns (about) the start image as the VAE reconstructs it; strength 1 does not."""
    from braindecode_pkg.sim import scenes as sc

    pipe = idec.build_unclip_pipeline(D, tid.TINY_VAE_CFG, tid.TINY_UNET_CFG, image_size=32, seed=0)
    attrs = sc.sample_scenes(np.random.default_rng(0), 48)
    images, _ = tid.render_scenes(attrs, 32)
    tid.train_vae(pipe.vae, images, tid.Recipe(vae_steps=50, vae_batch_size=16, vae_lr=3e-3), 0)
    dec = idec.ImageDecoder(pipe)
    init = images[:4]
    with torch.no_grad():
        x = tid._to_x(init, torch)
        rec = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
    rec = np.round((rec / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255)
    out = {s: dec.generate(_embeds(4), init, strength=s, num_inference_steps=20, guidance_scale=1.0).astype(float)
           for s in (0.05, 1.0)}
    assert np.abs(out[0.05] - rec).mean() < 0.25 * np.abs(out[1.0] - rec).mean()
    assert np.abs(out[0.05] - init).mean() < np.abs(out[1.0] - init).mean()


def test_embedding_width_checked(tiny_dir):
    _, pipe = tiny_dir
    with pytest.raises(InputError, match=rf"\(n, {D}\)"):
        idec.ImageDecoder(pipe).generate(np.zeros((2, D + 1), np.float32))


# ------------------------------------------------------------------------------ config errors
def test_missing_directory_names_it(tmp_path):
    missing = tmp_path / "stable-diffusion-2-1-unclip"
    with pytest.raises(InputError) as e:
        idec.ImageDecoder.load({"pipeline_dir": str(missing)})
    assert str(missing) in str(e.value) and idec.REAL_SOURCE in str(e.value)
    with pytest.raises(InputError, match="model_index.json"):
        idec.parse_image_decoder_config(str(tmp_path))


def test_missing_or_unsafe_component_named(tiny_dir, tmp_path):
    d, _ = tiny_dir
    broken = tmp_path / "p"
    shutil.copytree(d, broken)
    w = broken / "unet" / "diffusion_pytorch_model.safetensors"
    w.unlink()
    with pytest.raises(InputError) as e:
        idec.parse_image_decoder_config({"pipeline_dir": str(broken)})
    assert str(w) in str(e.value)
    (broken / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InputError, match="safetensors only"):
        idec.parse_image_decoder_config(str(broken))
    shutil.copy(d / "unet" / "diffusion_pytorch_model.safetensors", w)
    shutil.rmtree(broken / "vae")
    with pytest.raises(InputError, match="component 'vae'"):
        idec.parse_image_decoder_config(str(broken))


def test_missing_normaliser_weights_named(tiny_dir, tmp_path):
    d, _ = tiny_dir
    broken = tmp_path / "p"
    shutil.copytree(d, broken)
    w = broken / "image_normalizer" / "diffusion_pytorch_model.safetensors"
    w.unlink()
    with pytest.raises(InputError, match="image_normalizer") as e:
        idec.ImageDecoder.load(str(broken))
    assert str(w) in str(e.value)


def test_other_pipeline_class_refused(tiny_dir, tmp_path):
    d, _ = tiny_dir
    other = tmp_path / "sd"
    shutil.copytree(d, other)
    doc = json.loads((other / "model_index.json").read_text())
    doc["_class_name"] = "StableDiffusionPipeline"
    (other / "model_index.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="StableUnCLIPImg2ImgPipeline"):
        idec.parse_image_decoder_config(str(other))


def test_image_encoder_needed_only_when_asked(tiny_dir, tmp_path):
    d, _ = tiny_dir
    p = tmp_path / "noenc"
    shutil.copytree(d, p)
    shutil.rmtree(p / "image_encoder")
    dec = idec.ImageDecoder.load(str(p))  # embeddings are passed: the encoder is not loaded
    assert dec.pipe.image_encoder is None
    with pytest.raises(InputError, match="image_encoder"):
        idec.parse_image_decoder_config({"pipeline_dir": str(p), "load_image_encoder": True})


def test_config_forms_and_bad_values(tiny_dir, tmp_path):
    d, _ = tiny_dir
    f = tmp_path / "dec.json"
    f.write_text(json.dumps({"pipeline_dir": str(d), "guidance_scale": 1.5}))
    for spec in (str(d), json.dumps({"pipeline_dir": str(d)}), str(f), str(d / "model_index.json")):
        assert idec.parse_image_decoder_config(spec).pipeline_dir == d.resolve()
    assert idec.ImageDecoder.load(str(f)).defaults()["guidance_scale"] == 1.5
    assert idec.parse_image_decoder_config("sim", sim_dir=d).pipeline_dir == d.resolve()
    with pytest.raises(InputError, match="unknown key"):
        idec.parse_image_decoder_config({"pipeline_dir": str(d), "guidance": 3})
    with pytest.raises(InputError, match="strength"):
        idec.parse_image_decoder_config({"pipeline_dir": str(d), "strength": 2})
    with pytest.raises(InputError, match="precision"):
        idec.parse_image_decoder_config({"pipeline_dir": str(d), "precision": "fp8"})


def test_sim_without_weights_says_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(idec, "SHIPPED_SIM_DECODER", tmp_path / "none")
    with pytest.raises(InputError, match="train-image-decoder"):
        idec.parse_image_decoder_config("sim")


def test_embeds_norm_rescales(tiny_dir):
    d, _ = tiny_dir
    dec = idec.ImageDecoder.load({"pipeline_dir": str(d), "embeds_norm": 1.0})
    e = _embeds()
    np.testing.assert_array_equal(dec.generate(e * 7, num_inference_steps=2), dec.generate(e, num_inference_steps=2))


# ---------------------------------------------------------------------------------- metrics
def test_two_way_identification():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(40, 9))
    assert tid.two_way_identification(t, t) == 1.0
    assert abs(tid.two_way_identification(rng.normal(size=(40, 9)), t) - 0.5) < 0.1
    assert tid.two_way_identification(-t, t) == 0.0


# --------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from braindecode_pkg.decoders import clip as mclip
    from braindecode_pkg.sim.recipes import clip as train_clip

    name = "bd-test-imgdec-clip"
    cfg = {**train_clip.TINY_MODEL_CFG, "embed_dim": D}
    mclip.register_arch(name, cfg)
    torch.manual_seed(0)
    model = mclip.create_clip_model(name).eval()
    d = tmp_path_factory.mktemp("clip") / "clip"
    mclip.save_local_dir(model, d, cfg)
    return d


TINY_RECIPE = tid.Recipe(image_size=32, n_train=48, n_heldout=6, vae_steps=25, vae_batch_size=8, vae_lr=3e-3,
                         steps=30, batch_size=8, warmup=5, lr=2e-3, num_inference_steps=3)


@pytest.fixture(scope="module")
def trained(tiny_clip_dir, tmp_path_factory):
    """The tiny recipe trained once on the CPU: (summary, output folder, cache folder)."""
    root = tmp_path_factory.mktemp("trained")
    out = root / "decoder"
    s = tid.train(out, clip={"local_dir": str(tiny_clip_dir)}, seed=1, recipe=TINY_RECIPE,
                  vae_cfg=tid.TINY_VAE_CFG, unet_cfg=tid.TINY_UNET_CFG, cache_dir=root / "cache",
                  progress=False, command="test")
    return s, out, root / "cache"


def _corr_two_way(feats, true):
    """MindEye's two-way identification in plain numpy: for each i, the fraction of j != i with
    corr(feats_i, true_j) < corr(feats_i, true_i)."""
    n = len(true)
    r = np.array([[np.corrcoef(feats[i], true[j])[0, 1] for j in range(n)] for i in range(n)])
    return float(np.mean([np.sum(r[i] < r[i, i]) / (n - 1) for i in range(n)]))


def test_training_recipe_lowers_loss_and_writes_a_loadable_pipeline(tiny_clip_dir, trained, tmp_path):
    s, out, cache = trained
    vae = s["losses"]["vae"]
    assert np.mean(vae[-5:]) < 0.7 * np.mean(vae[:5])
    probe = s["heldout"]["unet_probe_loss"]
    assert probe["after"] < 0.8 * probe["before"]
    assert s["steps_run"] == {"vae": 25, "unet": 30}
    info = json.loads((out / idec.INFO_FILE).read_text())
    assert info["seed"] == 1 and info["recipe"]["steps"] == 30 and info["command"] == "test"
    assert list(cache.glob("scenes-*.npz"))
    dec = idec.ImageDecoder.load({"pipeline_dir": str(out)})
    assert dec.embed_dim == D and dec.image_size == 32
    assert dec.defaults() == s["sampling"]
    # the normaliser holds the training embeddings' statistics
    assert not torch.allclose(dec.pipe.image_normalizer.std, torch.ones(1, D))
    img = dec.generate(_embeds(2), seed=0)
    assert img.shape == (2, 32, 32, 3)
    # the recorded held-out two-way figures are the saved pipeline's: the held-out scenes'
    # embeddings decoded again (the run's seed and sampling), CLIP-embedded at 425 px, and the
    # identification counted in plain numpy
    from braindecode_pkg.decoders.clip import ClipEncoder
    from braindecode_pkg.evaluate.images import clip_features

    enc = ClipEncoder.load({"local_dir": str(tiny_clip_dir)})
    held = tid.scene_set(1, tid._P_HELDOUT, TINY_RECIPE.n_heldout, 32, enc, cache)
    gen = dec.generate(held["embeds"], guidance_scale=TINY_RECIPE.guidance_scale,
                       num_inference_steps=TINY_RECIPE.num_inference_steps, seed=1)
    assert s["heldout"]["two_way_generated"] == pytest.approx(
        _corr_two_way(clip_features(enc, gen, 425), held["embeds"]), abs=1e-9)
    assert s["heldout"]["two_way_stimulus"] == pytest.approx(
        _corr_two_way(clip_features(enc, held["images"], 425), held["embeds"]), abs=1e-9)
    # the same seed gives the same weights (CPU, one thread)
    s2 = tid.train(None, clip={"local_dir": str(tiny_clip_dir)}, seed=1, recipe=dataclasses_replace(TINY_RECIPE),
                   vae_cfg=tid.TINY_VAE_CFG, unet_cfg=tid.TINY_UNET_CFG, cache_dir=cache, progress=False)
    assert s2["losses"]["unet"] == s["losses"]["unet"]


def test_init_starts_from_a_decoders_weights_and_keeps_its_vae(tiny_clip_dir, tmp_path):
    from braindecode_pkg.errors import InputError
    from braindecode_pkg.io import sha256_file

    base = tmp_path / "base"
    tid.train(base, clip={"local_dir": str(tiny_clip_dir)}, seed=1, recipe=dataclasses_replace(TINY_RECIPE, n_heldout=1),
              vae_cfg=tid.TINY_VAE_CFG, unet_cfg=tid.TINY_UNET_CFG, cache_dir=tmp_path / "cache", progress=False)
    ft = dataclasses_replace(TINY_RECIPE, vae_steps=0, steps=4, n_heldout=1)
    s = tid.train(tmp_path / "ft", clip={"local_dir": str(tiny_clip_dir)}, seed=2, recipe=ft, vae_cfg=tid.TINY_VAE_CFG,
                  unet_cfg=tid.TINY_UNET_CFG, cache_dir=tmp_path / "cache", progress=False, init=str(base))
    assert s["steps_run"] == {"vae": 0, "unet": 4} and s["heldout"]["vae_mse_last50"] is None
    assert s["init"]["unet_sha256"] == sha256_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    a = idec.ImageDecoder.load(str(base)).pipe
    b = idec.ImageDecoder.load(str(tmp_path / "ft")).pipe
    assert all(torch.equal(v, b.vae.state_dict()[k]) for k, v in a.vae.state_dict().items())  # the VAE kept
    ua, ub = a.unet.state_dict(), b.unet.state_dict()
    assert any(not torch.equal(ua[k], ub[k]) for k in ua)
    # 4 steps from the base stay near it; a fresh seed-2 start would not
    fresh = tid.train(None, clip={"local_dir": str(tiny_clip_dir)}, seed=2, recipe=ft, vae_cfg=tid.TINY_VAE_CFG,
                      unet_cfg=tid.TINY_UNET_CFG, cache_dir=tmp_path / "cache", progress=False)["pipeline"].unet.state_dict()
    w = "conv_in.weight"
    assert (ub[w] - ua[w]).norm() < 0.5 * (fresh[w] - ua[w]).norm()
    with pytest.raises(InputError, match="does not match"):  # another architecture
        tid.train(None, clip={"local_dir": str(tiny_clip_dir)}, seed=2, recipe=ft, vae_cfg=tid.TINY_VAE_CFG,
                  unet_cfg={**tid.TINY_UNET_CFG, "block_out_channels": [8, 32]}, cache_dir=tmp_path / "cache",
                  progress=False, init=str(base))
    with pytest.raises(InputError, match="nope"):
        tid.train(None, clip={"local_dir": str(tiny_clip_dir)}, seed=2, recipe=ft, init=str(tmp_path / "nope"),
                  cache_dir=tmp_path / "cache", progress=False)


def dataclasses_replace(r, **kw):
    import dataclasses

    return dataclasses.replace(r, **kw)


def test_cli_missing_clip_is_an_input_error(tmp_path, capsys):
    from braindecode_pkg.cli import main

    rc = main(["train-image-decoder", "--clip", str(tmp_path / "noclip"), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert str(tmp_path / "noclip") in capsys.readouterr().err


def test_cli_gpu_preset_and_device_reach_train(monkeypatch, tmp_path, capsys):
    """--preset gpu is the default architecture with the H200 recipe; --device is passed through and reported."""
    from braindecode_pkg.cli import build_parser, main

    seen = {}

    def fake_train(out, **kw):
        seen.update(kw)
        return {"steps_run": {"vae": 1, "unet": 1}, "seconds": {"train": 0.0}, "heldout": {}, "device": kw["device"]}

    monkeypatch.setattr(tid, "train", fake_train)
    args = build_parser().parse_args(["train-image-decoder", "--out", str(tmp_path), "--preset", "gpu",
                                      "--device", "cuda", "--quiet"])
    assert (args.preset, args.device) == ("gpu", "cuda")
    assert main(["train-image-decoder", "--out", str(tmp_path), "--preset", "gpu", "--device", "cuda", "--quiet",
                 "--steps", "11"]) == 0
    assert seen["device"] == "cuda" and "on cuda" in capsys.readouterr().out
    assert seen["vae_cfg"] == tid.VAE_CFG and seen["unet_cfg"] == tid.UNET_CFG
    r = seen["recipe"]
    assert (r.n_train, r.vae_steps, r.vae_batch_size, r.steps, r.batch_size, r.lr, r.warmup) == \
        (60000, 3000, 128, 11, 256, 2e-3, 200)
    assert tid.PRESETS["gpu"][0].steps == 12000
    default = tid.Recipe()
    changed = {"n_train", "vae_steps", "vae_batch_size", "steps", "batch_size", "lr", "warmup"}
    assert all(getattr(r, f) == getattr(default, f) for f in default.to_dict() if f not in changed)
    assert build_parser().parse_args(["train-image-decoder", "--out", "o"]).device == "cpu"
    assert main(["train-image-decoder", "--out", str(tmp_path), "--n-train", "500", "--quiet"]) == 0
    assert (seen["recipe"].n_train, seen["recipe"].steps) == (500, tid.Recipe().steps)


def test_the_accelerator_path_runs_end_to_end(tiny_clip_dir, trained, tmp_path, monkeypatch):
    """The GPU path (training set resident on the device, bf16 autocast, fused EMA, schedulers
    moved), run on the CPU by declaring the CPU an accelerator, with the scenes rendered by 2
    processes: it trains the same steps as the CPU path (the same first losses up to bf16's
    rounding), and the saved pipeline loads with fp32 weights."""
    monkeypatch.setattr(tid, "_on_cpu", lambda device: False)
    out = tmp_path / "decoder"
    s = tid.train(out, clip={"local_dir": str(tiny_clip_dir)}, seed=1, recipe=TINY_RECIPE,
                  vae_cfg=tid.TINY_VAE_CFG, unet_cfg=tid.TINY_UNET_CFG, cache_dir=tmp_path / "cache",
                  progress=False, workers=2)
    cpu = trained[0]["losses"]
    np.testing.assert_allclose(s["losses"]["vae"][:5], cpu["vae"][:5], rtol=0.02)
    np.testing.assert_allclose(s["losses"]["unet"][:5], cpu["unet"][:5], rtol=0.05)
    assert s["heldout"]["unet_probe_loss"]["after"] < s["heldout"]["unet_probe_loss"]["before"]
    dec = idec.ImageDecoder.load({"pipeline_dir": str(out)})
    assert all(p.dtype == torch.float32 for p in dec.pipe.unet.parameters())
    assert dec.generate(_embeds(2), seed=0).shape == (2, 32, 32, 3)
