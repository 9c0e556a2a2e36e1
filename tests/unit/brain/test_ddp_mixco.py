"""MixCo under data-parallel training (gloo, two processes on the CPU): the loss of the global
batch and its gradient equal one process's on the concatenated batch, with each process's own
mixing permutation offset into the global one (issue 20: the DDP test elsewhere turns MixCo off)."""

from __future__ import annotations

import socket

import numpy as np
import torch
import torch.multiprocessing as mp

from braindecode_pkg.brain.losses import LossConfig, total_loss
from braindecode_pkg.brain.train import _global_loss

N_LOCAL, V, D, WORLD = 6, 11, 7, 2


def _data():
    """Each rank's inputs, targets, and MixCo draws (a permutation within the rank's batch and
    mixing weights), fixed so the single-process reference can rebuild the global batch."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(WORLD, N_LOCAL, V, generator=g)
    t = torch.randn(WORLD, N_LOCAL, D, generator=g)
    perm = torch.stack([torch.randperm(N_LOCAL, generator=g) for _ in range(WORLD)])
    beta = torch.rand(WORLD, N_LOCAL, generator=g) * 0.8 + 0.1
    w = torch.randn(D, V, generator=g)
    return x, t, perm, beta, w


def _mixed(x, perm, beta):
    return x * beta[:, None] + x[perm] * (1 - beta)[:, None]


def _worker(rank: int, port: int, q):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        x, t, perm, beta, w0 = _data()
        w = w0.clone().requires_grad_(True)
        out = {"pooled": _mixed(x[rank], perm[rank], beta[rank]) @ w.T}
        cfg = LossConfig(mixco_fraction=1.0)
        loss, parts = _global_loss(cfg, out, {"pooled": t[rank]}, ["pooled"], 0.0,
                                   (perm[rank], beta[rank], N_LOCAL), rank)
        loss.backward()
        grad = w.grad.clone()
        dist.all_reduce(grad)  # what DDP does to parameter gradients (then it divides by WORLD)
        q.put((rank, float(loss), (grad / WORLD).numpy()))
    finally:
        dist.destroy_process_group()


def test_mixco_loss_and_gradient_of_the_global_batch_under_gloo():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, q)) for r in range(WORLD)]
    for p in procs:
        p.start()
    got = sorted(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    # one process, the concatenated batch: rank r's permutation moves to rows r*N_LOCAL.. of it
    x, t, perm, beta, w0 = _data()
    w = w0.clone().requires_grad_(True)
    out = {"pooled": torch.cat([_mixed(x[r], perm[r], beta[r]) for r in range(WORLD)]) @ w.T}
    gperm = torch.cat([perm[r] + r * N_LOCAL for r in range(WORLD)])
    loss, _ = total_loss(LossConfig(mixco_fraction=1.0), out, {"pooled": t.reshape(-1, D)}, frac=0.0,
                         mix=(gperm, beta.reshape(-1)))
    loss.backward()
    for rank, l, g in got:
        assert abs(l - loss.item()) < 1e-6, (rank, l, loss.item())
        np.testing.assert_allclose(g, w.grad.numpy(), rtol=1e-5, atol=1e-7)
    # and it is not the loss without the offset (each rank's permutation taken as global rows)
    wrong, _ = total_loss(LossConfig(mixco_fraction=1.0), {"pooled": out["pooled"].detach()},
                          {"pooled": t.reshape(-1, D)}, frac=0.0, mix=(perm.reshape(-1), beta.reshape(-1)))
    assert abs(wrong.item() - loss.item()) > 1e-3
