"""The brain model and its losses at toy size (distinct sizes: voxels 37/23/29, width 24, d 12,
tokens (5, 7), latent (3, 4, 6))."""

from __future__ import annotations

import json
import math

import pytest
import torch

from braindecode_pkg.errors import InputError
from braindecode_pkg.brain import losses
from braindecode_pkg.brain.model import BrainConfig, BrainModel, subject_key

VOX = {"subj01": 37, "subj02": 23, "subj05": 29}


def cfg(**over) -> BrainConfig:
    base = dict(subjects=VOX, width=24, n_blocks=2, pooled_dim=12, tokens_shape=(5, 7), latent_shape=(3, 4, 6),
                dropout=0.1, adapter_dropout=0.2)
    base.update(over)
    return BrainConfig(**base)


def batch(sizes=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = sizes or {"subj01": 4, "subj02": 3, "subj05": 2}
    return {k: torch.randn(n, VOX[k], generator=g) for k, n in sizes.items()}


def test_subject_key():
    assert subject_key(1) == subject_key("1") == subject_key("subj01") == "subj01"
    assert subject_key(12) == "subj12"
    for bad in ("s1", "subj1", -1, 1.0, True):
        with pytest.raises(InputError):
            subject_key(bad)


def test_multi_subject_forward_keeps_rows_per_subject():
    torch.manual_seed(0)
    m = BrainModel(cfg()).eval()
    assert isinstance(m.adapters, torch.nn.ModuleDict) and m.subjects == ["subj01", "subj02", "subj05"]
    b = batch()
    out = m(b)
    assert out["pooled"].shape == (9, 12) and out["tokens"].shape == (9, 5, 7)
    assert out["latent"].shape == (9, 3, 4, 6) and out["shared"].shape == (9, 24)
    # rows follow the batch's subject order, and a subject's rows depend on its own betas only
    alone = m({"subj02": b["subj02"]})["pooled"]
    torch.testing.assert_close(out["pooled"][4:7], alone)
    rev = m(dict(reversed(list(b.items()))))["pooled"]
    torch.testing.assert_close(rev[:2], out["pooled"][7:9])
    b2 = dict(b, subj05=b["subj05"] + 1)
    torch.testing.assert_close(m(b2)["pooled"][:7], out["pooled"][:7])
    # gradients reach exactly the adapters of the subjects in the batch
    m.train()
    m.zero_grad()
    m({"subj01": b["subj01"], "subj05": b["subj05"]})["pooled"].sum().backward()
    assert m.adapters["subj01"].linear.weight.grad is not None
    assert m.adapters["subj05"].linear.weight.grad is not None
    assert m.adapters["subj02"].linear.weight.grad is None


def test_missing_adapter_and_wrong_voxel_count_are_clear_errors():
    m = BrainModel(cfg())
    with pytest.raises(InputError, match=r"subj03: this model has no adapter for it \(adapters: subj01, subj02, subj05\)"):
        m({"subj03": torch.zeros(2, 37)})
    with pytest.raises(InputError, match="subj02: betas have 37 voxels, its adapter expects 23"):
        m({"subj02": torch.zeros(2, 37)})
    with pytest.raises(InputError, match="expected betas of shape"):
        m({"subj02": torch.zeros(23)})
    with pytest.raises(InputError, match="linear adapter needs a positive voxel count"):
        BrainConfig(subjects={"subj01": None})
    with pytest.raises(InputError, match="CLIP head"):
        BrainConfig(subjects=VOX, pooled_dim=None)


def test_pool_adapter_takes_any_voxel_count():
    m = BrainModel(cfg(adapter="pool", pool_size=16, subjects={"subj01": None})).eval()
    for nv in (37, 101, 16):
        assert m({"subj01": torch.randn(3, nv)})["pooled"].shape == (3, 12)
    m.add_subject(7, None)
    assert m({"subj07": torch.randn(2, 55), "subj01": torch.randn(1, 20)})["pooled"].shape == (3, 12)


def test_low_rank_adapter_shares_the_up_projection():
    m = BrainModel(cfg(adapter_rank=4)).eval()
    assert m.adapters["subj02"].linear.weight.shape == (4, 23)
    assert m.encoder.inp[0].weight.shape == (24, 4)  # rank -> width, shared by all subjects
    assert m(batch())["pooled"].shape == (9, 12)
    p = BrainModel(cfg(adapter="pool", pool_size=16, adapter_rank=4, subjects={"subj01": None})).eval()
    assert p({"subj01": torch.randn(2, 50)})["pooled"].shape == (2, 12)


def test_add_and_keep_subjects():
    m = BrainModel(cfg())
    m.add_subject("subj07", 31)
    assert m.config.subjects["subj07"] == 31 and m({"subj07": torch.zeros(1, 31)})["pooled"].shape == (1, 12)
    m.keep_subjects([7])
    assert m.subjects == ["subj07"] and list(m.config.subjects) == ["subj07"]


def test_save_load_roundtrip_never_unpickles(tmp_path):
    torch.manual_seed(1)
    m = BrainModel(cfg(prior={"width": 16, "depth": 1, "timesteps": 10, "sample_steps": 4}, tokens_rank=3)).eval()
    m.save_pretrained(tmp_path / "m", info={"note": "x"})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["config"]["subjects"] == VOX and doc["info"] == {"note": "x"}
    m2 = BrainModel.from_pretrained(tmp_path / "m").eval()
    b = batch()
    for k in ("pooled", "tokens", "latent"):
        torch.testing.assert_close(m(b)[k], m2(b)[k], rtol=0, atol=0)
    o = m(b)
    torch.testing.assert_close(m.sample_prior(o, seed=3), m2.sample_prior(o, seed=3), rtol=0, atol=0)
    # a pickle in place of the safetensors file is refused, not loaded
    torch.save(m.state_dict(), tmp_path / "m" / "model.safetensors")
    with pytest.raises(InputError, match="not a readable safetensors file"):
        BrainModel.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(InputError, match="not a brain model config"):
        BrainModel.from_pretrained(tmp_path / "m")
    with pytest.raises(InputError, match="config not found"):
        BrainModel.from_pretrained(tmp_path / "none")


def test_prior_sampling_and_loss():
    torch.manual_seed(2)
    m = BrainModel(cfg(prior={"width": 16, "depth": 2, "timesteps": 20, "sample_steps": 5, "target": "tokens"}))
    b = batch()
    tgt = torch.randn(9, 35)
    out = m(b, prior_target=tgt)
    assert out["prior_loss"].ndim == 0 and torch.isfinite(out["prior_loss"])
    out["prior_loss"].backward()
    assert m.adapters["subj01"].linear.weight.grad is not None  # the prior's loss trains the encoder too
    m.eval()
    s1, s2 = m.sample_prior(out, seed=5), m.sample_prior(out, seed=5)
    assert s1.shape == (9, 5, 7) and torch.equal(s1, s2)
    assert not torch.equal(s1, m.sample_prior(out, seed=6))
    with pytest.raises(InputError, match="prior option"):
        cfg(prior={"widht": 3})
    with pytest.raises(InputError, match="prior target 'latent'"):
        cfg(prior={"target": "latent"})


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(3)
    a = BrainModel(cfg(dropout=0.0, adapter_dropout=0.0))
    b = BrainModel(cfg(dropout=0.0, adapter_dropout=0.0, gradient_checkpointing=True))
    b.load_state_dict(a.state_dict())
    x = batch()
    for m in (a, b):
        m.train()
        m(x)["pooled"].square().sum().backward()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


# ------------------------------------------------------------------------------------ losses
def _unit(n, d, seed):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_contrastive_losses_agree_where_they_should():
    p, t = _unit(6, 12, 0), _unit(6, 12, 1)
    # MixCo with nothing mixed (β = 1) is InfoNCE
    torch.testing.assert_close(losses.mixco_nce(p, t, 0.1, torch.arange(6).flip(0), torch.ones(6)),
                               losses.info_nce(p, t, 0.1))
    # SoftCLIP with orthogonal targets and a low temperature is InfoNCE
    eye = torch.eye(6, 12)
    torch.testing.assert_close(losses.soft_clip_loss(p, eye, 0.01), losses.info_nce(p, eye, 0.01), atol=1e-4, rtol=1e-4)
    # a perfect prediction beats a random one
    assert losses.info_nce(t, t, 0.1) < losses.info_nce(p, t, 0.1)
    assert losses.soft_clip_loss(t, t, 0.1) < losses.soft_clip_loss(p, t, 0.1)


def _log_softmax_rows(m):
    return [[x - math.log(sum(math.exp(y) for y in row)) for x in row] for row in m]


def _explicit_mixco_nce(p, t, temp, perm, betas):
    """MindEye's BiMixCo loss from its definition, in loops: row i's label is betas[i] on i and
    1 - betas[i] on perm[i]; cross-entropy brain→image over rows, image→brain over columns."""
    n = len(p)
    logit = [[sum(a * b for a, b in zip(p[i], t[j])) / temp for j in range(n)] for i in range(n)]
    label = [[0.0] * n for _ in range(n)]
    for i in range(n):
        label[i][i] += betas[i]
        label[i][perm[i]] += 1 - betas[i]
    rows = _log_softmax_rows(logit)
    cols = _log_softmax_rows([list(c) for c in zip(*logit)])
    b2i = -sum(label[i][j] * rows[i][j] for i in range(n) for j in range(n)) / n
    i2b = -sum(label[i][j] * cols[j][i] for i in range(n) for j in range(n)) / n
    return (b2i + i2b) / 2


def test_mixco_mixes_convexly_with_beta_weights():
    torch.manual_seed(4)
    x = torch.randn(4000, 7)
    mixed, perm, b = losses.mixco(x, beta=0.15, prob=0.5)
    torch.testing.assert_close(mixed, x * b[:, None] + x[perm] * (1 - b)[:, None])
    assert sorted(perm.tolist()) == list(range(4000))
    kept = b == 1  # not selected: unmixed
    assert torch.equal(mixed[kept], x[kept])
    # selected with probability 0.5 (sd 0.008 here); their weights are Beta(0.15, 0.15): mean 1/2,
    # variance a b / ((a + b)^2 (a + b + 1)) = 0.0225 / (0.09 * 1.3) = 0.192 (standard errors 0.01, 0.004)
    sel = b[~kept].double()
    assert abs(len(sel) / 4000 - 0.5) < 0.04
    assert abs(float(sel.mean()) - 0.5) < 0.035 and abs(float(sel.var()) - 0.0225 / 0.117) < 0.01


def test_mixco_nce_by_hand_and_against_its_definition():
    # p = t = e1, e2 at temperature 1: logits I; sample 0 mixed 3:1 with sample 1, sample 1 not
    # mixed. Both directions: -(0.75 log s + 0.25 log(1 - s) + log s) / 2 with s = e / (e + 1)
    eye = torch.eye(2, dtype=torch.float64)
    got = losses.mixco_nce(eye, eye, 1.0, torch.tensor([1, 0]), torch.tensor([0.75, 1.0], dtype=torch.float64))
    s = math.e / (math.e + 1)
    assert float(got) == pytest.approx(-(1.75 * math.log(s) + 0.25 * math.log(1 - s)) / 2, abs=1e-12)
    # asymmetric similarities and a fixed point of perm (sample 2 "mixed" with itself: label 1 on 2)
    p, t = _unit(5, 12, 0).double(), _unit(5, 12, 1).double()
    perm, betas = torch.tensor([3, 0, 2, 4, 1]), torch.tensor([0.3, 1.0, 0.6, 0.9, 0.05], dtype=torch.float64)
    want = _explicit_mixco_nce(p.tolist(), t.tolist(), 0.07, perm.tolist(), betas.tolist())
    assert float(losses.mixco_nce(p, t, 0.07, perm, betas)) == pytest.approx(want, rel=1e-10)


def _explicit_soft_clip(p, t, temp):
    """MindEye's SoftCLIP from its definition: soft labels softmax_j(t_i . t_j / temp), the
    cross-entropy of the brain→image rows and of the image→brain columns with them."""
    n = len(p)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    soft = [[math.exp(v) for v in row] for row in ([[dot(t[i], t[j]) / temp for j in range(n)] for i in range(n)])]
    soft = [[v / sum(row) for v in row] for row in soft]
    logit = [[dot(p[i], t[j]) / temp for j in range(n)] for i in range(n)]
    rows = _log_softmax_rows(logit)
    cols = _log_softmax_rows([list(c) for c in zip(*logit)])
    b2i = -sum(soft[i][j] * rows[i][j] for i in range(n) for j in range(n)) / n
    i2b = -sum(soft[j][i] * cols[j][i] for i in range(n) for j in range(n)) / n
    return (b2i + i2b) / 2


def test_total_loss_terms_and_config():
    cfgl = losses.LossConfig(mse=0.5, lowlevel=2.0, mixco_fraction=0.5)
    assert cfgl.uses_mixco(0.2) and not cfgl.uses_mixco(0.6)
    out = {"pooled": torch.randn(5, 12, requires_grad=True), "latent": torch.randn(5, 3, 4, 6)}
    tgt = {"pooled": _unit(5, 12, 3), "latent": torch.randn(5, 3, 4, 6)}
    total, parts = losses.total_loss(cfgl, out, tgt, frac=0.7)
    assert set(parts) == {"contrastive_pooled", "mse_pooled", "lowlevel"}
    # each term by hand: past the MixCo fraction, SoftCLIP of the normalised outputs; MSE of unit
    # vectors summed over the width is 2 - 2 cos, weighted 0.5; L1 of the latents, weighted 2
    p = torch.nn.functional.normalize(out["pooled"].detach().double(), dim=-1)
    t = tgt["pooled"].double()
    assert parts["contrastive_pooled"] == pytest.approx(_explicit_soft_clip(p.tolist(), t.tolist(), 0.05), rel=1e-5)
    assert parts["mse_pooled"] == pytest.approx(0.5 * float((2 - 2 * (p * t).sum(1)).mean()), rel=1e-5)
    assert parts["lowlevel"] == pytest.approx(2.0 * float((out["latent"] - tgt["latent"]).abs().mean()), rel=1e-5)
    assert float(total.detach()) == pytest.approx(sum(parts.values()), rel=1e-6)
    total.backward()
    assert out["pooled"].grad is not None
    # within the MixCo fraction, with the batch's mix, the contrastive term is BiMixCo's
    perm, betas = torch.tensor([1, 0, 2, 4, 3]), torch.tensor([0.5, 1.0, 1.0, 0.2, 0.7])
    _, mixed = losses.total_loss(cfgl, out, tgt, frac=0.2, mix=(perm, betas))
    assert mixed["contrastive_pooled"] == pytest.approx(
        _explicit_mixco_nce(p.tolist(), t.tolist(), 0.05, perm.tolist(), betas.tolist()), rel=1e-5)
    with pytest.raises(InputError):
        losses.LossConfig(contrastive_kind="fuzzy")
    r = losses.LossConfig(temperature=0.1, temperature_end=0.01)
    assert r.temperature_at(0) == pytest.approx(0.1) and r.temperature_at(1) == pytest.approx(0.01)
