"""Job resources from the config and multi-GPU training, planned with `snakemake -n -p` (no job
runs): the requests each rule's jobs make and the accelerate launch of a training rule given more
than one GPU."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    j = jobs(plan(tmp_path, REPO / "config/tiny.yaml", over))
    pre = j["pretrain"][0]["cmd"]
    assert f"{ACCEL} 4 --num_machines 1 --main_process_port 0" in pre
    assert pre.index(ACCEL) < pre.index("-m braindecode_pkg train --regime pretrain")
    assert "--set train.threads=2 " in pre  # 8 cores over 4 processes
    for rule in ("adapt", "scratch"):  # one GPU, or none: the plain command
        cmd = j[rule][0]["cmd"]
        assert "accelerate" not in cmd and re.search(r"python\S* -m braindecode_pkg train --regime " + rule, cmd)
        assert "--set train.threads=2 " in cmd


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
])
def test_bad_resources_fail_the_schema(tmp_path, text, words):
    out = _fails(tmp_path, text)
    assert all(w in out for w in words), out[-2000:]
