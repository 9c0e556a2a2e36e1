"""Images from CLIP image embeddings: a diffusers unCLIP pipeline, real and simulated through one path.

An image-decoder config is a dict (or its JSON text, a JSON/YAML file holding one, a pipeline
folder, or ``"sim"``):

``{"pipeline_dir": "/models/stable-diffusion-2-1-unclip"}``
    a diffusers pipeline directory (``model_index.json`` and one folder per component) of
    :class:`diffusers.StableUnCLIPImg2ImgPipeline`, e.g. Stability AI's
    ``stabilityai/stable-diffusion-2-1-unclip`` (OpenCLIP ViT-H-14 image embeddings, 1024-d),
    downloaded by the user. Optional keys: ``variant`` (weights variant, e.g. ``"fp16"``),
    ``precision`` (``fp32`` default, ``fp16``, ``bf16``), ``embeds_norm`` (rescale every
    embedding to this L2 norm before use; ``None`` passes them as given), ``noise_level``
    (unCLIP's embedding noise augmentation at sampling, default 0), ``load_image_encoder``
    (default false: the pipeline's own CLIP image encoder is never needed because embeddings are
    passed, so it is not loaded), and sampling defaults ``guidance_scale``,
    ``num_inference_steps``, ``strength``.
``"sim"``
    the nsd-sim decoder: the folder passed as ``sim_dir`` (the workflow's train-image-decoder
    output), else the pipeline shipped in ``braindecode_pkg/sim/weights/nsd-sim-1.0/image_decoder``
    (see its README.md). It is a genuine tiny ``StableUnCLIPImg2ImgPipeline`` written by
    :func:`save_pipeline`, loaded by the same ``from_pretrained`` call as the real one.

Loading is ``from_pretrained(dir, local_files_only=True, use_safetensors=True)``: nothing is
downloaded and nothing is unpickled. Every file the call would read is checked first; a missing
one is an :class:`~braindecode_pkg.errors.InputError` naming it and where to get it.

:meth:`ImageDecoder.generate` runs the pipeline's own components (prompt encoding of the empty
prompt, ``noise_image_embeddings``, the UNet with the noised embedding as its class label,
classifier-free guidance against a zero embedding, the scheduler, the VAE) in the same order and
with the same random draws as ``StableUnCLIPImg2ImgPipeline.__call__(image_embeds=...)``, so that
without an initial image it returns exactly the pipeline's images; with ``init_images`` it adds
img2img (diffusers' ``StableDiffusionImg2ImgPipeline`` scheme): the initial images are encoded by
the VAE, noised to the step ``strength`` of the way into the schedule, and denoised from there.
Each image has its own random generator seeded from ``(seed, index)``, so an image does not
depend on the batch it was generated in.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..sim.shipped import SHIPPED_DIR
from .spec import parse_json_text, read_config_file, resolve_sim

__all__ = [
    "ImageDecoderConfig", "ImageDecoder", "parse_image_decoder_config", "build_unclip_pipeline",
    "save_pipeline", "check_pipeline_dir", "SHIPPED_SIM_DECODER", "PIPELINE_CLASS", "REAL_SOURCE",
    "INFO_FILE",
]

PIPELINE_CLASS = "StableUnCLIPImg2ImgPipeline"
#: where users get a real pipeline of this kind
REAL_SOURCE = "stabilityai/stable-diffusion-2-1-unclip"
#: the nsd-sim decoder shipped with the package (see its README.md)
SHIPPED_SIM_DECODER = SHIPPED_DIR / "image_decoder"
#: what braindecode writes beside the diffusers files (recipe, seed, metrics, sampling defaults)
INFO_FILE = "braindecode.json"
_KEYS = ("pipeline_dir", "variant", "precision", "embeds_norm", "noise_level", "load_image_encoder",
         "guidance_scale", "num_inference_steps", "strength")
_PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: weights file stem of a model component, by library (diffusers' own pipeline modules: diffusers')
_MODEL_WEIGHTS = {"diffusers": "diffusion_pytorch_model", "transformers": "model"}
#: sampling defaults when neither the config nor the pipeline folder gives them (diffusers' own)
_DEFAULTS = {"guidance_scale": 10.0, "num_inference_steps": 20, "strength": 0.75}


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_OFFLINE", "1")


@contextlib.contextmanager
def _quiet():
    """No progress bars or info lines from diffusers/transformers while loading or saving."""
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


def _get_it(d: Path) -> str:
    return (f"download the diffusers pipeline {REAL_SOURCE} (https://huggingface.co/{REAL_SOURCE}; e.g. "
            f"`huggingface-cli download {REAL_SOURCE} --local-dir {d}`), or for nsd-sim train one with "
            f"`braindecode-pkg train-image-decoder --clip sim --out {d}`")


# ----------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ImageDecoderConfig:
    """A resolved image-decoder config (``pipeline_dir`` absolute and checked)."""

    pipeline_dir: Path
    variant: str | None = None
    precision: str = "fp32"
    embeds_norm: float | None = None
    noise_level: int = 0
    load_image_encoder: bool = False
    sampling: dict = field(default_factory=dict)  # guidance_scale, num_inference_steps, strength

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"pipeline_dir": str(self.pipeline_dir)}
        for k in ("variant", "embeds_norm"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.precision != "fp32":
            d["precision"] = self.precision
        if self.noise_level:
            d["noise_level"] = self.noise_level
        if self.load_image_encoder:
            d["load_image_encoder"] = True
        d.update(self.sampling)
        return d


def _weights_file(folder: Path, stem: str, variant: str | None) -> Path | None:
    """The safetensors weights (single file or sharded index) of a component, or None."""
    v = f".{variant}" if variant else ""
    for name in (f"{stem}{v}.safetensors", f"{stem}.safetensors{'.index' + v if v else '.index'}.json",
                 f"{stem}.safetensors.index{v}.json"):
        if (folder / name).is_file():
            return folder / name
    return None


def check_pipeline_dir(d, *, variant: str | None = None, load_image_encoder: bool = False) -> Path:
    """Check that ``d`` holds a loadable :data:`PIPELINE_CLASS` directory; return it resolved.

    Every file ``from_pretrained(d, use_safetensors=True)`` reads is looked for; the first one
    missing is an :class:`InputError` naming it and where to get it.
    """
    d = Path(d).expanduser().resolve()
    if not d.is_dir():
        raise InputError(f"{d}: diffusers pipeline directory not found (expected {d / 'model_index.json'} "
                         f"and one folder per component); {_get_it(d)}")
    index = d / "model_index.json"
    if not index.is_file():
        raise InputError(f"{index}: not found; a diffusers pipeline directory needs it; {_get_it(d)}")
    try:
        doc = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{index}: not valid JSON ({e})") from None
    cls = doc.get("_class_name") if isinstance(doc, dict) else None
    if cls != PIPELINE_CLASS:
        raise InputError(f"{index}: pipeline class {cls!r}; the image decoder takes a {PIPELINE_CLASS} "
                         f"(called with image_embeds=), e.g. {REAL_SOURCE}")
    for name, spec in doc.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        if name in ("image_encoder", "feature_extractor") and not load_image_encoder:
            continue
        library, _ = spec
        folder = d / name
        if not folder.is_dir():
            raise InputError(f"{folder}: component {name!r} of the pipeline not found; {_get_it(d)}")
        if "scheduler" not in name and name not in ("tokenizer", "feature_extractor"):  # a model: config + weights
            if not (folder / "config.json").is_file():
                raise InputError(f"{folder / 'config.json'}: not found (component {name!r}); {_get_it(d)}")
            stem = _MODEL_WEIGHTS.get(library, _MODEL_WEIGHTS["diffusers"])
            if _weights_file(folder, stem, variant) is None:
                v = f".{variant}" if variant else ""
                other = sorted(p.name for p in folder.glob(f"{stem}*"))
                hint = (f" (only {', '.join(other)} is there: weights are loaded from safetensors only; "
                        f"convert them or download the .safetensors files)" if other else "")
                raise InputError(f"{folder / (stem + v + '.safetensors')}: weights of component {name!r} not "
                                 f"found{hint}; {_get_it(d)}")
        elif "scheduler" in name:
            if not (folder / "scheduler_config.json").is_file():
                raise InputError(f"{folder / 'scheduler_config.json'}: not found (component {name!r}); {_get_it(d)}")
        elif name == "tokenizer":
            if not ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file()):
                raise InputError(f"{folder / 'tokenizer.json'}: not found (nor vocab.json + merges.txt); {_get_it(d)}")
    return d


def _resolve_sim(sim_dir) -> Path:
    return resolve_sim(
        sim_dir, SHIPPED_SIM_DECODER, "model_index.json",
        f"image decoder 'sim': no nsd-sim pipeline at {SHIPPED_SIM_DECODER}; train one with "
        f"`braindecode-pkg train-image-decoder --clip sim --out DIR` and set models.image_decoder to "
        f"{{\"pipeline_dir\": \"DIR\"}}",
    )


def parse_image_decoder_config(spec, *, sim_dir=None) -> ImageDecoderConfig:
    """Resolve an image-decoder config (dict, JSON text, JSON/YAML file, folder, or ``sim``).

    Checks every file the pipeline will read (raises :class:`InputError`); loads nothing.
    """
    if isinstance(spec, ImageDecoderConfig):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec).strip()
        if text == "sim":
            spec = {"pipeline_dir": "sim"}
        elif text.startswith("{"):
            spec = parse_json_text(text, "image decoder config")
        elif text.endswith((".json", ".yaml", ".yml")) and not text.endswith("model_index.json"):
            spec = read_config_file(text, "image decoder config")
        elif text.endswith("model_index.json"):
            spec = {"pipeline_dir": str(Path(text).expanduser().parent)}
        else:
            spec = {"pipeline_dir": text}
    if not isinstance(spec, dict):
        raise InputError(f"image decoder config must be a mapping, got {type(spec).__name__}: {spec!r}")
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise InputError(f"image decoder config: unknown key(s) {unknown}; expected some of {list(_KEYS)}")
    if not spec.get("pipeline_dir"):
        raise InputError("image decoder config needs 'pipeline_dir' (a diffusers pipeline folder) or 'sim'")
    precision = str(spec.get("precision") or "fp32")
    if precision not in _PRECISIONS:
        raise InputError(f"image decoder precision {precision!r}; expected one of {list(_PRECISIONS)}")
    norm = spec.get("embeds_norm")
    if norm is not None and (not isinstance(norm, (int, float)) or norm <= 0):
        raise InputError(f"image decoder embeds_norm {norm!r}: expected a positive number or null")
    noise_level = spec.get("noise_level", 0)
    if not isinstance(noise_level, int) or noise_level < 0:
        raise InputError(f"image decoder noise_level {noise_level!r}: expected an integer >= 0")
    sampling = {k: spec[k] for k in ("guidance_scale", "num_inference_steps", "strength") if spec.get(k) is not None}
    _check_sampling(**sampling)
    d = str(spec["pipeline_dir"]).strip()
    d = _resolve_sim(sim_dir) if d == "sim" else Path(d)
    load_ie = bool(spec.get("load_image_encoder", False))
    variant = spec.get("variant")
    d = check_pipeline_dir(d, variant=variant, load_image_encoder=load_ie)
    return ImageDecoderConfig(pipeline_dir=d, variant=variant, precision=precision,
                              embeds_norm=None if norm is None else float(norm), noise_level=noise_level,
                              load_image_encoder=load_ie, sampling=sampling)


def _check_sampling(guidance_scale=None, num_inference_steps=None, strength=None) -> None:
    if guidance_scale is not None and (not isinstance(guidance_scale, (int, float)) or guidance_scale < 0):
        raise InputError(f"guidance_scale {guidance_scale!r}: expected a number >= 0 (<= 1 disables guidance)")
    if num_inference_steps is not None and (isinstance(num_inference_steps, bool)
                                            or not isinstance(num_inference_steps, (int, np.integer))
                                            or num_inference_steps < 1):
        raise InputError(f"num_inference_steps {num_inference_steps!r}: expected an integer >= 1")
    if strength is not None and (not isinstance(strength, (int, float)) or not 0 <= strength <= 1):
        raise InputError(f"strength {strength!r}: expected a number in [0, 1]")


# ----------------------------------------------------------------------------- construction
def _clip_tokenizer(n_merges: int = 1024, max_length: int = 16):
    """A CLIP BPE tokenizer built offline from open_clip's vocabulary, truncated to ``n_merges`` merges.

    The vocabulary is built as CLIP builds it (the 256 byte symbols, the same with ``</w>``, the
    merges in order, then ``<|startoftext|>`` and ``<|endoftext|>``), so every text is
    tokenisable; only the empty prompt is ever given to the nsd-sim pipeline.
    """
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    with gzip.open(default_bpe()) as fh:
        lines = fh.read().decode("utf-8").split("\n")[1:1 + n_merges]
    merges = [tuple(m.split()) for m in lines]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges, model_max_length=max_length)


#: the small components that are never trained (empty prompt; embeddings are passed)
TEXT_ENCODER_CFG = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
IMAGE_ENCODER_CFG = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "image_size": 32, "patch_size": 16}


def build_unclip_pipeline(embed_dim: int, vae_cfg: dict, unet_cfg: dict, *, image_size: int,
                          prediction_type: str = "v_prediction", scheduler_cfg: dict | None = None,
                          seed: int = 0):
    """A genuine :class:`diffusers.StableUnCLIPImg2ImgPipeline` with fresh (seeded) weights.

    ``vae_cfg``: :class:`diffusers.AutoencoderKL` keyword arguments; ``unet_cfg``:
    :class:`diffusers.UNet2DConditionModel` keyword arguments without the conditioning, which is
    set as unCLIP sets it (``class_embed_type="projection"``,
    ``projection_class_embeddings_input_dim = 2 * embed_dim``: the noised embedding and the
    sinusoidal embedding of its noise level). The text encoder (given the empty prompt) and the
    image encoder (never called: embeddings are passed) are tiny CLIP towers; the embedding
    normaliser is :class:`StableUnCLIPImageNormalizer` (mean 0, std 1 until set from data); the
    embedding noiser a ``squaredcos_cap_v2`` DDPM schedule as in Stable unCLIP; the sampler DDIM.
    """
    _offline()
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    tok = _clip_tokenizer()
    n_vocab = len(tok.get_vocab())
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(int(seed))
    cross = int(unet_cfg.get("cross_attention_dim", TEXT_ENCODER_CFG["hidden_size"]))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=n_vocab, max_position_embeddings=tok.model_max_length, projection_dim=embed_dim,
        **{**TEXT_ENCODER_CFG, "hidden_size": cross}, **ids)).eval()
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=embed_dim, **IMAGE_ENCODER_CFG)).eval()
    s = IMAGE_ENCODER_CFG["image_size"]
    feature_extractor = CLIPImageProcessor(size={"shortest_edge": s}, crop_size={"height": s, "width": s})
    vae = AutoencoderKL(**{"sample_size": image_size, **vae_cfg})
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    if image_size % f:
        raise InputError(f"image_size {image_size} is not a multiple of the VAE's downsampling factor {f}")
    ucfg = dict(unet_cfg)
    ucfg.setdefault("cross_attention_dim", cross)
    unet = UNet2DConditionModel(
        sample_size=image_size // f, in_channels=vae.config.latent_channels, out_channels=vae.config.latent_channels,
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * embed_dim, **ucfg)
    sched = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": prediction_type,
             "timestep_spacing": "leading", **(scheduler_cfg or {})}
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=feature_extractor, image_encoder=image_encoder,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=embed_dim),
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        tokenizer=tok, text_encoder=text_encoder, unet=unet, scheduler=DDIMScheduler(**sched), vae=vae,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe, out_dir, *, info: dict | None = None) -> Path:
    """``save_pretrained`` (safetensors) into ``out_dir``, plus :data:`INFO_FILE` holding ``info``.

    The pipeline is written to a temporary folder beside ``out_dir`` and its entries moved in,
    ``model_index.json`` last, so a folder whose ``model_index.json`` exists is complete. Other
    files already in ``out_dir`` (a README) are kept.
    """
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        with _quiet():
            pipe.save_pretrained(str(tmp), safe_serialization=True)
        if info is not None:
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=1, default=_json_default) + "\n")
        (out / "model_index.json").unlink(missing_ok=True)
        for entry in sorted(tmp.iterdir(), key=lambda p: p.name == "model_index.json"):
            dest = out / entry.name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(entry, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


# ---------------------------------------------------------------------------------- decoder
def _image_seed(seed: int, i: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1, np.uint64)[0] >> 1)


def resize_uint8(images, size) -> np.ndarray:
    """(n, s, s, 3) uint8: each image resized with PIL bicubic (antialiased when shrinking)."""
    from PIL import Image

    size = (int(size), int(size)) if np.isscalar(size) else tuple(int(v) for v in size)
    out = np.empty((len(images), size[0], size[1], 3), np.uint8)
    for i, im in enumerate(images):
        a = np.asarray(im)
        if a.shape[:2] == size:
            out[i] = a
        else:
            out[i] = np.asarray(Image.fromarray(a, "RGB").resize((size[1], size[0]), Image.BICUBIC))
    return out


class ImageDecoder:
    """A loaded unCLIP pipeline that turns CLIP image embeddings into images.

    Build with :meth:`load` (a config) or directly from a pipeline object. ``embed_dim`` is the
    embedding width the pipeline takes; ``image_size`` its native output side.
    """

    def __init__(self, pipe, config: ImageDecoderConfig | None = None, info: dict | None = None, device="cpu"):
        self.pipe = pipe
        self.config = config
        self.info = dict(info or {})
        self.device = device
        pipe.set_progress_bar_config(disable=True)
        import torch

        # inference: a pipeline fresh from build_unclip_pipeline is in training mode, where its
        # dropouts (p = 0) change the memory layout and with it the convolutions' last bits
        for comp in pipe.components.values():
            if isinstance(comp, torch.nn.Module):
                comp.eval()

    @classmethod
    def load(cls, config, *, sim_dir=None, device="cpu") -> "ImageDecoder":
        """Load the pipeline of a config with ``from_pretrained(local_files_only=True, use_safetensors=True)``."""
        cfg = parse_image_decoder_config(config, sim_dir=sim_dir)
        _offline()
        import torch
        from diffusers import StableUnCLIPImg2ImgPipeline

        kw: dict[str, Any] = {"local_files_only": True, "use_safetensors": True,
                              "dtype": getattr(torch, _PRECISIONS[cfg.precision])}
        if cfg.variant:
            kw["variant"] = cfg.variant
        if not cfg.load_image_encoder:
            kw.update(image_encoder=None, feature_extractor=None)
        try:
            with _quiet():  # "image_encoder=None" is intended
                pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(cfg.pipeline_dir), **kw)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"{cfg.pipeline_dir}: cannot load the {PIPELINE_CLASS} ({first})") from None
        pipe = pipe.to(device)
        return cls(pipe, config=cfg, info=read_info(cfg.pipeline_dir), device=device)

    # ------------------------------------------------------------------ properties
    @property
    def embed_dim(self) -> int:
        """Width of the CLIP image embeddings the pipeline is conditioned on."""
        return int(self.pipe.unet.config.projection_class_embeddings_input_dim) // 2

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def image_size(self) -> int:
        """Native side of the generated images (the UNet's ``sample_size`` × the VAE factor)."""
        return int(self.pipe.unet.config.sample_size) * self.vae_scale_factor

    @property
    def embed_scale(self) -> float:
        """The L2 norm of the CLIP image embeddings this decoder was trained on: what decode scales
        predictions to. The config's ``embeds_norm`` if given; else the one the pipeline folder's
        ``braindecode.json`` records (nsd-sim's decoders: 1, they are trained on L2-normalised
        embeddings); else the root mean square norm of the embeddings whose statistics the
        pipeline's ``image_normalizer`` holds, ``sqrt(|mean|² + |std|²)`` (Stable unCLIP 2.1 was
        trained on raw OpenCLIP ViT-H-14 embeddings, not on unit vectors)."""
        if self.config is not None and self.config.embeds_norm is not None:
            return float(self.config.embeds_norm)
        if self.info.get("embeds_norm") is not None:
            return float(self.info["embeds_norm"])
        norm = getattr(self.pipe, "image_normalizer", None)
        if norm is None:
            raise InputError("the image decoder has no image_normalizer and no embeds_norm: set "
                             "models.image_decoder.embeds_norm to the norm of the embeddings it was trained on")
        mean = norm.mean.detach().double().flatten()
        std = norm.std.detach().double().flatten()
        if bool((mean == 0).all()) and bool((std == 1).all()):
            raise InputError("the image decoder's image_normalizer holds its untrained defaults (mean 0, std 1), "
                             "so the scale it was trained at is unknown: set models.image_decoder.embeds_norm")
        return float((mean.square().sum() + std.square().sum()).sqrt())

    def defaults(self) -> dict:
        """Sampling defaults: the config's, else the pipeline folder's recommended, else diffusers'."""
        d = dict(_DEFAULTS)
        d.update({k: v for k, v in (self.info.get("sampling") or {}).items() if k in _DEFAULTS})
        if self.config is not None:
            d.update(self.config.sampling)
        return d

    def weight_files(self) -> dict:
        """``{component: weights file}`` of the pipeline folder's loaded model components."""
        if self.config is None:
            return {}
        doc = json.loads((self.config.pipeline_dir / "model_index.json").read_text())
        out = {}
        for name, spec in doc.items():
            if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or getattr(self.pipe, name, None) is None:
                continue
            stem = _MODEL_WEIGHTS.get(spec[0], _MODEL_WEIGHTS["diffusers"])
            f = _weights_file(self.config.pipeline_dir / name, stem, self.config.variant)
            if f is not None and "scheduler" not in name:
                out[name] = f
        return out

    def describe(self) -> dict:
        d = {"pipeline": PIPELINE_CLASS, "embed_dim": self.embed_dim, "image_size": self.image_size,
             "defaults": self.defaults(), "embed_scale": self.embed_scale}
        if self.config is not None:
            from ..io import weights_record

            d["config"] = self.config.to_dict()
            d["weights"] = weights_record(self.weight_files())
        return d

    # ---------------------------------------------------------------------- sampling
    def _embeds(self, image_embeds):
        import torch

        e = np.asarray(image_embeds, dtype=np.float32)
        if e.ndim != 2 or e.shape[1] != self.embed_dim:
            raise InputError(f"image_embeds: expected (n, {self.embed_dim}) (the pipeline's CLIP embedding width), "
                             f"got {e.shape}")
        if not np.isfinite(e).all():
            raise InputError("image_embeds: contains NaN or infinite values")
        t = torch.from_numpy(e)
        norm = self.config.embeds_norm if self.config is not None else None
        if norm is not None:
            t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12) * norm
        return t

    def _init_tensor(self, init_images, n):
        import torch

        if len(init_images) != n:
            raise InputError(f"init_images: {len(init_images)} images for {n} embeddings")
        a = [np.asarray(im) for im in init_images]
        for i, x in enumerate(a):
            if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
                raise InputError(f"init_images[{i}]: expected (H, W, 3) uint8 RGB, got {x.dtype} {x.shape}")
        u8 = resize_uint8(a, self.image_size)
        return u8, torch.from_numpy(u8).permute(0, 3, 1, 2).float().div(127.5).sub(1)

    def generate(self, image_embeds, init_images=None, *, strength: float | None = None,
                 guidance_scale: float | None = None, num_inference_steps: int | None = None, seed: int = 0,
                 noise_level: int | None = None, batch_size: int = 32, size: int | None = None,
                 progress: bool = False) -> np.ndarray:
        """(n, H, W, 3) uint8 images from (n, embed_dim) CLIP image embeddings.

        ``init_images``: optional (n, h, w, 3) uint8 starting images (e.g. blurry low-level
        reconstructions), resized to the native size; with them, ``strength`` in [0, 1] is the
        fraction of the denoising schedule that is run (1: the starting image is fully noised;
        0: the starting image is returned unchanged, resized). ``guidance_scale`` > 1 applies
        classifier-free guidance against a zero embedding (as the pipeline does).
        ``noise_level``: unCLIP's noise augmentation of the embedding (default: the config's).
        ``size``: resize the output to ``size``×``size`` (default: native). Deterministic for a
        ``seed``: image ``i`` uses a generator seeded from ``(seed, i)``.
        """
        d = self.defaults()
        strength = d["strength"] if strength is None else strength
        guidance_scale = d["guidance_scale"] if guidance_scale is None else guidance_scale
        num_inference_steps = d["num_inference_steps"] if num_inference_steps is None else num_inference_steps
        _check_sampling(guidance_scale, num_inference_steps, strength)
        if noise_level is None:
            noise_level = self.config.noise_level if self.config is not None else 0
        emb = self._embeds(image_embeds)
        n = len(emb)
        init_u8 = init_t = None
        if init_images is not None:
            init_u8, init_t = self._init_tensor(init_images, n)
        out = np.empty((n, self.image_size, self.image_size, 3), np.uint8)
        starts = range(0, n, max(1, int(batch_size)))
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, unit="batch", desc="generate images")
        for a in starts:
            b = min(n, a + batch_size)
            gens = [self._generator(seed, i) for i in range(a, b)]
            out[a:b] = self._sample(emb[a:b], None if init_t is None else init_t[a:b],
                                    None if init_u8 is None else init_u8[a:b], strength, float(guidance_scale),
                                    int(num_inference_steps), int(noise_level), gens)
        if size is not None and size != self.image_size:
            out = resize_uint8(out, size)
        return out

    def encode_latents(self, images, batch_size: int = 64) -> np.ndarray:
        """(n, c, h, w) float32 unscaled VAE latents (the posterior mean) of (n, H, W, 3) uint8
        images, resized to the pipeline's native size: the low-level head's targets."""
        import torch

        vae = self.pipe.vae
        out = []
        with torch.inference_mode():
            for a in range(0, len(images), batch_size):
                u8, x = self._init_tensor(images[a:a + batch_size], len(images[a:a + batch_size]))
                z = vae.encode(x.to(device=self.device, dtype=vae.dtype)).latent_dist.mean
                out.append(z.float().cpu().numpy())
        c, h = int(vae.config.latent_channels), self.image_size // self.vae_scale_factor
        return np.concatenate(out) if out else np.zeros((0, c, h, h), np.float32)

    def decode_latents(self, latents, batch_size: int = 64) -> np.ndarray:
        """(n, H, W, 3) uint8 images from unscaled VAE latents (n, c, h, w) — the pipeline's VAE
        decoder, e.g. for a brain model's low-level (blurry) head."""
        import torch

        z = np.asarray(latents, np.float32)
        vae = self.pipe.vae
        want = (int(vae.config.latent_channels), self.image_size // self.vae_scale_factor)
        if z.ndim != 4 or z.shape[1] != want[0] or z.shape[2:] != (want[1], want[1]):
            raise InputError(f"latents: expected (n, {want[0]}, {want[1]}, {want[1]}) (the pipeline's VAE latents), "
                             f"got {z.shape}")
        out = []
        with torch.inference_mode():
            for a in range(0, len(z), batch_size):
                x = torch.from_numpy(z[a:a + batch_size]).to(device=self.device, dtype=vae.dtype)
                img = vae.decode(x, return_dict=False)[0]
                img = (img.float() / 2 + 0.5).clamp(0, 1)
                out.append(np.round(img.permute(0, 2, 3, 1).cpu().numpy() * 255).astype(np.uint8))
        return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)

    @staticmethod
    def _generator(seed: int, i: int):
        import torch

        return torch.Generator(device="cpu").manual_seed(_image_seed(seed, i))

    def _sample(self, emb, init_t, init_u8, strength, guidance_scale, steps, noise_level, gens) -> np.ndarray:
        """One batch: the steps of ``StableUnCLIPImg2ImgPipeline.__call__`` with an img2img start."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        pipe = self.pipe
        unet, vae, sched = pipe.unet, pipe.vae, pipe.scheduler
        device = torch.device(self.device)
        dtype = unet.dtype
        n = len(emb)
        do_cfg = guidance_scale > 1.0
        with torch.inference_mode():
            prompt_embeds, negative = pipe.encode_prompt(
                prompt=[""] * n, device=device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg)
            if do_cfg:
                prompt_embeds = torch.cat([negative, prompt_embeds])
            # the pipeline's _encode_image with image_embeds given: noise them, append the level
            cond = pipe.noise_image_embeddings(image_embeds=emb.to(device=device, dtype=prompt_embeds.dtype),
                                               noise_level=noise_level, generator=gens)
            if do_cfg:
                cond = torch.cat([torch.zeros_like(cond), cond])
            sched.set_timesteps(steps, device=device)
            timesteps = sched.timesteps
            order = getattr(sched, "order", 1)
            shape = (n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
            if init_t is None:
                latents = randn_tensor(shape, generator=gens, device=device, dtype=prompt_embeds.dtype)
                latents = latents * sched.init_noise_sigma
            else:
                init_steps = min(int(steps * strength), steps)
                t_start = max(steps - init_steps, 0)
                timesteps = timesteps[t_start * order:]
                if len(timesteps) == 0:
                    return init_u8
                if hasattr(sched, "set_begin_index"):
                    sched.set_begin_index(t_start * order)
                x0 = vae.encode(init_t.to(device=device, dtype=vae.dtype)).latent_dist.mean
                x0 = (x0 * vae.config.scaling_factor).to(prompt_embeds.dtype)
                noise = randn_tensor(shape, generator=gens, device=device, dtype=prompt_embeds.dtype)
                latents = sched.add_noise(x0, noise, timesteps[:1].repeat(n))
            extra = pipe.prepare_extra_step_kwargs(gens, 0.0)
            for t in timesteps:
                x = torch.cat([latents] * 2) if do_cfg else latents
                x = sched.scale_model_input(x, t)
                pred = unet(x.to(dtype), t, encoder_hidden_states=prompt_embeds.to(dtype),
                            class_labels=cond.to(dtype), return_dict=False)[0]
                if do_cfg:
                    uncond, c = pred.chunk(2)
                    pred = uncond + guidance_scale * (c - uncond)
                latents = sched.step(pred, t, latents, **extra, return_dict=False)[0]
            img = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype), return_dict=False)[0]
            img = (img.float() / 2 + 0.5).clamp(0, 1)
        return np.round(img.permute(0, 2, 3, 1).cpu().numpy() * 255).astype(np.uint8)


def read_info(pipeline_dir) -> dict:
    """The pipeline folder's ``braindecode.json`` (its recommended sampling, what it was trained
    on), or ``{}`` where there is none (a downloaded pipeline). A file that is there but cannot be
    read is an error: ignoring it would switch the sampling defaults to diffusers' silently."""
    f = Path(pipeline_dir) / INFO_FILE
    if not f.is_file():
        return {}
    try:
        info = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{f}: unreadable ({e}); it holds the decoder's sampling defaults: restore it "
                         f"(or delete it to use diffusers' defaults)") from None
    if not isinstance(info, dict):
        raise InputError(f"{f}: expected a JSON object, got {type(info).__name__}")
    return info


def with_defaults(config: ImageDecoderConfig, **sampling) -> ImageDecoderConfig:
    """A copy of ``config`` with other sampling defaults."""
    _check_sampling(**sampling)
    return replace(config, sampling={**config.sampling, **{k: v for k, v in sampling.items() if v is not None}})
