"""Training on large CLIP-token targets: memory-mapped float16 on the host against read into memory.

At MindEye2's scale the targets are ViT-bigG tokens (256 x 1664 per image): 62 GB of float16 for
NSD's 73k images. ``load_targets`` memory-maps such files (``mmap="auto"``: above 2 GiB) and
``fit`` leaves mapped targets on the host, copying each batch's rows to the device
(``train.targets_on: auto``). This benchmark trains the same small brain model for a few steps
on a synthetic embeddings file of that layout (``--images`` rows of 256 x 1664 float16 tokens,
written like the embed stage writes: contiguous, with batch checksums) in two whole processes:

- ``in memory``: ``load_targets(mmap=False)``, the old path: the rows are read into float32
  arrays and placed on the device (here the CPU), copied once;
- ``memory-mapped``: ``load_targets(mmap=True)`` and ``targets_on: auto`` (host).

It prints each process's private (anonymous) resident memory and file-backed resident memory
after training, its peak RSS, and the training steps per second, with ratios against the
in-memory run of the same invocation. File-backed pages are the page cache: shared by every
process that maps the file (the data-parallel ranks of a node) and reclaimable; private memory
is what each rank pays on its own.

    python benchmarks/bench_targets_memory.py [--images 2000] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOKENS = (256, 1664)
POOLED = 1280
VOXELS = (1500, 1300, 1700)


def write_embed(path: Path, n: int, batch: int = 64) -> None:
    """An embeddings file laid out like the embed stage's (contiguous float16, batch checksums)."""
    import h5py

    from braindecode_pkg.embed import stimuli as emb

    rng = np.random.default_rng(0)
    with h5py.File(path, "w", libver="earliest") as f:
        f["nsd_id"] = np.arange(n, dtype=np.int64)
        emb._create(f, "image_pooled", (n, POOLED), "float16")
        emb._create(f, "image_tokens", (n, *TOKENS), "float16")
        emb._create(f, "text", (n, emb.MAX_CAPTIONS, POOLED), "float16")
        f["done"] = np.ones(n, bool)
        f.create_dataset("batch_sha256", (-(-n // batch),), "S64")
        f.attrs["batch_size"] = batch
        f.attrs["dtype"] = "float16"
        for a in range(0, n, batch):
            b = min(n, a + batch)
            rows = {"image_pooled": rng.standard_normal((b - a, POOLED), np.float32).astype(np.float16),
                    "image_tokens": (0.1 * rng.standard_normal((b - a, *TOKENS), np.float32)).astype(np.float16),
                    "text": rng.standard_normal((b - a, emb.MAX_CAPTIONS, POOLED), np.float32).astype(np.float16)}
            for k, v in rows.items():
                f[k][a:b] = v
            f["batch_sha256"][a // batch] = emb._rows_digest(rows).encode()


def _status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) / 1024  # MiB
    return out


def worker(embed: str, mode: str, steps: int, out_dir: str) -> dict:
    """One training run in this process (``mode``: memory | mmap); returns the figures."""
    import torch

    from braindecode_pkg.brain.data import SubjectTrials, load_targets
    from braindecode_pkg.brain.model import BrainModel, subject_key
    from braindecode_pkg.brain.train import RunConfig, fit, model_config_for

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    with __import__("h5py").File(embed, "r") as f:
        n = len(f["nsd_id"])
    trials = {}
    for s, v in enumerate(VOXELS, start=1):
        k = subject_key(s)
        ids = rng.choice(n, 600)
        trials[k] = SubjectTrials(k, Path(f"synthetic-subj{s:02d}"), rng.standard_normal((600, v), np.float32),
                                  ids, np.ones(600, np.int64), np.zeros(600, np.int64), [1], "train")
    t0 = time.perf_counter()
    used = np.unique(np.concatenate([t.nsd_id for t in trials.values()]))
    targets = load_targets(embed, heads=("pooled", "tokens"), ids=used, mmap=(mode == "mmap"))
    t_load = time.perf_counter() - t0
    run = RunConfig(model={"width": 256, "n_blocks": 1, "tokens_rank": 8},
                    train={"steps": steps, "batch_size": 32, "checkpoint_every": 0, "warmup": 0.0,
                           "targets_on": "auto"})
    torch.manual_seed(0)
    model = BrainModel(model_config_for(run, trials, targets))
    s = fit(model, trials, targets, out_dir, run=run, progress=False)
    st = _status()
    return {"mode": mode, "load_s": t_load, "steps_per_s": s["steps_run"] / s["seconds"],
            "anon_mib": st["RssAnon"], "file_mib": st["RssFile"], "peak_rss_mib": st["VmHWM"],
            "mapped": type(targets.arrays["tokens"]).__name__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000, help="rows of the synthetic embeddings file")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--worker", nargs=4, metavar=("EMBED", "MODE", "STEPS", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        embed, mode, steps, out = a.worker
        print(json.dumps(worker(embed, mode, int(steps), out)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-targets-"))
    embed = tmp / "clip.h5"
    write_embed(embed, a.images)
    gb = embed.stat().st_size / 1e9
    print(f"embeddings: {a.images} images x {TOKENS[0]}x{TOKENS[1]} float16 tokens, {gb:.2f} GB; "
          f"{a.steps} training steps of batch 32, 1 thread; whole processes", flush=True)
    env = dict(__import__("os").environ, BRAINDECODE_HASH_CACHE=str(tmp / "hashes"))
    res = {}
    for mode in ("memory", "mmap", "memory", "mmap"):  # second round: the file is in the page cache
        r = subprocess.run([sys.executable, __file__, "--worker", str(embed), mode, str(a.steps), str(tmp / mode)],
                           check=True, capture_output=True, text=True, env=env)
        res[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    base = res["memory"]
    print(f"{'':28s} {'private RSS':>12s} {'file RSS':>10s} {'peak RSS':>10s} {'load':>7s} {'steps/s':>8s}")
    for mode, label in (("memory", "in memory (float32)"), ("mmap", "memory-mapped (float16)")):
        r = res[mode]
        print(f"{label:28s} {r['anon_mib']:9.0f} MiB {r['file_mib']:6.0f} MiB {r['peak_rss_mib']:6.0f} MiB "
              f"{r['load_s']:6.2f}s {r['steps_per_s']:8.2f}")
    m = res["mmap"]
    print(f"memory-mapped / in memory: private RSS {m['anon_mib'] / base['anon_mib']:.2f}x, peak RSS "
          f"{m['peak_rss_mib'] / base['peak_rss_mib']:.2f}x, steps/s {m['steps_per_s'] / base['steps_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
