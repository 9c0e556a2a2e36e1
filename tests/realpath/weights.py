"""Tiny real-architecture weights, written from code, in exactly the formats users download.

Every component is built directly from the ``open_clip`` / ``diffusers`` / ``transformers``
classes the real checkpoints are instances of, with tiny configs that keep the real
checkpoints' structure and config keys, and written by those libraries' own writers
(``save_pretrained``, ``torch.save(model.state_dict())``, safetensors). Nothing here uses the
package's own builders (``braindecode_pkg.decoders.image_decoder.build_unclip_pipeline``,
``decoders.clip.save_local_dir``, ``sim.recipes``), so a format mismatch between what users
download and what the package reads shows up instead of being hidden.

Writers, their real counterparts, and the ``models:`` entry a user's config gives for them:

- :func:`write_open_clip_local_dir`: the hub repo laion/CLIP-ViT-H-14-laion2B-s32B-b79K as
  downloaded (``open_clip_config.json``, ``open_clip_model.safetensors``,
  ``open_clip_pytorch_model.bin``, CLIP tokenizer files): ``{"local_dir": DIR}``;
- :func:`write_open_clip_named_bin`: that repo's ``open_clip_pytorch_model.bin`` alone, for an
  open_clip architecture name: ``{"arch": NAME, "pretrained": FILE}``;
- :func:`write_unclip_pipeline`: stabilityai/stable-diffusion-2-1-unclip
  (``StableUnCLIPImg2ImgPipeline``): ``{"pipeline_dir": DIR}``;
- :func:`write_gpt2`: openai-community/gpt2, and :func:`train_clipcap`: the ClipCap mapper
  trained on the embed file by ``braindecode-pkg train-captioner --pairs``:
  ``{"dir": MAPPER_DIR, "lm": GPT2_DIR}``.

:func:`models_section` returns the ``models:`` dicts a user puts in ``config/nsd.yaml``.

The tiny CLIP is a plain ``open_clip.model.CLIP`` (as ViT-H-14 and ViT-bigG-14 are), not a
``CustomTextCLIP``. Widths are distinct from each other (CLIP embedding 24, vision 40, text 56,
unCLIP text encoder 36, its image encoder 44, GPT-2 32; images 32 px, 16 patch tokens), so a
mixed-up dimension cannot pass silently.

Named architectures: open_clip registers architectures from JSON files
(``open_clip.add_model_config``) only in the process that calls it; a fresh process (each
workflow stage is one) knows only the configs shipped in ``open_clip/model_configs``. So
``{"arch": NAME, "pretrained": FILE}`` reaches a tiny architecture only in-process
(:func:`register_open_clip_arch`); across processes only a built-in name works, the smallest
plain ViT being ``ViT-S-32-alt`` (:data:`SMALLEST_NAMED_VIT`, ~43M parameters, ~170 MB as fp32).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gzip
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")

__all__ = [
    "CLIP_EMBED_DIM", "TINY_CLIP_MODEL_CFG", "VIT_H_14_MODEL_CFG", "SMALLEST_NAMED_VIT", "TINY_ARCH",
    "OPENAI_MEAN", "OPENAI_STD", "UNCLIP_SCHEDULER_CFG", "DEFAULT_TEXTS",
    "build_open_clip_model", "write_open_clip_local_dir", "write_open_clip_named_bin",
    "write_open_clip_arch_json", "register_open_clip_arch", "unregister_open_clip_arch",
    "clip_bpe_vocab", "write_clip_tokenizer_files",
    "build_unclip_pipeline_real", "write_unclip_pipeline",
    "write_gpt2", "train_clipcap", "models_section", "write_all", "dir_size",
]

# ------------------------------------------------------------------------------ open_clip
#: width of the tiny CLIP's pooled image/text embeddings (and so of the unCLIP image embeddings)
CLIP_EMBED_DIM = 24
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: ``model_cfg`` of laion/CLIP-ViT-H-14-laion2B-s32B-b79K's open_clip_config.json (= open_clip's
#: ``model_configs/ViT-H-14.json``): the structure the tiny config keeps
VIT_H_14_MODEL_CFG = {
    "embed_dim": 1024,
    "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16, "layers": 24},
}
#: the same keys, tiny: 32 px images in 8 px patches (16 patch tokens of width 40), the real
#: 49408-token vocabulary and 77-token context (the bundled SimpleTokenizer is used as for ViT-H)
TINY_CLIP_MODEL_CFG = {
    "embed_dim": CLIP_EMBED_DIM,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 40, "head_width": 20, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 56, "heads": 4, "layers": 1},
}
#: the name the tiny architecture is registered under by :func:`register_open_clip_arch`
TINY_ARCH = "realpath-tiny-ViT-8"
#: the smallest open_clip built-in ViT whose model is a plain ``CLIP`` (see the module docstring)
SMALLEST_NAMED_VIT = "ViT-S-32-alt"


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(int(seed))


def build_open_clip_model(model_cfg: dict | None = None, *, seed: int = 0):
    """An ``open_clip.model.CLIP`` of ``model_cfg`` (default :data:`TINY_CLIP_MODEL_CFG`), seeded.

    Built as ``open_clip.create_model`` builds a plain config (``CLIP(**model_cfg)``), in eval
    mode, with non-trivial ``logit_scale``. Pass a built-in name's config with
    ``open_clip.get_model_config(NAME)``.
    """
    from dataclasses import asdict

    import torch
    from open_clip.model import CLIP, set_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg

    cfg = copy.deepcopy(model_cfg or TINY_CLIP_MODEL_CFG)
    if cfg.get("custom_text") or "hf_model_name" in cfg.get("text_cfg", {}):
        raise ValueError("a plain open_clip CLIP config is expected (no custom_text / hf_model_name)")
    _seed(seed)
    model = CLIP(**cfg)
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
    # what create_model attaches: the preprocessing config (OpenAI mean/std, the tower's size)
    pp = asdict(PreprocessCfg())
    pp["size"] = model.visual.image_size
    set_model_preprocess_cfg(model, pp)
    return model.eval()


@functools.lru_cache(maxsize=1)
def clip_bpe_vocab() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(vocabulary in id order, merges) of CLIP's BPE, built as CLIP builds it from the BPE file
    bundled with open_clip: the 49408 tokens of openai/clip-vit-large-patch14's vocab.json."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return tuple(vocab), tuple(merges)


def _added(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def write_clip_tokenizer_files(out_dir, *, pad_token: str = "<|endoftext|>", special_pad: str = "!") -> Path:
    """A CLIPTokenizer folder in the layout of stable-diffusion-2-1-unclip's ``tokenizer/`` (and
    of the CLIP tokenizer files in laion's open_clip repos): ``vocab.json``, ``merges.txt``
    (``#version: 0.2`` header), ``special_tokens_map.json``, ``tokenizer_config.json``; no
    ``tokenizer.json``. Full real vocabulary (1 MB + 0.5 MB)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_vocab()
    (out / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": _added("<|startoftext|>"), "eos_token": _added("<|endoftext|>"),
        "pad_token": special_pad, "unk_token": _added("<|endoftext|>")}, indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": _added("<|startoftext|>"), "do_lower_case": True,
        "eos_token": _added("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
        "pad_token": pad_token, "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer", "unk_token": _added("<|endoftext|>")}, indent=2))
    return out


@contextlib.contextmanager
def _quiet():
    """No progress bars or info lines from diffusers/transformers while writing (restored after)."""
    import logging

    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    bars = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.set_verbosity(logging.ERROR)
    tlog.set_verbosity(logging.ERROR)
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
        if bars[0]:
            dlog.enable_progress_bar()
        if bars[1]:
            tlog.enable_progress_bar()


def _state_dict(model) -> dict:
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def write_open_clip_local_dir(out_dir, model=None, *, model_cfg: dict | None = None, seed: int = 0,
                              formats=("safetensors", "bin"), tokenizer_files: bool = True) -> Path:
    """An open_clip hub-repo folder (what ``open_clip.push_to_hf_hub`` uploads and users download
    with ``huggingface-cli download laion/CLIP-ViT-H-14-laion2B-s32B-b79K``).

    Written as open_clip's ``push_to_hf_hub.save_for_hf`` writes it: ``open_clip_config.json``
    (``model_cfg`` and ``preprocess_cfg`` with ``mean``/``std`` of the model's visual tower),
    ``open_clip_model.safetensors`` and/or ``open_clip_pytorch_model.bin`` (``torch.save`` of the
    state dict) per ``formats``, and the CLIP tokenizer files. ``model`` defaults to
    :func:`build_open_clip_model` of ``model_cfg`` and ``seed``.
    """
    import safetensors.torch
    import torch
    from open_clip.push_to_hf_hub import save_config_for_hf

    cfg = copy.deepcopy(model_cfg or TINY_CLIP_MODEL_CFG)
    model = model if model is not None else build_open_clip_model(cfg, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = _state_dict(model)
    bad = set(formats) - {"safetensors", "bin"}
    if bad or not formats:
        raise ValueError(f"formats {formats!r}: a non-empty subset of ('safetensors', 'bin')")
    if "safetensors" in formats:
        safetensors.torch.save_file(sd, str(out / "open_clip_model.safetensors"))
    if "bin" in formats:
        torch.save(sd, out / "open_clip_pytorch_model.bin")
    if tokenizer_files:
        write_clip_tokenizer_files(out)
    save_config_for_hf(model, out / "open_clip_config.json", model_config=cfg)
    return out


def write_open_clip_named_bin(path, arch: str = SMALLEST_NAMED_VIT, model=None, *, seed: int = 0) -> Path:
    """``torch.save(model.state_dict(), path)`` of an open_clip architecture ``arch`` (a built-in
    name, or one registered by :func:`register_open_clip_arch`): an ``open_clip_pytorch_model.bin``
    as laion's repos hold it. Returns ``path``."""
    import open_clip
    import torch

    if model is None:
        cfg = open_clip.get_model_config(arch)
        if cfg is None:
            raise ValueError(f"{arch!r} is not an open_clip architecture")
        model = build_open_clip_model(cfg, seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_state_dict(model), path)
    return path


def write_open_clip_arch_json(out_dir, name: str = TINY_ARCH, model_cfg: dict | None = None) -> Path:
    """``OUT/NAME.json``: an architecture in the format of open_clip's ``model_configs/*.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = out / f"{name}.json"
    p.write_text(json.dumps(model_cfg or TINY_CLIP_MODEL_CFG, indent=4) + "\n")
    return p


def register_open_clip_arch(json_path) -> str:
    """``open_clip.add_model_config(json_path)`` (this process only); returns the architecture name."""
    import open_clip

    p = Path(json_path)
    open_clip.add_model_config(p)
    return p.stem


def unregister_open_clip_arch(json_path) -> None:
    """Undo :func:`register_open_clip_arch` (open_clip's registry is module state)."""
    from open_clip import factory

    p = Path(json_path)
    factory._MODEL_CONFIG_PATHS[:] = [q for q in factory._MODEL_CONFIG_PATHS if Path(q) != p]
    factory._MODEL_CONFIGS.pop(p.stem, None)


# --------------------------------------------------------------------------- unCLIP pipeline
#: scheduler/scheduler_config.json of stable-diffusion-2-1-unclip, verbatim: a PNDM sampler with
#: v-prediction (the file also carries DDIM keys PNDMScheduler ignores)
UNCLIP_SCHEDULER_CFG = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.15.0.dev0", "beta_end": 0.012,
                        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
                        "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.995, "num_train_timesteps": 1000,
                        "prediction_type": "v_prediction", "sample_max_value": 1.0, "set_alpha_to_one": False,
                        "skip_prk_steps": True, "steps_offset": 1, "thresholding": False, "trained_betas": None}


def build_unclip_pipeline_real(embed_dim: int = CLIP_EMBED_DIM, *, image_size: int = 32, seed: int = 0,
                               normalizer_stats: bool = True):
    """A tiny ``StableUnCLIPImg2ImgPipeline`` with the components and config keys of
    stable-diffusion-2-1-unclip (see :func:`write_unclip_pipeline`), fresh seeded weights.

    ``embed_dim`` is the CLIP image-embedding width (1024 for the real ViT-H one); the UNet's
    ``projection_class_embeddings_input_dim`` is ``2 * embed_dim`` (the noised embedding and
    the sinusoidal embedding of its noise level), as SD 2.1 unCLIP's 2048. With
    ``normalizer_stats`` the embedding normaliser holds non-trivial mean/std (the real one holds
    CLIP ViT-H's statistics), so scaling mistakes cannot hide behind mean 0, std 1.
    """
    import tempfile

    import torch
    from diffusers import (AutoencoderKL, DDPMScheduler, PNDMScheduler, StableUnCLIPImg2ImgPipeline,
                           UNet2DConditionModel)
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    if image_size % 2:
        raise ValueError("image_size must be even (the VAE halves it)")
    _seed(seed)
    with tempfile.TemporaryDirectory() as td:
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(td), local_files_only=True)
    # text_encoder/config.json of SD 2.x (OpenCLIP ViT-H text tower as a CLIPTextModel; the legacy
    # bos/eos/pad ids 0/2/1 are those of the real file)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=36, intermediate_size=72, num_hidden_layers=1, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=28, layer_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=2, pad_token_id=1)).eval()
    # image_encoder/config.json: OpenCLIP ViT-H vision tower with its projection to the embedding
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=44, intermediate_size=88, num_hidden_layers=1, num_attention_heads=4, image_size=image_size,
        patch_size=8, projection_dim=embed_dim, hidden_act="gelu", layer_norm_eps=1e-5)).eval()
    feature_extractor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=True, do_normalize=True, do_resize=True, resample=3,
        image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))
    image_normalizer = StableUnCLIPImageNormalizer(embedding_dim=embed_dim)
    if normalizer_stats:
        g = torch.Generator().manual_seed(int(seed) + 1)
        with torch.no_grad():
            image_normalizer.mean.copy_(0.05 * torch.randn(1, embed_dim, generator=g))
            image_normalizer.std.copy_(0.5 + torch.rand(1, embed_dim, generator=g))
    # the original checkpoint's noise augmentor: 1000 steps, squaredcos_cap_v2 (diffusers'
    # convert_from_ckpt.stable_unclip_image_noising_components)
    image_noising_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    # vae/config.json of SD 2.x: AutoencoderKL, 4 latent channels, scaling_factor 0.18215
    # (real: 4 blocks of 128-512 channels; here 2 blocks, so 32 px images have 16 px latents)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
        act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=image_size, scaling_factor=0.18215)
    # unet/config.json of SD 2.1 unCLIP: linear-projection cross attention to the text encoder,
    # "projection" class embedding of the noised image embedding (real: 4 blocks 320-1280)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=4, out_channels=4, center_input_sample=False,
        flip_sin_to_cos=True, freq_shift=0, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn", up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        only_cross_attention=False, block_out_channels=(32, 64), layers_per_block=1, downsample_padding=1,
        mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=36,
        attention_head_dim=(2, 4), dual_cross_attention=False, use_linear_projection=True,
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * embed_dim,
        num_class_embeds=None, upcast_attention=False, resnet_time_scale_shift="default")
    scheduler = PNDMScheduler.from_config(UNCLIP_SCHEDULER_CFG)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=feature_extractor, image_encoder=image_encoder, image_normalizer=image_normalizer,
        image_noising_scheduler=image_noising_scheduler, tokenizer=tokenizer, text_encoder=text_encoder,
        unet=unet, scheduler=scheduler, vae=vae)
    for comp in pipe.components.values():
        if isinstance(comp, torch.nn.Module):
            comp.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


_MODEL_COMPONENTS = ("image_encoder", "image_normalizer", "text_encoder", "unet", "vae")


def write_unclip_pipeline(out_dir, *, embed_dim: int = CLIP_EMBED_DIM, image_size: int = 32, seed: int = 0,
                          variants=("fp16",), with_bin: bool = True, normalizer_stats: bool = True,
                          pipe=None) -> Path:
    """A stable-diffusion-2-1-unclip folder: ``pipe.save_pretrained(out_dir)`` of
    :func:`build_unclip_pipeline_real` (or of ``pipe``).

    As in the real repository: ``model_index.json`` naming ``StableUnCLIPImg2ImgPipeline`` and
    its nine components; every model component's weights as ``.safetensors`` and (``with_bin``)
    pickled ``.bin``, each also as an ``fp16`` variant (``variants``: ``*.fp16.safetensors`` /
    ``*.fp16.bin``); ``tokenizer/`` as vocab.json + merges.txt (no tokenizer.json);
    ``feature_extractor/preprocessor_config.json``; the two schedulers' ``scheduler_config.json``.
    """
    import shutil

    import torch
    from diffusers import ModelMixin

    out = Path(out_dir)
    pipe = pipe if pipe is not None else build_unclip_pipeline_real(
        embed_dim, image_size=image_size, seed=seed, normalizer_stats=normalizer_stats)
    def bin_path(name, comp, v):
        # diffusers' weights are diffusion_pytorch_model.*, transformers' model.safetensors and
        # pytorch_model.bin (transformers 5 no longer writes .bin: torch.save of the state dict)
        stem = "diffusion_pytorch_model" if isinstance(comp, ModelMixin) else "pytorch_model"
        return out / name / f"{stem}{'.' + v if v else ''}.bin"

    with _quiet():
        for name in _MODEL_COMPONENTS:  # the variants first: the fp32 save's config.json is the one kept
            comp = getattr(pipe, name)
            for v in variants:
                half = copy.deepcopy(comp).half()  # nn.Module.half: the normaliser overrides .to
                half.save_pretrained(str(out / name), variant=v, safe_serialization=True)
                if with_bin:
                    torch.save(_state_dict(half), bin_path(name, comp, v))
                del half
        pipe.save_pretrained(str(out), safe_serialization=True)
        if with_bin:
            for name in _MODEL_COMPONENTS:
                comp = getattr(pipe, name)
                torch.save(_state_dict(comp), bin_path(name, comp, None))
    # the real scheduler file (with the keys diffusers drops when it writes a PNDM config)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(UNCLIP_SCHEDULER_CFG, indent=2) + "\n")
    # the real tokenizer folder: the slow-tokenizer files only
    shutil.rmtree(out / "tokenizer")
    write_clip_tokenizer_files(out / "tokenizer")
    return out


# ------------------------------------------------------------------------------------ GPT-2
#: caption-like sentences the tiny GPT-2 tokenizer is trained on when no texts are given
DEFAULT_TEXTS = (
    "A man riding a wave on top of a surfboard.", "A red bus driving down a city street.",
    "Two dogs playing with a frisbee in the park.", "A plate of food with broccoli and rice.",
    "A cat sitting on a laptop keyboard.", "A group of people standing around a kitchen.",
    "A blue circle next to a small green square on the sand.", "An elephant walking through tall grass.",
    "A train on the tracks near a station.", "A woman holding an umbrella in the rain.",
)


def _byte_level_bpe(texts, vocab_size: int):
    """GPT-2's tokenizer scheme (byte-level BPE, ``<|endoftext|>`` as the last id and as bos,
    eos and unk, no pad token) at a small vocabulary trained on ``texts``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size) - 1, min_frequency=1, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    # rebuild the model with <|endoftext|> inside the vocabulary (id n_vocab - 1), as in GPT-2's vocab.json
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        tok.model.save(td)
        vocab = json.loads((Path(td) / "vocab.json").read_text())
        merges = [tuple(line.split(" ")) for line in (Path(td) / "merges.txt").read_text().splitlines()[1:] if line]
    vocab["<|endoftext|>"] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=True)])
    return bpe, vocab, merges


def write_gpt2(out_dir, *, texts=None, vocab_size: int = 600, n_embd: int = 32, n_layer: int = 2,
               n_head: int = 4, seed: int = 0, with_bin: bool = True) -> Path:
    """An openai-community/gpt2 folder, tiny (a vocabulary of at most ``vocab_size`` tokens
    trained on ``texts``, default :data:`DEFAULT_TEXTS`): ``GPT2LMHeadModel(GPT2Config(...)).save_pretrained``
    (``config.json`` with GPT-2's keys — 1024 positions, gelu_new, dropout 0.1,
    ``task_specific_params`` asking for sampling —, ``generation_config.json``,
    ``model.safetensors`` and, ``with_bin``, ``pytorch_model.bin``) and the tokenizer files of the
    real repository: ``vocab.json``, ``merges.txt``, ``tokenizer.json`` and a
    ``tokenizer_config.json`` holding only ``{"model_max_length": 1024}`` (no special-tokens map,
    no pad token). ``n_embd`` must be divisible by 8 (the ClipCap transformer mapper's heads).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe, vocab, merges = _byte_level_bpe(texts or DEFAULT_TEXTS, vocab_size)
    eos = vocab["<|endoftext|>"]
    cfg = GPT2Config(
        vocab_size=len(vocab), n_positions=1024, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
        layer_norm_epsilon=1e-5, initializer_range=0.02, bos_token_id=eos, eos_token_id=eos,
        summary_type="cls_index", summary_use_proj=True, summary_activation=None,
        summary_proj_to_labels=True, summary_first_dropout=0.1,
        task_specific_params={"text-generation": {"do_sample": True, "max_length": 50}},
        architectures=["GPT2LMHeadModel"])
    cfg.n_ctx = 1024  # in GPT-2's config.json (unused by transformers)
    _seed(seed)
    model = GPT2LMHeadModel(cfg).eval()
    with _quiet():
        model.save_pretrained(str(out), safe_serialization=True)
    if with_bin:
        torch.save(_state_dict(model), out / "pytorch_model.bin")
    for stale in ("tokenizer_config.json", "special_tokens_map.json"):
        (out / stale).unlink(missing_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    bpe.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024}) + "\n")
    return out


# ---------------------------------------------------------------------------------- ClipCap
def train_clipcap(out_dir, *, pairs, lm, nsd_root=None, steps: int = 20, batch_size: int = 8, seed: int = 0,
                  extra=()) -> Path:
    """``braindecode-pkg train-captioner --pairs PAIRS --lm LM [--nsd-root ROOT] --out OUT`` (the
    ``gpt2`` preset: frozen language model, ClipCap transformer mapper), shortened to ``steps``.
    Raises ``RuntimeError`` if the command fails; returns ``out_dir``."""
    from braindecode_pkg.cli import main

    argv = ["train-captioner", "--pairs", str(pairs), "--lm", str(lm), "--out", str(out_dir),
            "--steps", str(steps), "--batch-size", str(batch_size), "--seed", str(seed), "--quiet"]
    if nsd_root is not None:
        argv += ["--nsd-root", str(nsd_root)]
    rc = main(argv + list(extra))
    if rc != 0:
        raise RuntimeError(f"braindecode-pkg {' '.join(argv)}: exit status {rc}")
    return Path(out_dir)


# ----------------------------------------------------------------------------------- config
def models_section(*, clip_local_dir=None, clip_arch: str | None = None, clip_pretrained=None,
                   pipeline_dir=None, captioner_dir=None, lm_dir=None, **image_decoder_options) -> dict:
    """The ``models:`` section of a user's ``config/nsd.yaml`` for the given folders/files.

    ``clip``: ``{"local_dir": DIR}`` or ``{"arch": NAME, "pretrained": FILE}``;
    ``image_decoder``: ``{"pipeline_dir": DIR, **image_decoder_options}``; ``captioner``:
    ``{"dir": MAPPER_DIR, "lm": LM_DIR}`` (``lm`` only if given). Paths as strings.
    """
    models: dict = {}
    if clip_local_dir is not None and clip_arch is not None:
        raise ValueError("give clip_local_dir or clip_arch (+ clip_pretrained), not both")
    if clip_local_dir is not None:
        models["clip"] = {"local_dir": str(clip_local_dir)}
    elif clip_arch is not None:
        if clip_pretrained is None:
            raise ValueError("clip_arch needs clip_pretrained (a local weights file)")
        models["clip"] = {"arch": str(clip_arch), "pretrained": str(clip_pretrained)}
    if pipeline_dir is not None:
        models["image_decoder"] = {"pipeline_dir": str(pipeline_dir), **image_decoder_options}
    elif image_decoder_options:
        raise ValueError("image decoder options without pipeline_dir")
    if captioner_dir is not None:
        models["captioner"] = {"dir": str(captioner_dir)}
        if lm_dir is not None:
            models["captioner"]["lm"] = str(lm_dir)
    elif lm_dir is not None:
        raise ValueError("lm_dir without captioner_dir")
    return models


def write_all(root, *, seed: int = 0) -> dict:
    """Write the tiny CLIP (local-dir), the unCLIP pipeline reading its embeddings and GPT-2 under
    ``root`` (``clip/``, ``stable-diffusion-2-1-unclip/``, ``gpt2/``); return their paths. The
    ClipCap mapper needs an embed file: train it with :func:`train_clipcap`."""
    root = Path(root)
    return {
        "clip": write_open_clip_local_dir(root / "clip", seed=seed),
        "pipeline": write_unclip_pipeline(root / "stable-diffusion-2-1-unclip", embed_dim=CLIP_EMBED_DIM, seed=seed),
        "gpt2": write_gpt2(root / "gpt2", seed=seed),
    }


def dir_size(path) -> int:
    """Bytes under ``path`` (a file or folder)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
