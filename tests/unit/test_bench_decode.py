"""benchmarks/bench_decode.py's pure parts: "today's" recipe is the default without issue 18's
parts and still a valid plan; the validation choices' tie rule; the targets' spread over seeds."""

from __future__ import annotations

import pytest

from braindecode_pkg.workflow.plan import Plan


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("bench_decode")


def test_today_is_the_default_without_prior_latent_img2img_or_best_of_n(bench):
    cfg = bench._config()
    assert cfg["brain"]["pretrain"]["model"]["prior"] and "latent" in cfg["brain"]["heads"]
    t = bench.today(cfg)
    assert all("prior" not in (t["brain"][r].get("model") or {}) for r in ("pretrain", "adapt", "scratch"))
    assert t["brain"]["heads"] == "pooled"
    assert (t["decode"]["source"], t["decode"]["img2img"], t["decode"]["n_samples"]) == ("direction", False, 1)
    assert t["brain"]["validation"] == cfg["brain"]["validation"]  # trained on the same images
    p = Plan(t, check=False)
    p.check_decode()  # a consistent recipe
    assert p.infer_opts("pretrain") == "" and not p.want_latent
    assert cfg["brain"]["pretrain"]["model"]["prior"]  # the config itself is untouched


def test_ties_go_to_the_lower_strength_and_the_fewer_samples(bench):
    strength = {0.5: {"twoway_clip": 0.726}, 0.7: {"twoway_clip": 0.747}, 0.85: {"twoway_clip": 0.748}}
    assert bench.pick(strength) == 0.7  # 0.747 within 0.005 of 0.748
    assert bench.pick(strength, tie=0.0) == 0.85
    n = {1: {"twoway_clip": 0.748}, 2: {"twoway_clip": 0.770}, 4: {"twoway_clip": 0.794}}
    assert bench.pick(n) == 4 and bench.pick(n, tie=0.03) == 2


def test_targets_table_over_seeds(bench):
    def seed(pre, ridge, ad, sc, rk, pre_today):
        return {"pretrain": {"twoway_clip": pre, "pixcorr": 0.5, "ssim": 0.8, "cider": 1.7, "attr_acc": 0.6,
                             "retrieval_brain2image_top1": 0.5},
                "ridge-all": {"twoway_clip": ridge, "pixcorr": 0.4, "ssim": 0.7},
                "adapt-k1": {"twoway_clip": ad, "retrieval_brain2image_top1": 0.3},
                "scratch-k1": {"twoway_clip": sc, "retrieval_brain2image_top1": 0.1},
                "ridge-k1": {"twoway_clip": rk},
                "pretrain (today)": {"retrieval_brain2image_top1": pre_today},
                "adapt-k1 (today)": {"retrieval_brain2image_top1": 0.2},
                "scratch-k1 (today)": {"retrieval_brain2image_top1": 0.08}}

    t = bench._ratio_table({0: seed(0.80, 0.72, 0.70, 0.66, 0.61, 0.55), 1: seed(0.84, 0.72, 0.72, 0.70, 0.61, 0.57)})
    d = t["pretrained - ridge two-way"]
    assert d["per_seed"] == pytest.approx([0.08, 0.12]) and d["mean"] == pytest.approx(0.10)
    assert d["sd"] == pytest.approx(0.02 * 2 ** 0.5)  # sample sd of 0.08 and 0.12
    assert t["adapted-k1 / scratch-k1 retrieval"]["mean"] == pytest.approx(3.0)
    assert t["pretrained retrieval, today's recipe"]["per_seed"] == [0.55, 0.57]
    assert t["adapted-k1 / scratch-k1 retrieval, today's recipe"]["mean"] == pytest.approx(2.5)
    assert t["pretrained - ridge PixCorr"]["mean"] == pytest.approx(0.1)
