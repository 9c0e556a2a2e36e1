"""CLIP through open_clip, chosen by config; real and simulated weights load through one path.

A CLIP config is a dict (or its JSON text, or a path to a JSON file):

``{"arch": "ViT-H-14", "pretrained": "/weights/open_clip_pytorch_model.bin"}``
    an open_clip architecture name (``open_clip.list_models()``, plus the nsd-sim architecture
    registered from :mod:`braindecode_pkg.sim.arch`) and a local weights file (``.safetensors``, ``.bin``,
    ``.pt`` or ``.pth``).
``{"local_dir": "/models/clip"}`` or ``{"arch": "local-dir:/models/clip"}``
    open_clip's local-dir format: ``open_clip_config.json`` (``model_cfg`` and
    ``preprocess_cfg``) beside ``open_clip_model.safetensors`` (or ``open_clip_pytorch_model.bin``).
    This is what ``braindecode-pkg train-clip`` writes.
``"sim"``
    the nsd-sim CLIP: the directory passed as ``sim_dir`` (the workflow's train-clip output),
    else the weights shipped in ``braindecode_pkg/sim/weights/nsd-sim-1.0/clip``.

Optional keys: ``preprocess`` (overrides of open_clip's preprocessing config, e.g. ``mean``,
``std``, ``interpolation``) and ``precision`` (``fp32`` default).

Nothing is ever downloaded: hub names (``hf-hub:``) and pretrained *tags* are refused, and every
missing file is an :class:`~braindecode_pkg.errors.InputError` raised before any work, naming the
file and where to obtain it. The model is built by ``open_clip.create_model`` with
``load_weights=False`` and no tower weights, then the state dict is read here — safetensors, or
``torch.load(weights_only=True)`` with no fallback (open_clip 3.3's own ``load_state_dict``
retries ``torch.load`` *without* ``weights_only`` when the first call raises ``TypeError``) — and
put through open_clip's own checkpoint conversions (:func:`load_state_dict_into`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..sim.shipped import SHIPPED_DIR
from ..sim.arch import SIM_ARCH, SIM_MODEL_CFG
from ..weights_file import check_weights_file
from .spec import parse_json_text, read_config_file, resolve_sim

__all__ = [
    "ClipConfig", "ClipEncoder", "parse_clip_config", "load_clip", "read_state_dict",
    "load_state_dict_into", "save_local_dir", "SHIPPED_SIM_CLIP", "WEIGHT_SUFFIXES",
]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: files open_clip's local-dir loader looks for, in its order of preference
LOCAL_DIR_WEIGHTS = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
    "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
)
LOCAL_DIR_CONFIG = "open_clip_config.json"
LOCAL_DIR_SAFETENSORS = "open_clip_model.safetensors"
#: the nsd-sim CLIP weights shipped with the package (see its README.md)
SHIPPED_SIM_CLIP = SHIPPED_DIR / "clip"
SHIPPED_SIM_JUDGE = SHIPPED_DIR / "judge_clip"  # nsd-sim's judge CLIP (evaluate): another seed of the same recipe
_KEYS = ("arch", "pretrained", "local_dir", "preprocess", "precision")
_PRECISIONS = ("fp32", "fp16", "bf16")


def _offline() -> None:
    """Make sure nothing open_clip/huggingface_hub does can reach the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# ----------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ClipConfig:
    """A resolved CLIP config: either ``arch`` + ``pretrained`` or ``local_dir`` (paths absolute)."""

    arch: str | None = None
    pretrained: Path | None = None
    local_dir: Path | None = None
    preprocess: dict = field(default_factory=dict)
    precision: str = "fp32"

    @property
    def model_name(self) -> str:
        """The name open_clip is given: the architecture or ``local-dir:PATH``."""
        return self.arch if self.local_dir is None else f"local-dir:{self.local_dir}"

    @property
    def weights(self) -> Path:
        """The weights file that will be read."""
        if self.local_dir is not None:
            return _local_dir_weights(self.local_dir)
        assert self.pretrained is not None
        return self.pretrained

    @property
    def name(self) -> str:
        """A short readable name: ``ViT-H-14`` or the local-dir's architecture name."""
        if self.local_dir is None:
            return str(self.arch)
        try:
            doc = json.loads((self.local_dir / LOCAL_DIR_CONFIG).read_text())
            return str(doc.get("braindecode", {}).get("arch") or self.local_dir.name)
        except (OSError, ValueError):
            return self.local_dir.name

    def to_dict(self) -> dict:
        d: dict[str, Any] = {}
        if self.local_dir is not None:
            d["local_dir"] = str(self.local_dir)
        else:
            d["arch"] = self.arch
            d["pretrained"] = str(self.pretrained)
        if self.preprocess:
            d["preprocess"] = dict(self.preprocess)
        if self.precision != "fp32":
            d["precision"] = self.precision
        return d


def _where_to_get(arch: str) -> str:
    """Where a user obtains weights for an open_clip architecture (from open_clip's own table)."""
    if arch == SIM_ARCH:
        return (f"the nsd-sim CLIP is written by `braindecode-pkg train-clip --out DIR` (use "
                f"{{\"local_dir\": \"DIR\"}}) and shipped in {SHIPPED_SIM_CLIP}")
    try:
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(arch)
        repos = []
        for t in tags:
            hub = (open_clip.get_pretrained_cfg(arch, t) or {}).get("hf_hub", "").strip("/")
            if hub:
                repos.append((t, hub))
    except Exception:  # pragma: no cover - the table is optional help
        repos = []
    if not repos:
        return (f"obtain an open_clip checkpoint of {arch} (a .safetensors or .bin state dict) and set "
                f"models.clip.pretrained to its path")
    tag, hub = next(((t, h) for t, h in repos if "laion2b" in t), repos[0])
    others = ", ".join(h for _, h in repos if h != hub)[:300]
    return (f"download open_clip_pytorch_model.bin (or open_clip_model.safetensors) of {hub} "
            f"(https://huggingface.co/{hub}, pretrained tag {tag!r}"
            + (f"; other weights for {arch}: {others}" if others else "")
            + ") and set models.clip.pretrained to the downloaded file")


def _local_dir_weights(d: Path) -> Path:
    for name in LOCAL_DIR_WEIGHTS:
        if (d / name).is_file():
            check_weights_file(d / name, "CLIP weights")
            return d / name
    raise InputError(
        f"{d / LOCAL_DIR_SAFETENSORS}: CLIP weights not found (an open_clip local-dir holds "
        f"{LOCAL_DIR_CONFIG} and {LOCAL_DIR_SAFETENSORS}); write it with `braindecode-pkg train-clip "
        f"--out {d}` or copy a model's files there"
    )


def _check_local_dir(d: Path) -> Path:
    d = Path(d).expanduser().resolve()
    if not d.is_dir():
        raise InputError(
            f"{d}: CLIP local-dir not found (expected a folder with {LOCAL_DIR_CONFIG} and "
            f"{LOCAL_DIR_SAFETENSORS}); write one with `braindecode-pkg train-clip --out {d}`"
        )
    cfg = d / LOCAL_DIR_CONFIG
    if not cfg.is_file():
        raise InputError(f"{cfg}: not found; an open_clip local-dir needs it beside the weights")
    try:
        doc = json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{cfg}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or "model_cfg" not in doc:
        raise InputError(f"{cfg}: lacks 'model_cfg' (open_clip's local-dir config format)")
    _local_dir_weights(d)
    return d


def _resolve_sim(sim_dir) -> Path:
    return _check_local_dir(resolve_sim(
        sim_dir, SHIPPED_SIM_CLIP, LOCAL_DIR_CONFIG,
        f"CLIP config 'sim': no nsd-sim CLIP at {SHIPPED_SIM_CLIP}; train one with "
        f"`braindecode-pkg train-clip --out DIR` and set models.clip to {{\"local_dir\": \"DIR\"}}",
    ))


def parse_clip_config(spec, *, sim_dir=None) -> ClipConfig:
    """Resolve a CLIP config (dict, JSON text, JSON file, ``local-dir:PATH``, a folder, or ``sim``).

    Checks that every file it names exists (raises :class:`InputError` otherwise); loads nothing.
    """
    if isinstance(spec, ClipConfig):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec).strip()
        if text == "sim":
            return ClipConfig(local_dir=_resolve_sim(sim_dir))
        if text.startswith("{"):
            spec = parse_json_text(text, "CLIP config")
        elif text.startswith("local-dir:"):
            spec = {"local_dir": text[len("local-dir:"):]}
        elif text.endswith((".json", ".yaml", ".yml")):
            p = Path(text).expanduser()
            if not p.is_file():
                raise InputError(f"{p}: CLIP config file not found")
            spec = {"local_dir": str(p.parent)} if p.name == LOCAL_DIR_CONFIG else read_config_file(p, "CLIP config")
        elif Path(text).expanduser().is_dir():
            spec = {"local_dir": text}
        else:
            raise InputError(
                f"CLIP config {text!r}: expected a JSON object such as "
                '{"arch": "ViT-H-14", "pretrained": "/path/open_clip_pytorch_model.bin"}, '
                "a JSON/YAML file holding one, an open_clip local-dir folder, 'local-dir:PATH' or 'sim'"
            )
    if not isinstance(spec, dict):
        raise InputError(f"CLIP config must be a mapping, got {type(spec).__name__}: {spec!r}")
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise InputError(f"CLIP config: unknown key(s) {unknown}; expected some of {list(_KEYS)}")
    preprocess = dict(spec.get("preprocess") or {})
    precision = str(spec.get("precision") or "fp32")
    if precision not in _PRECISIONS:
        raise InputError(f"CLIP config precision {precision!r}; expected one of {list(_PRECISIONS)}")
    arch = spec.get("arch")
    local_dir = spec.get("local_dir")
    if isinstance(arch, str) and arch.startswith("local-dir:"):
        if local_dir is not None:
            raise InputError("CLIP config gives both 'local_dir' and arch 'local-dir:...'; give one")
        local_dir, arch = arch[len("local-dir:"):], None
    if local_dir is not None:
        if arch is not None or spec.get("pretrained") is not None:
            raise InputError(
                "CLIP config: 'local_dir' holds its own architecture and weights; drop 'arch'/'pretrained'"
            )
        if str(local_dir).strip() == "sim":
            return ClipConfig(local_dir=_resolve_sim(sim_dir), preprocess=preprocess, precision=precision)
        return ClipConfig(local_dir=_check_local_dir(Path(local_dir)), preprocess=preprocess, precision=precision)
    if arch == "sim":
        return ClipConfig(local_dir=_resolve_sim(sim_dir), preprocess=preprocess, precision=precision)
    if not arch:
        raise InputError("CLIP config needs 'arch' (an open_clip architecture) with 'pretrained', or 'local_dir'")
    arch = str(arch)
    if arch.startswith("hf-hub:"):
        raise InputError(
            f"CLIP arch {arch!r}: hub models are never downloaded at run time; download the repository's "
            f"open_clip_config.json and open_clip_model.safetensors into a folder and set "
            f"models.clip to {{\"local_dir\": \"FOLDER\"}}"
        )
    _offline()
    import open_clip

    register_sim_arch()
    if arch not in open_clip.list_models():
        near = [m for m in open_clip.list_models() if m.lower().startswith(arch.lower()[:5])][:8]
        raise InputError(
            f"CLIP arch {arch!r} is not an open_clip architecture"
            + (f"; similar: {', '.join(near)}" if near else "; see open_clip.list_models()")
        )
    pretrained = spec.get("pretrained")
    if not pretrained:
        raise InputError(f"CLIP config for {arch}: 'pretrained' (a local weights file) is required; {_where_to_get(arch)}")
    pretrained = str(pretrained)
    p = Path(pretrained).expanduser()
    if not p.is_file():
        if pretrained in open_clip.list_pretrained_tags_by_model(arch):
            raise InputError(
                f"CLIP pretrained {pretrained!r} is an open_clip download tag; nothing is downloaded at run "
                f"time: {_where_to_get(arch)}"
            )
        raise InputError(f"{p}: CLIP weights file not found (models.clip.pretrained for {arch}); {_where_to_get(arch)}")
    if p.suffix not in WEIGHT_SUFFIXES:
        raise InputError(f"{p}: CLIP weights must be one of {list(WEIGHT_SUFFIXES)} (a state dict)")
    check_weights_file(p, "CLIP weights")  # a pickle or a broken file stops here, before any work
    return ClipConfig(arch=arch, pretrained=p.resolve(), preprocess=preprocess, precision=precision)


def register_arch(name: str, model_cfg: dict) -> None:
    """Register an open_clip architecture ``name`` (``open_clip.create_model(name)`` builds it).

    open_clip 3.3 reads architectures from JSON files (``add_model_config``) into the registry
    dict ``open_clip.factory._MODEL_CONFIGS``; a config held in code is put there directly.
    """
    import copy

    from open_clip import factory

    factory._MODEL_CONFIGS[name] = copy.deepcopy(model_cfg)


def register_sim_arch() -> None:
    """Make :data:`SIM_ARCH` an open_clip architecture name."""
    from open_clip import factory

    if SIM_ARCH not in factory._MODEL_CONFIGS:
        register_arch(SIM_ARCH, SIM_MODEL_CFG)


# ---------------------------------------------------------------------------------- weights
def read_state_dict(path) -> dict:
    """Tensors of a checkpoint file, without ever unpickling arbitrary objects.

    ``.safetensors`` is read with safetensors; ``.bin``/``.pt``/``.pth`` with
    ``torch.load(weights_only=True)`` (a file holding anything but tensors and plain containers
    is refused). A ``{"state_dict": ...}`` wrapper and a ``module.`` prefix are removed.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    check_weights_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{path}: not a readable safetensors file ({e})") from None
    elif path.suffix in WEIGHT_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(
                f"{path}: refused: it holds pickled objects other than tensors, and checkpoints are "
                f"only loaded with torch.load(weights_only=True) ({first}); save its state dict as "
                f"safetensors with a tool you trust"
            ) from None
        except Exception as e:  # TorchScript archives, truncated zips, non-checkpoints
            raise InputError(
                f"{path}: cannot be read as a weights-only torch checkpoint ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); TorchScript archives "
                f"(e.g. OpenAI's .pt) must first be converted to a state dict"
            ) from None
    else:
        raise InputError(f"{path}: unsupported weights format; expected one of {list(WEIGHT_SUFFIXES)}")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path}: does not hold a state dict (a mapping of names to tensors)")
    sd = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            raise InputError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; expected a state dict")
        sd[k[len("module."):] if k.startswith("module.") else k] = v
    return sd


def load_state_dict_into(model, state_dict: dict, source="<state dict>") -> None:
    """Load a state dict with open_clip's own checkpoint conversions (strict).

    The same steps as ``open_clip.load_checkpoint`` after it has read the file: third-party
    format conversion, old text-tower layout, ``logit_scale``/``logit_bias`` shapes, position
    embedding resizing.
    """
    import torch
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

    sd = convert_state_dict(model, dict(state_dict))
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    for key in ("logit_scale", "logit_bias"):
        ref = getattr(model, key, None)
        if key in sd and isinstance(ref, torch.Tensor) and ref.ndim != sd[key].ndim:
            sd[key] = sd[key].reshape(ref.shape)
    if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None:
        sd["logit_bias"] = torch.zeros_like(sd["logit_scale"])
    pid = "text.transformer.embeddings.position_ids"
    if pid in sd and not hasattr(model, pid):
        del sd[pid]
    resize_pos_embed(sd, model)
    resize_text_pos_embed(sd, model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{source}: weights do not fit the architecture: "
            + (f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''} " if missing else "")
            + (f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}" if unexpected else "")
        )


def create_clip_model(model_name: str, *, preprocess: dict | None = None, precision: str = "fp32"):
    """An open_clip model of an architecture (name or ``local-dir:PATH``) with random weights."""
    _offline()
    import open_clip

    register_sim_arch()
    try:
        return open_clip.create_model(
            model_name, pretrained=None, load_weights=False, pretrained_image=False,
            pretrained_text=False, precision=precision, device="cpu",
            force_preprocess_cfg=preprocess or None,
        )
    except (RuntimeError, ValueError, FileNotFoundError, KeyError, TypeError) as e:
        raise InputError(f"CLIP {model_name}: open_clip cannot build the model ({e})") from None


def load_clip(config, *, sim_dir=None, device="cpu"):
    """(model in eval mode, preprocess config dict, tokenizer) of a CLIP config."""
    import logging

    import open_clip
    from open_clip.model import get_model_preprocess_cfg

    cfg = parse_clip_config(config, sim_dir=sim_dir)
    weights = cfg.weights
    level = logging.getLogger().level
    logging.getLogger().setLevel(max(level, logging.ERROR))  # "initialized randomly" is expected here
    try:
        model = create_clip_model(cfg.model_name, preprocess=cfg.preprocess, precision=cfg.precision)
    finally:
        logging.getLogger().setLevel(level)
    load_state_dict_into(model, read_state_dict(weights), source=weights)
    model = model.to(device).eval()
    try:
        tokenizer = open_clip.get_tokenizer(cfg.model_name)
    except Exception as e:
        raise InputError(f"CLIP {cfg.model_name}: cannot build its tokenizer offline ({e})") from None
    return model, dict(get_model_preprocess_cfg(model)), tokenizer


def save_local_dir(model, out_dir, model_cfg: dict, preprocess_cfg: dict | None = None, *,
                   info: dict | None = None) -> Path:
    """Write ``model`` in open_clip's local-dir format: ``open_clip_config.json`` + safetensors.

    ``info`` (JSON-able) is stored under the config's ``braindecode`` key (training command,
    seed, metrics). Each file is written atomically; the config last, so a folder whose config
    exists is complete.
    """
    from safetensors.torch import save_file

    from ..io import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(out / LOCAL_DIR_SAFETENSORS) as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt"})
    if preprocess_cfg is None:
        from open_clip.model import get_model_preprocess_cfg

        preprocess_cfg = dict(get_model_preprocess_cfg(model))
    doc = {"model_cfg": model_cfg, "preprocess_cfg": _jsonable(preprocess_cfg)}
    if info:
        doc["braindecode"] = info
    with atomic_path(out / LOCAL_DIR_CONFIG) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return out


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    return d


# ---------------------------------------------------------------------------------- encoder
class ClipEncoder:
    """Image and text embeddings of one CLIP model.

    ``encode_images`` returns ``pooled`` — the image embedding (``embed_dim``), **L2-normalised**
    — and ``tokens``: the vision tower's last-layer patch tokens before the projection
    (``token_shape`` = (n_tokens, width)), **not normalised**. For a ViT they come from
    open_clip's ``visual.output_tokens = True`` (after ``ln_post``, class token excluded, as in
    MindEye's ViT-bigG tokens); for a ModifiedResNet from ``visual.forward_intermediates`` (the
    last stage's feature map, flattened row-major). ``encode_text`` returns L2-normalised text
    embeddings. Images are preprocessed with open_clip's own eval transform of the model:
    :meth:`preprocess_uint8` (its resize and crop on PIL images) then :meth:`to_tensor` (its
    ``ToTensor`` and ``Normalize``).
    """

    def __init__(self, model, preprocess_cfg: dict, tokenizer, config: ClipConfig | None = None,
                 device="cpu"):
        self.model = model
        self.preprocess_cfg = dict(preprocess_cfg)
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self._token_shape = None
        from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

        pp = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), self.preprocess_cfg))
        full = image_transform_v2(pp, is_train=False)
        steps = list(full.transforms)
        names = [type(t).__name__ for t in steps]
        if len(steps) < 2 or names[-1] != "Normalize" or "ToTensor" not in names[-2]:
            raise RuntimeError(f"unexpected open_clip eval transform {names}")  # pragma: no cover
        from torchvision.transforms import Compose

        self.transform = full
        self._geometry = Compose(steps[:-2])
        self._mean = np.asarray(steps[-1].mean, np.float32)
        self._std = np.asarray(steps[-1].std, np.float32)
        size = pp.size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))

    @classmethod
    def load(cls, config, *, sim_dir=None, device="cpu") -> "ClipEncoder":
        cfg = parse_clip_config(config, sim_dir=sim_dir)
        model, pp, tok = load_clip(cfg, device=device)
        return cls(model, pp, tok, config=cfg, device=device)

    # ------------------------------------------------------------------ properties
    @property
    def embed_dim(self) -> int:
        """Width of the pooled image and text embeddings."""
        out = getattr(self.model.visual, "output_dim", None)
        if out is None:  # pragma: no cover - every open_clip tower sets it
            out = self.model.encode_image(self.to_tensor(np.zeros((1, *self.image_size, 3), np.uint8))).shape[1]
        return int(out)

    @property
    def token_shape(self) -> tuple[int, int]:
        """(n_tokens, width) of ``tokens``."""
        if self._token_shape is None:
            dummy = self.to_tensor(np.zeros((1, *self.image_size, 3), np.uint8))
            self._token_shape = tuple(self.encode_pixels(dummy, what=("tokens",))["tokens"].shape[1:])
        return self._token_shape

    def describe(self) -> dict:
        """What produced the embeddings (for file attributes)."""
        import open_clip

        d = {"model": self.config.name if self.config else type(self.model).__name__,
             "open_clip_version": open_clip.__version__, "preprocess_cfg": _jsonable(self.preprocess_cfg),
             "embed_dim": self.embed_dim, "pooled": "L2-normalised image embedding",
             "tokens": "last-layer patch tokens before the projection, not normalised",
             "text": "L2-normalised text embedding"}
        if self.config is not None:
            d["config"] = self.config.to_dict()
            d["weights"] = str(self.config.weights)
        return d

    # ---------------------------------------------------------------- preprocessing
    def preprocess_uint8(self, images) -> np.ndarray:
        """(n, S, S, 3) uint8: open_clip's resize/crop of each image (uint8 array or PIL images)."""
        from PIL import Image

        out = np.empty((len(images), self.image_size[0], self.image_size[1], 3), np.uint8)
        for i, im in enumerate(images):
            if not isinstance(im, Image.Image):
                a = np.asarray(im)
                if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                    raise InputError(f"image {i}: expected (H, W, 3) uint8 RGB, got {a.dtype} {a.shape}")
                im = Image.fromarray(a, "RGB")
            elif im.mode != "RGB":
                im = im.convert("RGB")
            out[i] = np.asarray(self._geometry(im))
        return out

    def to_tensor(self, u8: np.ndarray):
        """open_clip's ``ToTensor`` + ``Normalize`` of a (n, S, S, 3) uint8 batch: (n, 3, S, S) float."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2).float().div(255)
        mean = torch.from_numpy(self._mean)[None, :, None, None]
        std = torch.from_numpy(self._std)[None, :, None, None]
        return x.sub(mean).div(std)

    # ---------------------------------------------------------------------- encoding
    def _visual(self, x, want_tokens: bool):
        import torch

        v = self.model.visual
        x = x.to(self.device, dtype=next(self.model.parameters()).dtype)
        if not want_tokens:
            return self.model.encode_image(x), None
        if hasattr(v, "output_tokens"):
            prev = v.output_tokens
            v.output_tokens = True
            try:
                pooled, tokens = v(x)
            finally:
                v.output_tokens = prev
            return pooled, tokens
        if hasattr(v, "forward_intermediates"):
            out = v.forward_intermediates(x, indices=1)
            fmap = out["image_intermediates"][-1]
            return out["image_features"], torch.flatten(fmap, 2).transpose(1, 2)
        raise InputError(f"CLIP {type(v).__name__}: this vision tower exposes no patch tokens")

    def encode_pixels(self, x, what=("pooled", "tokens")) -> dict:
        """Embeddings of an already preprocessed (n, 3, S, S) tensor (see :meth:`to_tensor`)."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            pooled, tokens = self._visual(x, "tokens" in what)
            out = {}
            if "pooled" in what:
                out["pooled"] = F.normalize(pooled.float(), dim=-1).cpu().numpy()
            if "tokens" in what:
                out["tokens"] = tokens.float().cpu().numpy()
        return out

    def encode_images(self, images, batch_size: int = 64, what=("pooled", "tokens"),
                      progress: bool = False) -> dict:
        """``{"pooled": (n, d) float32, "tokens": (n, n_tokens, width) float32}`` of images.

        ``images``: a (n, H, W, 3) uint8 array or a list of PIL images / uint8 arrays.
        ``pooled`` is L2-normalised; ``tokens`` are not.
        """
        what = tuple(what)
        bad = [w for w in what if w not in ("pooled", "tokens")]
        if bad or not what:
            raise InputError(f"what={what!r}: expected a subset of ('pooled', 'tokens')")
        n = len(images)
        parts: dict[str, list] = {w: [] for w in what}
        rng = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm

            rng = tqdm(rng, unit="batch", desc="CLIP images")
        for a in rng:
            x = self.to_tensor(self.preprocess_uint8(images[a:a + batch_size]))
            for k, v in self.encode_pixels(x, what).items():
                parts[k].append(v)
        if n == 0:
            d = self.embed_dim
            return {w: np.zeros((0, d) if w == "pooled" else (0, *self.token_shape), np.float32) for w in what}
        return {k: np.concatenate(v) for k, v in parts.items()}

    def tokenize(self, texts):
        return self.tokenizer(list(texts))

    def encode_text(self, texts, batch_size: int = 256):
        """(n, d) float32 L2-normalised embeddings of a list of strings."""
        import torch

        texts = list(texts)
        outs = []
        with torch.inference_mode():
            for a in range(0, len(texts), batch_size):
                t = self.tokenize(texts[a:a + batch_size]).to(self.device)
                outs.append(self.model.encode_text(t, normalize=True).float().cpu().numpy())
        if not outs:
            return np.zeros((0, self.embed_dim), np.float32)
        return np.concatenate(outs)
