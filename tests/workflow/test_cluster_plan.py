"""Job resources from the config and multi-GPU training, planned with `snakemake -n -p` (no job
runs): the requests each rule's jobs make, the accelerate launch of a training rule given more
than one GPU, and the MindEye2-scale preset against an NSD-shaped tree of placeholder files."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from braindecode_pkg.data.placeholders import write_placeholders

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def plan(workdir: Path, *configfiles, extra=()) -> str:
    r = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "-n", "-p", "--cores", "2", "--configfile",
                        *map(str, configfiles), *extra], capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    return out


def jobs(out: str) -> dict:
    """rule name -> list of (resources line, shell command) of each planned job."""
    found: dict = {}
    for block in re.split(r"\n(?=\[[A-Z][a-z]{2} )", out):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not m:
            continue
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        shell = block.split("\n    ", 1)[-1]
        cmd = [ln.strip() for ln in shell.splitlines() if "-m braindecode_pkg" in ln or "accelerate" in ln]
        found.setdefault(m.group(1), []).append({
            "resources": dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {},
            "threads": int(threads.group(1)) if threads else 1,
            "cmd": cmd[0] if cmd else "",
        })
    return found


def counts(out: str) -> dict:
    stats = out.split("Job stats")[1].split("\n\n")[0]
    return {ln.split()[0]: int(ln.split()[1]) for ln in stats.splitlines() if re.match(r"^\w+\s+\d+$", ln.strip())}


ACCEL = "-m accelerate.commands.launch --multi_gpu --num_processes"


def test_rule_resources_come_from_the_config(tmp_path):
    over = tmp_path / "res.yaml"
    over.write_text("resources:\n  default: {mem_mb: 2500, runtime: 45, partition: short}\n"
                    "  pretrain: {cpus: 4, gpus: 2, mem_mb: 9000, runtime: 300, partition: gpu}\n")
    j = jobs(plan(tmp_path, REPO / "config/tiny.yaml", over))
    (pre,) = j["pretrain"]
    assert pre["threads"] == 2  # capped at --cores 2 on this machine; a cluster job gets its 4
    assert {k: pre["resources"][k] for k in ("mem_mb", "runtime", "gpu", "slurm_partition")} == \
        {"mem_mb": "9000", "runtime": "300", "gpu": "2", "slurm_partition": "gpu"}
    for rule in ("infer", "oracle", "collect", "report"):
        for job in j[rule]:
            assert {k: job["resources"][k] for k in ("mem_mb", "runtime", "gpu", "slurm_partition")} == \
                {"mem_mb": "2500", "runtime": "45", "gpu": "0", "slurm_partition": "short"}, rule
    # a rule's own entry (config/config.yaml: preprocess mem_mb 1000) wins over the default
    assert {(job["resources"]["mem_mb"], job["resources"]["slurm_partition"]) for job in j["preprocess"]} == \
        {("1000", "short")}
    # config/config.yaml's per-rule cores: the two-thread stages keep two, the rest one
    assert j["embed"][0]["threads"] == 2 and j["ridge"][0]["threads"] == 2 and j["infer"][0]["threads"] == 1


def test_training_with_several_gpus_launches_through_accelerate(tmp_path):
    over = tmp_path / "gpus.yaml"
    over.write_text("resources:\n  pretrain: {cpus: 8, gpus: 4}\n  adapt: {gpus: 1}\n")
    j = jobs(plan(tmp_path, REPO / "config/tiny.yaml", over, extra=("--cores", "8")))
    pre = j["pretrain"][0]["cmd"]
    assert f"{ACCEL} 4 --num_machines 1 --main_process_port 0" in pre
    assert pre.index(ACCEL) < pre.index("-m braindecode_pkg train --regime pretrain")
    assert "--set train.threads=2 " in pre  # 8 cores over 4 processes
    for rule in ("adapt", "scratch"):  # one GPU, or none: the plain command
        cmd = j[rule][0]["cmd"]
        assert "accelerate" not in cmd and re.search(r"python\S* -m braindecode_pkg train --regime " + rule, cmd)
        assert "--set train.threads=2 " in cmd
    # the launch follows the job's own request: --set-resources and --set-threads change both
    j = jobs(plan(tmp_path, REPO / "config/tiny.yaml", over,
                  extra=("--cores", "8", "--set-resources", "pretrain:gpu=2", "--set-threads", "pretrain=6")))
    assert f"{ACCEL} 2 " in j["pretrain"][0]["cmd"] and "--set train.threads=3 " in j["pretrain"][0]["cmd"]
    assert j["pretrain"][0]["resources"]["gpu"] == "2"


def test_cpu_only_default_runs_training_plainly(tmp_path):
    j = jobs(plan(tmp_path, REPO / "config/tiny.yaml"))
    for rule in ("pretrain", "adapt", "scratch"):
        assert "accelerate" not in j[rule][0]["cmd"] and j[rule][0]["resources"]["gpu"] == "0"


def _fails(tmp_path, text):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    r = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "-n", "--cores", "2", "--configfile",
                        str(REPO / "config/tiny.yaml"), str(bad)], capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and not (tmp_path / "results").exists()
    return r.stdout + r.stderr


def test_batch_that_does_not_split_over_the_gpus_stops_before_any_job(tmp_path):
    out = _fails(tmp_path, "resources:\n  scratch: {gpus: 3}\n")  # tiny.yaml: scratch batch_size 32
    assert "resources.scratch.gpus = 3" in out and "batch size of brain.scratch.train (32)" in out


@pytest.mark.parametrize("text, words", [
    ("resources:\n  pretrian: {gpus: 2}\n", ["pretrian", "Additional properties are not allowed"]),
    ("resources:\n  pretrain: {gpu: 2}\n", ["gpu", "Additional properties are not allowed"]),
    ("resources:\n  pretrain: {gpus: -1}\n", ["-1", "minimum"]),
    ("brain:\n  ridge_heads: latent\n", ["latent", "does not match"]),  # ridge fits CLIP heads only
])
def test_bad_resources_fail_the_schema(tmp_path, text, words):
    out = _fails(tmp_path, text)
    assert all(w in out for w in words), out[-2000:]


# ------------------------------------------------------------------------ MindEye2 scale
def placeholder_weights(root: Path, clip_arch: str = "ViT-bigG-14") -> Path:
    """Files where config/nsd-mindeye2.yaml's checks look for its weights (empty where only
    existence is checked; the CLIP file, whose format is checked at parse time, a one-tensor
    torch checkpoint), and a config that points there."""
    import torch

    from braindecode_pkg.decoders import captioner

    clip = root / "clip/open_clip_pytorch_model.bin"
    unclip = root / "unclip"
    cap, lm = root / "captioner", root / "gpt2"
    for d in (clip.parent, unclip, cap, lm):
        d.mkdir(parents=True)
    torch.save({"placeholder": torch.zeros(1)}, clip)
    (unclip / "model_index.json").write_text(json.dumps({"_class_name": "StableUnCLIPImg2ImgPipeline"}))
    (cap / "config.json").write_text(json.dumps({"format": captioner.FORMAT, "mapper": {}}))
    for f in (cap / "model.safetensors", lm / "config.json", lm / "model.safetensors", lm / "tokenizer.json"):
        f.touch()
    cfg = root / "weights.yaml"
    judge = root / "judge/open_clip_pytorch_model.bin"
    judge.parent.mkdir(parents=True)
    torch.save({"placeholder": torch.zeros(1)}, judge)
    cfg.write_text(f"models:\n  clip: {{arch: {clip_arch}, pretrained: {clip}}}\n"
                   f"  image_decoder: {{pipeline_dir: {unclip}}}\n  captioner: {{dir: {cap}, lm: {lm}, train: null}}\n"
                   f"  judge_clip: {{arch: ViT-L-14-quickgelu, pretrained: {judge}}}\n")
    return cfg


def test_mindeye2_preset_plans_against_an_nsd_shaped_tree(tmp_path):
    nsd = tmp_path / "nsd"
    write_placeholders(nsd)
    weights = placeholder_weights(tmp_path / "weights")
    root = tmp_path / "root.yaml"
    root.write_text(f"nsd_root: {nsd}\n")
    out = plan(tmp_path, REPO / "config/nsd-mindeye2.yaml", weights, root, extra=("--cores", "64"))
    c = counts(out)
    # 8 subjects; subject 1 held out and adapted from 1 and 40 sessions; ridge for 7 + 2
    assert {k: c.get(k) for k in ("preprocess", "embed", "latents", "pretrain", "adapt", "scratch", "ridge",
                                  "infer", "true_embedding", "collect", "report")} == \
        {"preprocess": 8, "embed": 1, "latents": 1, "pretrain": 1, "adapt": 2, "scratch": 2, "ridge": 9,
         "infer": 20, "true_embedding": 8, "collect": 1, "report": 1}
    assert not {"simulate", "oracle", "preprocess_psc"} & set(c)
    j = jobs(out)
    pre = j["pretrain"][0]
    assert f"{ACCEL} 8 " in pre["cmd"] and "--set train.threads=8 " in pre["cmd"]  # 64 cores, 8 processes
    assert "--set model.width=4096 " in pre["cmd"] and "--set model.n_blocks=4 " in pre["cmd"]
    assert "--set train.batch_size=192 " in pre["cmd"]
    assert "--heads pooled,tokens" in pre["cmd"] and "--latent results/embed/latent.h5" in pre["cmd"]
    assert (pre["resources"]["gpu"], pre["resources"]["mem_mb"], pre["resources"]["runtime"]) == ("8", "900000", "4320")
    for job in j["adapt"] + j["scratch"]:
        assert f"{ACCEL} 4 " in job["cmd"] and job["resources"]["gpu"] == "4"
    assert {re.search(r"--sessions first:(\d+)", job["cmd"]).group(1) for job in j["adapt"]} == {"1", "40"}
    assert all("accelerate" not in job["cmd"] for rule in ("embed", "infer", "ridge") for job in j[rule])
    assert all("--heads pooled " in job["cmd"] for job in j["ridge"])  # brain.ridge_heads
    # the training settings are ones the package accepts (a typo would only fail once the job runs)
    import dataclasses

    from braindecode_pkg.brain.model import BrainConfig
    from braindecode_pkg.brain.train import load_run_config

    for rule in ("pretrain", "adapt", "scratch"):
        args = shlex.split(j[rule][0]["cmd"].split(">")[0])
        rc = load_run_config(overrides=[args[i + 1] for i, a in enumerate(args) if a == "--set"])
        assert set(rc.model) <= {f.name for f in dataclasses.fields(BrainConfig)}, rule
    assert j["embed"][0]["resources"]["gpu"] == "1"
    # every preprocess job reads the subject's NSD files from the tree
    subjects = sorted(re.search(r"--subject (\d+)", job["cmd"]).group(1) for job in j["preprocess"])
    assert subjects == [f"{s:02d}" for s in range(1, 9)]
    assert all(f"--nsd-root {nsd}" in job["cmd"] for job in j["preprocess"])


def test_real_nsd_root_missing_files_stop_before_any_job(tmp_path):
    nsd = tmp_path / "nsd"
    write_placeholders(nsd, subjects=(1, 2, 5, 7), formats=("hdf5",))
    (nsd / "nsddata_betas/ppdata/subj05/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.hdf5").unlink()
    out = _fails(tmp_path, f"nsd_root: {nsd}\nsubjects: [1, 2, 5, 7]\nbrain: {{heldout: 7}}\n")
    assert "config nsd_root" in out and "subj05/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session01.hdf5" in out
    out = _fails(tmp_path, f"nsd_root: {tmp_path / 'nowhere'}\nsubjects: [1, 2]\nbrain: {{heldout: 2}}\n")
    assert f"{tmp_path / 'nowhere'}: NSD root not found" in out


def test_the_package_declares_ranges_and_the_constraints_pin_exact_versions():
    """pip install of the package keeps a cluster's own torch; make's install is exact."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    by = {re.split(r"[<>=!~ ]", d, 1)[0]: d for d in deps}
    for name in ("torch", "torchvision"):
        assert "==" not in by[name] and ">=" in by[name], by[name]
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().split() if "==" in line)
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()
