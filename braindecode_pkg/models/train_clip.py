"""Train nsd-sim's own CLIP: an open_clip model on procedural scenes and their captions.

The world is procedural (:mod:`braindecode_pkg.data.scenes`), so training data is unlimited:
``n_train`` scenes are drawn from a training stream, rendered once at the model's resolution
through the model's own open_clip eval transform (:meth:`.ClipEncoder.preprocess_uint8`) and
cached; each scene has ``n_captions`` captions and every step pairs each image with one of them
at random (caption augmentation). Held-out scenes come from a different stream
(:data:`_P_HELDOUT`), so they are never trained on. The loss is open_clip's ``ClipLoss``; the
optimiser AdamW with linear warm-up and cosine decay; everything is seeded, and on CPU with a
fixed thread count the saved weights are byte-identical run to run.

The result is saved in open_clip's local-dir format (``open_clip_config.json`` +
``open_clip_model.safetensors``), with the recipe, seed, command and held-out metrics under the
config's ``braindecode`` key, and is loaded by :class:`.clip.ClipEncoder` like any other CLIP.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from .progress import fit_budget, step_bar, tick

SIM_ARCH = "nsd-sim-clip"

#: the nsd-sim CLIP architecture (an open_clip ``model_cfg``), registered as :data:`SIM_ARCH`
SIM_MODEL_CFG: dict = {
    "embed_dim": 128,
    "custom_text": True,
    "vision_cfg": {"image_size": 96, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

#: a few-second version for tests
TINY_MODEL_CFG: dict = {
    "embed_dim": 16,
    "custom_text": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}

# random-stream purposes (never renumber: it changes every output)
_P_TRAIN, _P_HELDOUT, _P_STEPS, _P_INIT = 1, 2, 3, 4


def register_arch(name: str, model_cfg: dict) -> None:
    """Register an open_clip architecture ``name`` (``open_clip.create_model(name)`` builds it).

    open_clip 3.3 reads architectures from JSON files (``add_model_config``) into the registry
    dict ``open_clip.factory._MODEL_CONFIGS``; a config held in code is put there directly.
    """
    from open_clip import factory

    factory._MODEL_CONFIGS[name] = copy.deepcopy(model_cfg)


def register_sim_arch() -> None:
    """Make :data:`SIM_ARCH` an open_clip architecture name."""
    from open_clip import factory

    if SIM_ARCH not in factory._MODEL_CONFIGS:
        register_arch(SIM_ARCH, SIM_MODEL_CFG)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the nsd-sim CLIP is trained (every field is recorded beside the weights)."""

    steps: int = 2400
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 0.0
    warmup: int = 100
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.98)
    n_train: int = 40000
    n_captions: int = 5
    captions_per_step: int = 2  # the image batch is scored against that many caption batches
    n_heldout: int = 1000
    init_logit_scale: float = math.log(1 / 0.07)
    threads: int = 1
    eval_every: int = 0  # >0: held-out top-1 every that many steps (recorded; does not change training)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


#: named (recipe, model config); ``tiny`` runs in seconds (tests, workflow smoke runs)
PRESETS: dict = {
    "default": (Recipe(), SIM_MODEL_CFG),
    "tiny": (Recipe(steps=25, batch_size=32, lr=3e-3, warmup=3, n_train=96, n_heldout=40), TINY_MODEL_CFG),
}


# --------------------------------------------------------------------------------------- data
def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def draw_scenes(seed: int, purpose: int, n: int, n_captions: int = 5):
    """(attribute table, list of caption lists) of ``n`` scenes of a random stream."""
    from ..data import scenes as sc

    attrs = sc.sample_scenes(_rng(seed, purpose, 0), n)
    caps = [sc.make_captions(attrs, i, _rng(seed, purpose, 1, i), n=n_captions) for i in range(n)]
    return attrs, caps


def _render_rows(args):
    from ..data import scenes as sc

    attrs, rows, geometry = args
    from PIL import Image  # noqa: F401  (geometry works on PIL images)

    return np.stack([np.asarray(geometry(sc.render_scene(attrs, int(i), pil=True))) for i in rows])


def render(attrs, encoder, workers: int = 1, progress: bool = False) -> np.ndarray:
    """(n, S, S, 3) uint8: the scenes rendered at 425 px and put through the model's resize/crop."""
    n = len(attrs["background"])
    size = encoder.image_size
    out = np.empty((n, size[0], size[1], 3), np.uint8)
    step = 256
    chunks = [np.arange(a, min(n, a + step)) for a in range(0, n, step)]
    it = ((attrs, rows, encoder._geometry) for rows in chunks)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="img", desc="render scenes")
    if workers > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            for rows, block in zip(chunks, pool.map(_render_rows, it)):
                out[rows] = block
                if bar is not None:
                    bar.update(len(rows))
    else:
        for rows, args in zip(chunks, it):
            out[rows] = _render_rows(args)
            if bar is not None:
                bar.update(len(rows))
    if bar is not None:
        bar.close()
    return out


def _cache_key(seed, purpose, n, n_captions, preprocess_cfg) -> str:
    import hashlib

    from ..data.sim import SIM_VERSION

    doc = json.dumps([SIM_VERSION, seed, purpose, n, n_captions, preprocess_cfg], sort_keys=True, default=str)
    return hashlib.sha1(doc.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "braindecode_pkg" / "sim_clip_data"


def scene_set(seed: int, purpose: int, n: int, n_captions: int, encoder, cache_dir=None,
              workers: int = 1, progress: bool = False) -> dict:
    """Rendered images, captions and attributes of ``n`` scenes, cached under ``cache_dir``.

    ``cache_dir=False`` disables the cache. The cache key holds the world version, stream,
    count and the model's preprocessing, so a different resolution never reuses images.
    """
    from ..io import atomic_path, sidecar_intact, write_digest_sidecar

    attrs, caps = draw_scenes(seed, purpose, n, n_captions)
    images = None
    path = None
    if cache_dir is not False:
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        path = cache / f"scenes-{_cache_key(seed, purpose, n, n_captions, encoder.preprocess_cfg)}.npy"
        if path.is_file() and sidecar_intact(path):  # a cache altered on disk is rendered again
            try:
                images = np.load(path, mmap_mode=None, allow_pickle=False)
                if images.shape != (n, *encoder.image_size, 3):
                    images = None
            except (OSError, ValueError):
                images = None
    if images is None:
        images = render(attrs, encoder, workers=workers, progress=progress)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, images, allow_pickle=False)
                write_digest_sidecar(path)
            except OSError:  # a read-only cache only costs time
                pass
    return {"images": images, "captions": caps, "attrs": attrs}


# ---------------------------------------------------------------------------------- metrics
def retrieval_top1(a: np.ndarray, b: np.ndarray, n_candidates: int = 300, n_draws: int = 30,
                   seed: int = 0) -> float:
    """Top-1 a→b among ``n_candidates`` random rows, averaged over ``n_draws`` draws.

    Row i of ``a`` matches row i of ``b``; similarity is cosine (rows are normalised here). The
    field's protocol (MindEye): 300 candidates, 30 draws.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    n = len(a)
    k = min(n_candidates, n)
    rng = np.random.default_rng(seed)
    acc = []
    for _ in range(n_draws):
        idx = rng.choice(n, k, replace=False)
        s = a[idx] @ b[idx].T
        acc.append(np.mean(np.argmax(s, axis=1) == np.arange(k)))
    return float(np.mean(acc))


def evaluate(encoder, heldout: dict, n_candidates: int = 300, n_draws: int = 30, batch_size: int = 250) -> dict:
    """Held-out top-1 image→caption and caption→image (first caption of each scene)."""
    x = heldout["images"]
    pooled = np.concatenate([
        encoder.encode_pixels(encoder.to_tensor(x[a:a + batch_size]), what=("pooled",))["pooled"]
        for a in range(0, len(x), batch_size)
    ])
    text = encoder.encode_text([c[0] for c in heldout["captions"]])
    return {
        "image_to_caption_top1": retrieval_top1(pooled, text, n_candidates, n_draws),
        "caption_to_image_top1": retrieval_top1(text, pooled, n_candidates, n_draws),
        "n_heldout": int(len(x)), "n_candidates": int(min(n_candidates, len(x))), "n_draws": int(n_draws),
    }


# --------------------------------------------------------------------------------- training
def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
                   or "embedding" in name or "token" in name)
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, recipe: Recipe, total: int) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, total - recipe.warmup)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def train(out_dir, *, seed: int = 0, recipe: Recipe | None = None, model_cfg: dict | None = None,
          minutes: float | None = None, cache_dir=None, workers: int = 1, progress: bool = True,
          command: str | None = None, log=print) -> dict:
    """Train the nsd-sim CLIP and save it to ``out_dir`` (open_clip local-dir); return a summary.

    ``minutes``: a time budget for the optimisation steps. After the warm-up steps the step time
    is measured and the run shortened to fit (never lengthened); the cosine schedule then decays
    over the shortened run, and the number of steps actually run is recorded, so the result is
    reproducible with ``steps`` set to it.
    """
    import torch
    import torch.nn.functional as F
    from open_clip import ClipLoss

    from . import clip as mclip

    recipe = recipe or Recipe()
    model_cfg = copy.deepcopy(model_cfg or SIM_MODEL_CFG)
    t_start = time.time()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        torch.manual_seed(int(np.random.SeedSequence([seed, _P_INIT]).generate_state(1)[0]))
        register_sim_arch()
        import open_clip
        from open_clip import factory

        name = f"{SIM_ARCH}-train-{os.getpid()}"
        register_arch(name, model_cfg)
        try:
            model = mclip.create_clip_model(name)
        finally:
            factory._MODEL_CONFIGS.pop(name, None)
        with torch.no_grad():
            model.logit_scale.fill_(recipe.init_logit_scale)
        from open_clip.model import get_model_preprocess_cfg

        pp = dict(get_model_preprocess_cfg(model))
        tok = open_clip.get_tokenizer(SIM_ARCH)  # open_clip's BPE tokenizer (offline)
        ctx = int(model_cfg["text_cfg"].get("context_length", 77))
        enc = mclip.ClipEncoder(model, pp, lambda texts: tok(texts, context_length=ctx))

        t0 = time.time()
        train_set = scene_set(seed, _P_TRAIN, recipe.n_train, recipe.n_captions, enc, cache_dir, workers, progress)
        heldout = scene_set(seed, _P_HELDOUT, recipe.n_heldout, 1, enc, cache_dir, workers, progress)
        t_data = time.time() - t0
        n, k = recipe.n_train, recipe.n_captions
        tokens = tok([c for caps in train_set["captions"] for c in caps], context_length=ctx).reshape(n, k, ctx)
        lengths = (tokens != 0).sum(-1)
        images = train_set["images"]

        rng = _rng(seed, _P_STEPS)
        opt = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr,
                                betas=tuple(recipe.betas), eps=1e-6)
        loss_fn = ClipLoss()
        total = int(recipe.steps)
        order = np.empty(0, np.int64)
        losses = []
        curve = []
        t_eval = 0.0
        causal = model.text.attn_mask
        model.train()
        t_train = time.time()
        bar = step_bar(progress, total, "train CLIP")
        step = 0
        while step < total:
            if len(order) < recipe.batch_size:
                order = np.concatenate([order, rng.permutation(n)])
            idx, order = order[: recipe.batch_size], order[recipe.batch_size:]
            cap = rng.integers(0, k, (recipe.captions_per_step, len(idx)))
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, recipe, total)
            x = enc.to_tensor(images[idx])
            img = F.normalize(model.encode_image(x), dim=-1)
            scale = model.logit_scale.exp()
            loss = 0.0
            for c in cap:
                t = tokens[idx, c]
                t = t[:, : int(lengths[idx, c].max())]  # padding after EOT never reaches it (causal)
                model.text.attn_mask = causal[: t.shape[1], : t.shape[1]]
                txt = F.normalize(model.encode_text(t), dim=-1)
                loss = loss + loss_fn(img, txt, scale)
            loss = loss / len(cap)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
            step += 1
            if recipe.eval_every and step % recipe.eval_every == 0 and step < total:
                te = time.time()
                model.text.attn_mask = causal
                model.eval()
                m = evaluate(enc, heldout)
                model.train()
                t_eval += time.time() - te
                curve.append({"step": step, "seconds": round(time.time() - t_train - t_eval, 1),
                              "image_to_caption_top1": round(m["image_to_caption_top1"], 4),
                              "loss": round(float(np.mean(losses[-50:])), 4)})
                log(json.dumps(curve[-1]))
            tick(bar, losses)
            if minutes is not None and step == recipe.warmup + 5:
                total = fit_budget(step, total, t_train, minutes * 60 - (t_train - t_start) - 10, bar)
        if bar is not None:
            bar.close()
        model.text.attn_mask = causal
        t_train = time.time() - t_train - t_eval
        model.eval()
        metrics = evaluate(enc, heldout)
        metrics["train_loss_last100"] = float(np.mean(losses[-100:]))
        summary = {
            "arch": SIM_ARCH,
            "seed": int(seed),
            "recipe": dataclasses.replace(recipe, steps=total).to_dict(),
            "steps_run": total,
            "heldout": metrics,
            "heldout_curve": curve,
            "seconds": {"data": round(t_data, 1), "train": round(t_train, 1), "total": round(time.time() - t_start, 1)},
            "n_params": int(sum(p.numel() for p in model.parameters())),
            "torch_version": torch.__version__,
            "open_clip_version": open_clip.__version__,
            "command": command,
            "train_stream": [int(seed), _P_TRAIN], "heldout_stream": [int(seed), _P_HELDOUT],
        }
        if out_dir is not None:
            mclip.save_local_dir(model, out_dir, model_cfg, pp, info=summary)
            (Path(out_dir) / "losses.json").write_text(json.dumps([round(v, 5) for v in losses]) + "\n")
        summary["losses"] = losses
        return summary
    finally:
        torch.set_num_threads(prev_threads)
