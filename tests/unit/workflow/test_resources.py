"""Job resources per rule (braindecode_pkg.workflow.resources) and the training launcher."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from braindecode_pkg.workflow import resources as res
from braindecode_pkg.errors import InputError

REPO = Path(__file__).resolve().parents[3]
SECTION = {"default": {"cpus": 1, "mem_mb": 4000, "runtime": 60, "gpus": 0, "partition": None},
           "pretrain": {"cpus": 16, "gpus": 4, "partition": "gpu"}}


def test_rule_entry_overrides_the_default_key_by_key():
    assert res.rule_resources(SECTION, "pretrain") == {"cpus": 16, "mem_mb": 4000, "runtime": 60, "gpus": 4,
                                                       "partition": "gpu"}
    assert res.rule_resources(SECTION, "infer") == SECTION["default"]


def test_snakemake_resources_name_what_the_slurm_executor_submits():
    assert res.snakemake_resources(res.rule_resources(SECTION, "pretrain")) == \
        {"mem_mb": 4000, "runtime": 60, "gpu": 4, "slurm_partition": "gpu"}
    assert "slurm_partition" not in res.snakemake_resources(SECTION["default"])  # the cluster's default


def test_unknown_rule_or_key_is_one_clear_error():
    with pytest.raises(InputError, match="unknown rule 'pretrian'"):
        res.rule_resources(SECTION, "pretrian")
    with pytest.raises(InputError, match=r"resources.adapt: unknown key\(s\) \['gpu'\]"):
        res.rule_resources({**SECTION, "adapt": {"gpu": 2}}, "adapt")


def test_launcher_is_plain_for_one_gpu_and_accelerate_for_several():
    assert res.launcher("/venv/bin/python", 0) == "/venv/bin/python -m braindecode_pkg"
    assert res.launcher("/venv/bin/python", 1) == "/venv/bin/python -m braindecode_pkg"
    cmd = res.launcher("/my venv/python", 8)
    assert cmd.startswith("'/my venv/python' -m accelerate.commands.launch --multi_gpu --num_processes 8 ")
    assert "--main_process_port 0" in cmd and cmd.endswith(" -m braindecode_pkg")


def test_accelerate_launch_module_takes_the_options_the_launcher_gives():
    from accelerate.commands.launch import launch_command_parser

    cmd = res.launcher(sys.executable, 4).split()
    args = launch_command_parser().parse_args(cmd[3:] + ["train", "--regime", "pretrain"])
    assert (args.multi_gpu, args.num_processes, args.num_machines, args.main_process_port, args.module) == \
        (True, 4, 1, 0, True)
    assert (args.training_script, args.training_script_args) == ("braindecode_pkg", ["train", "--regime", "pretrain"])


def test_threads_and_batch_split_over_the_processes():
    assert res.threads_per_process(64, 8) == 8 and res.threads_per_process(2, 0) == 2 and res.threads_per_process(2, 4) == 1
    res.check_batch("pretrain", 192, 8)
    res.check_batch("pretrain", 7, 1)
    with pytest.raises(InputError, match=r"resources.adapt.gpus = 3.*\(128\)"):
        res.check_batch("adapt", 128, 3)


def test_rules_listed_here_are_the_schema_and_the_embedded_config():
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    assert set(schema["properties"]["resources"]["properties"]) == {"default", *res.RULES}
    assert set(schema["$defs"]["job"]["properties"]) == set(res.KEYS)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())["resources"]
    assert set(config["default"]) == set(res.KEYS) and set(config) - {"default"} <= set(res.RULES)
