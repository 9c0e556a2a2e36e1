"""The brain model: per-subject adapters → one shared residual MLP encoder → heads (→ optional prior).

Shape of the model (MindEye2 / MindBridge recipe, ported, with subjects keyed by id)::

    betas of subject "subj01" (b1, V1) ─ adapters["subj01"] ─┐
    betas of subject "subj02" (b2, V2) ─ adapters["subj02"] ─┼─ concat (b1+b2, width) ─ encoder ─ heads
                                                              ┘
    heads:  "pooled"  (B, d)        CLIP pooled image embedding (contrastive + MSE)
            "tokens"  (B, T, W)     CLIP patch tokens (contrastive on the flattened tokens + MSE)
            "latent"  (B, c, h, w)  the image decoder's VAE latent (a blurry low-level reconstruction)
    prior:  a small diffusion prior (DALL-E 2 / MindEye2) from the predicted embedding to the CLIP
            image embedding of one head (``prior_target``), sampled with DDIM.

Adapters live in an ``nn.ModuleDict`` keyed by subject id strings (``"subj01"``), never by
position, so adding, dropping or reordering subjects never misroutes a subject's voxels.

``linear`` adapter: ``Linear(V, width) → LayerNorm → GELU → Dropout`` (MindEye2's per-subject
"ridge" layer, with the normalisation its backbone starts with). ``pool`` adapter (MindBridge):
``AdaptiveMaxPool1d(pool_size)`` over the voxel vector, then a per-subject linear map; it takes any
voxel count, so one subject's voxel count is not frozen into the weights. With ``adapter_rank``
the per-subject part is only ``Linear(V, rank)`` and the encoder starts with a shared
``Linear(rank, width) → LayerNorm → GELU → Dropout``: a new subject then has V × rank weights to
learn instead of V × width (on nsd-sim: as good or better, and 1.4× faster to train).

Saved as a directory (the diffusers/HF convention): ``config.json`` (the :class:`BrainConfig`
plus free-form ``info``) and ``model.safetensors``; :meth:`BrainModel.from_pretrained` reads only
those two files and never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError

__all__ = [
    "BrainConfig", "BrainModel", "LinearAdapter", "PoolAdapter", "ResidualMLP", "DiffusionPrior",
    "subject_key", "CONFIG_NAME", "WEIGHTS_NAME", "ADAPTERS", "HEADS",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTERS = ("linear", "pool")
HEADS = ("pooled", "tokens", "latent")
MODEL_KIND = "braindecode_pkg.brain"
PRIOR_KEYS = ("width", "depth", "timesteps", "sample_steps", "cond_drop", "guidance", "target", "arch", "chunks",
              "heads")
#: denoisers of the diffusion prior: a residual MLP, or a transformer over chunks of the embedding
PRIOR_ARCHS = ("mlp", "transformer")
_SUBJ = re.compile(r"^subj(\d{2,})$")


def subject_key(subject) -> str:
    """The id string of a subject: ``1``, ``"1"``, ``"subj01"`` → ``"subj01"``."""
    if isinstance(subject, str):
        s = subject.strip()
        if _SUBJ.match(s):
            return s
        if s.isdigit():
            return f"subj{int(s):02d}"
        raise InputError(f"subject {subject!r}: expected an id like 1 or 'subj01'")
    if isinstance(subject, bool) or not isinstance(subject, int) or subject < 0:
        raise InputError(f"subject {subject!r}: expected an id like 1 or 'subj01'")
    return f"subj{int(subject):02d}"


@dataclasses.dataclass
class BrainConfig:
    """Architecture of a :class:`BrainModel` (everything needed to rebuild it before loading weights).

    ``subjects`` maps subject id → voxel count (``None`` for a ``pool`` adapter, which takes any).
    ``tokens_shape`` is (T, W) of the CLIP patch tokens; ``tokens_rank`` factorises the tokens head
    as ``width → T·rank → (per token) rank → W`` (``None``: one full linear map, MindEye2's
    ``backbone_linear``). ``latent_shape`` is (c, h, w) of the image decoder's VAE latent.
    ``prior`` is ``None`` or a dict of :class:`DiffusionPrior` options (``target`` = the head it
    predicts, default ``"pooled"``).
    """

    subjects: dict = dataclasses.field(default_factory=dict)
    adapter: str = "linear"
    adapter_dropout: float = 0.3
    adapter_rank: int | None = None
    pool_size: int = 1024
    width: int = 512
    n_blocks: int = 2
    dropout: float = 0.15
    pooled_dim: int | None = 128
    tokens_shape: tuple | None = None
    tokens_rank: int | None = None
    latent_shape: tuple | None = None
    prior: dict | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self):
        self.subjects = {subject_key(k): (None if v is None else int(v)) for k, v in dict(self.subjects).items()}
        if self.adapter not in ADAPTERS:
            raise InputError(f"adapter {self.adapter!r}: expected one of {list(ADAPTERS)}")
        for k, v in self.subjects.items():
            if self.adapter == "linear" and (v is None or v < 1):
                raise InputError(f"subject {k}: a linear adapter needs a positive voxel count, got {v!r}")
        if self.tokens_shape is not None:
            self.tokens_shape = tuple(int(x) for x in self.tokens_shape)
            if len(self.tokens_shape) != 2:
                raise InputError(f"tokens_shape {self.tokens_shape}: expected (n_tokens, width)")
        if self.latent_shape is not None:
            self.latent_shape = tuple(int(x) for x in self.latent_shape)
            if len(self.latent_shape) != 3:
                raise InputError(f"latent_shape {self.latent_shape}: expected (channels, height, width)")
        if self.pooled_dim is None and self.tokens_shape is None:
            raise InputError("the model needs a CLIP head: set pooled_dim and/or tokens_shape")
        if self.prior is not None:
            p = dict(self.prior)
            p.setdefault("target", "pooled")
            bad = sorted(set(p) - set(PRIOR_KEYS))
            if bad:
                raise InputError(f"prior option(s) {bad}: expected some of {list(PRIOR_KEYS)}")
            if p["target"] not in ("pooled", "tokens") or self.head_shape(p["target"]) is None:
                raise InputError(f"prior target {p['target']!r}: expected a CLIP head this model has "
                                 f"({[h for h in ('pooled', 'tokens') if self.head_shape(h)]})")
            self.prior = p

    def head_shape(self, name: str) -> tuple | None:
        return {"pooled": None if self.pooled_dim is None else (int(self.pooled_dim),),
                "tokens": self.tokens_shape, "latent": self.latent_shape}[name]

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(h for h in HEADS if self.head_shape(h) is not None)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("tokens_shape", "latent_shape"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "BrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"brain model config: unknown key(s) {unknown}; expected some of {sorted(names)}")
        return cls(**dict(d))


# ------------------------------------------------------------------------------------ adapters
class LinearAdapter(nn.Module):
    """Subject voxels → shared space: ``Linear(V, width) → LayerNorm → GELU → Dropout``; with
    ``rank``, only ``Linear(V, rank)`` (the shared encoder then starts with ``rank → width``)."""

    def __init__(self, n_voxels: int, width: int, dropout: float, rank: int | None = None):
        super().__init__()
        self.n_voxels = int(n_voxels)
        self.linear = nn.Linear(self.n_voxels, rank or width)
        self.rank = rank
        if rank is None:
            self.norm = nn.LayerNorm(width)
            self.drop = nn.Dropout(dropout)

    def after_linear(self, h):
        """The rest of the adapter after its linear map (identity with ``rank``)."""
        return h if self.rank is not None else self.drop(F.gelu(self.norm(h)))

    def forward(self, x):
        return self.after_linear(self.linear(x))


class PoolAdapter(nn.Module):
    """MindBridge-style: adaptive max pooling of the voxel vector to ``pool_size`` values, then a
    subject-specific ``Linear(pool_size, width) → LayerNorm → GELU → Dropout``; any voxel count."""

    n_voxels = None

    def __init__(self, pool_size: int, width: int, dropout: float, rank: int | None = None):
        super().__init__()
        self.pool_size = int(pool_size)
        self.linear = nn.Linear(self.pool_size, rank or width)
        self.rank = rank
        if rank is None:
            self.norm = nn.LayerNorm(width)
            self.drop = nn.Dropout(dropout)

    def pooled(self, x):
        return F.adaptive_max_pool1d(x.unsqueeze(1), self.pool_size).squeeze(1)

    def after_linear(self, h):
        return h if self.rank is not None else self.drop(F.gelu(self.norm(h)))

    def forward(self, x):
        return self.after_linear(self.linear(self.pooled(x)))


# ------------------------------------------------------------------------------------- encoder
class _Block(nn.Module):
    """Pre-norm residual MLP block: ``x + Linear(Dropout(GELU(Linear(LN(x)))))``."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return x + self.fc2(self.drop(F.gelu(self.fc1(self.norm(x)))))


class ResidualMLP(nn.Module):
    """The shared encoder: (with ``in_dim``: ``Linear(in_dim, width) → LayerNorm → GELU →
    Dropout(in_dropout)``, shared by all subjects) ``n_blocks`` residual MLP blocks, a LayerNorm."""

    def __init__(self, width: int, n_blocks: int, dropout: float, checkpointing: bool = False,
                 in_dim: int | None = None, in_dropout: float = 0.0):
        super().__init__()
        self.inp = None
        if in_dim is not None:
            self.inp = nn.Sequential(nn.Linear(in_dim, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(in_dropout))
        self.blocks = nn.ModuleList(_Block(width, dropout) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(width)
        self.checkpointing = checkpointing

    def forward(self, x):
        if self.inp is not None:
            x = self.inp(x)
        for b in self.blocks:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(b, x, use_reentrant=False)
            else:
                x = b(x)
        return self.norm(x)


class _TokensHead(nn.Module):
    def __init__(self, width: int, shape: tuple, rank: int | None):
        super().__init__()
        self.shape = tuple(shape)
        t, w = self.shape
        self.rank = rank
        if rank is None:
            self.fc = nn.Linear(width, t * w)
        else:
            self.fc = nn.Linear(width, t * rank)
            self.out = nn.Linear(rank, w)

    def forward(self, h):
        t, w = self.shape
        if self.rank is None:
            return self.fc(h).view(-1, t, w)
        return self.out(F.gelu(self.fc(h).view(-1, t, self.rank)))


class _LatentHead(nn.Module):
    """Encoder output → VAE latent (c, h, w): a linear map, then a residual 3×3 conv."""

    def __init__(self, width: int, shape: tuple):
        super().__init__()
        self.shape = tuple(shape)
        c, h, w = self.shape
        self.fc = nn.Linear(width, c * h * w)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, h):
        x = self.fc(h).view(-1, *self.shape)
        return x + self.conv(x)


# --------------------------------------------------------------------------------------- prior
def _timestep_embedding(t, dim: int):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    a = t.float()[:, None] * freqs[None]
    return torch.cat([a.sin(), a.cos()], dim=1)


class _MLPDenoiser(nn.Module):
    """``[x_t, cond, time]`` → residual MLP → ``x0``."""

    def __init__(self, dim: int, width: int, depth: int):
        super().__init__()
        self.width = width
        self.inp = nn.Linear(2 * dim + width, width)
        self.blocks = nn.ModuleList(_Block(width, 0.0) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)

    def forward(self, x_t, t_emb, cond):
        h = self.inp(torch.cat([x_t, cond, t_emb], dim=1))
        for b in self.blocks:
            h = b(h)
        return self.out(self.norm(h))


class _TransformerDenoiser(nn.Module):
    """MindEye2-style: the noised embedding and the condition, each cut into ``chunks`` tokens,
    and a time token, through a pre-norm transformer encoder; the noised embedding's tokens
    (plus a learned position per token) are read out as ``x0``."""

    def __init__(self, dim: int, width: int, depth: int, chunks: int, heads: int):
        super().__init__()
        if dim % chunks:
            raise InputError(f"prior chunks {chunks}: must divide the embedding width {dim}")
        self.width, self.chunks, self.size = width, chunks, dim // chunks
        self.x_in = nn.Linear(self.size, width)
        self.c_in = nn.Linear(self.size, width)
        self.t_in = nn.Linear(width, width)
        self.pos = nn.Parameter(torch.zeros(1, 2 * chunks + 1, width))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, self.size)

    def forward(self, x_t, t_emb, cond):
        n = x_t.shape[0]
        tokens = torch.cat([self.x_in(x_t.view(n, self.chunks, self.size)),
                            self.c_in(cond.view(n, self.chunks, self.size)),
                            self.t_in(t_emb)[:, None]], dim=1) + self.pos
        h = self.norm(self.body(tokens))
        return self.out(h[:, :self.chunks]).reshape(n, -1)


class DiffusionPrior(nn.Module):
    """A small DALL-E 2 / MindEye2-style diffusion prior on flattened CLIP embeddings.

    A denoiser (``arch``: ``mlp``, a residual MLP on ``[x_t, cond, time]``; ``transformer``, a
    transformer over ``chunks`` tokens of each, as MindEye2's prior is over bigG's tokens)
    predicts the clean embedding ``x0`` from the noised target ``x_t``, the timestep and the brain
    embedding (the condition; dropped with ``cond_drop`` during training for classifier-free
    guidance). Cosine noise schedule over ``timesteps`` steps; the loss is MSE on ``x0`` (DALL-E
    2's ``predict_x_start``). :meth:`sample` runs deterministic DDIM over ``sample_steps`` steps
    from a seeded start.
    """

    def __init__(self, dim: int, width: int = 256, depth: int = 2, timesteps: int = 100,
                 sample_steps: int = 20, cond_drop: float = 0.1, guidance: float = 1.0, target: str = "pooled",
                 arch: str = "mlp", chunks: int = 8, heads: int = 4):
        super().__init__()
        self.dim, self.width, self.timesteps = int(dim), int(width), int(timesteps)
        self.sample_steps, self.cond_drop, self.guidance = int(sample_steps), float(cond_drop), float(guidance)
        self.target, self.arch = target, arch
        if arch == "mlp":
            self.net = _MLPDenoiser(self.dim, self.width, int(depth))
        elif arch == "transformer":
            self.net = _TransformerDenoiser(self.dim, self.width, int(depth), int(chunks), int(heads))
        else:
            raise InputError(f"prior arch {arch!r}: expected one of {list(PRIOR_ARCHS)}")
        self.null_cond = nn.Parameter(torch.zeros(self.dim))
        s = 0.008
        steps = torch.arange(self.timesteps + 1, dtype=torch.float64) / self.timesteps
        abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        abar = (abar / abar[0]).clamp(min=1e-5)
        self.register_buffer("alpha_bar", abar[1:].float(), persistent=False)  # t = 0..T-1

    def denoise(self, x_t, t, cond):
        return self.net(x_t, _timestep_embedding(t, self.width), cond)

    def loss(self, cond, target):
        """MSE between the predicted and the true clean embedding at a random timestep (draws
        from torch's global generator)."""
        n = target.shape[0]
        dev = target.device
        t = torch.randint(0, self.timesteps, (n,)).to(dev)
        noise = torch.randn(target.shape, dtype=target.dtype).to(dev)
        ab = self.alpha_bar[t].to(target.dtype)[:, None]
        x_t = ab.sqrt() * target + (1 - ab).sqrt() * noise
        if self.training and self.cond_drop > 0:
            drop = (torch.rand(n) < self.cond_drop).to(dev)
            cond = torch.where(drop[:, None], self.null_cond.to(cond.dtype).expand_as(cond), cond)
        return F.mse_loss(self.denoise(x_t, t, cond), target)

    @torch.no_grad()
    def sample(self, cond, seed: int = 0, steps: int | None = None, guidance: float | None = None):
        """Deterministic DDIM samples (B, dim) for conditions ``cond`` (B, dim)."""
        steps = int(steps or self.sample_steps)
        g = self.guidance if guidance is None else float(guidance)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        x = torch.randn(cond.shape, generator=gen, dtype=torch.float32).to(cond.device, cond.dtype)
        ts = torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()
        for i, t in enumerate(ts):
            tt = torch.full((cond.shape[0],), t, device=cond.device, dtype=torch.long)
            x0 = self.denoise(x, tt, cond)
            if g != 1.0:
                x0u = self.denoise(x, tt, self.null_cond.to(cond.dtype).expand_as(cond))
                x0 = x0u + g * (x0 - x0u)
            ab = self.alpha_bar[t]
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt().clamp(min=1e-6)
            ab_prev = self.alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return x


# --------------------------------------------------------------------------------------- model
class BrainModel(nn.Module):
    """Adapters (``ModuleDict`` keyed by subject id) → :class:`ResidualMLP` → heads (→ prior).

    ``forward(batch)`` takes a mapping subject id → betas (b_s, V_s) (several subjects, each its
    own voxel count) and returns a dict of head outputs with the subjects' rows concatenated in
    the mapping's order, plus ``"shared"`` (the encoder output, (B, width)).
    """

    def __init__(self, config: BrainConfig):
        super().__init__()
        self.config = config
        c = config
        self.adapters = nn.ModuleDict()
        for k, v in c.subjects.items():
            self.adapters[k] = self._new_adapter(v)
        self.encoder = ResidualMLP(c.width, c.n_blocks, c.dropout, c.gradient_checkpointing,
                                   in_dim=c.adapter_rank, in_dropout=c.adapter_dropout)
        self.heads = nn.ModuleDict()
        if c.pooled_dim is not None:
            self.heads["pooled"] = nn.Linear(c.width, int(c.pooled_dim))
        if c.tokens_shape is not None:
            self.heads["tokens"] = _TokensHead(c.width, c.tokens_shape, c.tokens_rank)
        if c.latent_shape is not None:
            self.heads["latent"] = _LatentHead(c.width, c.latent_shape)
        self.prior = None
        if c.prior is not None:
            p = dict(c.prior)
            dim = math.prod(c.head_shape(p["target"]))
            self.prior = DiffusionPrior(dim, **p)

    def _new_adapter(self, n_voxels):
        c = self.config
        if c.adapter == "pool":
            return PoolAdapter(c.pool_size, c.width, c.adapter_dropout, c.adapter_rank)
        return LinearAdapter(n_voxels, c.width, c.adapter_dropout, c.adapter_rank)

    # -- subjects
    @property
    def subjects(self) -> list[str]:
        return list(self.adapters.keys())

    def add_subject(self, subject, n_voxels: int | None) -> str:
        """Add a freshly initialised adapter for ``subject`` (replacing one of the same id)."""
        k = subject_key(subject)
        if self.config.adapter == "linear" and (n_voxels is None or int(n_voxels) < 1):
            raise InputError(f"subject {k}: a linear adapter needs a positive voxel count, got {n_voxels!r}")
        dev = next(self.encoder.parameters()).device
        self.adapters[k] = self._new_adapter(None if n_voxels is None else int(n_voxels)).to(dev)
        self.config.subjects[k] = None if n_voxels is None else int(n_voxels)
        return k

    def keep_subjects(self, subjects) -> None:
        """Drop every adapter but those of ``subjects``."""
        keep = [subject_key(s) for s in subjects]
        for k in list(self.adapters.keys()):
            if k not in keep:
                del self.adapters[k]
                self.config.subjects.pop(k, None)

    def check_input(self, subject, x) -> str:
        """The subject's key; :class:`InputError` if it has no adapter or ``x`` has the wrong shape."""
        k = subject_key(subject)
        if k not in self.adapters:
            have = ", ".join(self.adapters.keys()) or "none"
            raise InputError(f"subject {k}: this model has no adapter for it (adapters: {have}); "
                             f"train one with `braindecode-pkg train --regime adapt`")
        if x.dim() != 2:
            raise InputError(f"subject {k}: expected betas of shape (trials, voxels), got {tuple(x.shape)}")
        nv = self.adapters[k].n_voxels
        if nv is not None and x.shape[1] != nv:
            raise InputError(f"subject {k}: betas have {x.shape[1]} voxels, its adapter expects {nv} "
                             f"(another ROI or preprocessing than the model was trained with?)")
        return k

    # -- forward
    def shared(self, batch: Mapping) -> torch.Tensor:
        """Concatenated adapter outputs (B, width) in the order of ``batch``."""
        parts = []
        for s, x in batch.items():
            k = self.check_input(s, x)
            parts.append(self.adapters[k](x))
        if not parts:
            raise InputError("empty batch: no subject's betas given")
        return torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]

    def forward(self, batch: Mapping, prior_target=None) -> dict:
        """Head outputs; with ``prior_target`` (the prior's target rows, flattened) also
        ``"prior_loss"`` (inside forward, so data-parallel wrappers see the prior's parameters used)."""
        h = self.encoder(self.shared(batch))
        out = {"shared": h}
        for name, head in self.heads.items():
            out[name] = head(h)
        if prior_target is not None and self.prior is not None:
            out["prior_loss"] = self.prior.loss(self.prior_condition(out).float(), prior_target.float())
        return out

    def prior_condition(self, out: dict) -> torch.Tensor:
        return out[self.config.prior["target"]].flatten(1)

    @torch.no_grad()
    def sample_prior(self, out: dict, seed: int = 0, **kw) -> torch.Tensor:
        """Prior samples, shaped like the prior's target head."""
        if self.prior is None:
            raise InputError("this model has no diffusion prior")
        t = self.config.prior["target"]
        return self.prior.sample(self.prior_condition(out), seed=seed, **kw).view(-1, *self.config.head_shape(t))

    def parameter_groups(self) -> dict[str, list]:
        """Parameters by part: ``adapter:<subject>``, ``encoder``, ``heads``, ``prior``."""
        groups = {f"adapter:{k}": list(a.parameters()) for k, a in self.adapters.items()}
        groups["encoder"] = list(self.encoder.parameters())
        groups["heads"] = list(self.heads.parameters())
        if self.prior is not None:
            groups["prior"] = list(self.prior.parameters())
        return groups

    # -- persistence
    def save_pretrained(self, directory, info: dict | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` into ``directory`` (atomically, each file)."""
        from safetensors.torch import save_file

        from ..io import atomic_path

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(d / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "kind": MODEL_KIND})
        doc = {"kind": MODEL_KIND, "config": self.config.to_dict(), "info": info or {}}
        with atomic_path(d / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(doc, indent=1) + "\n")
        return d

    @classmethod
    def read_config(cls, directory) -> tuple[BrainConfig, dict]:
        d = Path(directory)
        f = d / CONFIG_NAME
        if not f.is_file():
            raise InputError(f"{f}: brain model config not found (a model directory holds {CONFIG_NAME} "
                             f"and {WEIGHTS_NAME})")
        try:
            doc = json.loads(f.read_text())
        except ValueError as e:
            raise InputError(f"{f}: not JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("kind") != MODEL_KIND:
            raise InputError(f"{f}: not a brain model config (kind {doc.get('kind') if isinstance(doc, dict) else None!r}, "
                             f"expected {MODEL_KIND!r})")
        return BrainConfig.from_dict(doc["config"]), doc.get("info", {})

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "BrainModel":
        """Load a model directory (safetensors only; nothing is unpickled)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        cfg, info = cls.read_config(directory)
        w = Path(directory) / WEIGHTS_NAME
        if not w.is_file():
            raise InputError(f"{w}: brain model weights not found")
        model = cls(cfg)
        try:
            state = load_file(str(w), device="cpu")
        except (SafetensorError, OSError) as e:
            raise InputError(f"{w}: not a readable safetensors file ({e})") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(f"{w}: weights do not match {CONFIG_NAME} (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        model.info = info
        return model.to(device)
