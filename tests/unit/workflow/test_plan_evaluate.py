"""The evaluate stage's planning: the judge CLIP (shipped, trained here, real), the image chain,
the retrieval head per method, and the parse-time checks of each."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from braindecode_pkg.errors import InputError
from braindecode_pkg.workflow.plan import Plan
from tests.unit.workflow.test_plan import REPO, config


@pytest.fixture
def shipped_judge(tmp_path_factory, monkeypatch):
    """A tiny CLIP where the shipped nsd-sim judge lies (it is trained separately)."""
    pytest.importorskip("open_clip")
    from braindecode_pkg.decoders import clip as mclip
    from tests.realpath import weights as W

    d = W.write_open_clip_local_dir(tmp_path_factory.mktemp("shipped") / "judge_clip", seed=3,
                                    formats=("safetensors",), tokenizer_files=False)
    monkeypatch.setattr(mclip, "SHIPPED_SIM_JUDGE", d)
    return d


def test_a_missing_shipped_judge_stops_at_parse_time(tmp_path, monkeypatch):
    from braindecode_pkg.decoders import clip as mclip

    where = tmp_path / "nsd-sim-1.0" / "judge_clip"
    monkeypatch.setattr(mclip, "SHIPPED_SIM_JUDGE", where)
    with pytest.raises(InputError) as e:
        Plan(config())
    msg = str(e.value)
    assert msg.startswith(f"config models.judge_clip: {where}: nsd-sim's judge CLIP not found")
    assert "braindecode-pkg train-sim-models --only judge_clip" in msg
    # trained by this workflow instead: nothing to find at parse time
    p = Plan(config({"models": {"sim_weights": "train"}}))
    assert p.judge_opts() == "--judge-clip sim --sim-judge-clip results/models/nsd-sim/judge_clip"
    assert p.judge_input() == ["results/models/nsd-sim/judge_clip/open_clip_config.json"]
    assert p.threads("train_sim_judge_clip") == 2 and p.resources("train_sim_judge_clip")["runtime"] == 240


def test_shipped_judge_and_the_default_evaluate_options(shipped_judge):
    p = Plan(config())
    assert p.judge_opts() == "--judge-clip sim"
    assert p.judge_input() == [str(shipped_judge / "open_clip_model.safetensors")]
    assert json.loads(shlex.split(p.image_protocol_arg())[0]) == {"base": None, "antialias": True}
    assert p.retrieval_heads_opt(["pretrain", "ridge-all"]) == "--retrieval-head pooled pooled"


def test_a_real_judge_is_checked_and_passed_as_json(tmp_path, shipped_judge):
    missing = {"arch": "ViT-L-14-quickgelu", "pretrained": "/nowhere/open_clip_pytorch_model.bin"}
    with pytest.raises(ValueError) as e:
        Plan(config({"models": {"judge_clip": missing}}))
    assert str(e.value).startswith("config models.judge_clip: /nowhere/open_clip_pytorch_model.bin: CLIP weights "
                                   "file not found")
    real = {"local_dir": str(shipped_judge)}
    p = Plan(config({"models": {"judge_clip": real, "sim_weights": "train"}}))
    opts = shlex.split(p.judge_opts())
    assert opts[0] == "--judge-clip" and json.loads(opts[1]) == real and len(opts) == 2
    assert p.judge_input() == []  # real weights: checked here, not a workflow input


@pytest.mark.parametrize("over, message", [
    ({"evaluate": {"retrieval_head": "tokens"}, "brain": {"heads": "pooled,latent"}},
     "config evaluate.retrieval_head: tokens, but brain.heads (pooled,latent) predicts no tokens"),
    ({"evaluate": {"retrieval_head": "tokens"}, "brain": {"heads": "pooled,tokens,latent"}, "embed": {"what": "pooled"}},
     "config evaluate.retrieval_head: tokens, but embed.what is 'pooled'"),
    ({"evaluate": {"retrieval_head": "tokens"}, "brain": {"heads": "available"}, "embed": {"what": "pooled"},
      "decode": {"img2img": False}},
     "config evaluate.retrieval_head: tokens, but embed.what is 'pooled'"),
])
def test_tokens_retrieval_needs_tokens_predicted_and_stored(over, message, shipped_judge):
    with pytest.raises(InputError) as e:
        Plan(config(over))
    assert str(e.value).startswith(message), str(e.value)


def test_retrieval_head_per_method(shipped_judge):
    p = Plan(config({"evaluate": {"retrieval_head": "tokens"}, "brain": {"heads": "pooled,tokens,latent",
                                                                         "ridge_heads": "pooled"}}))
    assert [p.retrieval_head(m) for m in ("pretrain", "adapt-k1", "scratch-k1", "true_embedding")] == ["tokens"] * 4
    assert p.retrieval_head("ridge-all") == p.retrieval_head("ridge-k2") == "pooled"  # ridge fitted pooled only
    assert p.retrieval_heads_opt(["adapt-k1", "ridge-k1"]) == "--retrieval-head tokens pooled"
    p = Plan(config({"evaluate": {"retrieval_head": "tokens"}, "brain": {"heads": "available"},
                     "decode": {"img2img": False}}))  # embed: both
    assert p.retrieval_head("ridge-k1") == "tokens"


def _preset(name: str) -> Plan:
    return Plan(config(yaml.safe_load((REPO / "config" / name).read_text())), check=False)


@pytest.mark.parametrize("name", ["nsd.yaml", "nsd-mindeye2.yaml"])
def test_real_presets_score_as_mindeye2_did(name):
    p = _preset(name)
    assert json.loads(shlex.split(p.image_protocol_arg())[0]) == {"base": 256, "antialias": False}
    judge = p.models["judge_clip"]
    assert judge["arch"] == "ViT-L-14-quickgelu" and judge["pretrained"].endswith("/open_clip_pytorch_model.bin")
    assert p.config["decode"]["max_images"] is None  # every test image reconstructed
    # the plan's own checks pass up to the judge's weights, which a user supplies
    with pytest.raises(InputError, match=r"^config models.judge_clip: .*CLIP weights file not found"):
        p.check_evaluate()


def test_mindeye2_retrieves_on_tokens_except_for_ridge():
    p = _preset("nsd-mindeye2.yaml")
    assert p.evaluate_config("retrieval_head") == "tokens" and p.config["decode"]["protocol"] == "avg_outputs"
    heads = {m: p.retrieval_head(m) for m in p.methods_of("01")}
    assert heads == {"adapt-k1": "tokens", "scratch-k1": "tokens", "ridge-k1": "pooled", "adapt-k40": "tokens",
                     "scratch-k40": "tokens", "ridge-k40": "pooled", "true_embedding": "tokens"}
    assert _preset("nsd.yaml").evaluate_config("retrieval_head") == "pooled"


def test_default_figures_keep_todays_chain_and_head():
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert cfg["evaluate"]["image_protocol"] == {"base": None, "antialias": True}
    assert cfg["evaluate"]["retrieval_head"] == "pooled" and cfg["models"]["judge_clip"] == "sim"
    for name in ("tiny.yaml",):
        assert "evaluate" not in yaml.safe_load((REPO / "config" / name).read_text())
    smk = (REPO / "workflow/rules/models.smk").read_text()
    assert "rule train_sim_judge_clip:" in smk and "--only judge_clip" in smk
    assert Path(REPO / "workflow/rules/evaluate.smk").read_text().count("--clip") == 0
