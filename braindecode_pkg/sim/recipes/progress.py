"""What the nsd-sim trainers share around their step loops: a progress bar, a time budget, and
the name of the device they ran on (recorded in their summaries)."""

from __future__ import annotations

import time

import numpy as np


def step_bar(progress: bool, total: int, desc: str):
    """A tqdm bar over optimisation steps, or None when ``progress`` is off."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc=desc)


def tick(bar, losses, name: str = "loss", fmt: str = ".3f") -> None:
    """One step done: advance ``bar``; every 20 steps show the mean of the last 20 ``losses``."""
    if bar is None:
        return
    bar.update(1)
    if bar.n % 20 == 0:
        bar.set_postfix({name: format(float(np.mean(losses[-20:])), fmt)})


def fit_budget(step: int, total: int, t0: float, budget_s: float | None, bar=None) -> int:
    """``total`` shortened so that the run started at ``t0`` ends within ``budget_s`` seconds,
    judged from the time per step so far (never lengthened; at least one more step); ``bar``
    follows the new total."""
    if budget_s is None:
        return total
    per = (time.time() - t0) / step
    new = max(step + 1, min(total, step + int(max(0.0, budget_s - (time.time() - t0)) / per)))
    if bar is not None and new != total:
        bar.total = new
        bar.refresh()
    return new


def device_name(device) -> str:
    """``"cpu"``, or the accelerator's name (``torch.cuda.get_device_name``)."""
    import torch

    d = torch.device(device)
    return torch.cuda.get_device_name(d) if d.type == "cuda" else d.type
