"""The brain model on the nsd-sim default: every method's retrieval, the adaptation curve, throughput.

One run, on the nsd-sim ``default`` preset (4 subjects × 6 sessions, ~1,700–2,000 voxels, 300
shared test images): subjects 1–3 are the training subjects, subject 4 the held-out one.
``--sessions N`` simulates the same world with N sessions per subject instead (NSD has 30–40).

    python benchmarks/bench_brain.py [--work DIR] [--clip sim|proxy|CONFIG] [--ks 1,2,4] [--threads 2]
                                     [--sessions N] [--pretrain-curve 1,2,4]

Steps (each output kept in ``--work`` and reused by a later run with the same settings):
  data        simulate → preprocess (z-scored, and PSC for the oracle) → CLIP targets
  oracle      Bayes-optimal identification from the sim truth (evaluate/oracle.py): the ceiling
  ridge       per subject, leave-one-image-out penalty: subjects 1–3 on all sessions, subject 4
              on its first K sessions
  pretrain    subjects 1–3 together, all their training sessions
  data curve  ridge and pretrain on the training subjects' first K sessions only, for each K of
              --pretrain-curve: how the pretrained/ridge ratio grows with the data per subject
  adapt       subject 4, first K sessions, from the pretrained model with a fresh adapter
  scratch     subject 4, same data, random init, same recipe
  throughput  CPU training samples/s of this encoder vs a MindEye2-style BrainNetwork (per-subject
              linear → 4 residual MLP blocks → linear to the CLIP shape → MindEye2's projector),
              built from its published description for this benchmark, at equal width
  noise-free  ridge and the pretrain recipe trained and tested on the truth's noise-free responses
              ``mu``: how far the decoders could go without trial noise (skip: --no-diagnostics)

Retrieval (evaluate/retrieval.py): top-1 among 300 random test images, 30 draws, cosine, both
directions, test protocol ``avg_betas`` (repeats averaged). Targets (issue 4): with K = 1,
adapt ≥ 1.5 × scratch and adapt > ridge; pretrained on subjects 1–3 ≥ 2 × ridge.

CLIP targets: ``sim`` = the embed stage with the nsd-sim CLIP (the shipped weights in
``braindecode_pkg/sim/weights/nsd-sim-1.0/clip``, or ``--sim-clip DIR``); ``proxy`` = a stand-in
computed from the sim truth's scene attributes (a fixed random 2-layer network of the attribute
vector, L2-normalised) for when no CLIP weights exist yet — easier for linear decoders than a
real CLIP, so its ratios are not the targets'. Default: ``sim`` if weights exist, else ``proxy``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRAIN_SUBJECTS = (1, 2, 3)
HELDOUT = 4

# the recipe (the same model recipe for pretrain, adapt and scratch; see the report in issue 4)
MODEL = {"width": 512, "n_blocks": 2, "dropout": 0.15, "adapter_dropout": 0.3, "adapter_rank": 64}
LOSS = {"contrastive_kind": "soft", "temperature": 0.05, "mixco_fraction": 0.33}
PRETRAIN = {"epochs": 20, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.1, "adapter_weight_decay": 3.0,
            "checkpoint_every": 0}
# adapt/scratch: the same number of steps whatever K (≈150 epochs of one session)
SMALL = {"steps": 700, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.1, "adapter_weight_decay": 3.0,
         "checkpoint_every": 0}
ADAPT = {**SMALL, "freeze_shared_steps": 0.3, "shared_lr_scale": 0.1}


def log(msg):
    print(f"[bench_brain {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- data
def ensure_data(work: Path, clip: str, sim_clip: str | None, sessions: int | None = None) -> dict:
    from braindecode_pkg.sim import world as sim
    from braindecode_pkg.preprocess import preprocess

    t = {}
    simdir = work / "sim"
    t0 = time.perf_counter()
    if not (simdir / "sim_truth" / "manifest.json").is_file():
        over = {} if sessions is None else {"sessions": sessions, "formats": ("hdf5",)}
        log(f"simulate default preset {over or ''}")
        sim.simulate(sim.sim_config("default", **over), simdir)
    t["simulate"] = time.perf_counter() - t0
    nsd = simdir / "nsd"
    t0 = time.perf_counter()
    prep, psc = {}, {}
    for s in (*TRAIN_SUBJECTS, HELDOUT):
        prep[s] = work / "prep" / f"subj{s:02d}.h5"
        psc[s] = work / "psc" / f"subj{s:02d}.h5"
        if not prep[s].is_file():
            preprocess(nsd, s, prep[s], hash_cache=None, progress=False)
        if not psc[s].is_file():
            preprocess(nsd, s, psc[s], normalisation="none", hash_cache=None, progress=False)
    t["preprocess"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if clip == "auto":
        from braindecode_pkg.decoders.clip import SHIPPED_SIM_CLIP

        clip = "sim" if (sim_clip or SHIPPED_SIM_CLIP.is_dir()) else "proxy"
    if clip == "proxy":
        embed = work / "embed" / "proxy.h5"
        if not embed.is_file():
            log("no nsd-sim CLIP weights: proxy targets from the sim truth's scene attributes")
            proxy_targets(simdir, embed)
    else:
        from braindecode_pkg.embed.stimuli import embed_stimuli

        tag = "sim" if clip == "sim" else "custom"
        embed = work / "embed" / f"clip-{tag}.h5"
        if not embed.is_file():
            log(f"embed stimuli with CLIP {clip}")
            embed_stimuli(nsd, [*TRAIN_SUBJECTS, HELDOUT], clip, embed, what="pooled", sim_dir=sim_clip,
                          progress=False)
    t["targets"] = time.perf_counter() - t0
    tag = clip if clip in ("sim", "proxy") else "custom"
    return {"prep": prep, "psc": psc, "embed": embed, "truth": simdir / "sim_truth", "clip": tag, "seconds": t}


def proxy_targets(simdir: Path, out: Path, seed: int = 123, dim: int = 128) -> Path:
    """Stand-in CLIP targets: a fixed random 2-layer tanh network of the scene attribute vector."""
    import h5py

    from braindecode_pkg.sim import world as sim
    from braindecode_pkg.io import atomic_path

    ids, attrs = [], {}
    for p in sorted((simdir / "sim_truth").glob("subj*.h5")):
        with h5py.File(p, "r") as f:
            ids.append(f["nsd_id"][:])
            for k in f["attributes"]:
                attrs.setdefault(k, []).append(f["attributes"][k][:])
    allid = np.concatenate(ids)
    u, first = np.unique(allid, return_index=True)
    a = {k: np.concatenate(v)[first] for k, v in attrs.items()}
    f = sim.attribute_features(a)
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / np.sqrt(f.shape[1]), (f.shape[1], 256))
    b1 = rng.normal(0, 0.5, 256)
    w2 = rng.normal(0, 1 / 16, (256, dim))
    pooled = np.tanh(1.5 * f @ w1 + b1) @ w2
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as o:
        o["nsd_id"] = u.astype(np.int64)
        o["image_pooled"] = pooled.astype(np.float32)
        o.attrs["model"] = "proxy: tanh MLP of nsd-sim scene attributes (benchmarks/bench_brain.py)"
    return out


def noise_free_prep(work: Path, truth: Path, prep: dict) -> dict:
    """Prep-format files whose "betas" are the sim truth's noise-free responses ``mu`` (one row per
    image, z-scored per voxel; same test split): what a decoder could do without trial noise."""
    import h5py

    from braindecode_pkg.io import atomic_path

    out = {}
    for s, p in prep.items():
        f_out = work / "mu" / f"subj{s:02d}.h5"
        out[s] = f_out
        if f_out.is_file():
            continue
        with h5py.File(truth / f"subj{s:02d}.h5", "r") as t, h5py.File(p, "r") as f:
            ids, mu = t["nsd_id"][:], t["mu"][:]
            test = np.unique(f["nsd_id"][:][f["is_test"][:]])
            ijk = f["voxel_ijk"][:]
        z = (mu - mu.mean(0)) / mu.std(0)
        f_out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f_out) as tmp, h5py.File(tmp, "w") as g:
            g["betas"] = z.astype(np.float32)
            g["nsd_id"] = ids
            g["session"] = np.ones(len(ids), np.int64)
            g["trial"] = np.arange(len(ids))
            g["repeat"] = np.zeros(len(ids), np.int64)
            g["is_test"] = np.isin(ids, test)
            g["voxel_ijk"] = ijk
            g.attrs["subject"] = s
            g.attrs["normalisation"] = "sim truth mu, z-scored per voxel (noise-free)"
    return out


# ------------------------------------------------------------------------------- evaluation
def score(emb_file: Path, embed: Path, protocol: str = "avg_betas") -> dict:
    import h5py

    from braindecode_pkg.evaluate.retrieval import retrieval

    with h5py.File(emb_file, "r") as f, h5py.File(embed, "r") as e:
        ids = f["nsd_id"][:]
        eid = e["nsd_id"][:]
        tgt = e["image_pooled"][:][np.searchsorted(eid, ids)]
        return retrieval(f[protocol]["pooled"][:], tgt, n_candidates=300, n_draws=30, seed=0)


def run_config(section_train: dict, threads: int, model: bool = True):
    from braindecode_pkg.brain.train import RunConfig

    return RunConfig(model=dict(MODEL) if model else {}, loss=dict(LOSS), train={**section_train, "threads": threads})


# ------------------------------------------------------------------------------- throughput
def mindeye2_brainnetwork(n_voxels: int, h: int, clip_seq: int, clip_dim: int, n_blocks: int = 4, drop: float = 0.15,
                          projector: bool = True):
    """MindEye2's BrainNetwork as published (Scotti et al. 2024, ``models.py``): per-subject
    ``Linear(V, h)`` ("ridge"), ``n_blocks`` residual mixer blocks ``LN → Linear(h,h) → GELU →
    Dropout → Linear(h,h)`` plus the token-mixing blocks (seq_len 1 here), ``Linear(h,
    clip_seq·clip_dim)``, and the CLIP projector ``LN, GELU, Linear(d,2048), LN, GELU,
    Linear(2048,2048), LN, GELU, Linear(2048,d)`` on each token. The low-level branch is left out
    (so is ours)."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.ridge = nn.Linear(n_voxels, h)
            mk = lambda: nn.Sequential(nn.LayerNorm(h), nn.Linear(h, h), nn.GELU(), nn.Dropout(drop), nn.Linear(h, h))  # noqa: E731
            mk2 = lambda: nn.Sequential(nn.LayerNorm(1), nn.Linear(1, 1), nn.GELU(), nn.Dropout(drop), nn.Linear(1, 1))  # noqa: E731
            self.b1 = nn.ModuleList(mk() for _ in range(n_blocks))
            self.b2 = nn.ModuleList(mk2() for _ in range(n_blocks))
            self.lin = nn.Linear(h, clip_seq * clip_dim)
            self.proj = nn.Sequential(nn.LayerNorm(clip_dim), nn.GELU(), nn.Linear(clip_dim, 2048), nn.LayerNorm(2048),
                                      nn.GELU(), nn.Linear(2048, 2048), nn.LayerNorm(2048), nn.GELU(),
                                      nn.Linear(2048, clip_dim)) if projector else nn.Identity()

        def forward(self, x):
            x = self.ridge(x)[:, None, :]  # (B, 1, h)
            for a, b in zip(self.b1, self.b2):
                x = a(x) + x
                x = x.permute(0, 2, 1)
                x = b(x) + x
                x = x.permute(0, 2, 1)
            x = self.lin(x.reshape(len(x), -1)).reshape(len(x), clip_seq, clip_dim)
            return self.proj(x)

    return Net()


def throughput(n_voxels: int, threads: int, batch: int = 128, seconds: float = 8.0) -> dict:
    """Training samples/s (forward + backward + AdamW step, SoftCLIP loss) of both networks."""
    import torch

    from braindecode_pkg.brain.model import BrainConfig, BrainModel
    from braindecode_pkg.brain.losses import soft_clip_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, n_voxels)
    t = torch.nn.functional.normalize(torch.randn(batch, 128), dim=-1)
    ours = BrainModel(BrainConfig(subjects={"subj01": n_voxels}, pooled_dim=128, **MODEL))
    ours_full = BrainModel(BrainConfig(subjects={"subj01": n_voxels}, pooled_dim=128,
                                       **{**MODEL, "adapter_rank": None}))
    me2 = mindeye2_brainnetwork(n_voxels, MODEL["width"], 1, 128)
    me2_np = mindeye2_brainnetwork(n_voxels, MODEL["width"], 1, 128, projector=False)
    nets = {
        "this encoder (rank-64 adapter)": (ours, lambda m: m({"subj01": x})["pooled"]),
        "this encoder (full adapter)": (ours_full, lambda m: m({"subj01": x})["pooled"]),
        "MindEye2 BrainNetwork": (me2, lambda m: m(x)[:, 0]),
        "MindEye2 BrainNetwork w/o projector": (me2_np, lambda m: m(x)[:, 0]),
    }
    out = {}
    for name, (m, fwd) in nets.items():
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        m.train()

        def step():
            p = torch.nn.functional.normalize(fwd(m), dim=-1)
            loss = soft_clip_loss(p, t, 0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            n += 1
        out[name] = {"samples_per_s": n * batch / (time.perf_counter() - t0),
                     "params": sum(p.numel() for p in m.parameters())}
    return out


# ------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=None,
                    help="working folder (reused; default results/bench-brain, or results/bench-brain-sN)")
    ap.add_argument("--sessions", type=int, default=None,
                    help="sessions per simulated subject (default: the preset's 6)")
    ap.add_argument("--pretrain-curve", default="",
                    help="also pretrain and fit ridge on the training subjects' first K sessions, e.g. 1,2,4")
    ap.add_argument("--clip", default="auto", help="sim | proxy | a CLIP config for the embed stage (default: auto)")
    ap.add_argument("--sim-clip", default=None, help="folder of a trained nsd-sim CLIP (instead of the shipped one)")
    ap.add_argument("--ks", default="1,2,4", help="sessions of the held-out subject (default 1,2,4)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    ap.add_argument("--no-diagnostics", action="store_true",
                    help="skip the noise-free ceiling (ridge and pretrain on the sim truth's mu)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from braindecode_pkg.brain import infer, ridge, train
    from braindecode_pkg.evaluate.oracle import oracle_retrieval

    torch.set_num_threads(args.threads)
    name = "bench-brain" if args.sessions is None else f"bench-brain-s{args.sessions}"
    work = Path(args.work or REPO / "results" / name)
    t_all = time.perf_counter()
    ks = [int(k) for k in args.ks.split(",") if k]
    curve = [int(k) for k in args.pretrain_curve.split(",") if k]
    d = ensure_data(work, args.clip, args.sim_clip, args.sessions)
    embed, prep = d["embed"], d["prep"]
    from braindecode_pkg.sim import world as sim

    n_sessions = args.sessions or sim.sim_config("default").n_sessions(TRAIN_SUBJECTS[0])
    res: dict = {"clip": d["clip"], "sessions": n_sessions, "seconds": dict(d["seconds"]),
                 "retrieval": {}, "oracle": {}, "pretrain_curve": curve}
    sec = res["seconds"]

    def emb_path(method, s):
        return work / "brain" / d["clip"] / method / f"subj{s:02d}.h5"

    def evaluate(method, model_dir, s, prep_file=None):
        out = emb_path(method, s)
        infer.infer(model_dir, prep_file or prep[s], out, method=method, protocols=("avg_betas", "avg_outputs"))
        r = score(out, embed)
        r2 = score(out, embed, "avg_outputs")
        res["retrieval"][f"{method}/subj{s:02d}"] = {"b2i": r["brain_to_image"], "i2b": r["image_to_brain"],
                                                      "b2i_avg_outputs": r2["brain_to_image"]}
        return r["brain_to_image"]

    # ---- oracle
    t0 = time.perf_counter()
    for s in (*TRAIN_SUBJECTS, HELDOUT):
        o = oracle_retrieval(d["truth"] / f"subj{s:02d}.h5", d["psc"][s])
        res["oracle"][f"subj{s:02d}"] = {"b2i": o["brain_to_image"], "i2b": o["image_to_brain"]}
    sec["oracle"] = time.perf_counter() - t0
    log(f"oracle {res['oracle']}")
    models = work / "models" / d["clip"]

    # ---- ridge
    t0 = time.perf_counter()
    for s in TRAIN_SUBJECTS:
        m = models / f"ridge-all-subj{s:02d}"
        ridge.fit_ridge_regime(prep[s], s, embed, m, sessions="all", heads=["pooled"])
        evaluate("ridge-all", m, s)
    for k in ks:
        m = models / f"ridge-k{k}-subj{HELDOUT:02d}"
        ridge.fit_ridge_regime(prep[HELDOUT], HELDOUT, embed, m, sessions=f"first:{k}", heads=["pooled"])
        evaluate(f"ridge-k{k}", m, HELDOUT)
    sec["ridge"] = time.perf_counter() - t0
    log("ridge done")

    # ---- pretrain
    t0 = time.perf_counter()
    pre = models / "pretrain"
    s_pre = train.run_regime("pretrain", prep={s: prep[s] for s in TRAIN_SUBJECTS}, embed=embed, out_dir=pre,
                             heads=["pooled"], run=run_config(PRETRAIN, args.threads), progress=False, resume=False)
    sec["pretrain_train"] = s_pre["seconds"]
    res["train_samples_per_s"] = {"pretrain": s_pre["samples_per_s"]}
    for s in TRAIN_SUBJECTS:
        evaluate("pretrain", pre, s)
    sec["pretrain"] = time.perf_counter() - t0
    log("pretrain done")

    # ---- data curve: the training subjects' first K sessions only (same recipe, same epochs)
    t0 = time.perf_counter()
    for k in curve:
        for s in TRAIN_SUBJECTS:
            m = models / f"ridge-first{k}-subj{s:02d}"
            ridge.fit_ridge_regime(prep[s], s, embed, m, sessions=f"first:{k}", heads=["pooled"])
            evaluate(f"ridge-first{k}", m, s)
        m = models / f"pretrain-first{k}"
        train.run_regime("pretrain", prep={s: prep[s] for s in TRAIN_SUBJECTS}, embed=embed, out_dir=m,
                         sessions=f"first:{k}", heads=["pooled"], run=run_config(PRETRAIN, args.threads),
                         progress=False, resume=False)
        for s in TRAIN_SUBJECTS:
            evaluate(f"pretrain-first{k}", m, s)
        log(f"data curve K={k} done")
    if curve:
        sec["data_curve"] = time.perf_counter() - t0

    # ---- adapt and scratch, K sessions
    for k in ks:
        for regime in ("adapt", "scratch"):
            t0 = time.perf_counter()
            out = models / f"{regime}-k{k}-subj{HELDOUT:02d}"
            s_run = train.run_regime(regime, prep={HELDOUT: prep[HELDOUT]}, embed=embed, out_dir=out,
                                     init=pre if regime == "adapt" else None, sessions=f"first:{k}",
                                     heads=["pooled"], run=run_config(ADAPT if regime == "adapt" else SMALL,
                                                                      args.threads, model=regime != "adapt"),
                                     progress=False, resume=False)
            res["train_samples_per_s"][f"{regime}-k{k}"] = s_run["samples_per_s"]
            evaluate(f"{regime}-k{k}", out, HELDOUT)
            sec[f"{regime}-k{k}"] = time.perf_counter() - t0
        log(f"K={k} done")

    # ---- where the ceiling is: the same decoders on noise-free responses (sim truth mu)
    if not args.no_diagnostics:
        t0 = time.perf_counter()
        mu = noise_free_prep(work, d["truth"], {s: prep[s] for s in TRAIN_SUBJECTS})
        for s in TRAIN_SUBJECTS:
            m = models / f"ridge-mu-subj{s:02d}"
            ridge.fit_ridge_regime(mu[s], s, embed, m, sessions="all", heads=["pooled"])
            evaluate("ridge-mu", m, s, mu[s])
        pre_mu = models / "pretrain-mu"
        steps = {k: v for k, v in PRETRAIN.items() if k != "epochs"} | {"steps": s_pre["steps"]}
        train.run_regime("pretrain", prep=mu, embed=embed, out_dir=pre_mu, heads=["pooled"],
                         run=run_config(steps, args.threads), progress=False, resume=False)
        for s in TRAIN_SUBJECTS:
            evaluate("pretrain-mu", pre_mu, s, mu[s])
        sec["noise-free"] = time.perf_counter() - t0
        log("noise-free diagnostics done")

    # ---- throughput
    t0 = time.perf_counter()
    with __import__("h5py").File(prep[HELDOUT], "r") as f:
        nv = f["betas"].shape[1]
    res["throughput"] = {"threads=1": throughput(nv, 1), f"threads={args.threads}": throughput(nv, args.threads)}
    sec["throughput"] = time.perf_counter() - t0
    sec["total"] = time.perf_counter() - t_all
    report(res, ks)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


def report(res: dict, ks) -> None:
    R, O = res["retrieval"], res["oracle"]

    def b2i(method, s):
        return R[f"{method}/subj{s:02d}"]["b2i"]

    def frac(method, s):
        o = O[f"subj{s:02d}"]["b2i"]
        return b2i(method, s) / o if o else float("nan")

    print(f"\nnsd-sim default, {res['sessions']} sessions per subject, CLIP targets: {res['clip']}; "
          "top-1 among 300 (30 draws), test protocol avg_betas")
    print(f"{'method':<14}{'subject':<9}{'brain->image':>13}{'image->brain':>13}{'avg_outputs':>12}{'/ oracle':>10}")
    for key, r in R.items():
        method, subj = key.split("/")
        s = int(subj[4:])
        print(f"{method:<14}{subj:<9}{r['b2i']:>13.3f}{r['i2b']:>13.3f}{r['b2i_avg_outputs']:>12.3f}"
              f"{frac(method, s):>10.3f}")
    for s, o in O.items():
        print(f"{'oracle':<14}{s:<9}{o['b2i']:>13.3f}{o['i2b']:>13.3f}{'':>12}{1.0:>10.3f}")
    h = HELDOUT
    print(f"\nadaptation curve, subject {h} (brain->image top-1; fraction of oracle)")
    print(f"{'K':<4}{'adapt':>16}{'scratch':>16}{'ridge':>16}{'adapt/scratch':>15}{'adapt/ridge':>13}")
    for k in ks:
        a, sc, r = b2i(f"adapt-k{k}", h), b2i(f"scratch-k{k}", h), b2i(f"ridge-k{k}", h)
        print(f"{k:<4}{a:>8.3f} ({frac(f'adapt-k{k}', h):.2f}){sc:>8.3f} ({frac(f'scratch-k{k}', h):.2f})"
              f"{r:>8.3f} ({frac(f'ridge-k{k}', h):.2f}){a / max(sc, 1e-9):>15.2f}{a / max(r, 1e-9):>13.2f}")
    pre = np.mean([b2i("pretrain", s) for s in TRAIN_SUBJECTS])
    rid = np.mean([b2i("ridge-all", s) for s in TRAIN_SUBJECTS])
    print("\ntargets (issue 4)")
    if 1 in ks:
        a, sc, r = b2i("adapt-k1", h), b2i("scratch-k1", h), b2i("ridge-k1", h)
        print(f"  K=1 adapt >= 1.5 x scratch : {a:.3f} vs {sc:.3f} -> {a / max(sc, 1e-9):.2f}x "
              f"{'PASS' if a >= 1.5 * sc else 'FAIL'}")
        print(f"  K=1 adapt > ridge          : {a:.3f} vs {r:.3f} -> {a / max(r, 1e-9):.2f}x "
              f"{'PASS' if a > r else 'FAIL'}")
    print(f"  pretrained >= 2 x ridge    : {pre:.3f} vs {rid:.3f} (mean of subjects {TRAIN_SUBJECTS}) -> "
          f"{pre / max(rid, 1e-9):.2f}x {'PASS' if pre >= 2 * rid else 'FAIL'}")
    print(f"  (300 test images: one accuracy's binomial s.e. is about {np.sqrt(0.25 / 300):.3f} at 50 %)")
    if res["pretrain_curve"]:
        print(f"\ndata curve: subjects {TRAIN_SUBJECTS}' first K sessions (mean brain->image top-1)")
        print(f"{'K':<6}{'pretrained':>12}{'ridge':>10}{'pretrained/ridge':>18}")
        for k in [*res["pretrain_curve"], res["sessions"]]:
            m = ("pretrain", "ridge-all") if k == res["sessions"] else (f"pretrain-first{k}", f"ridge-first{k}")
            p, r = (np.mean([b2i(x, s) for s in TRAIN_SUBJECTS]) for x in m)
            print(f"{k:<6}{p:>12.3f}{r:>10.3f}{p / max(r, 1e-9):>18.2f}")
    if "pretrain-mu/subj01" in R:
        pm = np.mean([b2i("pretrain-mu", s) for s in TRAIN_SUBJECTS])
        rm = np.mean([b2i("ridge-mu", s) for s in TRAIN_SUBJECTS])
        print(f"\nnoise-free ceiling (decoders trained and tested on the sim truth's mu, subjects {TRAIN_SUBJECTS}):")
        print(f"  ridge {rm:.3f}, pretrain recipe {pm:.3f} = {pm / max(rid, 1e-9):.2f}x the ridge on betas; "
              f"the oracle identifies {np.mean([O[f'subj{s:02d}']['b2i'] for s in TRAIN_SUBJECTS]):.3f} "
              f"(it knows mu of every candidate; CLIP-space decoders must generalise to unseen images)")
    print("\ntraining throughput in the runs (samples/s):",
          ", ".join(f"{k} {v:.0f}" for k, v in res["train_samples_per_s"].items()))
    print("CPU training throughput at equal width (forward+backward+AdamW, batch 128, pooled CLIP 128):")
    for th, t in res["throughput"].items():
        base = t["MindEye2 BrainNetwork"]["samples_per_s"]
        for name, v in t.items():
            print(f"  {th:<10} {name:<37} {v['samples_per_s']:>9.0f} samples/s  {v['params'] / 1e6:6.2f} M params"
                  f"  {v['samples_per_s'] / base:5.2f}x")
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in res["seconds"].items()))


if __name__ == "__main__":
    sys.exit(main())
