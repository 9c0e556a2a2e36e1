"""Real-format weights (tests/realpath/weights.py) through the package's own loaders, as a user's config gives them.

Each format is written by the library that defines it (open_clip, diffusers, transformers) with a
tiny config of the real checkpoint's structure, then loaded exactly as ``config/nsd.yaml``'s
``models:`` section names it, and checked against the libraries' own objects: the CLIP the
package builds computes what open_clip's model computes, the image decoder draws exactly the
images of ``StableUnCLIPImg2ImgPipeline.__call__(image_embeds=...)``, the captioner trained by
``train-captioner --pairs`` on the embed file loads with a local GPT-2 and captions.

The default run takes seconds per test on CPU (torch on one thread); the smallest built-in
named ViT (``ViT-S-32-alt``, 173 MB) is ``slow``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from braindecode_pkg.decoders import captioner as mcap  # noqa: E402
from braindecode_pkg.decoders import clip as mclip  # noqa: E402
from braindecode_pkg.decoders import image_decoder as mdec  # noqa: E402
from braindecode_pkg.weights_file import sniff_weights  # noqa: E402

from . import weights as W  # noqa: E402

D = W.CLIP_EMBED_DIM  # 24
N_TOKENS, VISION_WIDTH = 16, 40  # (32 / 8)^2 patches of the tiny ViT's width

#: model_index.json of stabilityai/stable-diffusion-2-1-unclip (but its _diffusers_version)
REAL_MODEL_INDEX = {
    "_class_name": "StableUnCLIPImg2ImgPipeline",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "image_noising_scheduler": ["diffusers", "DDPMScheduler"],
    "image_normalizer": ["stable_diffusion", "StableUnCLIPImageNormalizer"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """torch on one thread (the suite's processes share 2 cores; more threads only contend)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def clip_model():
    return W.build_open_clip_model(seed=3)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, clip_model):
    return W.write_open_clip_local_dir(tmp_path_factory.mktemp("w") / "CLIP-tiny-ViT-8", clip_model)


@pytest.fixture(scope="module")
def unclip_dir(tmp_path_factory):
    return W.write_unclip_pipeline(tmp_path_factory.mktemp("w") / "stable-diffusion-2-1-unclip", embed_dim=D, seed=5)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return W.write_gpt2(tmp_path_factory.mktemp("w") / "gpt2", seed=7)


@pytest.fixture(scope="module")
def embed_file(tmp_path_factory, sim_root, clip_dir):
    """``braindecode-pkg embed --what both`` of subject 1's images with the local-dir CLIP."""
    from braindecode_pkg.cli import main

    out = tmp_path_factory.mktemp("embed") / "clip.h5"
    clip = W.models_section(clip_local_dir=clip_dir)["clip"]
    rc = main(["embed", "--nsd-root", str(sim_root), "--subjects", "1", "--clip", json.dumps(clip),
               "--out", str(out), "--what", "both", "--batch-size", "100", "--quiet"])
    assert rc == 0
    return out


def _images(n=5, seed=0):
    """uint8 RGB images of another size and aspect than the CLIP's 32 px (resize and crop matter)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 45, 38, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------ open_clip
def test_open_clip_local_dir_is_open_clips_format_and_loads_as_written(clip_dir, clip_model):
    from PIL import Image

    names = sorted(p.name for p in clip_dir.iterdir())
    assert names == ["merges.txt", "open_clip_config.json", "open_clip_model.safetensors",
                     "open_clip_pytorch_model.bin", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    doc = json.loads((clip_dir / "open_clip_config.json").read_text())
    assert set(doc) == {"model_cfg", "preprocess_cfg"}
    for tower in ("vision_cfg", "text_cfg"):  # ViT-H-14's keys, tiny values
        assert set(doc["model_cfg"][tower]) == set(W.VIT_H_14_MODEL_CFG[tower])
    assert doc["preprocess_cfg"]["mean"] == list(W.OPENAI_MEAN)

    cfg = mclip.parse_clip_config(W.models_section(clip_local_dir=clip_dir)["clip"])
    assert cfg.weights.name == "open_clip_model.safetensors"  # open_clip's own preference
    enc = mclip.ClipEncoder.load(cfg)
    assert type(enc.model) is open_clip.model.CLIP and not isinstance(enc.model, open_clip.model.CustomTextCLIP)
    assert enc.embed_dim == D and enc.token_shape == (N_TOKENS, VISION_WIDTH) and enc.image_size == (32, 32)
    ref_sd = clip_model.state_dict()
    assert all(torch.equal(v, ref_sd[k]) for k, v in enc.model.state_dict().items())

    # open_clip's own loader of the same folder: same model, same eval transform
    theirs, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip_dir}")
    theirs.eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = enc.model.encode_image(x)
        assert torch.allclose(ours, clip_model.encode_image(x), atol=1e-6)
        assert torch.allclose(ours, theirs.encode_image(x), atol=1e-6)
        imgs = _images()
        want = theirs.encode_image(torch.stack([preprocess(Image.fromarray(a)) for a in imgs]), normalize=True)
    got = enc.encode_images(imgs, what=("pooled", "tokens"))
    assert got["pooled"].shape == (5, D) and got["tokens"].shape == (5, N_TOKENS, VISION_WIDTH)
    np.testing.assert_allclose(got["pooled"], want.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got["pooled"], axis=1), 1, atol=1e-5)
    assert np.array_equal(enc.encode_images([Image.fromarray(a) for a in imgs])["pooled"], got["pooled"])

    # tokens: the last layer after ln_post, class token excluded
    seen = []
    hook = theirs.visual.ln_post.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.inference_mode():
            theirs.encode_image(enc.to_tensor(enc.preprocess_uint8(imgs)))
    finally:
        hook.remove()
    np.testing.assert_allclose(got["tokens"], seen[0][:, 1:].numpy(), atol=1e-5)

    texts = ["a photo of a cat", "two red squares on the sand"]
    with torch.inference_mode():
        want_t = theirs.encode_text(open_clip.get_tokenizer(f"local-dir:{clip_dir}")(texts), normalize=True)
    np.testing.assert_allclose(enc.encode_text(texts), want_t.numpy(), atol=1e-5)


def test_open_clip_bin_only_is_loaded_with_weights_only(tmp_path, clip_model, monkeypatch):
    d = W.write_open_clip_local_dir(tmp_path / "clip", clip_model, formats=("bin",), tokenizer_files=False)
    assert sniff_weights(d / "open_clip_pytorch_model.bin") == "torch-zip"
    calls = []
    real_load = torch.load

    def load(*a, **k):
        calls.append(k.get("weights_only"))
        return real_load(*a, **k)

    monkeypatch.setattr(torch, "load", load)
    enc = mclip.ClipEncoder.load({"local_dir": str(d)})
    assert enc.config.weights.name == "open_clip_pytorch_model.bin"
    assert calls and all(w is True for w in calls)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.allclose(enc.model.encode_image(x), clip_model.encode_image(x), atol=1e-6)


def test_named_architecture_bin_in_this_process(tmp_path, clip_model):
    """``{"arch": NAME, "pretrained": .bin}`` of an architecture registered from a JSON file.

    open_clip keeps such a registration in this process only: a workflow stage (a new process)
    refuses the name, so across processes only open_clip's built-in names work (see the slow
    test below and weights.py's docstring).
    """
    spec = W.write_open_clip_arch_json(tmp_path / "configs")
    name = W.register_open_clip_arch(spec)
    try:
        b = W.write_open_clip_named_bin(tmp_path / "open_clip_pytorch_model.bin", name, model=clip_model)
        cfg = mclip.parse_clip_config(W.models_section(clip_arch=name, clip_pretrained=b)["clip"])
        assert (cfg.arch, cfg.weights) == (name, b.resolve())
        enc = mclip.ClipEncoder.load(cfg)
        assert type(enc.model) is open_clip.model.CLIP
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        with torch.inference_mode():
            assert torch.allclose(enc.model.encode_image(x), clip_model.encode_image(x), atol=1e-6)
        out = enc.encode_images(_images(3), what=("pooled", "tokens"))
        assert out["pooled"].shape == (3, D) and out["tokens"].shape == (3, N_TOKENS, VISION_WIDTH)
    finally:
        W.unregister_open_clip_arch(spec)
    assert name not in open_clip.list_models()


@pytest.mark.slow
def test_smallest_builtin_named_vit_bin(tmp_path):
    """ViT-S-32-alt, the smallest built-in plain-CLIP ViT: 43M parameters, a 173 MB .bin
    (~6 s to build, ~1 s to write, ~2 s to load on one CPU thread)."""
    arch = W.SMALLEST_NAMED_VIT
    model = W.build_open_clip_model(open_clip.get_model_config(arch), seed=0)
    b = W.write_open_clip_named_bin(tmp_path / "open_clip_pytorch_model.bin", arch, model=model)
    enc = mclip.ClipEncoder.load(W.models_section(clip_arch=arch, clip_pretrained=b)["clip"])
    assert type(enc.model) is open_clip.model.CLIP
    assert enc.embed_dim == 256 and enc.token_shape == (49, 384)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(enc.model.encode_image(x), model.encode_image(x), atol=1e-5)


def test_embed_what_both_with_the_local_dir_clip(embed_file, sim_root, clip_dir):
    import h5py

    from braindecode_pkg.data.layout import NSDPaths

    enc = mclip.ClipEncoder.load({"local_dir": str(clip_dir)})
    with h5py.File(embed_file, "r") as f:
        ids = f["nsd_id"][()]
        pooled, tokens, text = f["image_pooled"][()], f["image_tokens"][()], f["text"][()]
        ncap = f["n_captions"][()]
        caps = [[c.decode() for c in row[:k]] for row, k in zip(f["captions"][()], ncap)]
        assert json.loads(f.attrs["clip_config"]) == {"local_dir": str(clip_dir.resolve())}
    n = len(ids)
    assert n > 100 and pooled.shape == (n, D) and tokens.shape == (n, N_TOKENS, VISION_WIDTH)
    assert text.shape == (n, 5, D)
    with h5py.File(NSDPaths(sim_root).stimuli, "r") as s:
        imgs = s["imgBrick"][np.sort(ids[:7])]
    want = enc.encode_images(imgs)
    np.testing.assert_allclose(pooled[:7], want["pooled"], atol=1e-5)
    np.testing.assert_allclose(tokens[:7], want["tokens"], atol=1e-5)
    np.testing.assert_allclose(text[0, : ncap[0]], enc.encode_text(caps[0]), atol=1e-5)


# -------------------------------------------------------------------------- unCLIP pipeline
def test_unclip_folder_is_stable_diffusion_2_1_unclips_layout(unclip_dir):
    from diffusers import StableUnCLIPImg2ImgPipeline
    from PIL import Image

    index = json.loads((unclip_dir / "model_index.json").read_text())
    assert {k: v for k, v in index.items() if k != "_diffusers_version"} == REAL_MODEL_INDEX
    unet = json.loads((unclip_dir / "unet" / "config.json").read_text())
    assert unet["class_embed_type"] == "projection" and unet["projection_class_embeddings_input_dim"] == 2 * D
    assert unet["use_linear_projection"] is True
    sched = json.loads((unclip_dir / "scheduler" / "scheduler_config.json").read_text())
    assert sched["_class_name"] == "PNDMScheduler" and sched["prediction_type"] == "v_prediction"
    assert sorted(p.name for p in (unclip_dir / "tokenizer").iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    for name in ("unet", "vae", "image_normalizer"):
        assert {p.name for p in (unclip_dir / name).glob("diffusion_pytorch_model*")} == {
            "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin"}
    for name in ("text_encoder", "image_encoder"):
        assert {p.name for p in (unclip_dir / name).iterdir()} == {
            "config.json", "model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin"}

    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(unclip_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    got = {k: type(v).__name__ for k, v in pipe.components.items()}
    assert got == {k: v[1] for k, v in REAL_MODEL_INDEX.items() if not k.startswith("_")}
    assert all(v.dtype == torch.float32 for v in pipe.components.values() if isinstance(v, torch.nn.Module))
    assert pipe.image_encoder.config.projection_dim == D
    # the whole pipeline works as downloaded: an image through its own CLIP image encoder
    img = Image.fromarray(_images(1)[0])
    out = pipe(image=img, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 32, 32, 3)


@pytest.mark.parametrize("guidance_scale,noise_level", [(4.0, 0), (1.0, 300)])
def test_image_decoder_generate_is_the_pipelines_call(unclip_dir, guidance_scale, noise_level):
    from diffusers import StableUnCLIPImg2ImgPipeline

    dec = mdec.ImageDecoder.load(W.models_section(pipeline_dir=unclip_dir)["image_decoder"])
    assert dec.embed_dim == D and dec.image_size == 32
    assert type(dec.pipe.scheduler).__name__ == "PNDMScheduler" and dec.pipe.image_encoder is None
    emb = np.random.default_rng(4).normal(size=(3, D)).astype(np.float32)
    seed, steps = 11, 3
    ours = dec.generate(emb, seed=seed, num_inference_steps=steps, guidance_scale=guidance_scale,
                        noise_level=noise_level)

    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(unclip_dir), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(mdec._image_seed(seed, i)) for i in range(len(emb))]
    theirs = pipe(prompt=[""] * len(emb), image_embeds=torch.from_numpy(emb), generator=gens,
                  num_inference_steps=steps, guidance_scale=guidance_scale, noise_level=noise_level,
                  output_type="np").images
    assert ours.shape == (3, 32, 32, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, np.round(theirs * 255).astype(np.uint8))
    # an image does not depend on the batch it was generated in: the same random draws; the
    # arithmetic of another batch size (or thread count) moves a few pixels by one level
    one = dec.generate(emb, seed=seed, num_inference_steps=steps, guidance_scale=guidance_scale,
                       noise_level=noise_level, batch_size=1)
    diff = np.abs(one.astype(int) - ours)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_image_decoder_fp16_variant_and_image_encoder(unclip_dir):
    emb = np.random.default_rng(5).normal(size=(2, D)).astype(np.float32)
    ref = mdec.ImageDecoder.load({"pipeline_dir": str(unclip_dir)}).generate(emb, seed=2, num_inference_steps=2)
    half = mdec.ImageDecoder.load(W.models_section(pipeline_dir=unclip_dir, variant="fp16")["image_decoder"])
    assert half.pipe.unet.dtype == torch.float32  # fp16 weights, computed in the configured fp32
    got = half.generate(emb, seed=2, num_inference_steps=2)
    assert np.abs(got.astype(int) - ref).max() <= 3  # fp16-rounded weights
    full = mdec.ImageDecoder.load({"pipeline_dir": str(unclip_dir), "load_image_encoder": True})
    assert type(full.pipe.image_encoder).__name__ == "CLIPVisionModelWithProjection"
    assert full.pipe.image_encoder.config.projection_dim == full.embed_dim == D


def test_bin_files_beside_the_safetensors_are_never_unpickled(unclip_dir, gpt2_dir, monkeypatch):
    """The real folders hold pickled .bin weights too; the package reads only the safetensors."""
    def refuse(*a, **k):
        raise AssertionError(f"torch.load called on {a[:1]}")

    monkeypatch.setattr(torch, "load", refuse)
    dec = mdec.ImageDecoder.load({"pipeline_dir": str(unclip_dir), "load_image_encoder": True})
    assert dec.pipe.unet.dtype == torch.float32
    lm, tok = mcap.load_lm(gpt2_dir)
    assert type(lm).__name__ == "GPT2LMHeadModel"


# ----------------------------------------------------------------------------------- GPT-2
def test_gpt2_folder_loads_in_transformers_and_the_package(gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

    assert sorted(p.name for p in gpt2_dir.iterdir()) == [
        "config.json", "generation_config.json", "merges.txt", "model.safetensors", "pytorch_model.bin",
        "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    assert json.loads((gpt2_dir / "tokenizer_config.json").read_text()) == {"model_max_length": 1024}
    lm = AutoModelForCausalLM.from_pretrained(str(gpt2_dir), local_files_only=True, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(str(gpt2_dir), local_files_only=True)
    assert type(lm) is GPT2LMHeadModel and lm.config.n_positions == 1024
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token is None
    assert tok.eos_token_id == lm.config.eos_token_id == lm.config.vocab_size - 1
    text = "A red bus driving past two dogs."
    assert tok.decode(tok(text)["input_ids"]) == text
    ours, our_tok = mcap.load_lm(gpt2_dir)
    assert type(ours) is GPT2LMHeadModel and our_tok.eos_token_id == tok.eos_token_id
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(ours(ids).logits, lm.eval()(ids).logits)


def test_train_captioner_pairs_with_local_gpt2_then_captions(tmp_path, embed_file, gpt2_dir, sim_root):
    import h5py

    from braindecode_pkg.sim.recipes.captioner import shared1000_ids

    out = W.train_clipcap(tmp_path / "captioner", pairs=embed_file, lm=gpt2_dir, nsd_root=sim_root, steps=12)
    # a frozen external language model: only the mapper is written, the LM is named at load time
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "losses.json", "model.safetensors"]
    doc = json.loads((out / "config.json").read_text())
    assert doc["mapper"]["kind"] == "transformer" and doc["mapper"]["clip_dim"] == D and doc["mapper"]["lm_dim"] == 32
    with h5py.File(embed_file, "r") as f:
        ids = f["nsd_id"][()]
        emb = f["image_pooled"][()]
    shared = np.isin(ids, shared1000_ids(sim_root))
    assert doc["braindecode"]["heldout"]["n_heldout"] == shared.sum() > 0  # never trained on the test set
    assert doc["braindecode"]["n_train_images"] == (~shared).sum()

    section = W.models_section(captioner_dir=out, lm_dir=gpt2_dir)["captioner"]
    cfg = mcap.parse_captioner_config(section)
    assert (cfg.mapper_dir, cfg.lm_dir) == (out.resolve(), gpt2_dir.resolve())
    cap = mcap.Captioner.load(section)
    assert type(cap.lm).__name__ == "GPT2LMHeadModel" and cap.clip_dim == D
    x = emb[shared][:3]
    got = cap.generate(x, max_new_tokens=8)
    assert len(got) == 3 and all(isinstance(t, str) for t in got)
    # greedy decoding by hand: the language model continuing the mapper's prefix
    tok, want = cap.tokenizer, []
    with torch.inference_mode():
        for row in x:
            embeds, new = cap.prefix(row[None]), []
            for _ in range(8):
                nxt = int(cap.lm(inputs_embeds=embeds).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                new.append(nxt)
                embeds = torch.cat([embeds, cap.lm.get_input_embeddings()(torch.tensor([[nxt]]))], dim=1)
            want.append(tok.decode(new, skip_special_tokens=True).strip())
    assert got == want


# ---------------------------------------------------------------------------------- config
def test_models_section_is_what_the_parsers_and_the_workflow_take(tmp_path, clip_dir, unclip_dir, gpt2_dir):
    import yaml

    mapper = tmp_path / "captioner"
    mapper.mkdir()
    (mapper / "config.json").write_text(json.dumps({"format": mcap.FORMAT, "format_version": 1, "mapper": {}}))
    (mapper / "model.safetensors").write_bytes(b"")
    models = W.models_section(clip_local_dir=clip_dir, pipeline_dir=unclip_dir, captioner_dir=mapper, lm_dir=gpt2_dir)
    assert models == {"clip": {"local_dir": str(clip_dir)}, "image_decoder": {"pipeline_dir": str(unclip_dir)},
                      "captioner": {"dir": str(mapper), "lm": str(gpt2_dir)}}
    # as a user's config/nsd.yaml holds it, and as the workflow passes each on a command line (JSON)
    doc = yaml.safe_load(yaml.safe_dump({"models": models}))["models"]
    for spec in (doc, {k: json.dumps(v) for k, v in doc.items()}):
        assert mclip.parse_clip_config(spec["clip"]).local_dir == clip_dir.resolve()
        assert mdec.parse_image_decoder_config(spec["image_decoder"]).pipeline_dir == unclip_dir.resolve()
        assert mcap.parse_captioner_config(spec["captioner"]).lm_dir == gpt2_dir.resolve()
    with pytest.raises(ValueError):
        W.models_section(clip_arch="ViT-H-14")
