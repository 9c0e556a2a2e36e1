"""benchmarks/gpu_check.py: its FLOP count against a hand count, and one tiny run on whatever
device there is (the CPU, or the GPU the script is for), timed by a clock of known ticks."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def gc(load_benchmark):
    return load_benchmark("gpu_check")


def _hand_flops(gc, trials):
    """Matrix-product FLOPs of one forward + backward of the smoke model and SoftCLIP on one batch."""
    from braindecode_pkg.brain.data import BatchStream

    sizes = gc.SMOKE
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
    assert sum(b.values()) == B and len(b) > 1  # the batch spans several subjects
    return adapters + shared + loss


def test_step_flops_equal_a_hand_count(gc, one_thread):
    import torch

    from braindecode_pkg.brain.model import BrainModel
    from braindecode_pkg.brain.train import model_config_for

    sizes = gc.SMOKE
    trials, targets = gc.synthetic(sizes)
    run = gc.run_config(sizes, steps=3)
    model = BrainModel(model_config_for(run, trials, targets))
    assert gc.step_flops(model, trials, targets, run, torch.device("cpu")) == _hand_flops(gc, trials)


class _Clock:
    """Stands in for the training loop's ``time`` module: every reading of ``perf_counter`` is a
    quarter of a second after the one before, so each training step (read at its start and its
    end) lasts exactly 0.25 s."""

    def __init__(self):
        import time

        self._time, self.now = time, 0.0

    def perf_counter(self):
        self.now += 0.25
        return self.now

    def __getattr__(self, name):
        return getattr(self._time, name)


def test_smoke_run_reports_known_rates_on_its_device(gc, one_thread, monkeypatch):
    """On the CPU and on a GPU alike (on a GPU it measures that GPU, in bf16): with steps of
    0.25 s, samples/s is 4 batches, the achieved FLOP rate 4 steps' hand-counted FLOPs, the MFU
    that over the peak given."""
    import torch

    from braindecode_pkg.brain import train
    from braindecode_pkg.brain.model import BrainModel

    monkeypatch.setattr(train, "time", _Clock())
    r = gc.check(gc.SMOKE, steps=3, warmup=1, peak=2.0)
    trials, targets = gc.synthetic(gc.SMOKE)
    flops = _hand_flops(gc, trials)
    model = BrainModel(train.model_config_for(gc.run_config(gc.SMOKE, 4), trials, targets))
    n_params = sum(p.numel() for p in model.parameters())
    assert (r["batch"], r["steps_timed"], r["params"]) == (12, 3, n_params)
    assert r["flops_per_step"] == flops
    assert r["samples_per_s"] == 4 * 12
    assert r["achieved_tflops"] == pytest.approx(4 * flops / 1e12, rel=1e-12)
    assert r["peak_bf16_tflops"] == 2.0 and r["mfu"] == pytest.approx(4 * flops / 1e12 / 2.0, rel=1e-12)
    if torch.cuda.is_available():
        assert r["device"] == torch.cuda.get_device_name(0) and r["precision"] == "bf16"
        # the fp32 weights and AdamW's two moments were on the GPU at once
        assert r["peak_gpu_memory_gb"] >= 3 * 4 * n_params / 2**30
    else:
        assert r["device"] == "cpu" and r["precision"] == "fp32" and r["peak_gpu_memory_gb"] is None
    # without a peak: the GPU's by name, none on the CPU
    assert gc.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gc.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gc.peak_tflops("NVIDIA L4") == 121.0 and gc.peak_tflops("NVIDIA L40S") == 362.1
    assert gc.peak_tflops("NVIDIA H200") == 989.4 and gc.peak_tflops("Some GPU") is None
