"""The diffusion prior: both denoisers learn a known map from condition to target, and DDIM
samples land on it; guidance, seeds and bad options behave as documented."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from braindecode_pkg.brain.model import BrainConfig, BrainModel, DiffusionPrior
from braindecode_pkg.errors import InputError

DIM = 12


def _task(n=256, seed=0):
    """Targets on the unit sphere that are a fixed nonlinear function of the condition."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(n, DIM, generator=g)
    w = torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(99)) / DIM ** 0.5
    return cond, F.normalize(torch.tanh(cond @ w), dim=-1)


@pytest.mark.parametrize("arch, extra", [("mlp", {}), ("transformer", {"chunks": 4, "heads": 2})])
def test_prior_learns_the_map_and_samples_land_on_it(arch, extra):
    torch.manual_seed(0)
    prior = DiffusionPrior(DIM, width=48, depth=2, timesteps=50, sample_steps=10, cond_drop=0.0, arch=arch, **extra)
    cond, target = _task()
    opt = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    first = None
    for step in range(500):
        loss = prior.loss(cond, target)
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.25 * first
    prior.eval()
    held_cond, held_target = _task(64, seed=1)
    s = prior.sample(held_cond, seed=3)
    cos = F.cosine_similarity(s, held_target).mean()
    # the nearest target of each sample is its own (identification among 64)
    ident = (F.normalize(s, dim=-1) @ held_target.T).argmax(1) == torch.arange(64)
    assert cos > 0.8 and ident.float().mean() > 0.8, (arch, float(cos), float(ident.float().mean()))
    # deterministic per seed, different across seeds
    assert torch.equal(prior.sample(held_cond, seed=3), s) and not torch.equal(prior.sample(held_cond, seed=4), s)


def test_prior_options_are_checked():
    with pytest.raises(InputError, match="prior arch 'unet'"):
        DiffusionPrior(DIM, arch="unet")
    with pytest.raises(InputError, match="prior chunks 5: must divide"):
        DiffusionPrior(DIM, arch="transformer", chunks=5)
    with pytest.raises(InputError, match="prior option"):
        BrainConfig(subjects={1: 10}, pooled_dim=DIM, prior={"depth": 1, "layers": 3})
    m = BrainModel(BrainConfig(subjects={1: 10}, pooled_dim=DIM, width=16, n_blocks=1,
                               prior={"arch": "transformer", "chunks": 3, "heads": 1, "width": 8, "depth": 1}))
    out = m({"subj01": torch.randn(5, 10)})
    assert m.sample_prior(out, seed=0).shape == (5, DIM)
