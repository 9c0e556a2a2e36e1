"""GPU check: the brain encoder at MindEye2 width trained by the project's own loop.

Prints training samples/s, peak GPU memory and the fraction of the GPU's dense bf16 peak that the
training step reaches (model FLOPs utilisation, MFU). One short run (about a minute on an H100):

    python benchmarks/gpu_check.py                       # MindEye2 scale, needs a CUDA GPU
    python benchmarks/gpu_check.py --peak-tflops 312     # a GPU missing from PEAK_BF16_TFLOPS
    python benchmarks/gpu_check.py --smoke               # tiny sizes, runs anywhere (tests)

What runs: :func:`braindecode_pkg.brain.train.fit` (accelerate, bf16 autocast on GPU, AdamW, gradient
clipping, the configured contrastive loss) on synthetic data with real shapes: 8 subjects with
NSD's nsdgeneral voxel counts, each with a full linear adapter to the shared width (4096), 4
residual blocks, and MindEye2's ``backbone_linear`` to the OpenCLIP ViT-bigG/14 image tokens
(256 x 1664, one full linear map: 1.74 G of the 2.36 G parameters). Data values do not change the
arithmetic, so random betas and unit-norm random targets are used.

FLOPs per step are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one
forward + backward of the same model and loss on one batch (matrix products; the elementwise
work it leaves out is small beside them). MFU = FLOPs per step x steps/s / peak. Samples/s is the
median of the per-step rates ``fit`` logs after ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

#: nsdgeneral voxel counts of NSD subjects 1-8 (1.8 mm)
NSD_VOXELS = (15724, 14278, 15226, 13153, 13039, 17907, 12682, 14386)
#: dense bf16 tensor-core peak, TFLOPS, by a substring of torch.cuda.get_device_name()
PEAK_BF16_TFLOPS = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
    "GH200": 989.4, "A100": 312.0, "A800": 312.0, "L40S": 362.1, "L40": 181.0, "L4": 121.0,
    "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2, "RTX 6000 Ada": 364.2, "B200": 2250.0,
}
MINDEYE2 = {"width": 4096, "n_blocks": 4, "tokens": (256, 1664), "batch": 32, "images": 1000,
            "trials": 1500, "voxels": NSD_VOXELS}
SMOKE = {"width": 48, "n_blocks": 2, "tokens": (5, 24), "batch": 12, "images": 40, "trials": 30,
         "voxels": (37, 41, 29)}


def peak_tflops(name: str) -> float | None:
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key]
    return None


def synthetic(sizes: dict, seed: int = 0):
    """(trials {subject key: SubjectTrials}, Targets) with the shapes of ``sizes``."""
    from braindecode_pkg.brain.data import SubjectTrials, Targets
    from braindecode_pkg.brain.model import subject_key

    rng = np.random.default_rng(seed)
    ids = np.arange(sizes["images"], dtype=np.int64)
    tok = rng.standard_normal((sizes["images"], *sizes["tokens"]), dtype=np.float32)
    tok /= np.linalg.norm(tok.reshape(len(tok), -1), axis=1)[:, None, None]
    targets = Targets(ids, {"tokens": tok}, {"synthetic": sizes["tokens"]})
    trials = {}
    for s, v in enumerate(sizes["voxels"], start=1):
        n = sizes["trials"]
        k = subject_key(s)
        trials[k] = SubjectTrials(k, Path(f"synthetic-subj{s:02d}"), rng.standard_normal((n, v), dtype=np.float32),
                                  rng.choice(ids, n), np.ones(n, np.int64), np.zeros(n, np.int64), [1], "train")
    return trials, targets


def run_config(sizes: dict, steps: int):
    from braindecode_pkg.brain.train import RunConfig

    return RunConfig(model={"width": sizes["width"], "n_blocks": sizes["n_blocks"], "adapter_rank": None,
                            "tokens_rank": None, "pooled_dim": None},
                     loss={"mixco_fraction": 0.0},  # every timed step alike (SoftCLIP on the flattened tokens)
                     train={"steps": steps, "batch_size": sizes["batch"], "checkpoint_every": 0, "warmup": 0.0})


def step_flops(model, trials, targets, run, device) -> int:
    """Matrix-product FLOPs of one forward + backward of ``model`` and the run's loss on one
    batch of ``batch_size`` samples spread over the subjects like ``fit``'s batches."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from braindecode_pkg.brain.data import BatchStream
    from braindecode_pkg.brain.losses import total_loss

    tcfg, lcfg = run.training(), run.losses()
    stream = BatchStream({k: len(t) for k, t in trials.items()}, tcfg.batch_size, tcfg.seed)
    local = stream.local(0, 0, 1)
    batch = {k: torch.from_numpy(trials[k].betas[rows]).to(device) for k, rows in local.items()}
    tr = np.concatenate([targets.rows(trials[k].nsd_id[rows]) for k, rows in local.items()])
    tgt = {"tokens": torch.from_numpy(targets.arrays["tokens"][tr]).to(device)}
    model.to(device).train()
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(batch)
        loss, _ = total_loss(lcfg, {"tokens": out["tokens"].float()}, tgt, frac=0.0)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def check(sizes: dict, *, steps: int, warmup: int, peak: float | None) -> dict:
    import torch

    from braindecode_pkg.brain.model import BrainModel
    from braindecode_pkg.brain.train import LOG_NAME, fit, model_config_for

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    trials, targets = synthetic(sizes)
    run = run_config(sizes, warmup + steps)
    model = BrainModel(model_config_for(run, trials, targets))
    n_params = sum(p.numel() for p in model.parameters())
    flops = step_flops(model, trials, targets, run, device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        summary = fit(model, trials, targets, tmp, run=run, progress=False, resume=False,
                      stop_after=warmup + steps)
        rows = [ln.split("\t") for ln in (Path(tmp) / LOG_NAME).read_text().splitlines()]
    col = rows[0].index("samples_per_s")
    sps = statistics.median(float(r[col]) for r in rows[1 + warmup:])
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak if peak is not None else (peak_tflops(name) if cuda else None)
    achieved = flops / sizes["batch"] * sps  # FLOP/s
    return {
        "device": name, "precision": summary["precision"], "params": n_params, "batch": sizes["batch"],
        "steps_timed": steps, "samples_per_s": sps, "flops_per_step": flops,
        "achieved_tflops": achieved / 1e12,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_bf16_tflops": peak, "mfu": (achieved / 1e12 / peak) if peak else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    ap.add_argument("--batch", type=int, default=None, help=f"batch size (default {MINDEYE2['batch']})")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU (default: by name)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (on the CPU where there is no GPU): checks the script, measures nothing")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    sizes = dict(SMOKE if a.smoke else MINDEYE2)
    if a.batch:
        sizes["batch"] = a.batch
    if not a.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); nothing measured. "
              "--smoke runs the script at tiny sizes on the CPU.", file=sys.stderr)
        return 2
    r = check(sizes, steps=a.steps, warmup=a.warmup, peak=a.peak_tflops)
    print(f"device               {r['device']} ({r['precision']})")
    print(f"model                {r['params'] / 1e9:.3f} G parameters, width {sizes['width']}, "
          f"{len(sizes['voxels'])} subjects, tokens {sizes['tokens'][0]}x{sizes['tokens'][1]}")
    print(f"training             {r['samples_per_s']:.1f} samples/s (batch {r['batch']}, median of {r['steps_timed']} steps)")
    print(f"FLOPs                {r['flops_per_step'] / 1e12:.3f} TFLOP per step, {r['achieved_tflops']:.1f} TFLOPS achieved")
    if r["peak_gpu_memory_gb"] is not None:
        print(f"peak GPU memory      {r['peak_gpu_memory_gb']:.2f} GiB")
    if r["mfu"] is not None:
        print(f"bf16 peak reached    {100 * r['mfu']:.1f} % of {r['peak_bf16_tflops']:.0f} TFLOPS")
    elif not a.smoke:
        print("bf16 peak reached    unknown GPU: pass --peak-tflops")
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
