"""Train a caption decoder: a ClipCap mapper (and, for nsd-sim, its own small GPT-2 and tokenizer).

Two sources of (CLIP embedding, captions) pairs:

nsd-sim (``clip=...``, the default ``"sim"``)
    ``n_train`` scenes are drawn from the captioner's own training stream of the procedural
    world (:mod:`braindecode_pkg.sim.scenes`), rendered once at the CLIP's resolution through
    its open_clip eval transform (and cached, like :mod:`.clip` does), and embedded once
    with the CLIP; each has ``n_captions`` (5) COCO-style captions, and every step pairs an
    image with one of them at random. ``n_heldout`` evaluation scenes come from a different
    stream (:data:`_P_HELDOUT`), so the captioner never trains on them; the streams are disjoint
    from the CLIP's own (:mod:`.clip` uses purposes 1-4, this module 11-14), so the CLIP
    never saw them either. A byte-level BPE tokenizer is trained on the training captions with
    the ``tokenizers`` library, a small ``GPT2LMHeadModel`` (:data:`SIM_LM_CFG`) is initialised
    from the seed, and language model and mapper are trained together on the captions' token
    cross-entropy.
embeddings file (``pairs=H5``, the embed stage's output: ``nsd_id``, ``image_pooled``,
``captions``, ``n_captions``) with a local language model (``lm=DIR``, e.g. GPT-2)
    the language model is frozen (``Recipe.train_lm=False``, ClipCap's transformer mapper) or
    fine-tuned; images listed in ``exclude_ids`` (e.g. NSD's shared 1000, the brain test set)
    are never trained on and form the held-out set, else a seeded random ``n_heldout`` do.

The optimiser is AdamW with linear warm-up and cosine decay; everything is seeded, and on CPU
with a fixed thread count the saved weights are identical run to run. The result is a
captioner folder (:mod:`.captioner`): ``config.json`` + ``model.safetensors`` of the mapper
with the recipe, seed, command, timings and held-out metrics under ``braindecode``, and
``lm/`` (the language model and tokenizer, ``save_pretrained``, safetensors) unless the
language model was a frozen external one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from .progress import device_name, fit_budget, step_bar, tick

from ...errors import InputError

#: the nsd-sim language model (a ``GPT2Config``; vocabulary and special tokens come from the tokenizer)
#: (no dropout: 100k captions of a small world, and a few thousand steps, do not overfit)
SIM_LM_CFG: dict = {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 64,
                    "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
#: a seconds-long version for tests
TINY_LM_CFG: dict = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 48,
                     "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}

BOS, EOS, PAD = "<|endoftext|>", "<|endoftext|>", "<|pad|>"

# random-stream purposes (disjoint from train_clip's 1-4; never renumber: it changes every output)
_P_TRAIN, _P_HELDOUT, _P_STEPS, _P_INIT, _P_SPLIT = 11, 12, 13, 14, 15


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a captioner is trained (every field is recorded beside the weights)."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 0.0
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    n_train: int = 20000          # nsd-sim scenes (n_captions captions each)
    n_captions: int = 5
    n_heldout: int = 1000
    prefix_length: int = 8
    mapper: str = "mlp"           # mlp | transformer
    mapper_hidden: int | None = None  # mlp: hidden width (default prefix_length * lm width / 2)
    mapper_layers: int = 4            # transformer: layers (its clip_length is prefix_length)
    noise_std: float = 0.0        # Gaussian noise added to the (normalised) CLIP embedding while training
    train_lm: bool = True         # False: the language model is frozen (only the mapper learns)
    vocab_size: int = 1024        # nsd-sim tokenizer (at most; ~510 cover every caption word)
    lm_cfg: dict = dataclasses.field(default_factory=lambda: dict(SIM_LM_CFG))
    max_caption_tokens: int = 40
    eval_beams: int = 1
    eval_every: int = 0           # >0: score the first 300 held-out images every that many steps (recorded;
                                  # does not change training)
    threads: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _seed_torch(seed: int, purpose: int) -> None:
    import torch

    torch.manual_seed(int(np.random.SeedSequence([int(seed), purpose]).generate_state(1)[0]))


# -------------------------------------------------------------------------------- tokenizer
def build_tokenizer(texts, vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on ``texts`` (``tokenizers``), as ``PreTrainedTokenizerFast``.

    GPT-2's scheme at a small vocabulary: byte-level pre-tokenisation (every string encodes and
    decodes back exactly), ``<|endoftext|>`` as bos and eos, ``<|pad|>`` for padding.
    Deterministic given the texts.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size), min_frequency=2, special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=1024, clean_up_tokenization_spaces=False)


def build_lm(tokenizer, lm_cfg: dict):
    """A randomly initialised ``GPT2LMHeadModel`` sized by ``lm_cfg`` for ``tokenizer``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                     **lm_cfg)
    return GPT2LMHeadModel(cfg)


# -------------------------------------------------------------------------------------- data
def sim_pairs(encoder, seed: int, purpose: int, n: int, n_captions: int, cache_dir=None, workers: int = 1,
              progress: bool = False, batch_size: int = 250) -> dict:
    """``{"embeds", "captions", "attrs"}`` of ``n`` nsd-sim scenes of a stream, embedded by ``encoder``."""
    from . import clip as train_clip

    s = train_clip.scene_set(seed, purpose, n, n_captions, encoder, cache_dir, workers, progress)
    x = s["images"]
    emb = np.concatenate([
        encoder.encode_pixels(encoder.to_tensor(x[a:a + batch_size]), what=("pooled",))["pooled"]
        for a in range(0, len(x), batch_size)
    ]) if len(x) else np.zeros((0, encoder.embed_dim), np.float32)
    return {"embeds": emb.astype(np.float32), "captions": s["captions"], "attrs": s["attrs"]}


def h5_pairs(path, exclude_ids=None, n_heldout: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """(train, held-out) pairs of an embeddings file of the embed stage.

    Images whose ``nsd_id`` is in ``exclude_ids`` are the held-out set (never trained on); with
    none given, a seeded random ``n_heldout`` images are.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: embeddings file not found (write it with `braindecode-pkg embed`)")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("nsd_id", "image_pooled", "captions", "n_captions") if k not in f]
            if missing:
                raise InputError(f"{path}: lacks {', '.join(missing)} (embed with --what pooled or both)")
            if "done" in f and not bool(np.all(f["done"][()])):
                raise InputError(f"{path}: not every row is written (an unfinished embed run)")
            ids = f["nsd_id"][()].astype(np.int64)
            emb = f["image_pooled"][()].astype(np.float32)
            ncap = f["n_captions"][()].astype(int)
            caps = [[c.decode() if isinstance(c, bytes) else str(c) for c in row[:k]]
                    for row, k in zip(f["captions"][()], ncap)]
    except OSError as e:
        raise InputError(f"{path}: not a readable HDF5 file ({e})") from None
    keep = ncap > 0
    if exclude_ids is not None:
        held = np.isin(ids, np.asarray(list(exclude_ids), np.int64))
    else:
        held = np.zeros(len(ids), bool)
        cand = np.flatnonzero(keep)
        held[_rng(seed, _P_SPLIT).choice(cand, min(n_heldout, len(cand) // 5), replace=False)] = True
    tr, te = np.flatnonzero(keep & ~held), np.flatnonzero(keep & held)
    if not len(tr):
        raise InputError(f"{path}: no image with captions left to train on")

    def part(idx):
        return {"embeds": emb[idx], "captions": [caps[i] for i in idx], "nsd_id": ids[idx]}

    return part(tr), part(te)


def shared1000_ids(nsd_root) -> np.ndarray:
    """0-based nsd ids of NSD's shared 1000 images (the brain test set) of an NSD root."""
    from ...data import nsd
    from ...data.layout import NSDPaths

    design = nsd.NSDDesign.load(NSDPaths(nsd_root).expdesign)
    return np.unique(design.subjectim[0, : nsd.N_SHARED] - 1)


def _tokenize_all(tokenizer, captions, max_tokens: int):
    """(n, k, T) token ids (padded) and (n, k) lengths of ``n`` images' caption lists (k the most)."""
    n = len(captions)
    k = max((len(c) for c in captions), default=1)
    flat = [c for cs in captions for c in cs]
    enc = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
    eos, pad = tokenizer.eos_token_id, (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                       else tokenizer.eos_token_id)
    seqs = [(e + [eos])[:max_tokens] for e in enc]
    t = max((len(s) for s in seqs), default=1)
    ids = np.full((n, k, t), pad, np.int64)
    lengths = np.zeros((n, k), np.int64)
    j = 0
    for i, cs in enumerate(captions):
        for c in range(len(cs)):
            ids[i, c, : len(seqs[j])] = seqs[j]
            lengths[i, c] = len(seqs[j])
            j += 1
    return ids, lengths


# ---------------------------------------------------------------------------------- schedule
def _lr_at(step: int, recipe: Recipe, total: int) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, total - recipe.warmup)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _param_groups(modules, weight_decay: float):
    decay, no_decay, seen = [], [], set()
    for m in modules:
        for name, p in m.named_parameters():
            if not p.requires_grad or id(p) in seen:  # GPT-2 ties wte and lm_head
                continue
            seen.add(id(p))
            exclude = p.ndim < 2 or "ln" in name or "bias" in name or "wte" in name or "wpe" in name or "norm" in name
            (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------- evaluation
def heldout_loss(captioner, embeds, captions, batch_size: int = 250, max_tokens: int = 40) -> float:
    """Mean token cross-entropy of the first caption of each held-out image."""
    import torch

    first = [[c[0]] for c in captions]
    ids, lengths = _tokenize_all(captioner.tokenizer, first, max_tokens)
    tot, cnt = 0.0, 0
    with torch.inference_mode():
        for a in range(0, len(first), batch_size):
            i = torch.from_numpy(ids[a:a + batch_size, 0])
            m = (torch.arange(i.shape[1])[None] < torch.from_numpy(lengths[a:a + batch_size, 0])[:, None]).long()
            k = int(m.sum())
            tot += float(captioner.loss(embeds[a:a + batch_size], i, m)) * k
            cnt += k
    return tot / max(1, cnt)


def evaluate(captioner, heldout: dict, *, num_beams: int = 1, max_new_tokens: int = 40) -> dict:
    """Held-out loss and, for nsd-sim scenes, the attribute scores of generated captions."""
    from ..attributes import sim_attribute_scores

    out = {"n_heldout": int(len(heldout["embeds"]))}
    if not len(heldout["embeds"]):
        return out
    out["loss"] = heldout_loss(captioner, heldout["embeds"], heldout["captions"])
    if "attrs" in heldout:
        caps = captioner.generate(heldout["embeds"], max_new_tokens=max_new_tokens, num_beams=num_beams)
        out["num_beams"] = int(num_beams)
        out["attributes"] = sim_attribute_scores(caps, heldout["attrs"])
        out["examples"] = [{"generated": g, "reference": r[0]} for g, r in zip(caps[:5], heldout["captions"][:5])]
    return out


def _head(pairs: dict, n: int) -> dict:
    """The first ``n`` rows of a pairs dict (embeds, captions, attrs)."""
    out = {"embeds": pairs["embeds"][:n], "captions": pairs["captions"][:n]}
    if "attrs" in pairs:
        out["attrs"] = {k: v[:n] for k, v in pairs["attrs"].items()}
    return out


# --------------------------------------------------------------------------------- training
def _training_pairs(clip, sim_clip, pairs, exclude_ids, seed: int, recipe: Recipe, cache_dir, workers: int,
                    progress: bool, device):
    """``(train, heldout, clip_info)``: embeddings and captions to train and score on (nsd-sim
    scenes embedded by ``clip``, an embeddings file, or given pairs), and what made them."""
    clip_info: dict = {}
    if pairs is None:
        from ...decoders.clip import ClipEncoder, parse_clip_config
        from ...io import sha256_file

        enc = ClipEncoder.load(parse_clip_config(clip, sim_dir=sim_clip), device=device)
        clip_info = {"name": enc.config.name, "embed_dim": enc.embed_dim,
                     # the nsd-sim CLIP is recorded as "sim" (a path would not travel); its
                     # weights' digest tells which one
                     "config": "sim" if clip == "sim" else enc.config.to_dict(),
                     "weights_sha256": sha256_file(enc.config.weights)}
        train_set = sim_pairs(enc, seed, _P_TRAIN, recipe.n_train, recipe.n_captions, cache_dir, workers, progress)
        heldout = sim_pairs(enc, seed, _P_HELDOUT, recipe.n_heldout, 1, cache_dir, workers, progress)
        del enc
    else:
        if isinstance(pairs, (tuple, list)):
            train_set, heldout = pairs
        else:
            train_set, heldout = h5_pairs(pairs, exclude_ids, recipe.n_heldout, seed)
        clip_info = {"embed_dim": int(np.shape(train_set["embeds"])[1]),
                     "source": str(pairs) if not isinstance(pairs, (tuple, list)) else "in memory"}
        if not isinstance(pairs, (tuple, list)):
            from ...embed.stimuli import clip_info as embed_clip

            # the CLIP whose embeddings the mapper reads
            clip_info.update({k: v for k, v in embed_clip(pairs).items() if k in ("config", "weights_sha256")})
        elif isinstance(clip, (str, dict)) and clip != "sim":
            clip_info["config"] = clip
    return train_set, heldout, clip_info


def _captioner_to_train(train_set: dict, lm_dir, seed: int, recipe: Recipe, clip_info: dict, device):
    """``(captioner, trainable modules, parameter counts)``: a fresh mapper in front of a new
    nsd-sim GPT-2 (its tokenizer built from the training captions) or the local ``lm_dir``."""
    from ...decoders import captioner as mcap

    _seed_torch(seed, _P_INIT)
    if lm_dir is None:
        tokenizer = build_tokenizer([c for cs in train_set["captions"] for c in cs], recipe.vocab_size)
        lm_model = build_lm(tokenizer, recipe.lm_cfg)
        lm_model.config._name_or_path = "nsd-sim-gpt2"
    else:
        lm_model, tokenizer = mcap.load_lm(lm_dir)
    lm_model.train()
    if not recipe.train_lm:
        for p in lm_model.parameters():
            p.requires_grad_(False)
        lm_model.eval()
    d = int(train_set["embeds"].shape[1])
    mapper = mcap.Mapper(d, mcap._lm_dim(lm_model), recipe.prefix_length, kind=recipe.mapper,
                         hidden=recipe.mapper_hidden, clip_length=recipe.prefix_length,
                         n_layers=recipe.mapper_layers)
    mapper.to(device)
    lm_model.to(device)
    cap = mcap.Captioner(mapper, lm_model, tokenizer, meta={"clip": clip_info}, device=device)
    trainable = [mapper] + ([lm_model] if recipe.train_lm else [])
    n_params = {"mapper": int(sum(p.numel() for p in mapper.parameters())),
                "lm": int(sum(p.numel() for p in lm_model.parameters()))}
    return cap, trainable, n_params


def _summary(seed, recipe: Recipe, total: int, metrics: dict, curve: list, seconds: dict, n_params: dict, n: int,
             n_caps, device, command, pairs, clip_info: dict, exclude_ids) -> dict:
    """What is recorded beside the weights."""
    import tokenizers
    import torch
    import transformers

    summary = {
        "seed": int(seed),
        "recipe": dataclasses.replace(recipe, steps=total).to_dict(),
        "steps_run": total,
        "heldout": metrics,
        "curve": curve,
        "seconds": seconds,
        "n_params": n_params,
        "n_train_images": int(n), "n_train_captions": int(n_caps.sum()),
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "device": device_name(device),
        "command": command,
    }
    if pairs is None:
        summary["train_stream"] = [int(seed), _P_TRAIN]
        summary["heldout_stream"] = [int(seed), _P_HELDOUT]
    else:
        summary["pairs"] = clip_info["source"]
        if not isinstance(pairs, (tuple, list)):
            summary["heldout_nsd_ids"] = "exclude_ids" if exclude_ids is not None else "seeded random split"
    return summary


def _curve_point(cap, heldout: dict, recipe: Recipe, step: int, t_train: float, progress: bool) -> dict:
    """The held-out loss and attribute scores of 300 held-out images at ``step``, training having
    started at ``t_train`` (the models' modes are put back as training has them)."""
    cap.mapper.eval()
    cap.lm.eval()
    m = evaluate(cap, _head(heldout, 300), num_beams=1, max_new_tokens=recipe.max_caption_tokens)
    cap.mapper.train()
    if recipe.train_lm:
        cap.lm.train()
    point = {"step": step, "seconds": round(time.time() - t_train, 1), "loss": round(m.get("loss", math.nan), 4)}
    point.update({k: round(m["attributes"][k], 4) for k in ("objects", "shape", "colour", "count")}
                 if "attributes" in m else {})
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(json.dumps(point))
    return point


def _check_inputs(recipe: Recipe, pairs, lm, exclude_ids) -> Path | None:
    """The checks before any work (the language model's folder, the held-out set of an embed
    file); returns the language model's folder, or None for nsd-sim's own."""
    from ...decoders import captioner as mcap

    if recipe.mapper not in mcap.MAPPER_KINDS:
        raise InputError(f"mapper {recipe.mapper!r}; expected one of {list(mcap.MAPPER_KINDS)}")
    from_file = pairs is not None and not isinstance(pairs, (tuple, list))
    if from_file and lm is None:
        raise InputError("training on an embeddings file needs a local language model folder (--lm DIR)")
    lm_dir = Path(lm).expanduser().resolve() if lm is not None else None
    if lm_dir is not None:
        mcap._check_lm_dir(lm_dir, None)
    if from_file and exclude_ids is None:
        raise InputError(f"--pairs {pairs} without --nsd-root: the held-out images would be a random split, so NSD's "
                         f"shared 1000 (the brain test set) could be trained on; give --nsd-root NSD (holds them "
                         f"out) or --heldout-ids FILE (nsd ids to hold out, one per line)")
    return lm_dir


def train(out_dir, *, clip="sim", sim_clip=None, pairs=None, lm=None, exclude_ids=None, seed: int = 0,
          recipe: Recipe | None = None, minutes: float | None = None, cache_dir=None, workers: int = 1,
          progress: bool = True, command: str | None = None, callback=None, callback_every: int = 0,
          device: str = "cpu") -> dict:
    """Train a captioner and save it to ``out_dir`` (if not None); return a summary.

    ``device``: where the CLIP embeds the scenes and the captioner trains (e.g. ``"cuda"``);
    the random draws stay on the CPU, so only the arithmetic differs from a CPU run.

    ``clip``/``sim_clip``: the CLIP config (:func:`.clip.parse_clip_config`) whose embeddings of
    nsd-sim scenes are trained on. ``pairs``: an embeddings HDF5 file instead (then ``lm``, a
    local language-model folder, is required, and ``clip`` is only recorded), or in-memory
    ``(train, heldout)`` dicts of ``embeds`` (n, d) and ``captions`` (lists of strings), with
    ``attrs`` (a scene attribute table) for the attribute scores. ``minutes``: a
    time budget for the optimisation steps: after the warm-up the step time is measured and the
    run shortened to fit (never lengthened); the steps actually run are recorded, so the result
    is reproducible with ``steps`` set to it. ``callback(step, captioner, heldout)`` is called
    every ``callback_every`` steps (monitoring; it must leave the models' modes as it found them).
    """
    import torch

    recipe = recipe or Recipe()
    lm_dir = _check_inputs(recipe, pairs, lm, exclude_ids)
    t_start = time.time()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        t0 = time.time()
        train_set, heldout, clip_info = _training_pairs(clip, sim_clip, pairs, exclude_ids, seed, recipe, cache_dir,
                                                        workers, progress, device)
        t_data = time.time() - t0

        cap, trainable, n_params = _captioner_to_train(train_set, lm_dir, seed, recipe, clip_info, device)
        mapper, lm_model, tokenizer = cap.mapper, cap.lm, cap.tokenizer
        ids, lengths = _tokenize_all(tokenizer, train_set["captions"], recipe.max_caption_tokens)
        n_caps = np.array([len(c) for c in train_set["captions"]])
        emb = torch.from_numpy(np.ascontiguousarray(train_set["embeds"]))
        n = len(emb)

        rng = _rng(seed, _P_STEPS)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        opt = torch.optim.AdamW(_param_groups(trainable, recipe.weight_decay), lr=recipe.lr,
                                betas=(0.9, 0.98), eps=1e-8)
        params = [p for g in opt.param_groups for p in g["params"]]
        total = int(recipe.steps)
        order = np.empty(0, np.int64)
        losses: list[float] = []
        bar = step_bar(progress, total, "train captioner")
        mapper.train()
        curve: list[dict] = []
        t_eval_curve = 0.0
        t_train = time.time()
        step = 0
        while step < total:
            if len(order) < recipe.batch_size:
                order = np.concatenate([order, rng.permutation(n)])
            idx, order = order[: recipe.batch_size], order[recipe.batch_size:]
            c = (rng.random(len(idx)) * n_caps[idx]).astype(np.int64)
            ln = lengths[idx, c]
            t = int(ln.max())
            x = torch.from_numpy(ids[idx, c, :t])
            m = (torch.arange(t)[None] < torch.from_numpy(ln)[:, None]).long()
            e = emb[idx]
            if recipe.noise_std > 0:  # noise relative to a unit-norm embedding (d-dim: per-dim std noise_std)
                e = torch.nn.functional.normalize(e, dim=-1)
                e = e + recipe.noise_std * torch.randn(e.shape, generator=gen)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, recipe, total)
            loss = cap.loss(e, x, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            tick(bar, losses)
            if recipe.eval_every and step % recipe.eval_every == 0 and step < total:
                te = time.time()
                curve.append(_curve_point(cap, heldout, recipe, step, t_train, progress))
                t_eval_curve += time.time() - te
            if callback is not None and callback_every and step % callback_every == 0:
                callback(step, cap, heldout)
            if minutes is not None and step == recipe.warmup + 5:
                total = fit_budget(step, total, t_train, minutes * 60 - (t_train - t_start) - 15, bar)
        if bar is not None:
            bar.close()
        t_train = time.time() - t_train - t_eval_curve
        mapper.eval()
        lm_model.eval()

        # ------------------------------------------------------------ eval + save
        t0 = time.time()
        metrics = evaluate(cap, heldout, num_beams=recipe.eval_beams, max_new_tokens=recipe.max_caption_tokens)
        t_eval = time.time() - t0
        metrics["train_loss_last100"] = float(np.mean(losses[-100:])) if losses else math.nan
        seconds = {"data": round(t_data, 1), "train": round(t_train, 1), "eval": round(t_eval + t_eval_curve, 1),
                   "total": round(time.time() - t_start, 1)}
        summary = _summary(seed, recipe, total, metrics, curve, seconds, n_params, n, n_caps, device, command,
                           pairs, clip_info, exclude_ids)
        if out_dir is not None:
            mapper.cpu()
            lm_model.cpu()
            cap.device = "cpu"
            cap.save_pretrained(out_dir, with_lm=lm_dir is None or recipe.train_lm, info=summary, clip=clip_info)
            (Path(out_dir) / "losses.json").write_text(json.dumps([round(v, 5) for v in losses]) + "\n")
        summary["losses"] = losses
        return summary
    finally:
        torch.set_num_threads(prev_threads)


#: named recipes: ``default`` (nsd-sim, the shipped weights), ``tiny`` (seconds; tests and the
#: tiny workflow preset), ``gpt2`` (a frozen local GPT-2 with ClipCap's transformer mapper, for
#: COCO captions of NSD images from an embeddings file)
PRESETS: dict[str, Recipe] = {
    "default": Recipe(),
    "tiny": Recipe(steps=40, batch_size=16, warmup=5, lr=3e-3, n_train=64, n_heldout=16, prefix_length=4,
                   vocab_size=600, lm_cfg=dict(TINY_LM_CFG), max_caption_tokens=32),
    # nsd-sim on one GPU: more scenes and larger batches (a --minutes budget fits the steps; not yet
    # run on a GPU)
    "gpu": Recipe(steps=20000, batch_size=256, warmup=300, n_train=60000),
    "gpt2": Recipe(steps=50000, batch_size=40, lr=2e-5, warmup=5000, prefix_length=10, mapper="transformer",
                   mapper_layers=8, train_lm=False, weight_decay=0.0, eval_beams=5),
}


def recipe_from(base: Recipe | None = None, **overrides) -> Recipe:
    """``base`` (default :class:`Recipe`) with the non-None ``overrides``."""
    base = base or Recipe()
    fields = {f.name for f in dataclasses.fields(Recipe)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise InputError(f"recipe field(s) {bad}; expected some of {sorted(fields)}")
    kw = {k: copy.deepcopy(v) for k, v in overrides.items() if v is not None}
    return dataclasses.replace(base, **kw)
