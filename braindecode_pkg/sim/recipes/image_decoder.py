"""Train nsd-sim's own image decoder: a tiny Stable unCLIP (diffusers) on procedural scenes.

The decoder turns a CLIP image embedding of the nsd-sim CLIP into an image, the way Stable
unCLIP turns an OpenCLIP ViT-H-14 embedding into one. It is trained in two phases on scenes of
:mod:`braindecode_pkg.sim.scenes`, drawn from a training stream of their own, rendered once at
425 px and stored at ``image_size`` px (antialiased) beside the CLIP's pooled embedding of the
full-size render (cached on disk, keyed by the world version, the stream and the CLIP weights):

1. an :class:`diffusers.AutoencoderKL` (reconstruction MSE + a small KL term) — its latents
   are ``image_size / 2`` on a side with 4 channels (one downsampling block), and its ``scaling_factor`` is set so that
   they have unit variance, as Stable Diffusion's is;
2. a :class:`diffusers.UNet2DConditionModel` denoising those latents (v-prediction, min-SNR
   weighting, exponential moving average of the weights), conditioned as unCLIP conditions
   it: ``class_embed_type="projection"`` on the concatenation of the embedding, normalised by
   the pipeline's :class:`StableUnCLIPImageNormalizer` (its mean and std are those of the
   training embeddings) and noised at a random ``noise_level`` part of the time, with the
   sinusoidal embedding of that level; the whole vector is zeroed for a fraction of the
   samples, which is what the pipeline's classifier-free guidance feeds as the unconditional
   input.

The result is saved as a genuine ``StableUnCLIPImg2ImgPipeline`` folder
(:func:`.image_decoder.save_pipeline`), with the recipe, seed, command, timings and held-out
metrics in ``braindecode.json``, and is loaded by :class:`.image_decoder.ImageDecoder` like a
real unCLIP checkpoint. Held-out scenes come from a different stream and are never trained on.
Everything is seeded; on CPU with a fixed thread count a run is reproducible. On a GPU
(``device="cuda"``) the random numbers are the same (drawn on the CPU, then moved), the
training forward passes run under bf16 autocast (losses, EMA and saved weights in fp32), and
the run is not bit-reproducible (non-deterministic kernels).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from .progress import device_name, fit_budget, step_bar, tick

#: the nsd-sim decoder's VAE (``AutoencoderKL`` kwargs): 32 px -> 16x16x4 latents
VAE_CFG: dict = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8, "mid_block_add_attention": False,
}
#: the nsd-sim decoder's UNet (``UNet2DConditionModel`` kwargs, without the unCLIP conditioning):
#: 16 -> 8 -> 4, self-attention at 4x4, the embedding enters every ResNet block (scale-shift)
UNET_CFG: dict = {
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "block_out_channels": [32, 64, 128], "layers_per_block": 1, "norm_num_groups": 16,
    "attention_head_dim": 32, "resnet_time_scale_shift": "scale_shift",
}
#: a few-second version for tests
TINY_VAE_CFG: dict = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2,
    "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
}
TINY_UNET_CFG: dict = {
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "mid_block_type": "UNetMidBlock2D", "block_out_channels": [16, 32], "layers_per_block": 1,
    "norm_num_groups": 8, "attention_head_dim": 8, "resnet_time_scale_shift": "scale_shift",
}

# random-stream purposes (never renumber: it changes every output)
_P_TRAIN, _P_HELDOUT, _P_VAE_STEPS, _P_UNET_STEPS, _P_INIT = 1, 2, 3, 4, 5
_STREAM = 0x1D3C  # keeps these streams apart from other trainers' with the same seed


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the nsd-sim image decoder is trained (every field is recorded beside the weights)."""

    image_size: int = 32
    n_train: int = 20000
    n_heldout: int = 200
    # phase 1: the VAE
    vae_steps: int = 1000
    vae_batch_size: int = 32
    vae_lr: float = 4e-3
    vae_crop: int = 16  # >0: train on random crops of this side (the VAE is convolutional; cheaper steps)
    vae_l1: float = 1.0  # weight of an L1 term beside the MSE (keeps flat colours and edges crisp)
    kl_weight: float = 1e-6
    # phase 2: the UNet
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup: int = 50
    weight_decay: float = 0.0
    ema_decay: float = 0.997
    p_uncond: float = 0.1
    p_noise_aug: float = 0.0  # fraction of samples whose embedding is noised (unCLIP noise augmentation)
    max_noise_level: int = 250
    prediction_type: str = "v_prediction"
    min_snr_gamma: float = 5.0
    # how the result is sampled by default and evaluated
    guidance_scale: float = 3.0
    num_inference_steps: int = 20
    eval_strength: float = 0.7
    eval_blur: float = 0.08  # sigma of the Gaussian blur of the img2img starting image, fraction of the side
    vae_fraction: float = 0.35  # share of a --minutes budget (after data and evaluation) given to the VAE
    threads: int = 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_STREAM, int(seed), *map(int, keys)]))


def _torch_seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([_STREAM, int(seed), *map(int, keys)]).generate_state(1, np.uint64)[0] >> 1)


# --------------------------------------------------------------------------------------- data
def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "braindecode_pkg" / "sim_image_decoder_data"


def _clip_key(encoder) -> str:
    """What identifies the embeddings of an encoder: its weights file (size+mtime+head) and preprocessing."""
    cfg = encoder.config
    doc = {"preprocess": encoder.preprocess_cfg}
    if cfg is not None:
        w = Path(cfg.weights)
        st = w.stat()
        with open(w, "rb") as fh:
            head = hashlib.sha256(fh.read(1 << 20)).hexdigest()
        doc.update(weights=str(w), size=st.st_size, mtime=st.st_mtime_ns, head=head)
    else:  # an in-memory model: hash its parameters
        import torch

        h = hashlib.sha256()
        for k, v in sorted(encoder.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().to(torch.float32).cpu().numpy().tobytes())
        doc["params"] = h.hexdigest()
    return json.dumps(doc, sort_keys=True, default=str)


def _render_rows(args):
    """(images at ``image_size`` px, images through the CLIP's resize/crop or None) of some rows."""
    from PIL import Image

    from .. import scenes as sc

    attrs, rows, image_size, geometry = args
    small = np.empty((len(rows), image_size, image_size, 3), np.uint8)
    clip_u8 = []
    for k, i in enumerate(rows):
        im = sc.render_scene(attrs, int(i), pil=True)
        small[k] = np.asarray(im.resize((image_size, image_size), Image.BICUBIC, reducing_gap=3.0))
        if geometry is not None:  # the CLIP's own resize and crop of the full-size render
            clip_u8.append(np.asarray(geometry(im)))
    return small, (np.stack(clip_u8) if geometry is not None else None)


def render_scenes(attrs, image_size: int, encoder=None, rows=None, batch: int = 128, workers: int = 1):
    """Scenes rendered at 425 px: (images at ``image_size`` px uint8, CLIP pooled embeddings or None).

    The embedding is the encoder's of the full-size render (its own resize and crop), computed
    where the encoder is, ``batch`` images at a time. ``workers`` > 1 renders in that many
    processes (the same pixels).
    """
    rows = np.arange(len(attrs["background"])) if rows is None else np.asarray(rows)
    geometry = encoder._geometry if encoder is not None else None
    chunks = [rows[a:a + batch] for a in range(0, len(rows), batch)]
    jobs = ((attrs, r, image_size, geometry) for r in chunks)
    if workers > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"))
        parts = pool.map(_render_rows, jobs)
    else:
        pool, parts = None, map(_render_rows, jobs)
    small, embeds = [], []
    try:
        for im, clip_u8 in parts:
            small.append(im)
            if encoder is not None:
                embeds.append(encoder.encode_pixels(encoder.to_tensor(clip_u8), what=("pooled",))["pooled"])
    finally:
        if pool is not None:
            pool.shutdown()
    small = np.concatenate(small) if small else np.empty((0, image_size, image_size, 3), np.uint8)
    return small, (np.concatenate(embeds) if encoder is not None else None)


def scene_set(seed: int, purpose: int, n: int, image_size: int, encoder, cache_dir=None, workers: int = 1) -> dict:
    """``{"images": (n, S, S, 3) uint8, "embeds": (n, d) float32, "attrs"}`` of a stream, cached.

    ``cache_dir=False`` disables the cache; the key holds the world version, the stream, ``n``,
    the size and the CLIP (weights and preprocessing), so another CLIP never reuses embeddings.
    """
    from .. import scenes as sc
    from ..world import SIM_VERSION
    from ...io import atomic_path, sidecar_intact, write_digest_sidecar

    attrs = sc.sample_scenes(_rng(seed, purpose), n)
    path = None
    if cache_dir is not False:
        key = [SIM_VERSION, _STREAM, seed, purpose, n, image_size, _clip_key(encoder)]
        if str(encoder.device) != "cpu":  # embeddings computed elsewhere may differ in the last bits
            key.append(str(encoder.device))
        key = json.dumps(key)
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        path = cache / f"scenes-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
        if path.is_file() and sidecar_intact(path):  # a cache altered on disk is rendered again
            try:
                with np.load(path, allow_pickle=False) as z:
                    images, embeds = z["images"], z["embeds"]
                if images.shape == (n, image_size, image_size, 3) and len(embeds) == n:
                    return {"images": images, "embeds": embeds, "attrs": attrs}
            except (OSError, ValueError, KeyError):
                pass
    images, embeds = render_scenes(attrs, image_size, encoder, workers=workers)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, images=images, embeds=embeds)
            write_digest_sidecar(path)
        except OSError:  # a read-only cache only costs time
            pass
    return {"images": images, "embeds": embeds, "attrs": attrs}


def blur(images, sigma_fraction: float) -> np.ndarray:
    """Gaussian blur of uint8 images, sigma a fraction of the image side (a stand-in low-level reconstruction)."""
    from PIL import Image, ImageFilter

    out = np.empty_like(np.asarray(images))
    for i, im in enumerate(images):
        r = float(sigma_fraction) * im.shape[0]
        out[i] = np.asarray(Image.fromarray(np.asarray(im), "RGB").filter(ImageFilter.GaussianBlur(r)))
    return out


# ---------------------------------------------------------------------------------- metrics
def two_way_identification(pred: np.ndarray, true: np.ndarray) -> float:
    """MindEye's two-way identification: mean over i of the fraction of j != i with
    corr(pred_i, true_j) < corr(pred_i, true_i) (Pearson correlation of feature vectors);
    the mean of :func:`braindecode_pkg.evaluate.images.two_way`."""
    from ...evaluate.images import two_way

    return float(two_way(pred, true).mean())


def clip_two_way(encoder, images, true_embeds, size: int | None = 425) -> float:
    """Two-way identification of images by the encoder's pooled embeddings (images resized to ``size`` first)."""
    from ...evaluate.images import clip_features

    return two_way_identification(clip_features(encoder, images, size), true_embeds)


# --------------------------------------------------------------------------------- training
def _lr_at(step: int, lr: float, min_lr: float, warmup: int, total: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _to_x(u8, torch):
    return torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def _on_cpu(device) -> bool:
    import torch

    return torch.device(device).type == "cpu"


def _autocast(device):
    """bf16 autocast for the training forward passes on an accelerator; nothing on CPU."""
    import contextlib

    import torch

    if _on_cpu(device):
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _schedulers_to(pipe, device) -> None:
    """Move the tensors of the pipeline's schedulers (not modules: ``pipe.to`` leaves them; their
    ``add_noise`` moves ``alphas_cumprod`` to the samples' device and keeps it there)."""
    import torch

    for sched in (pipe.scheduler, pipe.image_noising_scheduler):
        for k, v in list(vars(sched).items()):
            if isinstance(v, torch.Tensor):
                setattr(sched, k, v.to(device))


def train_vae(vae, images, recipe: Recipe, seed: int, *, budget_s=None, progress=False, log=print,
              device="cpu") -> dict:
    """Phase 1 on ``vae`` (already on ``device``); ``images`` (n, S, S, 3) uint8."""
    import torch

    cpu = _on_cpu(device)
    if not cpu:  # the training images on the device once (uint8), batches gathered there
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        images_dev = torch.from_numpy(np.ascontiguousarray(images)).to(device)

    rng = _rng(seed, _P_VAE_STEPS)
    gen = torch.Generator().manual_seed(_torch_seed(seed, _P_VAE_STEPS))
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    total = int(recipe.vae_steps)
    warm = min(50, max(1, total // 10))
    losses = []
    vae.train()
    bar = step_bar(progress, total, "train VAE")
    t0 = time.time()
    step = 0
    while step < total:
        idx = rng.integers(0, len(images), recipe.vae_batch_size)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe.vae_lr, recipe.vae_lr * 0.05, warm, total)
        batch = images[idx] if cpu else images_dev[torch.from_numpy(idx).to(device)]
        if recipe.vae_crop and recipe.vae_crop < batch.shape[1]:
            c = int(recipe.vae_crop)
            oy, ox = rng.integers(0, batch.shape[1] - c + 1, 2)
            batch = batch[:, oy:oy + c, ox:ox + c]
        if cpu:
            x = _to_x(batch, torch)
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
            rec = vae.decode(z).sample
        else:  # bf16 forward passes; the posterior, sample and loss in fp32
            x = batch.permute(0, 3, 1, 2).float().div(127.5).sub(1)
            with _autocast(device):
                h = vae.encode(x).latent_dist.parameters
            post = DiagonalGaussianDistribution(h.float())
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(device)
            with _autocast(device):
                rec = vae.decode(z).sample
            rec = rec.float()
        mse = torch.mean((rec - x) ** 2)
        # Stable Diffusion's balance: per-image sums, reconstruction + kl_weight * KL
        loss = mse + recipe.kl_weight * post.kl().mean() / x[0].numel()
        if recipe.vae_l1:
            loss = loss + recipe.vae_l1 * torch.mean(torch.abs(rec - x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(mse.detach()))
        step += 1
        tick(bar, losses, "mse", ".4f")
        if step == warm + 5:
            total = fit_budget(step, total, t0, budget_s, bar)
    if bar is not None:
        bar.close()
    vae.eval()
    return {"steps_run": step, "seconds": round(time.time() - t0, 1), "losses": losses}


def encode_latents(vae, images, batch: int = 256, device="cpu"):
    """(mean, std) of the VAE posterior of uint8 images, float32 numpy, unscaled (``vae`` on
    ``device``; fp32, no autocast)."""
    import torch

    cpu = _on_cpu(device)
    means, stds = [], []
    with torch.inference_mode():
        for a in range(0, len(images), batch):
            x = _to_x(images[a:a + batch], torch)
            post = vae.encode(x if cpu else x.to(device)).latent_dist
            means.append(post.mean.numpy() if cpu else post.mean.float().cpu().numpy())
            stds.append(post.std.numpy() if cpu else post.std.float().cpu().numpy())
    return np.concatenate(means), np.concatenate(stds)


def condition(pipe, embeds, levels, uncond_mask, generator=None):
    """unCLIP's class label for a batch: normalised-noised-unnormalised embedding ⊕ sinusoid(level).

    ``levels`` (n,) int noise levels of the embedding (0: none); rows of ``uncond_mask`` are
    zeroed (the pipeline's classifier-free-guidance input). Per-sample version of
    ``StableUnCLIPImg2ImgPipeline.noise_image_embeddings``. Computed where the normaliser is
    (``embeds``, ``levels`` and ``uncond_mask`` are moved there); the noise is drawn on the CPU
    (``generator`` a CPU generator) and moved.
    """
    import torch
    from diffusers.models.embeddings import get_timestep_embedding

    dev = pipe.image_normalizer.mean.device
    if dev.type != "cpu":
        embeds, levels, uncond_mask = embeds.to(dev), levels.to(dev), uncond_mask.to(dev)
    e = pipe.image_normalizer.scale(embeds)
    noise = torch.randn(e.shape, generator=generator, dtype=e.dtype)
    if dev.type != "cpu":
        noise = noise.to(dev)
    e = pipe.image_noising_scheduler.add_noise(e, noise, levels)
    e = pipe.image_normalizer.unscale(e)
    lv = get_timestep_embedding(levels, embedding_dim=e.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
    c = torch.cat([e, lv.to(e.dtype)], 1)
    return torch.where(uncond_mask[:, None], torch.zeros_like(c), c)


def train_unet(pipe, lat_mean, lat_std, embeds, recipe: Recipe, seed: int, *, budget_s=None, progress=False,
               device="cpu") -> dict:
    """Phase 2 on ``pipe.unet`` (the pipeline already on ``device``); latents and embeddings numpy."""
    import torch

    cpu = _on_cpu(device)
    dev = torch.device(device)
    unet, sched = pipe.unet, pipe.scheduler
    sf = float(pipe.vae.config.scaling_factor)
    rng = _rng(seed, _P_UNET_STEPS)
    gen = torch.Generator().manual_seed(_torch_seed(seed, _P_UNET_STEPS))
    with torch.inference_mode():
        empty, _ = pipe.encode_prompt(prompt=[""], device=dev, num_images_per_prompt=1,
                                      do_classifier_free_guidance=False)
    empty = empty.clone()
    decay, no_decay = [], []
    for name, p in unet.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.99))
    params = list(unet.parameters())
    ema = [p.detach().clone() for p in params]
    alphas = sched.alphas_cumprod.float()
    snr = alphas / (1 - alphas)
    n = len(lat_mean)
    emb_all = torch.from_numpy(np.ascontiguousarray(embeds, np.float32))
    mean_all = torch.from_numpy(lat_mean)
    std_all = torch.from_numpy(lat_std)
    if not cpu:  # the whole training set on the device once; random numbers drawn on the CPU, then moved
        emb_all, mean_all, std_all, snr = emb_all.to(dev), mean_all.to(dev), std_all.to(dev), snr.to(dev)

    def put(t):
        return t if cpu else t.to(dev)

    total = int(recipe.steps)
    losses = []
    probe = _probe_batch(pipe, mean_all, emb_all, recipe, seed, device=device)
    probe_before = _probe_loss(unet, probe)
    unet.train()
    bar = step_bar(progress, total, "train UNet")
    t0 = time.time()
    order = np.empty(0, np.int64)
    step = 0
    while step < total:
        if len(order) < recipe.batch_size:
            order = np.concatenate([order, rng.permutation(n)])
        idx, order = order[:recipe.batch_size], order[recipe.batch_size:]
        b = len(idx)
        it = put(torch.from_numpy(idx))
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, recipe.lr, recipe.min_lr, recipe.warmup, total)
        x0 = (mean_all[it] + std_all[it] * put(torch.randn(mean_all[it].shape, generator=gen))) * sf
        t = put(torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen))
        noise = put(torch.randn(x0.shape, generator=gen))
        xt = sched.add_noise(x0, noise, t)
        target = sched.get_velocity(x0, noise, t) if recipe.prediction_type == "v_prediction" else noise
        aug = torch.rand(b, generator=gen) < recipe.p_noise_aug
        levels = torch.where(aug, torch.randint(0, recipe.max_noise_level + 1, (b,), generator=gen), 0)
        uncond = torch.rand(b, generator=gen) < recipe.p_uncond
        cond = condition(pipe, emb_all[it], put(levels), put(uncond), gen)
        with _autocast(device):
            pred = unet(xt, t, encoder_hidden_states=empty.expand(b, -1, -1), class_labels=cond).sample
        if not cpu:
            pred = pred.float()
        err = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        if recipe.min_snr_gamma:
            s = snr[t]
            w = torch.clamp(s, max=recipe.min_snr_gamma) / (s + 1 if recipe.prediction_type == "v_prediction" else s)
            err = err * w
        loss = err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        d = min(recipe.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            if cpu:
                for e, p in zip(ema, unet.parameters()):
                    e.lerp_(p.detach(), 1 - d)
            else:  # one fused launch instead of one per tensor
                torch._foreach_lerp_(ema, params, 1 - d)
        losses.append(float(loss.detach()))
        step += 1
        tick(bar, losses, "loss", ".4f")
        if step == recipe.warmup + 5 or (budget_s is not None and step == 10 and step < recipe.warmup):
            total = fit_budget(step, total, t0, budget_s, bar)
    if bar is not None:
        bar.close()
    with torch.no_grad():
        for e, p in zip(ema, unet.parameters()):
            p.copy_(e)
    unet.eval()
    return {"steps_run": step, "seconds": round(time.time() - t0, 1), "losses": losses,
            "probe_loss": [probe_before, _probe_loss(unet, probe)]}


def _probe_batch(pipe, lat_mean, embeds, recipe: Recipe, seed: int, n: int = 64, device="cpu") -> dict:
    """A fixed batch (latents, timesteps spread over the schedule, noise, conditions) to compare losses on;
    ``lat_mean`` and ``embeds`` tensors on ``device``, where the batch is put."""
    import torch

    cpu = _on_cpu(device)

    def put(t):
        return t if cpu else t.to(device)

    gen = torch.Generator().manual_seed(_torch_seed(seed, _P_UNET_STEPS, 1))
    n = min(n, len(lat_mean))
    idx = put(torch.from_numpy(_rng(seed, _P_UNET_STEPS, 1).choice(len(lat_mean), n, replace=False)))
    x0 = lat_mean[idx] * float(pipe.vae.config.scaling_factor)
    sched = pipe.scheduler
    t = put(torch.linspace(0, sched.config.num_train_timesteps - 1, n).long())
    noise = put(torch.randn(x0.shape, generator=gen))
    target = sched.get_velocity(x0, noise, t) if recipe.prediction_type == "v_prediction" else noise
    cond = condition(pipe, embeds[idx], torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.bool), gen)
    with torch.inference_mode():
        empty, _ = pipe.encode_prompt(prompt=[""], device=torch.device(device), num_images_per_prompt=1,
                                      do_classifier_free_guidance=False)
    return {"x": sched.add_noise(x0, noise, t), "t": t, "target": target, "cond": cond, "ctx": empty.expand(n, -1, -1)}


def _probe_loss(unet, probe) -> float:
    """Unweighted MSE of the UNet's prediction on the probe batch (fp32, no autocast, on the UNet's device)."""
    import torch

    was = unet.training
    unet.eval()
    with torch.inference_mode():
        pred = unet(probe["x"], probe["t"], encoder_hidden_states=probe["ctx"], class_labels=probe["cond"]).sample
    unet.train(was)
    return float(((pred.float() - probe["target"]) ** 2).mean())


def evaluate(decoder, encoder, heldout: dict, recipe: Recipe, seed: int = 0) -> dict:
    """Held-out CLIP two-way identification of images generated from the true embeddings.

    ``generated``: from the embedding alone; ``img2img``: starting from a blurred copy of the
    true image (``eval_strength``); ``blurred``: the blurred image itself (a baseline); the
    images are CLIP-embedded at 425 px like the pipeline scores them.
    """
    emb = heldout["embeds"]
    kw = dict(guidance_scale=recipe.guidance_scale, num_inference_steps=recipe.num_inference_steps, seed=seed)
    gen = decoder.generate(emb, **kw)
    blurred = blur(heldout["images"], recipe.eval_blur)
    i2i = decoder.generate(emb, blurred, strength=recipe.eval_strength, **kw)
    return {
        "two_way_generated": clip_two_way(encoder, gen, emb),
        "two_way_img2img": clip_two_way(encoder, i2i, emb),
        "two_way_blurred": clip_two_way(encoder, blurred, emb),
        "two_way_stimulus": clip_two_way(encoder, heldout["images"], emb),
        "n_heldout": int(len(emb)), **kw, "strength": recipe.eval_strength, "blur": recipe.eval_blur,
    }


def train(out_dir, *, clip="sim", sim_clip_dir=None, seed: int = 0, recipe: Recipe | None = None,
          vae_cfg: dict | None = None, unet_cfg: dict | None = None, minutes: float | None = None,
          cache_dir=None, progress: bool = True, command: str | None = None, encoder=None,
          log=print, device: str = "cpu", workers: int = 1, init=None, sim_init_dir=None) -> dict:
    """Train the nsd-sim image decoder against a CLIP and save it to ``out_dir``; return a summary.

    ``init``: an image decoder config (``"sim"``, a pipeline folder; ``sim_init_dir`` is the folder
    ``"sim"`` refers to) whose VAE and UNet weights the training starts from instead of the seeded
    initialisation, e.g. to fine-tune a decoder on a fine-tuned CLIP (``vae_steps=0`` keeps its VAE).

    ``workers``: processes rendering the scenes. ``device``: where the CLIP embeds them and the
    models train.

    ``clip``: a CLIP config (:func:`.clip.parse_clip_config`; ``"sim"`` by default), or pass a
    loaded ``encoder``. ``minutes``: a time budget; after data preparation and a reserve for the
    evaluation, ``vae_fraction`` of it goes to the VAE and the rest to the UNet, each phase
    shortened after its first steps are timed (never lengthened); the steps actually run are
    recorded, so the run is reproducible with ``vae_steps``/``steps`` set to them.

    ``device``: where to train and evaluate (e.g. ``"cuda"``): the pipeline is built on the CPU
    (same initial weights), moved there, and moved back before it is saved; the CLIP ``encoder``
    stays where it is (the data embeddings and the evaluation's CLIP scores are computed by it).
    """
    import torch

    from ...decoders import clip as mclip
    from ...decoders.image_decoder import (ImageDecoder, build_unclip_pipeline, parse_image_decoder_config, save_pipeline)

    recipe = recipe or Recipe()
    vae_cfg = copy.deepcopy(vae_cfg or VAE_CFG)
    unet_cfg = copy.deepcopy(unet_cfg or UNET_CFG)
    t_start = time.time()
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        if init is not None:  # its files checked before any work
            init = parse_image_decoder_config(init, sim_dir=sim_init_dir)
        if encoder is None:
            encoder = mclip.ClipEncoder.load(clip, sim_dir=sim_clip_dir, device=device)
        t0 = time.time()
        train_set = scene_set(seed, _P_TRAIN, recipe.n_train, recipe.image_size, encoder, cache_dir, workers)
        heldout = scene_set(seed, _P_HELDOUT, recipe.n_heldout, recipe.image_size, encoder, cache_dir, workers)
        t_data = time.time() - t0
        pipe = build_unclip_pipeline(encoder.embed_dim, vae_cfg, unet_cfg, image_size=recipe.image_size,
                                     prediction_type=recipe.prediction_type, seed=_torch_seed(seed, _P_INIT))
        init_info = None if init is None else _start_from(pipe, init, sim_init_dir)
        e = torch.from_numpy(train_set["embeds"]).double()
        with torch.no_grad():
            pipe.image_normalizer.mean.copy_(e.mean(0, keepdim=True).float())
            pipe.image_normalizer.std.copy_(e.std(0, keepdim=True).clamp_min(1e-6).float())
        on_cpu = _on_cpu(device)
        if not on_cpu:
            pipe.to(device)
            _schedulers_to(pipe, device)

        vae_budget = unet_budget = None
        if minutes is not None:
            left = minutes * 60 - (time.time() - t_start) - _eval_reserve(recipe)
            vae_budget = max(0.0, left * recipe.vae_fraction)
        torch.manual_seed(_torch_seed(seed, _P_VAE_STEPS))
        vae_log = train_vae(pipe.vae, train_set["images"], recipe, seed, budget_s=vae_budget, progress=progress,
                            device=device)
        lat_mean, lat_std = encode_latents(pipe.vae, train_set["images"], device=device)
        scaling = float(1.0 / lat_mean.std())
        pipe.vae.register_to_config(scaling_factor=scaling)
        if minutes is not None:
            unet_budget = max(1.0, minutes * 60 - (time.time() - t_start) - _eval_reserve(recipe))
        unet_log = train_unet(pipe, lat_mean, lat_std, train_set["embeds"], recipe, seed, budget_s=unet_budget,
                              progress=progress, device=device)
        t_train = time.time() - t0 - t_data
        sampling = {"guidance_scale": recipe.guidance_scale, "num_inference_steps": recipe.num_inference_steps,
                    "strength": recipe.eval_strength}
        decoder = ImageDecoder(pipe, info={"sampling": sampling}, device=device)
        t1 = time.time()
        metrics = evaluate(decoder, encoder, heldout, recipe, seed=seed) if recipe.n_heldout > 1 else {}
        metrics["vae_mse_last50"] = float(np.mean(vae_log["losses"][-50:])) if vae_log["losses"] else None
        metrics["unet_loss_last100"] = float(np.mean(unet_log["losses"][-100:]))
        metrics["unet_probe_loss"] = {"before": unet_log["probe_loss"][0], "after": unet_log["probe_loss"][1]}
        import diffusers

        n_params = {k: int(sum(p.numel() for p in getattr(pipe, k).parameters()))
                    for k in ("unet", "vae", "text_encoder", "image_encoder", "image_normalizer")}
        summary = {
            "seed": int(seed),
            "clip": encoder.describe() if encoder.config is not None else {"model": "in-memory"},
            "recipe": dataclasses.replace(recipe, steps=unet_log["steps_run"], vae_steps=vae_log["steps_run"]).to_dict(),
            "vae_cfg": vae_cfg, "unet_cfg": unet_cfg,
            "steps_run": {"vae": vae_log["steps_run"], "unet": unet_log["steps_run"]},
            "init": init_info,
            "vae_scaling_factor": scaling,
            "heldout": metrics,
            "sampling": sampling,
            "seconds": {"data": round(t_data, 1), "vae": vae_log["seconds"], "unet": unet_log["seconds"],
                        "train": round(t_train, 1), "eval": round(time.time() - t1, 1),
                        "total": round(time.time() - t_start, 1)},
            "threads": recipe.threads,
            "device": str(device),
            **({} if torch.device(device).type != "cuda" else {"device_name": device_name(device)}),
            "n_params": n_params,
            "torch_version": torch.__version__, "diffusers_version": diffusers.__version__,
            "command": command,
            "train_stream": [_STREAM, int(seed), _P_TRAIN], "heldout_stream": [_STREAM, int(seed), _P_HELDOUT],
            "embeds": "L2-normalised pooled image embeddings of the CLIP (ClipEncoder.encode_images)",
            # the norm of what it was trained on: decode scales predictions to it (ImageDecoder.embed_scale)
            "embeds_norm": round(float(np.linalg.norm(train_set["embeds"], axis=1).mean()), 6),
        }
        if not on_cpu:  # saved (and returned) on the CPU
            pipe.to("cpu")
            _schedulers_to(pipe, "cpu")
        if out_dir is not None:
            save_pipeline(pipe, out_dir, info=summary)
            (Path(out_dir) / "losses.json").write_text(json.dumps(
                {"vae_mse": [round(v, 5) for v in vae_log["losses"]],
                 "unet": [round(v, 5) for v in unet_log["losses"]]}) + "\n")
        summary["losses"] = {"vae": vae_log["losses"], "unet": unet_log["losses"]}
        summary["pipeline"] = pipe
        return summary
    finally:
        torch.set_num_threads(prev_threads)


def _start_from(pipe, init, sim_dir=None) -> dict:
    """Copy the VAE and UNet weights of the image decoder ``init`` into ``pipe`` (same architecture)."""
    from ...errors import InputError
    from ...io import sha256_file
    from ...decoders.image_decoder import ImageDecoder

    src = ImageDecoder.load(init, sim_dir=sim_dir)
    info = {"pipeline": str(src.config.pipeline_dir)}
    for name in ("vae", "unet"):
        try:
            getattr(pipe, name).load_state_dict(getattr(src.pipe, name).state_dict(), strict=True)
        except RuntimeError as e:
            raise InputError(f"{src.config.pipeline_dir}: its {name} does not match the architecture being "
                             f"trained ({str(e).splitlines()[0]})") from None
        weights = sorted((src.config.pipeline_dir / name).glob("*.safetensors"))
        info[f"{name}_sha256"] = sha256_file(weights[0]) if weights else None
    return info


def _eval_reserve(recipe: Recipe) -> float:
    """Seconds set aside for the held-out evaluation in a time budget (a rough, generous guess)."""
    return 10.0 + 0.025 * recipe.n_heldout * recipe.num_inference_steps * (2 if recipe.guidance_scale > 1 else 1)


#: named (recipe, VAE config, UNet config); ``tiny`` runs in seconds (tests, workflow smoke runs);
#: ``gpu`` is the default architecture with a recipe sized for one H200 (about 3.5 minutes of
#: training; a ``--minutes`` budget shortens it on a slower device)
PRESETS: dict = {
    "default": (Recipe(), VAE_CFG, UNET_CFG),
    "gpu": (Recipe(n_train=60000, vae_steps=3000, vae_batch_size=128, steps=12000, batch_size=256, lr=2e-3,
                   warmup=200), VAE_CFG, UNET_CFG),
    "tiny": (Recipe(image_size=32, n_train=64, n_heldout=8, vae_steps=30, vae_batch_size=8, vae_lr=3e-3, steps=40,
                    batch_size=8, warmup=5, lr=2e-3, num_inference_steps=3), TINY_VAE_CFG, TINY_UNET_CFG),
}
