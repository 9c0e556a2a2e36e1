"""Job resources of the workflow's rules, read from the config's ``resources`` section.

``resources.default`` gives every key (``cpus``, ``mem_mb``, ``runtime`` in minutes, ``gpus``,
``partition``); an entry named after a rule overrides some of them for that rule's jobs. The
workflow turns a rule's resources into Snakemake's: ``threads`` = cpus, and the resources
``mem_mb``, ``runtime``, ``gpu`` and ``slurm_partition`` that snakemake-executor-plugin-slurm
submits as ``--mem``, ``--time``, ``--gpus`` and ``-p`` (``--cpus-per-task`` from the threads).

A training rule (pretrain, adapt, scratch) given more than one GPU runs its command through
``accelerate launch`` with one process per GPU (:func:`launcher`); the global batch is split
evenly over the processes, so its size must divide by the GPU count (:func:`check_batch`).
"""

from __future__ import annotations

import shlex

from ..errors import InputError

__all__ = ["RULES", "KEYS", "TRAIN_RULES", "rule_resources", "snakemake_resources", "launcher",
           "threads_per_process", "check_batch"]

#: every rule of the workflow that runs a job (rule ``all`` only collects targets); ``decode`` and
#: ``evaluate`` stand for their per-subject group rules (decode_subj01, evaluate_subj07_2, ...)
RULES = (
    "simulate", "preprocess", "preprocess_psc", "train_sim_clip", "train_sim_image_decoder",
    "train_sim_captioner", "train_sim_judge_clip", "embed", "latents", "train_captioner", "pretrain", "adapt",
    "scratch",
    "ridge", "infer", "true_embedding", "decode", "evaluate", "oracle", "collect", "report",
)
KEYS = ("cpus", "mem_mb", "runtime", "gpus", "partition")
TRAIN_RULES = ("pretrain", "adapt", "scratch")


def rule_resources(section: dict, rule: str) -> dict:
    """``section["default"]`` with ``section[rule]`` over it."""
    if rule not in RULES:
        raise InputError(f"resources: unknown rule {rule!r}; expected one of {list(RULES)}")
    out = dict(section["default"])
    out.update(section.get(rule) or {})
    bad = sorted(set(out) - set(KEYS))
    if bad:
        raise InputError(f"resources.{rule}: unknown key(s) {bad}; expected some of {list(KEYS)}")
    missing = sorted(set(KEYS) - set(out) - {"partition"})
    if missing:
        raise InputError(f"resources.default: missing key(s) {missing}")
    return out


def snakemake_resources(r: dict) -> dict:
    """Snakemake resources of one rule's resources (``threads`` are set from ``cpus`` separately)."""
    out = {"mem_mb": int(r["mem_mb"]), "runtime": int(r["runtime"]), "gpu": int(r["gpus"])}
    if r.get("partition"):
        out["slurm_partition"] = str(r["partition"])
    return out


def launcher(python: str, gpus: int, module: str = "braindecode_pkg") -> str:
    """The command that starts ``python -m module``: plainly for at most one GPU, else through
    ``accelerate launch`` with one process per GPU on this node (a free port for the processes'
    rendezvous, so that several such jobs can share a node). The processes' precision is
    ``train.precision`` (the Accelerator's own argument wins over the launcher's default)."""
    py = shlex.quote(python)
    if gpus <= 1:
        return f"{py} -m {module}"
    return (f"{py} -m accelerate.commands.launch --multi_gpu --num_processes {int(gpus)} --num_machines 1 "
            f"--main_process_port 0 --mixed_precision no --dynamo_backend no -m {module}")


def threads_per_process(cpus: int, gpus: int) -> int:
    """CPU threads of each training process: the job's cores shared by its processes."""
    return max(1, int(cpus) // max(1, int(gpus)))


def check_batch(rule: str, batch_size: int, gpus: int) -> None:
    """A multi-GPU training rule's global batch must split evenly over its processes."""
    if gpus > 1 and int(batch_size) % int(gpus):
        raise InputError(
            f"resources.{rule}.gpus = {gpus}: the batch size of brain.{rule}.train ({batch_size}) must be "
            f"divisible by the number of GPUs (one training process each)"
        )
