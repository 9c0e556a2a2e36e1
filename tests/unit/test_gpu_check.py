"""benchmarks/gpu_check.py: its FLOP count against a hand count, and one tiny run on the CPU."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def gc(load_benchmark):
    return load_benchmark("gpu_check")


def test_step_flops_equal_a_hand_count(gc, one_thread):
    import torch

    from braindecode_pkg.brain.data import BatchStream
    from braindecode_pkg.brain.model import BrainModel
    from braindecode_pkg.brain.train import model_config_for

    sizes = gc.SMOKE
    trials, targets = gc.synthetic(sizes)
    run = gc.run_config(sizes, steps=3)
    model = BrainModel(model_config_for(run, trials, targets))
    got = gc.step_flops(model, trials, targets, run, torch.device("cpu"))

    local = BatchStream({k: len(t) for k, t in trials.items()}, sizes["batch"], 0).local(0, 0, 1)
    b = {k: len(r) for k, r in local.items()}
    B, w, nb = sizes["batch"], sizes["width"], sizes["n_blocks"]
    D = sizes["tokens"][0] * sizes["tokens"][1]
    # adapters: forward + weight gradient (the betas need no gradient)
    adapters = sum(4 * b[k] * trials[k].n_voxels * w for k in b)
    # shared blocks (2 linears each) and the tokens head: forward, input and weight gradients
    shared = 3 * (nb * 2 * 2 * B * w * w + 2 * B * w * D)
    # SoftCLIP: targets @ targets.T and preds @ targets.T forward, the latter's gradient for preds
    loss = 2 * B * B * D + 2 * B * B * D + 2 * B * B * D
    assert got == adapters + shared + loss
    assert sum(b.values()) == B and len(b) > 1  # the batch spans several subjects


def test_smoke_run_reports_rates_on_the_cpu(gc, one_thread):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the smoke run would measure it")
    r = gc.check(gc.SMOKE, steps=3, warmup=1, peak=None)
    assert r["device"] == "cpu" and r["precision"] == "fp32"
    assert r["samples_per_s"] > 0 and r["flops_per_step"] > 0
    assert r["achieved_tflops"] == pytest.approx(r["flops_per_step"] / r["batch"] * r["samples_per_s"] / 1e12)
    assert r["mfu"] is None and r["peak_gpu_memory_gb"] is None
    assert gc.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gc.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gc.peak_tflops("NVIDIA L4") == 121.0 and gc.peak_tflops("NVIDIA L40S") == 362.1
    assert gc.peak_tflops("Some GPU") is None
