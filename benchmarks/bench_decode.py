"""Issue 18: MindEye2's decode recipe on the nsd-sim default, ablated, with every choice made on
the validation split and the shared test images scored once.

    python benchmarks/bench_decode.py [--work DIR] [--world RESULTS] [--seeds 0,1,2] [--threads 2]

One run on the nsd-sim ``default`` world (``--world``: a ``make run`` results folder whose sim/,
prep/ and embed/clip.h5 are reused; else they are made here). The recipes are the workflow's own:
``config/config.yaml``'s brain and decode sections through :class:`braindecode_pkg.workflow.plan.Plan`
(the same ``--set`` options its rules pass), each model trained by ``braindecode-pkg train`` /
``ridge``, predicted by ``infer`` and decoded by ``decode``, scored by ``evaluate`` (judged by the
shipped judge CLIP, not the decoding CLIP). Steps (outputs kept in ``--work``, reused):

  data      the VAE latents of every shown image (the latent head's targets)
  models    per seed: pretrain (subjects 1-3), adapt-k1 and scratch-k1 (subject 4), ridge-all and
            ridge-k1, each without the validation images (``brain.validation``); with the
            config's recipe (the diffusion prior and the latent head), and "today's" (neither) for
            the baseline rows
  choices   on the validation images of seed 0, never the test images: the prior's denoiser
            (mlp or transformer: the prior samples' cosine to the true embeddings), its sampling
            (DDIM steps x guidance: the images decoded from its samples alone), img2img's strength,
            best-of-n's n and what it selects by (two-way CLIP by the judge, pretrained subjects
            1-3; ties within TIE go to the fewer steps, the lower guidance and strength, the fewer
            samples, the pooled direction; n at most MAX_N for the laptop run's budget); the
            captions' source (prior samples or direction) is measured beside them
  ablation  seed 0, test images: direction only (today's models and decode) / the config's models'
            direction / + prior / + low-level img2img / + best-of-n, for pretrained, ridge,
            adapted-k1 and scratch-k1: retrieval, PixCorr, SSIM, two-way CLIP, CIDEr, attr_acc with
            95 % bootstrap intervals, and decode seconds per image
  seeds     the chosen recipe for every seed: issue 18's targets as ratios with their spread

Prints the tables and writes ``--work/bench_decode.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRAIN_SUBJECTS = (1, 2, 3)
HELDOUT = 4
K = 1
METRICS = ("retrieval_brain2image_top1", "pixcorr", "ssim", "twoway_clip", "cider", "attr_acc")
SHORT = {"retrieval_brain2image_top1": "retrieval", "pixcorr": "PixCorr", "ssim": "SSIM", "twoway_clip": "two-way",
         "cider": "CIDEr", "attr_acc": "attr_acc"}
#: img2img strengths tried (the default runs img2img; without it, measured beside them, the samples
#: start from noise: strength 1)
STRENGTHS = (0.5, 0.7, 0.85, 0.95)
NS = (1, 2, 4, 8)
#: the largest n the default run may choose: decode time grows linearly with n, and make run has a
#: 20-minute budget on 2 cores (n = 8 is measured on the validation images for a GPU run's choice)
MAX_N = 4
#: settings whose validation two-way is within this of the best are ties
TIE = 0.005
PRIOR_ARCHS = {"mlp": {}, "transformer": {"arch": "transformer", "chunks": 8, "heads": 4, "depth": 2}}
#: the prior's DDIM steps and classifier-free guidance tried (ties: fewer steps, then less guidance)
PRIOR_STEPS = (10, 20, 50)
PRIOR_GUIDANCE = (1.0, 2.0, 4.0)


def _cli(*argv) -> None:
    from braindecode_pkg.cli import main

    rc = main([str(a) for a in argv])
    if rc != 0:
        raise SystemExit(f"braindecode-pkg {' '.join(map(str, argv))}: exit {rc}")


def _config(over: dict | None = None) -> dict:
    """config/config.yaml (validated, defaults filled) with ``over`` merged into it."""
    import yaml
    from snakemake.utils import validate

    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v

    merge(cfg, copy.deepcopy(over or {}))
    validate(cfg, str(REPO / "config/schema.yaml"))
    return cfg


def today(cfg: dict) -> dict:
    """The recipe before issue 18: no diffusion prior, no latent head, the direction decoded once."""
    cfg = copy.deepcopy(cfg)
    for r in ("pretrain", "adapt", "scratch"):
        (cfg["brain"][r].get("model") or {}).pop("prior", None)
    cfg["brain"]["heads"] = "pooled"
    cfg["decode"].update(source="direction", img2img=False, n_samples=1, strength=None)
    return cfg


class World:
    def __init__(self, work: Path, world: Path | None, threads: int):
        self.work, self.threads = work, threads
        r = world or work / "world"
        self.sim, self.embed = r / "sim", r / "embed/clip.h5"
        self.prep = {s: r / f"prep/subj{s:02d}.h5" for s in (*TRAIN_SUBJECTS, HELDOUT)}
        self.latent = work / "latent.h5"
        self.root = self.sim / "nsd"
        if world is None:
            self.make()
        if not self.latent.is_file():
            _cli("latents", "--nsd-root", self.root, "--subjects", "1,2,3,4", "--image-decoder", "sim",
                 "--out", self.latent)

    def make(self):
        subjects = ",".join(map(str, (*TRAIN_SUBJECTS, HELDOUT)))
        if not (self.sim / "sim_truth/manifest.json").is_file():
            _cli("simulate", "--preset", "default", "--seed", "0", "--set", f"subjects=[{subjects}]", "--out", self.sim)
        for s, p in self.prep.items():
            if not p.is_file():
                _cli("preprocess", "--nsd-root", self.root, "--subject", s, "--out", p, "--quiet")
        if not self.embed.is_file():
            _cli("embed", "--nsd-root", self.root, "--subjects", subjects, "--clip", "sim", "--out", self.embed, "--quiet")

    def truth(self, s: int) -> Path:
        return self.sim / f"sim_truth/subj{s:02d}.h5"


def _methods():
    return ([("pretrain", s) for s in TRAIN_SUBJECTS] + [("ridge-all", s) for s in TRAIN_SUBJECTS]
            + [(f"{m}-k{K}", HELDOUT) for m in ("adapt", "scratch", "ridge")])


def _pretrain(world: World, plan, d: Path, seed: int) -> Path:
    """Pretrain on subjects 1-3 (the workflow's options of ``plan``) into ``d``, unless it is there."""
    if not (d / "model.safetensors").is_file():
        _cli("train", "--regime", "pretrain", "--prep", *[f"{s}={world.prep[s]}" for s in TRAIN_SUBJECTS],
             "--heads", plan.clip_heads, *shlex.split(plan.regime_sets("pretrain")), *_common(world, plan, seed),
             "--out", d)
    return d


def _common(world: World, plan, seed: int) -> list:
    latent = ["--latent", world.latent] if plan.want_latent else []
    return ["--embed", world.embed, *latent, *plan.validation_opt().split(), "--quiet", "--set", f"train.seed={seed}",
            "--set", f"train.threads={world.threads}"]


def _infer(world: World, plan, model: Path, method: str, s: int, out: Path, splits=("test", "val"),
           sampling: tuple | None = None) -> None:
    """Test and/or validation predictions of a model; a brain model's prior sampled with ``sampling``
    (steps, guidance; default: the plan's model config), redone when a file has other settings."""
    import h5py

    prior = []
    if plan.has_prior(method):
        p = plan.model_section("pretrain" if method == "pretrain" else method.split("-")[0])["prior"]
        steps, guidance = sampling or (p.get("sample_steps", 20), p.get("guidance", 1.0))
        prior = ["--prior", "--prior-steps", int(steps), "--prior-guidance", float(guidance)]
    for split in splits:
        f = out / "brain" / method / (f"subj{s:02d}.h5" if split == "test" else f"subj{s:02d}.val.h5")
        if f.is_file() and prior:
            with h5py.File(f) as h:
                done = json.loads(h.attrs.get("prior_sampling", "{}"))
            if done != {"steps": int(prior[2]), "guidance": float(prior[4])}:
                f.unlink()
        if not f.is_file():
            _cli("infer", "--model", model, "--prep", world.prep[s], "--subject", s, "--method", method,
                 "--split", split, *plan.validation_opt().split(), *prior, "--threads", world.threads, "--out", f)


def train(world: World, cfg: dict, out: Path, seed: int) -> Path:
    """The workflow's models of ``cfg`` with training seed ``seed`` under ``out/models``; the test and
    validation predictions under ``out/brain``. Ridge does not depend on the seed or on the brain
    model's recipe: it is fitted once, under ``world.work/ridge``, and shared."""
    from braindecode_pkg.workflow.plan import Plan

    plan = Plan(cfg, check=False)
    m = out / "models"
    _pretrain(world, plan, m / "pretrain", seed)
    for regime, extra in (("adapt", ["--init", m / "pretrain"]), ("scratch", ["--heads", plan.clip_heads])):
        d = m / f"{regime}-k{K}"
        if not (d / "model.safetensors").is_file():
            _cli("train", "--regime", regime, "--prep", f"{HELDOUT}={world.prep[HELDOUT]}", *extra,
                 "--sessions", f"first:{K}", *shlex.split(plan.regime_sets(regime)), *_common(world, plan, seed),
                 "--out", d)
    for sel, subjects, sessions in (("all", TRAIN_SUBJECTS, "all"), (f"k{K}", (HELDOUT,), f"first:{K}")):
        for s in subjects:
            d = world.work / f"ridge/ridge-{sel}/subj{s:02d}"
            if not (d / "model.safetensors").is_file():
                _cli("ridge", "--prep", world.prep[s], "--embed", world.embed, "--sessions", sessions,
                     "--heads", plan.ridge_heads, *plan.validation_opt().split(), "--threads", world.threads,
                     "--out", d)
    for method, s in _methods():
        model = m / method if not method.startswith("ridge") else world.work / f"ridge/{method}/subj{s:02d}"
        _infer(world, plan, model, method, s, out)
    return out


class Scoring:
    """Decode + score with the models loaded once (the decoders, the judge, METEOR's Java)."""

    def __init__(self, world: World):
        from braindecode_pkg.decode import Decoders

        self.world = world
        self.decoders = Decoders()
        self.scorers = {}
        self.seconds: dict[str, list] = {}

    def scorer(self, s):
        from braindecode_pkg.evaluate.score import Scorer

        if s not in self.scorers:
            self.scorers[s] = Scorer(embed=self.world.embed, nsd_root=self.world.root, judge_clip="sim")
        return self.scorers[s]

    def run(self, brain: Path, out: Path, settings: dict, s: int, part: Path):
        """Decode ``brain`` with ``settings`` into ``out``, score it into ``part``; (scores, s/image).
        A folder and part of an earlier run are reused when that run decoded the same settings from
        the brain file as it is now."""
        import dataclasses

        import h5py

        from braindecode_pkg.decode import DecodeSettings, decode
        from braindecode_pkg.evaluate.score import read_part, write_part

        if part.is_file() and (out / "seconds.json").is_file() and part.stat().st_mtime > brain.stat().st_mtime:
            with h5py.File(out / "decode.h5") as f:
                done = json.loads(f.attrs["settings"])
            if done == dataclasses.asdict(DecodeSettings(**settings)):
                return read_part(part), json.loads((out / "seconds.json").read_text())["per_image"]

        t0 = time.perf_counter()
        decode(brain, out, embed=self.world.embed, settings=DecodeSettings(**settings), decoders=self.decoders)
        with h5py.File(out / "decode.h5") as f:
            per_image = (time.perf_counter() - t0) / max(1, int(f.attrs["n_reconstructed"]))
        (out / "seconds.json").write_text(json.dumps({"per_image": per_image}))
        sc = self.scorer(s).score(brain, out, truth=self.world.truth(s))
        write_part(sc, part)
        return sc, per_image

    def close(self):
        for sc in self.scorers.values():
            sc.close()


def _decode_settings(cfg: dict, **over) -> dict:
    d = {k: v for k, v in cfg["decode"].items()}
    d.update(over)
    return d


def _mean(scores, metric):
    return float(np.mean([s.metrics[metric]["value"] for s in scores]))


def pick(scores: dict, metric: str = "twoway_clip", tie: float = TIE):
    """The smallest setting whose validation ``metric`` is within ``tie`` of the best: ties go to the
    lower img2img strength, which keeps more of the blurry image (PixCorr and SSIM fall with it), and
    to the fewer samples (decode time grows with n)."""
    best = max(v[metric] for v in scores.values())
    return min(k for k, v in scores.items() if v[metric] >= best - tie)


def with_prior(cfg: dict, **opts) -> dict:
    """``cfg`` with ``opts`` set in the pretrained model's prior (adapt and scratch inherit it)."""
    cfg = copy.deepcopy(cfg)
    prior = cfg["brain"]["pretrain"]["model"]["prior"]
    cfg["brain"]["pretrain"]["model"]["prior"] = {**prior, **opts}
    return cfg


def choose(world: World, sc: Scoring, cfg: dict, work: Path) -> dict:
    """On seed 0's validation images: the prior's denoiser, its sampling (DDIM steps and guidance),
    img2img's strength and best-of-n's n; the captions' source measured beside them."""
    import h5py

    from braindecode_pkg.brain.data import load_targets

    report: dict = {"prior": {}, "prior_sampling": {}, "strength": {}, "n_samples": {}, "select_by": {}}
    for arch, opts in PRIOR_ARCHS.items():
        out = train_pretrain_only(world, with_prior(cfg, **opts), work / f"choose/prior-{arch}")
        cos = []
        for s in TRAIN_SUBJECTS:
            with h5py.File(out / f"brain/pretrain/subj{s:02d}.val.h5") as f:
                ids, p = f["nsd_id"][:], f["avg_betas/prior"][:]
            t = load_targets(world.embed, heads=("pooled",), ids=ids)
            true = t.arrays["pooled"][t.rows(ids)]
            cos.append(float(np.mean(np.sum(p / np.linalg.norm(p, axis=1, keepdims=True) * true, 1))))
        report["prior"][arch] = float(np.mean(cos))
    arch = max(report["prior"], key=report["prior"].get)
    cfg = with_prior(cfg, **PRIOR_ARCHS[arch])
    out = work / f"choose/prior-{arch}"
    from braindecode_pkg.workflow.plan import Plan

    plan = Plan(cfg, check=False)

    def val_scores(sampling: tuple, **over) -> dict:
        """Mean over subjects 1-3 of the validation images' metrics, the prior sampled with
        ``sampling`` (steps, guidance) and decoded with ``over``."""
        tag = f"steps{sampling[0]}-guidance{sampling[1]:g}"
        name = "-".join([tag] + [f"{k}{v}" for k, v in over.items()])
        scores = []
        for s in TRAIN_SUBJECTS:
            _infer(world, plan, out / "models/pretrain", "pretrain", s, out / f"val-brain/{tag}", splits=("val",),
                   sampling=sampling)
            settings = _decode_settings(cfg, **{"source": "prior", "img2img": True, "max_images": None, **over})
            r, _ = sc.run(out / f"val-brain/{tag}/brain/pretrain/subj{s:02d}.val.h5",
                          out / f"val-decode/{name}/subj{s:02d}", settings, s, out / f"val-parts/{name}/subj{s:02d}.h5")
            scores.append(r)
        return {m: _mean(scores, m) for m in METRICS}

    # the prior's sampling, judged on what it is for: the images decoded from its samples alone
    grid = {(st, g): val_scores((st, g), img2img=False, n_samples=1) for st in PRIOR_STEPS for g in PRIOR_GUIDANCE}
    sampling = pick(grid)
    report["prior_sampling"] = {f"steps {st}, guidance {g:g}": v for (st, g), v in grid.items()}
    for st in STRENGTHS:
        report["strength"][st] = val_scores(sampling, strength=st, n_samples=1)
    strength = pick(report["strength"])
    report["strength"]["none"] = grid[sampling]  # no img2img: the prior's samples decoded from noise
    for n in NS:
        report["n_samples"][n] = val_scores(sampling, strength=strength, n_samples=n)
    n_samples = pick({n: v for n, v in report["n_samples"].items() if n <= MAX_N})
    # best of n against the brain model's pooled embedding or against the prior's sample (ties: the
    # former, the default)
    report["select_by"] = {sel: val_scores(sampling, strength=strength, n_samples=n_samples, select_by=sel)
                           for sel in ("direction", "source")}
    select_by = pick(report["select_by"])
    # captions: from the prior's samples (MindEye2) or from the contrastive direction
    report["captions"] = {"prior": report["n_samples"][1],
                          "direction": val_scores(sampling, source="direction", img2img=False, n_samples=1)}
    report["chosen"] = {"prior_arch": arch, "prior_steps": sampling[0], "prior_guidance": sampling[1],
                        "strength": strength, "n_samples": n_samples, "select_by": select_by}
    return report


def train_pretrain_only(world: World, cfg: dict, out: Path) -> Path:
    """Pretrain on subjects 1-3 with seed 0 and predict their validation images (the choices need
    no more; :func:`train` of the same config and ``out`` adds the rest)."""
    from braindecode_pkg.workflow.plan import Plan

    plan = Plan(cfg, check=False)
    d = _pretrain(world, plan, out / "models/pretrain", 0)
    for s in TRAIN_SUBJECTS:
        _infer(world, plan, d, "pretrain", s, out, splits=("val",))
    return out


def ablation(world: World, sc: Scoring, base: Path, new: Path, cfg: dict, chosen: dict, work: Path) -> dict:
    """Seed 0, test images: the rows of the ablation for each method (mean over its subjects)."""
    from braindecode_pkg.evaluate.collect import collect

    recipes = [
        ("direction only (today)", base, dict(source="direction", img2img=False, n_samples=1)),
        ("direction, this recipe's models", new, dict(source="direction", img2img=False, n_samples=1)),
        ("+ prior", new, dict(source="prior", img2img=False, n_samples=1)),
        ("+ low-level img2img", new, dict(source="prior", img2img=True, strength=chosen["strength"], n_samples=1)),
        (WHOLE, new, dict(source="prior", img2img=True, strength=chosen["strength"], n_samples=chosen["n_samples"],
                          select_by=chosen["select_by"])),
    ]
    table: dict = {}
    for name, models, over in recipes:
        parts, secs = [], []
        slug = _slug(name)
        for method, s in _methods():
            brain = models / f"brain/{method}/subj{s:02d}.h5"
            part = work / f"ablation/{slug}/parts/{method}/subj{s:02d}.h5"
            _, t = sc.run(brain, work / f"ablation/{slug}/decode/{method}/subj{s:02d}",
                          _decode_settings(cfg, **over), s, part)
            parts.append(part)
            secs.append(t)
        rows = collect(parts, work / f"ablation/{slug}/metrics.tsv")
        table[name] = {"seconds_per_image": float(np.mean(secs)), "rows": _rows(rows)}
    return table


def _slug(recipe_name: str) -> str:
    return recipe_name.split(" (")[0].replace(" ", "_").replace("+", "p").replace(",", "").replace("'", "")


#: the ablation's last row: the whole recipe (seed 0's row of the targets over seeds)
WHOLE = "+ best-of-n"


def recipe_dir(work: Path, seed: int, arch: str) -> Path:
    """Where the models of the chosen recipe with ``seed`` are: seed 0's pretrained model is the one
    the choices trained for the chosen prior denoiser."""
    return work / f"choose/prior-{arch}" if seed == 0 else work / f"seed{seed}/recipe"


def _rows(rows) -> dict:
    """{method: {metric: (value, lo, hi)}} of the mean rows (the held-out subject's own rows)."""
    out: dict = {}
    for r in rows:
        one = r["method"] in (f"adapted-k{K}", f"scratch-k{K}", f"ridge-k{K}")
        if (r["subject"] == "mean") != one and r["metric"] in METRICS:
            out.setdefault(r["method"], {})[r["metric"]] = (r["value"], r["ci_low"], r["ci_high"])
    return out


def targets_over_seeds(world, sc, cfg, chosen, work, seeds) -> dict:
    """Issue 18's targets per seed with the chosen recipe, and retrieval of today's recipe."""
    import h5py

    from braindecode_pkg.evaluate.retrieval import retrieval

    per: dict = {}
    for seed in seeds:
        new = train(world, cfg, recipe_dir(work, seed, chosen["prior_arch"]), seed)
        base = train(world, today(cfg), work / f"seed{seed}/today", seed)
        row: dict = {}
        over = dict(source="prior", img2img=True, strength=chosen["strength"], n_samples=chosen["n_samples"],
                    select_by=chosen["select_by"])
        # seed 0's are the ablation's last row, already decoded and scored
        where = work / (f"ablation/{_slug(WHOLE)}" if seed == 0 else f"seed{seed}")
        for method, s in _methods():
            part = where / f"parts/{method}/subj{s:02d}.h5"
            r, _ = sc.run(new / f"brain/{method}/subj{s:02d}.h5", where / f"decode/{method}/subj{s:02d}",
                          _decode_settings(cfg, **over), s, part)
            row.setdefault(method, []).append({m: r.metrics[m]["value"] for m in METRICS})
            # today's models' retrieval (decode does not change it): the baseline of "not below"
            with h5py.File(base / f"brain/{method}/subj{s:02d}.h5") as f:
                pred = f["avg_betas/pooled"][:]
            ref = sc.scorer(s).references(r.nsd_id)
            row.setdefault(f"{method} (today)", []).append(
                {"retrieval_brain2image_top1": retrieval(pred, ref["pooled"])["brain_to_image"]})
        per[seed] = {m: {k: float(np.mean([v[k] for v in vs])) for k in vs[0]} for m, vs in row.items()}
    return per


def _ratio_table(per: dict) -> dict:
    def get(seed, m, k):
        return per[seed][m][k]

    seeds = sorted(per)
    rows = {
        "pretrained two-way": [get(s, "pretrain", "twoway_clip") for s in seeds],
        "ridge two-way": [get(s, "ridge-all", "twoway_clip") for s in seeds],
        "pretrained - ridge two-way": [get(s, "pretrain", "twoway_clip") - get(s, "ridge-all", "twoway_clip") for s in seeds],
        f"adapted-k{K} - scratch-k{K} two-way": [get(s, f"adapt-k{K}", "twoway_clip") - get(s, f"scratch-k{K}", "twoway_clip") for s in seeds],
        f"adapted-k{K} - ridge-k{K} two-way": [get(s, f"adapt-k{K}", "twoway_clip") - get(s, f"ridge-k{K}", "twoway_clip") for s in seeds],
        "pretrained - ridge PixCorr": [get(s, "pretrain", "pixcorr") - get(s, "ridge-all", "pixcorr") for s in seeds],
        "pretrained - ridge SSIM": [get(s, "pretrain", "ssim") - get(s, "ridge-all", "ssim") for s in seeds],
        "pretrained CIDEr": [get(s, "pretrain", "cider") for s in seeds],
        "pretrained attr_acc": [get(s, "pretrain", "attr_acc") for s in seeds],
        "pretrained retrieval": [get(s, "pretrain", "retrieval_brain2image_top1") for s in seeds],
        "pretrained retrieval, today's recipe": [get(s, "pretrain (today)", "retrieval_brain2image_top1") for s in seeds],
        f"adapted-k{K} / scratch-k{K} retrieval": [get(s, f"adapt-k{K}", "retrieval_brain2image_top1")
                                                  / get(s, f"scratch-k{K}", "retrieval_brain2image_top1") for s in seeds],
        f"adapted-k{K} / scratch-k{K} retrieval, today's recipe": [
            get(s, f"adapt-k{K} (today)", "retrieval_brain2image_top1")
            / get(s, f"scratch-k{K} (today)", "retrieval_brain2image_top1") for s in seeds],
    }
    return {k: {"per_seed": v, "mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
            for k, v in rows.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(REPO / "results/bench_decode"))
    p.add_argument("--world", default=None, help="a make run's results folder (sim/, prep/, embed/clip.h5) to reuse")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(a.threads)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    world = World(work, Path(a.world) if a.world else None, a.threads)
    cfg = _config()
    seeds = [int(s) for s in a.seeds.split(",")]
    sc = Scoring(world)
    try:
        chosen_report = choose(world, sc, cfg, work)
        chosen = chosen_report["chosen"]
        cfg = with_prior(cfg, **PRIOR_ARCHS[chosen["prior_arch"]], sample_steps=chosen["prior_steps"],
                         guidance=chosen["prior_guidance"])
        new = train(world, cfg, recipe_dir(work, 0, chosen["prior_arch"]), 0)
        base = train(world, today(cfg), work / "seed0/today", 0)
        table = ablation(world, sc, base, new, cfg, chosen, work)
        per = targets_over_seeds(world, sc, cfg, chosen, work, seeds)
    finally:
        sc.close()
    ratios = _ratio_table(per)
    print("\nchoices on the validation images (seed 0):")
    print("  prior denoiser, val cosine of its samples to the true embeddings:",
          ", ".join(f"{k} {v:.3f}" for k, v in chosen_report["prior"].items()))

    def val_row(v, metrics=("twoway_clip", "pixcorr", "ssim")):
        return " / ".join(f"{v[m]:.3f}" for m in metrics)

    print("  prior sampling, val two-way (judge) / PixCorr / SSIM of its samples decoded alone:",
          "; ".join(f"{k}: {val_row(v)}" for k, v in chosen_report["prior_sampling"].items()))
    print("  img2img strength, val two-way (judge) / PixCorr / SSIM:",
          "; ".join(f"{k}: {val_row(v)}" for k, v in chosen_report["strength"].items()))
    print("  best-of-n, val two-way (judge) / PixCorr / SSIM:",
          "; ".join(f"n={k}: {val_row(v)}" for k, v in chosen_report["n_samples"].items()))
    print("  best of n against, val two-way (judge) / PixCorr / SSIM:",
          "; ".join(f"{k}: {val_row(v)}" for k, v in chosen_report["select_by"].items()))
    print("  captions from, val CIDEr / attr_acc:",
          "; ".join(f"{k}: {val_row(v, ('cider', 'attr_acc'))}" for k, v in chosen_report["captions"].items()))
    print("  chosen:", chosen)
    print("\nablation, test images, seed 0 (value [95 % CI]; mean of subjects 1-3, subject 4 for the K=1 rows):")
    methods = ("pretrained", "ridge", f"adapted-k{K}", f"scratch-k{K}")
    print("| recipe | method | " + " | ".join(SHORT[m] for m in METRICS) + " | decode ms/image |")
    print("|---" * (3 + len(METRICS)) + "|")
    for name, t in table.items():
        for m in methods:
            vals = t["rows"].get(m, {})
            cells = [f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" if k in vals and (v := vals[k]) else "" for k in METRICS]
            print(f"| {name} | {m} | " + " | ".join(cells) + f" | {1000 * t['seconds_per_image']:.0f} |")
    print(f"\nissue 18's targets over seeds {seeds} (mean ± sd; per seed):")
    for k, v in ratios.items():
        print(f"  {k}: {v['mean']:.3f} ± {v['sd']:.3f}  ({', '.join(f'{x:.3f}' for x in v['per_seed'])})")
    doc = {"choices": chosen_report, "ablation": table, "per_seed": per, "targets": ratios, "seeds": seeds}
    (work / "bench_decode.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
