"""Caption decoder: a ClipCap-style mapper from a CLIP embedding to a causal language model.

A CLIP image embedding (``clip_dim``; L2-normalised here, so predicted embeddings of any norm
can be given) is mapped to ``prefix_length`` embeddings of a causal language model
(transformers ``GPT2LMHeadModel`` or any ``AutoModelForCausalLM``), which continues them into a
caption, greedily or with beam search (:meth:`Captioner.generate`, deterministic).

A captioner directory holds the mapper in the diffusers/HF convention and, when the language
model was trained or fine-tuned with it, the language model and its tokenizer::

    DIR/config.json           mapper architecture, the CLIP and LM it was trained with, training info
    DIR/model.safetensors     mapper weights
    DIR/lm/                   (optional) config.json, model.safetensors, tokenizer.json, ... written
                              by ``save_pretrained`` (transformers)

A captioner config is a dict (or its JSON text, a JSON/YAML file holding one, or a folder):

``{"dir": "/models/captioner"}``
    mapper and language model from one folder (the LM from ``DIR/lm``): what
    ``braindecode-pkg train-captioner`` writes for nsd-sim.
``{"dir": "/models/captioner", "lm": "/models/gpt2"}``
    the mapper from ``dir``, the language model and tokenizer from a local folder, e.g. GPT-2
    (``openai-community/gpt2``) downloaded by the user: how a mapper trained on COCO captions
    with a frozen GPT-2 is used.
``"sim"``
    the nsd-sim captioner: the folder passed as ``sim_dir`` (the workflow's train-captioner
    output), else the weights shipped in ``braindecode_pkg/sim/weights/nsd-sim-1.0/captioner``.

Nothing is ever downloaded and nothing is unpickled: weights are read from safetensors only
(``use_safetensors=True``); every missing file is an :class:`~braindecode_pkg.errors.InputError`
raised before any model is built, naming the path and where to obtain it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..sim.shipped import SHIPPED_DIR
from .spec import parse_json_text, read_config_file, resolve_sim

__all__ = [
    "CaptionerConfig", "Captioner", "Mapper", "parse_captioner_config", "check_lm_dir", "load_lm",
    "SHIPPED_SIM_CAPTIONER", "MAPPER_KINDS",
]

#: the nsd-sim captioner shipped with the package (see its README.md)
SHIPPED_SIM_CAPTIONER = SHIPPED_DIR / "captioner"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LM_SUBDIR = "lm"
FORMAT = "braindecode-captioner"
FORMAT_VERSION = 1
MAPPER_KINDS = ("mlp", "transformer")
_KEYS = ("dir", "lm")
#: files a GPT-2 download needs (``huggingface-cli download openai-community/gpt2 FILES ...``)
GPT2_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json", "vocab.json", "merges.txt")


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# ----------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class CaptionerConfig:
    """A resolved captioner config: the mapper folder and the language-model folder (absolute)."""

    mapper_dir: Path
    lm_dir: Path

    def to_dict(self) -> dict:
        d = {"dir": str(self.mapper_dir)}
        if self.lm_dir != self.mapper_dir / LM_SUBDIR:
            d["lm"] = str(self.lm_dir)
        return d


def _download_hint(lm_dir: Path, recorded: str | None) -> str:
    name = recorded or "openai-community/gpt2"
    if "/" not in name or Path(name).is_absolute():
        name = "openai-community/gpt2"
    return (f"download the language model the mapper was trained with ({name}) yourself, e.g. "
            f"`huggingface-cli download {name} {' '.join(GPT2_FILES)} --local-dir {lm_dir}` "
            f"(https://huggingface.co/{name}), and set models.captioner.lm to that folder; "
            f"nothing is downloaded at run time")


def _read_mapper_doc(d: Path) -> dict:
    cfg = d / CONFIG_NAME
    if not cfg.is_file():
        raise InputError(f"{cfg}: captioner config not found (a captioner folder holds {CONFIG_NAME} and "
                         f"{WEIGHTS_NAME} of the mapper); write one with `braindecode-pkg train-captioner --out {d}`")
    try:
        doc = json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{cfg}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("mapper"), dict):
        raise InputError(f"{cfg}: not a captioner config (expected \"format\": \"{FORMAT}\" and a 'mapper' entry)")
    if int(doc.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(f"{cfg}: captioner format version {doc.get('format_version')} is newer than this "
                         f"package reads ({FORMAT_VERSION}); upgrade braindecode_pkg")
    return doc


def _check_mapper_dir(d: Path) -> dict:
    if not d.is_dir():
        raise InputError(f"{d}: captioner folder not found (expected {CONFIG_NAME} and {WEIGHTS_NAME} of the "
                         f"mapper); write one with `braindecode-pkg train-captioner --out {d}`")
    doc = _read_mapper_doc(d)
    if not (d / WEIGHTS_NAME).is_file():
        raise InputError(f"{d / WEIGHTS_NAME}: mapper weights not found beside {CONFIG_NAME}")
    return doc


def _check_lm_dir(lm: Path, recorded: str | None) -> None:
    if not lm.is_dir():
        raise InputError(f"{lm}: language-model folder not found; {_download_hint(lm, recorded)}")
    if not (lm / "config.json").is_file():
        raise InputError(f"{lm / 'config.json'}: not found; {_download_hint(lm, recorded)}")
    if not ((lm / "model.safetensors").is_file() or (lm / "model.safetensors.index.json").is_file()):
        extra = (" (only pickled weights are there: convert them to model.safetensors with a tool you trust; "
                 "they are never unpickled here)" if (lm / "pytorch_model.bin").is_file() else "")
        raise InputError(f"{lm / 'model.safetensors'}: language-model weights not found{extra}; "
                         f"{_download_hint(lm, recorded)}")
    if not ((lm / "tokenizer.json").is_file() or ((lm / "vocab.json").is_file() and (lm / "merges.txt").is_file())):
        raise InputError(f"{lm / 'tokenizer.json'}: tokenizer not found (tokenizer.json, or vocab.json and "
                         f"merges.txt); {_download_hint(lm, recorded)}")


def check_lm_dir(path) -> Path:
    """The resolved language-model folder ``path`` (a GPT-2-like ``save_pretrained`` folder with
    safetensors weights and a tokenizer); :class:`InputError` naming what is missing. Loads nothing."""
    lm = Path(str(path)).expanduser().resolve()
    _check_lm_dir(lm, None)
    return lm


def _resolve_sim(sim_dir) -> Path:
    return resolve_sim(
        sim_dir, SHIPPED_SIM_CAPTIONER, CONFIG_NAME,
        f"captioner config 'sim': no nsd-sim captioner at {SHIPPED_SIM_CAPTIONER}; train one with "
        f"`braindecode-pkg train-captioner --clip sim --out DIR` and set models.captioner to {{\"dir\": \"DIR\"}}",
    )


def parse_captioner_config(spec, *, sim_dir=None) -> CaptionerConfig:
    """Resolve a captioner config (dict, JSON text, JSON/YAML file, folder or ``sim``).

    Checks that every file it needs exists (raises :class:`InputError` otherwise); loads nothing.
    """
    if isinstance(spec, CaptionerConfig):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec).strip()
        if text == "sim":
            spec = {"dir": "sim"}
        elif text.startswith("{"):
            spec = parse_json_text(text, "captioner config")
        elif text.endswith((".yaml", ".yml")) or (text.endswith(".json") and Path(text).name != CONFIG_NAME):
            spec = read_config_file(text, "captioner config")
        else:
            p = Path(text).expanduser()
            spec = {"dir": str(p.parent if p.name == CONFIG_NAME else p)}
    if not isinstance(spec, dict):
        raise InputError(f"captioner config must be a mapping, got {type(spec).__name__}: {spec!r}")
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise InputError(f"captioner config: unknown key(s) {unknown}; expected some of {list(_KEYS)}")
    if not spec.get("dir"):
        raise InputError("captioner config needs 'dir' (a captioner folder, or 'sim'), optionally with 'lm'")
    d = str(spec["dir"]).strip()
    mapper_dir = _resolve_sim(sim_dir) if d == "sim" else Path(d).expanduser().resolve()
    doc = _check_mapper_dir(mapper_dir)
    recorded = (doc.get("lm") or {}).get("name_or_path")
    if spec.get("lm"):
        lm_dir = Path(str(spec["lm"])).expanduser().resolve()
    else:
        lm_dir = mapper_dir / LM_SUBDIR
        if not lm_dir.is_dir():
            raise InputError(
                f"{mapper_dir}: this mapper was trained with the language model {recorded or '(unrecorded)'}, "
                f"which is not in {lm_dir}; set models.captioner.lm to a local copy of it: "
                f"{_download_hint(lm_dir, recorded)}"
            )
    _check_lm_dir(lm_dir, recorded)
    return CaptionerConfig(mapper_dir=mapper_dir, lm_dir=lm_dir)


# ---------------------------------------------------------------------------------- mapper
class Mapper(nn.Module):
    """CLIP embedding (n, clip_dim) -> (n, prefix_length, lm_dim) prefix embeddings.

    ``kind="mlp"``: ClipCap's MLP, ``Linear(clip_dim, hidden) -> tanh -> Linear(hidden,
    prefix_length * lm_dim)`` (``hidden`` defaults to ``prefix_length * lm_dim // 2``).
    ``kind="transformer"``: ClipCap's transformer mapper (meant for a frozen language model): the
    embedding is projected to ``clip_length`` tokens, followed by ``prefix_length`` learned
    constants, through ``n_layers`` pre-norm transformer layers; the outputs at the constants
    are the prefix. With ``normalize_input`` the embedding is first scaled to norm
    ``sqrt(clip_dim)`` (unit variance per dimension), so predicted embeddings of any norm can be given.
    """

    def __init__(self, clip_dim: int, lm_dim: int, prefix_length: int = 8, kind: str = "mlp",
                 hidden: int | None = None, clip_length: int = 8, n_layers: int = 4,
                 n_heads: int = 8, normalize_input: bool = True):
        super().__init__()
        if kind not in MAPPER_KINDS:
            raise InputError(f"mapper kind {kind!r}; expected one of {list(MAPPER_KINDS)}")
        self.config = {
            "kind": kind, "clip_dim": int(clip_dim), "lm_dim": int(lm_dim),
            "prefix_length": int(prefix_length), "normalize_input": bool(normalize_input),
        }
        p, h = int(prefix_length), int(lm_dim)
        if kind == "mlp":
            hidden = int(hidden or max(1, p * h // 2))
            self.config["hidden"] = hidden
            self.net = nn.Sequential(nn.Linear(clip_dim, hidden), nn.Tanh(), nn.Linear(hidden, p * h))
        else:
            self.config.update(clip_length=int(clip_length), n_layers=int(n_layers), n_heads=int(n_heads))
            self.proj = nn.Linear(clip_dim, clip_length * h)
            self.const = nn.Parameter(torch.randn(p, h))
            layer = nn.TransformerEncoderLayer(h, n_heads, dim_feedforward=2 * h, dropout=0.0,
                                               activation="relu", batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    @property
    def prefix_length(self) -> int:
        return self.config["prefix_length"]

    def forward(self, x):
        c = self.config
        if c["normalize_input"]:  # unit norm, then unit variance per dimension on average
            x = F.normalize(x, dim=-1) * math.sqrt(c["clip_dim"])
        n = x.shape[0]
        if c["kind"] == "mlp":
            return self.net(x).view(n, c["prefix_length"], c["lm_dim"])
        t = self.proj(x).view(n, c["clip_length"], c["lm_dim"])
        t = torch.cat([t, self.const.unsqueeze(0).expand(n, -1, -1)], dim=1)
        return self.blocks(t)[:, c["clip_length"]:]


def _mapper_from_config(cfg: dict):
    keys = ("clip_dim", "lm_dim", "prefix_length", "kind", "hidden", "clip_length", "n_layers", "n_heads",
            "normalize_input")
    try:
        return Mapper(**{k: cfg[k] for k in keys if k in cfg})
    except TypeError as e:
        raise InputError(f"mapper config {cfg}: {e}") from None


# ------------------------------------------------------------------------------ LM loading
@contextlib.contextmanager
def _quiet_transformers():
    """No info lines or progress bars from transformers while loading/saving (restored after)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_lm(lm_dir, device="cpu"):
    """(causal LM in eval mode, tokenizer) of a local folder; safetensors only, offline."""
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm_dir = Path(lm_dir)
    _check_lm_dir(lm_dir, None)
    with _quiet_transformers():
        try:
            lm = AutoModelForCausalLM.from_pretrained(
                str(lm_dir), local_files_only=True, use_safetensors=True, trust_remote_code=False,
                dtype=torch.float32,
            )
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{lm_dir}: cannot load the language model ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
        try:
            tok = AutoTokenizer.from_pretrained(str(lm_dir), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{lm_dir}: cannot load the tokenizer ({type(e).__name__}: "
                             f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    return lm.to(device).eval(), tok


def _lm_dim(lm) -> int:
    return int(lm.get_input_embeddings().weight.shape[1])


def _lm_record(lm, tokenizer) -> dict:
    c = lm.config
    return {"name_or_path": str(getattr(c, "_name_or_path", "") or ""), "model_type": c.model_type,
            "hidden_size": _lm_dim(lm), "vocab_size": int(lm.get_input_embeddings().weight.shape[0]),
            "tokenizer_vocab_size": int(len(tokenizer))}


# ---------------------------------------------------------------------------------- model
class Captioner:
    """A mapper and a causal language model: CLIP embeddings -> captions.

    ``generate`` L2-normalises the embeddings (through the mapper), builds the prefix and lets
    the language model continue it; ``logits`` gives the next-token logits of given captions
    (for tests and scoring); ``loss`` their mean token cross-entropy (training).
    """

    def __init__(self, mapper, lm, tokenizer, config: CaptionerConfig | None = None, device="cpu",
                 meta: dict | None = None):
        self.mapper = mapper
        self.lm = lm
        self.tokenizer = tokenizer
        self.config = config
        self.device = device
        self.meta = dict(meta or {})
        if mapper.config["lm_dim"] != _lm_dim(lm):
            raise InputError(f"mapper produces {mapper.config['lm_dim']}-d prefixes but the language model's "
                             f"embeddings are {_lm_dim(lm)}-d: it was trained with another language model")
        if tokenizer.eos_token_id is None:
            raise InputError("the tokenizer has no eos token; captions could not end")

    # ------------------------------------------------------------------ loading/saving
    @classmethod
    def load(cls, config, *, sim_dir=None, device="cpu") -> "Captioner":
        """Load a captioner config (see the module docstring)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        cfg = parse_captioner_config(config, sim_dir=sim_dir)
        doc = _read_mapper_doc(cfg.mapper_dir)
        lm, tok = load_lm(cfg.lm_dir, device=device)
        rec = doc.get("lm") or {}
        vocab = int(lm.get_input_embeddings().weight.shape[0])
        if rec.get("vocab_size") not in (None, vocab):
            raise InputError(f"{cfg.lm_dir}: vocabulary of {vocab} tokens, but the mapper in {cfg.mapper_dir} was "
                             f"trained with a {rec['vocab_size']}-token model ({rec.get('name_or_path')})")
        mapper = _mapper_from_config(doc["mapper"])
        w = cfg.mapper_dir / WEIGHTS_NAME
        try:
            sd = load_file(str(w), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{w}: not a readable safetensors file ({e})") from None
        missing, unexpected = mapper.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise InputError(f"{w}: weights do not fit the mapper in {CONFIG_NAME}: missing {missing[:4]} "
                             f"unexpected {unexpected[:4]}")
        return cls(mapper.to(device).eval(), lm, tok, config=cfg, device=device, meta=doc)

    def save_pretrained(self, out_dir, *, with_lm: bool = True, info: dict | None = None,
                        clip: dict | None = None) -> Path:
        """Write the mapper (``config.json`` + ``model.safetensors``) and, if ``with_lm``, ``lm/``.

        Each file is written atomically; the mapper's ``config.json`` last, so a folder whose
        config exists is complete.
        """
        from safetensors.torch import save_file

        from ..io import atomic_path

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_NAME).unlink(missing_ok=True)  # a folder being rewritten is never trusted half-done
        if with_lm:
            lm_out = out / LM_SUBDIR
            with _quiet_transformers():
                self.lm.save_pretrained(str(lm_out))
                self.tokenizer.save_pretrained(str(lm_out))
        sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.mapper.state_dict().items()}
        with atomic_path(out / WEIGHTS_NAME) as tmp:
            save_file(sd, str(tmp), metadata={"format": "pt"})
        doc: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "mapper": dict(self.mapper.config),
            "lm": _lm_record(self.lm, self.tokenizer),
            "clip": clip if clip is not None else self.meta.get("clip"),
        }
        if info is not None or self.meta.get("braindecode") is not None:
            doc["braindecode"] = info if info is not None else self.meta.get("braindecode")
        with atomic_path(out / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
        return out

    # ------------------------------------------------------------------------ properties
    @property
    def clip_dim(self) -> int:
        return int(self.mapper.config["clip_dim"])

    @property
    def prefix_length(self) -> int:
        return int(self.mapper.config["prefix_length"])

    @property
    def pad_token_id(self) -> int:
        t = self.tokenizer
        return int(t.pad_token_id if t.pad_token_id is not None else t.eos_token_id)

    def describe(self) -> dict:
        """What produces the captions (for file attributes and reports)."""
        d = {"mapper": dict(self.mapper.config), "lm": _lm_record(self.lm, self.tokenizer),
             "clip": self.meta.get("clip")}
        if self.config is not None:
            from ..io import weights_record

            d["config"] = self.config.to_dict()
            files = {"mapper": self.config.mapper_dir / WEIGHTS_NAME, "lm": self.config.lm_dir / "model.safetensors"}
            d["weights"] = weights_record({k: f for k, f in files.items() if f.is_file()})
        return d

    # -------------------------------------------------------------------------- compute
    def _clip_tensor(self, clip_embeds):

        x = torch.as_tensor(np.asarray(clip_embeds, dtype=np.float32) if not isinstance(clip_embeds, torch.Tensor)
                            else clip_embeds).float()
        if x.ndim != 2 or x.shape[1] != self.clip_dim:
            raise InputError(f"CLIP embeddings of shape {tuple(x.shape)}: this captioner expects (n, {self.clip_dim}) "
                             f"(trained on {((self.meta.get('clip') or {}).get('name')) or 'a CLIP'} embeddings)")
        if not torch.isfinite(x).all():
            raise InputError("CLIP embeddings contain NaN or infinite values")
        return x.to(self.device)

    def prefix(self, clip_embeds):
        """(n, prefix_length, lm_dim) prefix embeddings of (n, clip_dim) CLIP embeddings."""
        return self.mapper(self._clip_tensor(clip_embeds))

    def encode_captions(self, captions, max_length: int | None = None):
        """(input_ids, attention_mask) of captions, each followed by the eos token, right-padded."""

        tok = self.tokenizer
        ids = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in captions]
        if max_length is not None:
            ids = [x[:max_length] for x in ids]
        t = max((len(x) for x in ids), default=1)
        out = torch.full((len(ids), t), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), t), dtype=torch.long)
        for i, x in enumerate(ids):
            out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        return out, mask

    def logits(self, clip_embeds, input_ids, attention_mask=None, prefix=None):
        """(n, T, vocab) logits predicting each of ``input_ids`` (n, T) from the prefix and the tokens before it."""

        input_ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.device)
        pre = self.prefix(clip_embeds) if prefix is None else prefix
        n, p = pre.shape[0], pre.shape[1]
        emb = torch.cat([pre, self.lm.get_input_embeddings()(input_ids)], dim=1)
        mask = torch.ones((n, p), dtype=torch.long, device=self.device)
        am = (torch.ones_like(input_ids) if attention_mask is None
              else torch.as_tensor(attention_mask, dtype=torch.long, device=self.device))
        out = self.lm(inputs_embeds=emb, attention_mask=torch.cat([mask, am], dim=1), use_cache=False)
        return out.logits[:, p - 1: -1]

    def loss(self, clip_embeds, input_ids, attention_mask, prefix=None):
        """Mean cross-entropy of the caption tokens (padding excluded)."""

        input_ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.device)
        attention_mask = torch.as_tensor(attention_mask, dtype=torch.long, device=self.device)
        logits = self.logits(clip_embeds, input_ids, attention_mask, prefix=prefix)
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)

    def generate(self, clip_embeds, max_new_tokens: int = 40, num_beams: int = 1, batch_size: int = 64,
                 progress: bool = False) -> list[str]:
        """One caption per row of ``clip_embeds`` (n, clip_dim): greedy (``num_beams=1``) or beam search.

        Deterministic: no sampling; the decoding settings are given here in full, not taken from
        the language model's saved generation config.
        """
        from transformers import GenerationConfig

        if int(num_beams) < 1 or int(max_new_tokens) < 1:
            raise InputError(f"num_beams={num_beams}, max_new_tokens={max_new_tokens}: both must be >= 1")
        limit = getattr(self.lm.config, "n_positions", None) or getattr(self.lm.config, "max_position_embeddings", None)
        if limit and self.prefix_length + int(max_new_tokens) > int(limit):
            raise InputError(f"max_new_tokens={max_new_tokens}: the language model takes {limit} positions, "
                             f"{self.prefix_length} of them the prefix; at most {int(limit) - self.prefix_length}")
        x = self._clip_tensor(clip_embeds)
        tok = self.tokenizer
        beam = {"early_stopping": True, "length_penalty": 1.0} if int(num_beams) > 1 else {}
        gen = GenerationConfig(
            max_new_tokens=int(max_new_tokens), num_beams=int(num_beams), do_sample=False,
            eos_token_id=int(tok.eos_token_id), pad_token_id=self.pad_token_id,
            bos_token_id=int(tok.bos_token_id) if tok.bos_token_id is not None else None,
            num_return_sequences=1, **beam,
        )
        out: list[str] = []
        rng = range(0, len(x), batch_size)
        if progress:
            from tqdm.auto import tqdm

            rng = tqdm(rng, unit="batch", desc="captions")
        self.mapper.eval()
        self.lm.eval()
        with torch.inference_mode(), _quiet_transformers():
            for a in rng:
                pre = self.mapper(x[a:a + batch_size])
                mask = torch.ones(pre.shape[:2], dtype=torch.long, device=self.device)
                ids = self.lm.generate(inputs_embeds=pre, attention_mask=mask, generation_config=gen)
                out.extend(t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True))
        return out
