"""Losses of the brain model, ported from MindEye (Scotti et al. 2023) and MindEye2 (2024).

All contrastive losses take L2-normalised brain embeddings ``preds`` (B, D) and CLIP targets
``targs`` (B, D) whose row ``i`` belongs together, and are bidirectional (brain→image and
image→brain averaged).

- :func:`info_nce` — CLIP's symmetric cross-entropy.
- :func:`soft_clip_loss` — MindEye's SoftCLIP: the soft labels are the softmax of the targets'
  own similarities, so two near-identical images are not pushed apart.
- :func:`mixco` / :func:`mixco_nce` — MindEye's BiMixCo: a random half of the samples have their
  voxels mixed with another sample's (Beta(β, β) weights); the labels are mixed alike.
- :class:`LossConfig` — weights and schedules, and :func:`total_loss` which combines the heads'
  losses for one step.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch.nn import functional as F

from ..errors import InputError

__all__ = ["info_nce", "soft_clip_loss", "mixco", "mixco_nce", "LossConfig", "total_loss", "cosine_ramp"]


def info_nce(preds, targs, temperature: float):
    logits = preds @ targs.T / temperature
    labels = torch.arange(preds.shape[0], device=preds.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def soft_clip_loss(preds, targs, temperature: float):
    """MindEye's SoftCLIP loss (``utils.soft_clip_loss``)."""
    clip_clip = (targs @ targs.T) / temperature
    brain_clip = (preds @ targs.T) / temperature
    soft = clip_clip.softmax(-1)
    loss1 = -(brain_clip.log_softmax(-1) * soft).sum(-1).mean()
    loss2 = -(brain_clip.T.log_softmax(-1) * soft).sum(-1).mean()
    return (loss1 + loss2) / 2


def mixco(x, beta: float = 0.15, prob: float = 0.5):
    """MindEye's ``mixco`` on one subject's voxels (b, V): returns ``(mixed, perm, betas)``.

    A sample is selected with probability ``prob``; a selected one becomes
    ``β x_i + (1 − β) x_perm(i)`` with β ~ Beta(beta, beta); the others keep β = 1. Draws use
    torch's global generator (saved in checkpoints, so a resumed run draws the same).
    """
    n = x.shape[0]
    perm = torch.randperm(n).to(x.device)
    b = torch.distributions.Beta(float(beta), float(beta)).sample((n,)).clamp(0.0, 1.0)
    select = torch.rand(n) <= prob
    b = torch.where(select, b, torch.ones_like(b)).to(x.device, x.dtype)
    mixed = x * b[:, None] + x[perm] * (1 - b)[:, None]
    return mixed, perm, b


def mixco_nce(preds, targs, temperature: float, perm, betas):
    """MindEye's ``mixco_nce``: InfoNCE with the mixed labels of :func:`mixco` (bidirectional)."""
    n = preds.shape[0]
    logits = preds @ targs.T / temperature
    probs = torch.diag(betas)
    probs[torch.arange(n, device=preds.device), perm] += 1 - betas
    loss = -(logits.log_softmax(-1) * probs).sum(-1).mean()
    loss2 = -(logits.T.log_softmax(-1) * probs.T).sum(-1).mean()
    return (loss + loss2) / 2


def cosine_ramp(frac: float, start: float, end: float) -> float:
    """``start`` at ``frac`` 0 to ``end`` at 1 along half a cosine."""
    frac = min(max(frac, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * frac))


@dataclasses.dataclass
class LossConfig:
    """Weights and schedules of the loss terms.

    ``contrastive``: weight of the contrastive loss per CLIP head (pooled; tokens flattened).
    For the first ``mixco_fraction`` of the steps it is BiMixCo (:func:`mixco_nce`, inputs mixed
    per subject), afterwards ``contrastive_kind`` (``soft``: SoftCLIP, ``hard``: InfoNCE), as in
    MindEye. ``temperature`` is fixed, or ramps along a cosine from ``temperature`` to
    ``temperature_end`` when that is set. ``mse``: MSE to the (normalised) CLIP targets.
    ``prior``: the diffusion prior's loss (MindEye2 uses 30 with its x0 loss on unnormalised
    bigG tokens; on normalised pooled embeddings 1 is the same order). ``lowlevel``: L1 to the
    VAE latent. ``heads``: relative weights of the CLIP heads.
    """

    contrastive: float = 1.0
    contrastive_kind: str = "soft"
    temperature: float = 0.05
    temperature_end: float | None = None
    mixco_fraction: float = 0.33
    mixco_beta: float = 0.15
    mixco_prob: float = 0.5
    mse: float = 0.0
    prior: float = 1.0
    lowlevel: float = 1.0
    heads: dict = dataclasses.field(default_factory=lambda: {"pooled": 1.0, "tokens": 1.0})

    def __post_init__(self):
        if self.contrastive_kind not in ("soft", "hard"):
            raise InputError(f"contrastive_kind {self.contrastive_kind!r}: expected 'soft' or 'hard'")
        if not 0 <= self.mixco_fraction <= 1:
            raise InputError(f"mixco_fraction {self.mixco_fraction}: expected a fraction in [0, 1]")
        if self.temperature <= 0:
            raise InputError(f"temperature {self.temperature}: expected > 0")

    def temperature_at(self, frac: float) -> float:
        if self.temperature_end is None:
            return self.temperature
        return cosine_ramp(frac, self.temperature, self.temperature_end)

    def uses_mixco(self, frac: float) -> bool:
        return self.contrastive > 0 and frac < self.mixco_fraction


def total_loss(cfg: LossConfig, out: dict, targets: dict, *, frac: float, mix=None) -> tuple[torch.Tensor, dict]:
    """The step's loss and its parts (floats) from head outputs ``out`` and ``targets``.

    ``mix`` is ``(perm, betas)`` over the whole batch when the inputs were mixed (BiMixCo). The
    diffusion prior's loss is computed inside the model's forward pass (so that data-parallel
    wrappers see its parameters used) and added by the training loop, weighted by ``cfg.prior``.
    """
    parts: dict[str, torch.Tensor] = {}
    temp = cfg.temperature_at(frac)
    for head in ("pooled", "tokens"):
        if head not in out or head not in targets:
            continue
        w = float(cfg.heads.get(head, 1.0))
        if w == 0:
            continue
        p = F.normalize(out[head].flatten(1).float(), dim=-1)
        t = F.normalize(targets[head].flatten(1).float(), dim=-1)
        if cfg.contrastive > 0:
            if mix is not None:
                c = mixco_nce(p, t, temp, *mix)
            elif cfg.contrastive_kind == "soft":
                c = soft_clip_loss(p, t, temp)
            else:
                c = info_nce(p, t, temp)
            parts[f"contrastive_{head}"] = cfg.contrastive * w * c
        if cfg.mse > 0:
            parts[f"mse_{head}"] = cfg.mse * w * F.mse_loss(p, t) * p.shape[1]
    if "latent" in out and "latent" in targets and cfg.lowlevel > 0:
        parts["lowlevel"] = cfg.lowlevel * F.l1_loss(out["latent"].float(), targets["latent"].float())
    if not parts:
        raise InputError("no loss term is active: check the loss weights and that targets exist for the heads")
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}
