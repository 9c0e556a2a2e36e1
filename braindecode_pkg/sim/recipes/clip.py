"""Train nsd-sim's own CLIP: an open_clip model on procedural scenes and their captions.

The world is procedural (:mod:`braindecode_pkg.sim.scenes`), so training data is unlimited:
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

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ...decoders.clip import register_arch, register_sim_arch
from ...errors import InputError
from ..arch import SIM_ARCH, SIM_MODEL_CFG
from .progress import device_name, fit_budget, step_bar, tick

#: a few-second version for tests
TINY_MODEL_CFG: dict = {
    "embed_dim": 16,
    "custom_text": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}

#: presets that fine-tune a CLIP trained by another preset (``train(init=...)`` is required)
FINETUNE_PRESETS = ("default-attr", "tiny-attr")

# random-stream purposes (never renumber: it changes every output)
_P_TRAIN, _P_HELDOUT, _P_STEPS, _P_INIT, _P_TWIN, _P_TWIN_STEPS, _P_ATTR_HEAD = 1, 2, 3, 4, 5, 6, 7


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
    # >0: that fraction of every batch is pairs of a training scene and its shape twin (the same
    # scene with only the shapes changed, :func:`.scenes.shape_twins`, with its own captions):
    # hard negatives that only shape tells apart
    twin_fraction: float = 0.0
    # >0: weight of an auxiliary loss on the image embedding: a linear head (discarded after
    # training) predicts which (shape, colour) pairs the scene holds (:func:`object_pairs`; a
    # softmax over the pairs against the scene's pairs spread evenly, the multi-label softmax of
    # Mahajan et al. 2018), so that the embedding must carry every object's shape bound to its
    # colour, which the contrastive loss alone leaves weak (issue 3's caption ceiling)
    attr_weight: float = 0.0
    # the auxiliary targets are (shape, colour, size) triples instead of (shape, colour) pairs
    attr_size: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


#: named (recipe, model config); ``tiny`` runs in seconds (tests, workflow smoke runs)
PRESETS: dict = {
    "default": (Recipe(), SIM_MODEL_CFG),
    "tiny": (Recipe(steps=25, batch_size=32, lr=3e-3, warmup=3, n_train=96, n_heldout=40), TINY_MODEL_CFG),
    # second stages, fine-tuning a CLIP of the first (``--init``) with the auxiliary (shape, colour)
    # loss; the shipped CLIP is ``default`` then twice ``default-attr`` with ``attr_size`` (the
    # chain in sim_chain.py), which took the one-object shape probe from 0.65 to 0.83 and the
    # captions' shape from 0.58 to 0.81 (weights README)
    "default-attr": (Recipe(steps=1200, lr=1e-3, attr_weight=1.0, n_heldout=2000, eval_every=150), SIM_MODEL_CFG),
    "tiny-attr": (Recipe(steps=8, batch_size=32, lr=1e-3, warmup=2, n_train=96, n_heldout=40, attr_weight=1.0),
                  TINY_MODEL_CFG),
    # the default architecture on one GPU with shape twins (batch 512, half of it twin pairs) and
    # the auxiliary (shape, colour) loss, the levers for issue 3's shape ceiling; a --minutes
    # budget fits the steps to the GPU's speed (not yet run on a GPU: the shipped weights are the
    # CPU chain's)
    "gpu": (Recipe(steps=30000, batch_size=512, lr=2e-3, warmup=500, n_train=100000, twin_fraction=0.5,
                   attr_weight=1.0, n_heldout=4000, eval_every=2000), SIM_MODEL_CFG),
}


# --------------------------------------------------------------------------------------- data
def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def draw_scenes(seed: int, purpose: int, n: int, n_captions: int = 5):
    """(attribute table, list of caption lists) of ``n`` scenes of a random stream."""
    from .. import scenes as sc

    attrs = sc.sample_scenes(_rng(seed, purpose, 0), n)
    caps = [sc.make_captions(attrs, i, _rng(seed, purpose, 1, i), n=n_captions) for i in range(n)]
    return attrs, caps


def _render_rows(args):
    from .. import scenes as sc

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

    from ..world import SIM_VERSION

    doc = json.dumps([SIM_VERSION, seed, purpose, n, n_captions, preprocess_cfg], sort_keys=True, default=str)
    return hashlib.sha1(doc.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "braindecode_pkg" / "sim_clip_data"


def twin_scenes(seed: int, purpose: int, twin_purpose: int, n: int, n_captions: int = 5):
    """(attribute table, caption lists) of the shape twins of stream ``purpose``'s ``n`` scenes.

    The twins (:func:`.scenes.shape_twins`) and their captions are drawn from stream
    ``twin_purpose``.
    """
    from .. import scenes as sc

    attrs = sc.shape_twins(sc.sample_scenes(_rng(seed, purpose, 0), n), _rng(seed, twin_purpose, 0))
    caps = [sc.make_captions(attrs, i, _rng(seed, twin_purpose, 1, i), n=n_captions) for i in range(n)]
    return attrs, caps


def scene_set(seed: int, purpose: int, n: int, n_captions: int, encoder, cache_dir=None,
              workers: int = 1, progress: bool = False, twin_purpose: int | None = None) -> dict:
    """Rendered images, captions and attributes of ``n`` scenes, cached under ``cache_dir``.

    ``cache_dir=False`` disables the cache. The cache key holds the world version, stream,
    count and the model's preprocessing, so a different resolution never reuses images.
    ``twin_purpose``: the scenes' shape twins instead (:func:`twin_scenes`).
    """
    from ...io import atomic_path, sidecar_intact, write_digest_sidecar

    if twin_purpose is None:
        attrs, caps = draw_scenes(seed, purpose, n, n_captions)
        key = _cache_key(seed, purpose, n, n_captions, encoder.preprocess_cfg)
    else:
        attrs, caps = twin_scenes(seed, purpose, twin_purpose, n, n_captions)
        key = _cache_key(seed, [purpose, "twins", twin_purpose], n, n_captions, encoder.preprocess_cfg)
    images = None
    path = None
    if cache_dir is not False:
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        path = cache / f"scenes-{key}.npy"
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


def object_pairs(attrs: dict, with_size: bool = False) -> np.ndarray:
    """(n, len(SHAPES) * len(COLOURS)) float32: 1 where the scene holds an object of that shape and colour.

    Column ``shape * len(COLOURS) + colour``; an absent second object adds nothing, and two
    objects of the same shape and colour give one 1. Order-free, so no object numbering leaks in.
    ``with_size``: (shape, colour, size) triples instead, column ``(shape * len(COLOURS) + colour)
    * len(SIZES) + size``.
    """
    from .. import scenes as sc

    n = len(attrs["background"])
    n_size = len(sc.SIZES) if with_size else 1
    out = np.zeros((n, len(sc.SHAPES) * len(sc.COLOURS) * n_size), np.float32)
    for k in (1, 2):
        shape = np.asarray(attrs[f"shape{k}"], np.int64)
        colour = np.asarray(attrs[f"colour{k}"], np.int64)
        size = np.asarray(attrs[f"size{k}"], np.int64) if with_size else np.zeros_like(shape)
        present = shape >= 0
        col = (shape * len(sc.COLOURS) + colour) * n_size + size
        out[np.flatnonzero(present), col[present]] = 1.0
    return out


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
    out = {
        "image_to_caption_top1": retrieval_top1(pooled, text, n_candidates, n_draws),
        "caption_to_image_top1": retrieval_top1(text, pooled, n_candidates, n_draws),
        "n_heldout": int(len(x)), "n_candidates": int(min(n_candidates, len(x))), "n_draws": int(n_draws),
    }
    one = heldout["attrs"]["n_objects"] == 1
    if one.sum() >= 100:
        out["shape_probe_one_object"] = linear_probe(pooled[one], heldout["attrs"]["shape1"][one])
        out["size_probe_one_object"] = linear_probe(pooled[one], heldout["attrs"]["size1"][one])
    if (~one).sum() >= 100:  # the larger object's shape when the vector must hold two
        a = heldout["attrs"]
        larger = np.where(a["radius1"] >= a["radius2"], a["shape1"], a["shape2"])
        out["shape_probe_two_objects"] = linear_probe(pooled[~one], larger[~one])
    return out


def linear_probe(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression of ``y`` on ``x`` (fit on a random half, scored on the rest)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    idx = np.random.default_rng(seed).permutation(len(y))
    tr, te = idx[: len(y) // 2], idx[len(y) // 2:]
    sc = StandardScaler().fit(x[tr])
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(sc.transform(x[tr]), y[tr])
    return float(clf.score(sc.transform(x[te]), y[te]))


# --------------------------------------------------------------------------------- training
class _Batches:
    """A scene set's images and caption tokens, served by index (on ``device`` for a GPU)."""

    def __init__(self, scene_set: dict, tok, ctx: int, k: int, device, enc, pairs: bool = False,
                 with_size: bool = False):
        import torch

        n = len(scene_set["images"])
        self.tokens = tok([c for caps in scene_set["captions"] for c in caps], context_length=ctx).reshape(n, k, ctx)
        self.lengths = (self.tokens != 0).sum(-1)
        self.images = scene_set["images"]
        # the auxiliary loss's targets, only where it is on
        self.pairs = torch.from_numpy(object_pairs(scene_set["attrs"], with_size)) if pairs else None
        self.enc = enc
        self.on_cpu = not _accelerated(device)
        if not self.on_cpu:  # uint8 on the GPU (n * S * S * 3 bytes); normalised per batch there
            self.gpu_images = torch.from_numpy(self.images).to(device)
            self.tokens = self.tokens.to(device)
            self.lengths = self.lengths.to(device)
            self.pairs = None if self.pairs is None else self.pairs.to(device)
        # open_clip's Normalize constants where the images are normalised (once, not per step)
        self.mean = torch.as_tensor(enc._mean, device=device)[None, :, None, None]
        self.std = torch.as_tensor(enc._std, device=device)[None, :, None, None]

    def pixels(self, idx):
        """The normalised (b, 3, S, S) float images ``idx`` (open_clip's eval transform)."""
        import torch

        if self.on_cpu:
            return self.enc.to_tensor(self.images[idx])
        x = self.gpu_images[torch.as_tensor(idx, device=self.gpu_images.device)]
        return x.permute(0, 3, 1, 2).float().div(255).sub(self.mean).div(self.std)

    def object_pairs(self, idx):
        """(b, n_pairs) targets of the auxiliary loss (:func:`object_pairs`) of scenes ``idx``."""
        import torch

        return self.pairs[torch.as_tensor(idx, device=self.pairs.device)]

    def text(self, idx, c):
        """Caption tokens (b, ctx) of caption ``c[j]`` of scene ``idx[j]``, cut after the longest."""
        import torch

        if not self.on_cpu:
            idx = torch.as_tensor(idx, device=self.tokens.device)
            c = torch.as_tensor(c, device=self.tokens.device)
        t = self.tokens[idx, c]
        return t[:, : int(self.lengths[idx, c].max())]  # padding after EOT never reaches it (causal)


def _accelerated(device) -> bool:
    """Whether ``device`` gets the accelerator path (resident uint8 images, bf16 autocast)."""
    import torch

    return torch.device(device).type != "cpu"


def _cat_tokens(parts):
    """Token batches of different lengths, right-padded with 0 to the longest."""
    import torch.nn.functional as F
    import torch

    if len(parts) == 1:
        return parts[0]
    w = max(p.shape[1] for p in parts)
    return torch.cat([F.pad(p, (0, w - p.shape[1])) for p in parts])


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
                   or "embedding" in name or "token" in name)
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _attr_head(embed_dim: int, n_targets: int, seed: int):
    """The auxiliary loss's linear head, seeded on its own stream (the global RNG is left as it was)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence([seed, _P_ATTR_HEAD]).generate_state(1)[0]))
        return torch.nn.Linear(embed_dim, n_targets)


def _lr_at(step: int, recipe: Recipe, total: int) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, total - recipe.warmup)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _initial_model(seed: int, recipe: Recipe, model_cfg: dict, init):
    """The CLIP to train (seeded on its own stream) and the record of what it started from:
    fresh weights (with the recipe's logit scale), or ``init``'s (same architecture)."""
    import torch
    from open_clip import factory

    from ...decoders import clip as mclip

    torch.manual_seed(int(np.random.SeedSequence([seed, _P_INIT]).generate_state(1)[0]))
    register_sim_arch()
    name = f"{SIM_ARCH}-train-{os.getpid()}"
    register_arch(name, model_cfg)
    try:
        model = mclip.create_clip_model(name)
    finally:
        factory._MODEL_CONFIGS.pop(name, None)
    if init is None:
        with torch.no_grad():
            model.logit_scale.fill_(recipe.init_logit_scale)
        return model, None
    from ...io import sha256_file

    cfg = mclip.parse_clip_config("sim" if str(init) == "sim" else {"local_dir": str(init)})
    saved = json.loads((cfg.local_dir / mclip.LOCAL_DIR_CONFIG).read_text())["model_cfg"]
    if saved != model_cfg:
        raise InputError(f"--init {init}: its architecture {saved} is not the one trained here {model_cfg}")
    mclip.load_state_dict_into(model, mclip.read_state_dict(cfg.weights), source=cfg.weights)
    return model, {"local_dir": str(init), "weights_sha256": sha256_file(cfg.weights)}


def _step_loss(model, x, parts, recipe: Recipe, loss_fn, causal, head):
    """One step's loss: the contrastive loss averaged over ``captions_per_step`` captions of each
    image, plus the auxiliary attribute loss when there is a head."""
    import torch
    import torch.nn.functional as F

    img = F.normalize(model.encode_image(x).float(), dim=-1)
    scale = model.logit_scale.exp()
    loss = 0.0
    for j in range(recipe.captions_per_step):
        t = _cat_tokens([b.text(i, c[j]) for b, i, c in parts])
        model.text.attn_mask = causal[: t.shape[1], : t.shape[1]]
        txt = F.normalize(model.encode_text(t).float(), dim=-1)
        loss = loss + loss_fn(img, txt, scale)
    loss = loss / recipe.captions_per_step
    if head is not None:  # the embedding is scaled to unit variance per coordinate
        y = torch.cat([b.object_pairs(i) for b, i, _ in parts])
        logits = head(img * math.sqrt(img.shape[1])).float()
        y = y / y.sum(1, keepdim=True)
        loss = loss + recipe.attr_weight * -(y * F.log_softmax(logits, dim=1)).sum(1).mean()
    return loss


def _scores(model, enc, heldout: dict, causal) -> dict:
    """The held-out scores (the model left in eval mode, its text tower's full causal mask back)."""
    model.text.attn_mask = causal
    model.eval()
    return evaluate(enc, heldout)


def _curve_point(step: int, seconds: float, m: dict, losses: list) -> dict:
    return {"step": step, "seconds": round(seconds, 1),
            "image_to_caption_top1": round(m["image_to_caption_top1"], 4),
            "shape_probe_one_object": round(m.get("shape_probe_one_object", math.nan), 4),
            "shape_probe_two_objects": round(m.get("shape_probe_two_objects", math.nan), 4),
            "loss": round(float(np.mean(losses[-50:])), 4)}


def _summary(model, seed, recipe: Recipe, total: int, metrics: dict, curve: list, seconds: dict, device,
             init_info, command) -> dict:
    """What is recorded beside the weights (the config's ``braindecode`` key)."""
    import open_clip
    import torch

    return {
        "arch": SIM_ARCH,
        "seed": int(seed),
        "recipe": dataclasses.replace(recipe, steps=total).to_dict(),
        "steps_run": total,
        "heldout": metrics,
        "heldout_curve": curve,
        "seconds": seconds,
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "torch_version": torch.__version__,
        "open_clip_version": open_clip.__version__,
        "device": device_name(device),
        "init": init_info,
        "command": command,
        "train_stream": [int(seed), _P_TRAIN], "heldout_stream": [int(seed), _P_HELDOUT],
    }


def train(out_dir, *, seed: int = 0, recipe: Recipe | None = None, model_cfg: dict | None = None,
          minutes: float | None = None, cache_dir=None, workers: int = 1, progress: bool = True,
          command: str | None = None, log=print, device: str = "cpu", init=None) -> dict:
    """Train the nsd-sim CLIP and save it to ``out_dir`` (open_clip local-dir); return a summary.

    ``device``: where to train (``"cuda"``: the images are kept on the GPU as uint8 and
    normalised there, and the forward passes run under bf16 autocast; the saved weights are
    fp32 either way). On CPU with a fixed thread count the saved weights are byte-identical run
    to run; on a GPU they are not (non-deterministic kernels). ``init``: an open_clip local-dir
    of the same architecture to start from (fine-tuning; its weights' SHA-256 is recorded).

    ``minutes``: a time budget for the optimisation steps. After the warm-up steps the step time
    is measured and the run shortened to fit (never lengthened); the cosine schedule then decays
    over the shortened run, and the number of steps actually run is recorded, so the result is
    reproducible with ``steps`` set to it.
    """
    import torch
    from open_clip import ClipLoss

    from ...decoders import clip as mclip

    recipe = recipe or Recipe()
    model_cfg = copy.deepcopy(model_cfg or SIM_MODEL_CFG)
    t_start = time.time()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        model, init_info = _initial_model(seed, recipe, model_cfg, init)
        import open_clip
        from open_clip.model import get_model_preprocess_cfg

        pp = dict(get_model_preprocess_cfg(model))
        tok = open_clip.get_tokenizer(SIM_ARCH)  # open_clip's BPE tokenizer (offline)
        ctx = int(model_cfg["text_cfg"].get("context_length", 77))
        model = model.to(device)
        enc = mclip.ClipEncoder(model, pp, lambda texts: tok(texts, context_length=ctx), device=device)

        t0 = time.time()
        train_set = scene_set(seed, _P_TRAIN, recipe.n_train, recipe.n_captions, enc, cache_dir, workers, progress)
        heldout = scene_set(seed, _P_HELDOUT, recipe.n_heldout, 1, enc, cache_dir, workers, progress)
        n, k = recipe.n_train, recipe.n_captions
        n_twin = int(round(recipe.batch_size * recipe.twin_fraction / 2))  # twin pairs per batch
        if not 0 <= n_twin <= recipe.batch_size // 2:
            raise InputError(f"twin_fraction {recipe.twin_fraction}: expected a value in [0, 1]")
        pairs = bool(recipe.attr_weight)
        batch = [_Batches(train_set, tok, ctx, k, device, enc, pairs, recipe.attr_size)]
        if n_twin:
            twins = scene_set(seed, _P_TRAIN, n, k, enc, cache_dir, workers, progress, twin_purpose=_P_TWIN)
            batch.append(_Batches(twins, tok, ctx, k, device, enc, pairs, recipe.attr_size))
        t_data = time.time() - t0
        autocast = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if _accelerated(device)
                    else contextlib.nullcontext())

        rng = _rng(seed, _P_STEPS)
        twin_rng = _rng(seed, _P_TWIN_STEPS)
        opt = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr,
                                betas=tuple(recipe.betas), eps=1e-6)
        loss_fn = ClipLoss()
        head = None
        if pairs:
            head = _attr_head(model_cfg["embed_dim"], batch[0].pairs.shape[1], seed).to(device)
            opt.add_param_group({"params": list(head.parameters()), "weight_decay": 0.0})
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
            # with twins: batch_size - n_twin scenes, the first n_twin of them with their twins
            idx, order = order[: recipe.batch_size - n_twin], order[recipe.batch_size - n_twin:]
            cap = rng.integers(0, k, (recipe.captions_per_step, len(idx)))
            parts = [(batch[0], idx, cap)]
            if n_twin:
                parts.append((batch[1], idx[:n_twin], twin_rng.integers(0, k, (recipe.captions_per_step, n_twin))))
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, recipe, total)
            with autocast:
                x = torch.cat([b.pixels(i) for b, i, _ in parts]) if n_twin else batch[0].pixels(idx)
                loss = _step_loss(model, x, parts, recipe, loss_fn, causal, head)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
            step += 1
            if recipe.eval_every and step % recipe.eval_every == 0 and step < total:
                te = time.time()
                m = _scores(model, enc, heldout, causal)
                model.train()
                t_eval += time.time() - te
                curve.append(_curve_point(step, time.time() - t_train - t_eval, m, losses))
                log(json.dumps(curve[-1]))
            tick(bar, losses)
            if minutes is not None and step == recipe.warmup + 5:
                total = fit_budget(step, total, t_train, minutes * 60 - (t_train - t_start) - 10, bar)
        if bar is not None:
            bar.close()
        t_train = time.time() - t_train - t_eval
        metrics = _scores(model, enc, heldout, causal)
        metrics["train_loss_last100"] = float(np.mean(losses[-100:]))
        seconds = {"data": round(t_data, 1), "train": round(t_train, 1), "total": round(time.time() - t_start, 1)}
        summary = _summary(model, seed, recipe, total, metrics, curve, seconds, device, init_info, command)
        if out_dir is not None:
            mclip.save_local_dir(model.cpu(), out_dir, model_cfg, pp, info=summary)
            (Path(out_dir) / "losses.json").write_text(json.dumps([round(v, 5) for v in losses]) + "\n")
        summary["losses"] = losses
        return summary
    finally:
        torch.set_num_threads(prev_threads)
