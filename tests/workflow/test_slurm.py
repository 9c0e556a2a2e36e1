"""workflow/profiles/slurm end to end: the tiny preset through sbatch on a real single-node SLURM
cluster that this module configures and starts (tests/workflow/slurm_cluster.py). Where SLURM
cannot start here the test skips and says why. Marked slow: 13.9 min on 2 busy cores (36 jobs, each
starting its own snakemake inside the allocation); CI (.ci/run) runs it after the default suite."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from . import slurm_cluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def slurm():
    try:
        cluster = slurm_cluster.start()
    except slurm_cluster.Unavailable as e:
        pytest.skip(f"no SLURM cluster: {e}")
    yield cluster
    cluster.stop()


@pytest.mark.slow
def test_tiny_preset_runs_through_sbatch(slurm, tmp_path):
    # the rule resources of config/config.yaml, made to fit any test machine, and one rule's own
    over = tmp_path / "cluster.yaml"
    over.write_text(f"resources:\n  default: {{mem_mb: 600, runtime: 20, partition: {slurm_cluster.PARTITION}}}\n"
                    "  pretrain: {cpus: 2, mem_mb: 700, runtime: 30}\n")
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "--profile", str(REPO / "workflow/profiles/slurm"),
         "--configfile", str(REPO / "config/tiny.yaml"), str(over),
         # the test cluster keeps no accounting database (no sacct); poll soon after a job ends
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"],
        env=slurm.env, capture_output=True, text=True, timeout=3600,  # a guard against hangs, not a time limit
    )
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-5000:]

    res = tmp_path / "results"
    with open(res / "eval/metrics.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    methods = {row["method"] for row in rows}
    assert {"pretrained", "adapted-k1", "scratch-k1", "ridge-k1", "true_embedding", "oracle"} <= methods
    assert (res / "report/index.html").stat().st_size > 10_000

    # every job of the DAG but the target-only rule `all` went through sbatch and completed
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log)
    assert done, log[-3000:]
    n_jobs = int(done[-1][1]) - 1
    submitted = dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log))
    jobs = {j["id"]: j for j in slurm.jobs()}
    assert len(submitted) == n_jobs and set(submitted) <= set(jobs)
    assert all(jobs[i]["state"] == "COMPLETED" for i in submitted), [jobs[i] for i in submitted]
    rules = {re.sub(r"_wildcards_.*", "", jobs[i]["comment"]).removeprefix("rule_") for i in submitted}
    assert {"simulate", "preprocess", "embed", "latents", "pretrain", "adapt", "scratch", "ridge", "infer",
            "true_embedding", "preprocess_psc", "oracle", "collect", "report"} <= rules
    assert any(x.startswith("decode_subj") for x in rules) and any(x.startswith("evaluate_subj") for x in rules)
    # each kept SLURM log holds the job's own snakemake run of that rule
    for i, path in submitted.items():
        rule = re.sub(r"_wildcards_.*", "", jobs[i]["comment"]).removeprefix("rule_")
        assert f"rule {rule}:" in Path(path).read_text(), path

    # the requests come from the config's resources section
    (pretrain,) = [jobs[i] for i in submitted if jobs[i]["comment"] == "rule_pretrain"]
    assert (pretrain["partition"], pretrain["cpus"], pretrain["memory"], pretrain["time_limit"]) == \
        (slurm_cluster.PARTITION, "2", "700M", "30:00")
    sim = [jobs[i] for i in submitted if jobs[i]["comment"] == "rule_simulate"][0]
    assert (sim["cpus"], sim["memory"], sim["time_limit"]) == ("2", "600M", "20:00")  # config: simulate cpus 2
    infer = [jobs[i] for i in submitted if jobs[i]["comment"].startswith("rule_infer")]
    assert infer and all((j["cpus"], j["memory"]) == ("1", "600M") for j in infer)
