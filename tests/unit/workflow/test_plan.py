"""The workflow's planning (braindecode_pkg.workflow.plan) without Snakemake: what the rules run,
on which files, with which options, and the checks that stop a bad config before any job."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from braindecode_pkg.workflow.plan import GROUP, PRIORITY, Plan, parent

REPO = Path(__file__).resolve().parents[3]


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config(*over: dict, preset: str | None = None) -> dict:
    """config/config.yaml with a preset and overrides on top, validated (defaults filled) as the
    Snakefile does."""
    from snakemake.utils import validate

    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    if preset:
        cfg = _merge(cfg, yaml.safe_load((REPO / "config" / preset).read_text()))
    for o in over:
        cfg = _merge(cfg, o)
    validate(cfg, str(REPO / "config/schema.yaml"))
    return cfg


def test_default_plan_methods_and_targets():
    p = Plan(config(), python="/py/bin/python")
    assert p.subjects == ["01", "02", "03", "04"] and p.heldout == "04" and p.ks == [1, 2, 4]
    assert p.pretrain_subjects == ["01", "02", "03"]
    assert p.cli == "/py/bin/python -m braindecode_pkg"
    assert p.nsd_root == "results/sim/nsd" and p.simulated
    methods = p.brain_methods()
    assert methods[:6] == [("pretrain", "01"), ("pretrain", "02"), ("pretrain", "03"),
                           ("ridge-all", "01"), ("ridge-all", "02"), ("ridge-all", "03")]
    assert methods[6:9] == [("adapt-k1", "04"), ("scratch-k1", "04"), ("ridge-k1", "04")]
    assert len(methods) == 6 + 3 * 3
    # every decoded (method, subject) is scored once, plus the oracle per subject on nsd-sim
    assert len(p.eval_parts()) == len(methods) + 4 + 4
    assert p.part_file("oracle", "02") == "results/eval/parts/oracle/subj02.h5"
    t = p.all_targets()
    assert t[:4] == [f"results/prep/subj0{i}.h5" for i in range(1, 5)] and t[4] == "results/embed/clip.h5"
    assert t[-2:] == ["results/eval/metrics.tsv", "results/report/index.html"]
    assert p.model_file("ridge-k2", "04") == "results/models/brain/ridge-k2/subj04/model.safetensors"
    assert p.model_file("adapt-k2", "04") == "results/models/brain/adapt-k2/model.safetensors"
    assert p.method_model(SimpleNamespace(method="pretrain", subject="02")) == \
        "results/models/brain/pretrain/model.safetensors"
    assert parent("a/b/c/d.h5", 2) == "a/b"


def test_method_groups_split_each_subject_into_near_equal_groups():
    p = Plan(config())
    groups = p.method_groups()
    # subjects 1-3: pretrain, ridge-all, true_embedding (one job); subject 4: 3 methods x 3 Ks + truth = 10
    assert {g: len(ms) for g, (_, ms) in groups.items()} == \
        {"subj01": 3, "subj02": 3, "subj03": 3, "subj04_1": 4, "subj04_2": 3, "subj04_3": 3}
    held = [m for g, (s, ms) in groups.items() if s == "04" for m in ms]
    assert sorted(held) == sorted(p.methods_of("04")) and len(held) == 10
    assert all(len(ms) <= GROUP for _, ms in groups.values())
    # the group holding the adapted models is on the main chain and comes first
    first = groups["subj04_1"][1]
    assert p.on_main_chain(first) and p.group_priority("decode", first) == PRIORITY["decode_main"]
    assert p.group_priority("decode", ["ridge-k1"]) == PRIORITY["decode"] < PRIORITY["decode_main"]
    assert p.infer_priority(SimpleNamespace(method="adapt-k4")) == PRIORITY["infer_main"]


def test_regime_options_inherit_the_pretrain_sections():
    cfg = config()
    p = Plan(cfg)
    pre = shlex.split(p.regime_sets("pretrain"))
    assert pre[0] == "--set" and all(a == "--set" for a in pre[::2])
    sets = dict(kv.split("=", 1) for kv in pre[1::2])
    assert json.loads(sets["model.width"]) == cfg["brain"]["pretrain"]["model"]["width"]
    assert json.loads(sets["loss.mixco_fraction"]) == cfg["brain"]["pretrain"]["loss"]["mixco_fraction"]
    adapt = dict(kv.split("=", 1) for kv in shlex.split(p.regime_sets("adapt"))[1::2])
    # adapt takes the loss from pretrain but never the architecture (it comes from the pretrained model)
    assert "loss.mixco_fraction" in adapt and not any(k.startswith("model.") for k in adapt)
    assert json.loads(adapt["train.steps"]) == cfg["brain"]["adapt"]["train"]["steps"]
    scratch = dict(kv.split("=", 1) for kv in shlex.split(p.regime_sets("scratch"))[1::2])
    assert json.loads(scratch["model.width"]) == cfg["brain"]["pretrain"]["model"]["width"]


def test_stage_options_quote_values_and_follow_the_config():
    p = Plan(config({"preprocess": {"roi": "prf-visualrois:1,2"}}))
    opts = shlex.split(p.stage_opts("preprocess", normalisation="none"))
    got = dict(zip(opts[::2], opts[1::2]))
    assert got["--roi"] == "prf-visualrois:1,2" and got["--normalisation"] == "none"
    assert got["--sessions"] == "all"
    d = dict(kv.split("=", 1) for kv in shlex.split(p.decode_sets())[1::2])
    assert json.loads(d["n_samples"]) == p.config["decode"]["n_samples"]
    sim = shlex.split(p.sim_overrides())
    assert sim == ["--set", "subjects=[1, 2, 3, 4]"]
    assert json.loads(shlex.split(p.config_arg())[0]) == p.config


def test_shipped_and_trained_sim_models_and_real_weights(tmp_path):
    shipped = Plan(config())
    assert shipped.trained_sim_input("clip") == [] and shipped.decoders_input() == []
    assert shipped.clip_input()[0].endswith("sim/weights/nsd-sim-1.0/clip/open_clip_model.safetensors")
    assert Path(shipped.clip_input()[0]).is_file()
    assert shipped.decoders_opts() == "--image-decoder sim --captioner sim --clip sim"
    trained = Plan(config({"models": {"sim_weights": "train"}}))
    assert trained.sim_dir_opt("image_decoder") == "--sim-image-decoder results/models/nsd-sim/image_decoder"
    assert trained.clip_input() == [trained.sim_model_file("clip")]
    assert len(trained.decoders_input()) == 3
    assert trained.decoders_opts().endswith("--sim-clip results/models/nsd-sim/clip --sim-image-decoder "
                                            "results/models/nsd-sim/image_decoder --sim-captioner "
                                            "results/models/nsd-sim/captioner")
    assert trained.sim_chain_clip_opt() == ""
    # a real CLIP: its JSON on the command line, and the trained sim decoders follow it in one stage each
    w = tmp_path / "clip.safetensors"
    from safetensors.numpy import save_file
    import numpy as np

    save_file({"x": np.zeros(2, np.float32)}, str(w))
    real = {"arch": "ViT-B-32", "pretrained": str(w)}
    p = Plan(config({"models": {"sim_weights": "train", "clip": real}}))
    assert json.loads(shlex.split(p.model_arg("clip"))[0]) == real
    assert p.sim_chain_clip_opt().startswith("--clip ") and p.clip_input() == []
    assert p.trained_sim("clip") is None and p.trained_sim("captioner") is not None


def test_nsd_sim_models_named_by_a_mapping_are_nsd_sim_models_too():
    # {local_dir: sim} is "sim" to every stage: with sim_weights: train the stages read the models
    # trained here, not the shipped ones
    over = {"clip": {"local_dir": "sim"}, "judge_clip": {"local_dir": "sim"},
            "image_decoder": {"pipeline_dir": "sim"}}
    trained = Plan(config({"models": {"sim_weights": "train", **over}}))
    assert trained.trained_sim("clip") == "results/models/nsd-sim/clip"
    assert trained.clip_input() == [trained.sim_model_file("clip")] and trained.sim_chain_clip_opt() == ""
    assert trained.judge_input() == [trained.sim_model_file("judge_clip")]
    assert "--sim-image-decoder results/models/nsd-sim/image_decoder" in trained.decoders_opts()
    assert len(trained.decoders_input()) == 3
    shipped = Plan(config({"models": over}))
    assert shipped.clip_input()[0].endswith("sim/weights/nsd-sim-1.0/clip/open_clip_model.safetensors")
    assert shipped.trained_sim("clip") is None and shipped.sim_dir_opt("clip") == ""


@pytest.mark.parametrize("over, message", [
    ({"brain": {"heldout": 7}}, "config brain.heldout: subject 7 is not in subjects"),
    ({"subjects": [2], "brain": {"heldout": 2}}, "config brain.heldout: no subject left to pretrain on"),
    ({"models": {"clip": {"arch": "ViT-B-32", "pretrained": "/nowhere/open_clip_pytorch_model.bin"}}},
     "config models.clip: /nowhere/open_clip_pytorch_model.bin: CLIP weights file not found"),
    ({"evaluate": {"feature_weights": {"alexnet": "/nowhere/alexnet.pth"}}},
     "config evaluate.feature_weights.alexnet:"),
    ({"nsd_root": "/nowhere/nsd"}, "config nsd_root:"),
    ({"resources": {"pretrain": {"gpus": 3}}}, "config"),
])
def test_bad_configs_stop_at_parse_time_naming_the_key(over, message):
    with pytest.raises(ValueError) as e:
        Plan(config(over))
    assert str(e.value).startswith(message), str(e.value)


def test_training_launcher_and_threads_per_process():
    p = Plan(config({"resources": {"pretrain": {"cpus": 8, "gpus": 4}}}), python="/py")
    assert p.threads("pretrain") == 8 and p.train_gpus("pretrain") == 4
    assert p.resources("pretrain")["gpu"] == 4
    assert "--num_processes 4" in p.train_launcher(None, SimpleNamespace(gpu=4))
    assert p.train_launcher(None, SimpleNamespace(gpu=1)) == "/py -m braindecode_pkg"
    assert p.train_threads(None, 8, SimpleNamespace(gpu=4)) == 2


def test_stages_given_a_gpu_run_on_it_and_the_rest_on_the_cpu():
    p = Plan(config({"resources": {"embed": {"gpus": 1}, "decode": {"gpus": 2}}}))
    assert p.device_opt("embed") == "--device cuda" and p.device_opt("decode") == "--device cuda"
    assert p.device_opt("latents") == p.device_opt("infer") == p.device_opt("evaluate") == ""
    # the real preset asks a GPU for every stage that runs CLIP, the decoders or the brain model
    real = yaml.safe_load((REPO / "config/nsd.yaml").read_text())
    p = Plan(config(real), check=False)
    for rule in ("embed", "latents", "infer", "decode", "evaluate"):
        assert p.device_opt(rule) == "--device cuda", rule
    assert p.device_opt("preprocess") == p.device_opt("ridge") == ""


def test_decode_recipe_asks_only_for_what_the_models_have():
    p = Plan(config())
    # the default recipe: a prior in pretrain (adapt and scratch inherit it), a latent head
    assert p.has_prior("pretrain") and p.has_prior("adapt-k1") and p.has_prior("scratch-k4")
    assert not p.has_prior("ridge-all") and not p.has_prior("ridge-k1") and not p.has_prior("true_embedding")
    assert p.infer_opts("adapt-k2") == "--prior" and p.infer_opts("ridge-k2") == ""
    assert p.validation_opt() == "--validation 100:0"
    direct = Plan(config({"decode": {"source": "direction"}}))
    assert direct.infer_opts("pretrain") == ""
    assert Plan(config({"brain": {"validation": {"images": 0}}})).validation_opt() == ""
    no_prior = {"brain": {"pretrain": {"model": {"prior": None}}}}
    with pytest.raises(ValueError, match="config decode.source: 'prior'.*brain.pretrain.model.prior"):
        Plan(config(no_prior))
    Plan(config(no_prior, {"decode": {"source": "direction"}}))  # fine without the prior source
    with pytest.raises(ValueError, match="config decode.img2img.*without 'latent'"):
        Plan(config({"brain": {"heads": "pooled"}}))
    # scratch may give its own model; then it needs its own prior
    own = {"brain": {"scratch": {"model": {"width": 64}}}}
    with pytest.raises(ValueError, match="brain.scratch.model.prior"):
        Plan(config(own))


def test_nsd_sim_models_are_refused_with_a_real_nsd_root(tmp_path):
    """A copy of the default config with only nsd_root set would embed real NSD images with
    nsd-sim's 128-d CLIP and score them with its judge: stopped at parse time, naming the key."""
    from braindecode_pkg.data.placeholders import write_placeholders
    from braindecode_pkg.workflow.plan import names_sim

    nsd = tmp_path / "nsd"
    write_placeholders(nsd, subjects=(1, 2), sessions="1")
    real = {"nsd_root": str(nsd), "subjects": [1, 2], "brain": {"heldout": 2}, "preprocess": {"sessions": "1"}}
    with pytest.raises(ValueError) as e:
        Plan(config(real))
    assert str(e.value).startswith(f"config models.clip: 'sim' is nsd-sim's own model (trained on simulated "
                                   f"scenes), but nsd_root is a real NSD root ({nsd})"), str(e.value)
    assert "config/nsd.yaml" in str(e.value)
    assert names_sim("sim") and names_sim({"pipeline_dir": "sim"}) and names_sim({"dir": " sim", "lm": "/w/gpt2"})
    assert not names_sim({"arch": "ViT-H-14", "pretrained": "/w/sim.bin"}) and not names_sim("/weights/sim")
    # the same config on nsd-sim plans, and so does a root that is an nsd-sim world written elsewhere
    Plan(config({"subjects": [1, 2], "brain": {"heldout": 2}}))
    (tmp_path / "sim_truth").mkdir()
    (tmp_path / "sim_truth/manifest.json").write_text("{}")
    Plan(config(real))


def test_a_caption_decoder_trained_by_the_workflow(tmp_path):
    """models.captioner {lm, train}: rule train_captioner trains it on the embed file after embed;
    decode reads it from the rule's folder; the language model and the options are checked first."""
    from tests.realpath.weights import write_gpt2

    lm = write_gpt2(tmp_path / "gpt2", with_bin=False)
    p = Plan(config({"models": {"captioner": {"lm": str(lm), "train": {"steps": 30, "batch_size": 8}}}}))
    assert p.captioner_trained and p.captioner_dir == "results/models/captioner"
    assert p.captioner_input() == ["results/models/captioner/config.json"]
    assert p.decoders_input() == ["results/models/captioner/config.json"]
    assert shlex.split(p.captioner_train_opts()) == ["--steps", "30", "--batch-size", "8"]
    assert shlex.split(p.captioner_lm_arg()) == [str(lm)]
    opts = shlex.split(p.decoders_opts())
    assert json.loads(opts[opts.index("--captioner") + 1]) == {"dir": "results/models/captioner", "lm": str(lm)}
    assert p.threads("train_captioner") == 1 and PRIORITY["adapt"] > PRIORITY["train_captioner"] > \
        PRIORITY["decode_main"]
    # the usual forms train nothing
    assert not Plan(config()).captioner_trained and Plan(config()).captioner_input() == []
    for bad, message in (
        ({"lm": str(tmp_path / "nowhere"), "train": {}}, "config models.captioner.lm: "),
        ({"lm": str(lm), "train": {"epochs": 3}}, "config models.captioner.train: unknown option(s) ['epochs']"),
        ({"lm": str(lm), "train": 5}, "config models.captioner.train: a mapping"),
        ({"train": {}}, "config models.captioner: a caption decoder trained here takes 'lm'"),
        ({"lm": str(lm), "extra": 1, "train": {}}, "config models.captioner: a caption decoder trained here"),
        ({"lm": str(lm), "dir": "/w/cap", "train": {}}, "config models.captioner: either 'dir'"),
    ):
        with pytest.raises(ValueError) as e:
            Plan(config({"models": {"captioner": bad}}))
        assert str(e.value).startswith(message), str(e.value)
    # train: null (a file merged over one that trains) names a mapper trained before, checked as such
    with pytest.raises(ValueError, match="config models.captioner: .*/w/cap"):
        Plan(config({"models": {"captioner": {"dir": "/w/cap", "lm": str(lm), "train": None}}}))
