"""Ceiling of the image decoder: CLIP two-way identification of images generated from TRUE embeddings.

For the test images of nsd-sim (the shown shared-1000 images of the default world, never trained
on), the sim CLIP's pooled embedding of each stimulus is given to the image decoder; every
generated image is resized to 425 px, CLIP-embedded with the same CLIP and scored by MindEye's
two-way identification against the true embeddings. Measured in the same run, on the same images:

* ``generated``           from the true embedding alone (the issue's target: >= 0.85);
* ``img2img``             from the true embedding, starting from a blurred copy of the stimulus
                          (a stand-in for a low-level reconstruction) at ``--strength``;
* ``blurred``             the blurred copy itself (baseline for img2img);
* ``shuffled``            generated from another image's true embedding (chance, with realistic images);
* ``random``              generated from random unit vectors (chance, off the embedding distribution);
* ``native``              the stimulus resized to the decoder's native size and back (resolution ceiling);
* ``vae``                 the stimulus through the decoder's VAE (autoencoder ceiling).

Usage::

    python benchmarks/bench_ceilings_images.py                       # shipped sim decoder and CLIP
    python benchmarks/bench_ceilings_images.py --decoder DIR --sim-clip DIR --n 300 --grid grid.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_scenes(preset: str = "default", seed: int | None = None, n: int | None = None):
    """(nsd ids, 425 px images) of the shown test images (shared 1000) of an nsd-sim world."""
    from braindecode_pkg.sim import scenes as sc
    from braindecode_pkg.sim import world as sim

    cfg = sim.sim_config(preset, **({} if seed is None else {"seed": seed}))
    design = sim.make_design(cfg)
    subject = cfg.subjects[0]
    k10, nsd = sim.subject_trials(design, subject, cfg.n_sessions(subject))
    ids = np.unique(nsd[k10 <= 1000])
    if n is not None:
        ids = ids[:n]
    attrs = sc.subset(sim.world_scenes(cfg), ids)
    return ids, np.stack([sc.render_scene(attrs, i) for i in range(len(ids))])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--decoder", default="sim", help="image decoder config (default: sim, the shipped pipeline)")
    p.add_argument("--sim-decoder", default=None, help="folder that --decoder sim refers to")
    p.add_argument("--clip", default="sim", help="CLIP config (default: sim)")
    p.add_argument("--sim-clip", default=None, help="folder that --clip sim refers to")
    p.add_argument("--preset", default="default", help="nsd-sim world preset whose test images are used")
    p.add_argument("--n", type=int, default=300, help="test images (default: 300, all of the default world's)")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the decoder's)")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: the decoder's)")
    p.add_argument("--strength", type=float, default=None, help="img2img strength (default: the decoder's)")
    p.add_argument("--blur", type=float, default=0.08,
                   help="sigma of the Gaussian blur of the img2img start, fraction of the side (default 0.08)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sweep", default=None,
                   help="also score these guidance scales without img2img, e.g. 1,2,3,5")
    p.add_argument("--grid", default=None, help="write a PNG grid (stimulus, blurred, generated, img2img) here")
    p.add_argument("--json", default=None, help="write the numbers here")
    a = p.parse_args(argv)

    import torch

    from braindecode_pkg.decoders.clip import ClipEncoder
    from braindecode_pkg.decoders.image_decoder import ImageDecoder, resize_uint8
    from braindecode_pkg.sim.recipes.image_decoder import blur, two_way_identification

    torch.set_num_threads(a.threads)
    t0 = time.time()
    enc = ClipEncoder.load(a.clip, sim_dir=a.sim_clip)
    dec = ImageDecoder.load(a.decoder, sim_dir=a.sim_decoder)
    ids, stim = test_scenes(a.preset, n=a.n)
    true = enc.encode_images(stim, what=("pooled",))["pooled"]
    d = dec.defaults()
    g = d["guidance_scale"] if a.guidance is None else a.guidance
    steps = d["num_inference_steps"] if a.steps is None else a.steps
    strength = d["strength"] if a.strength is None else a.strength
    kw = dict(guidance_scale=g, num_inference_steps=steps, seed=a.seed)
    S = dec.image_size

    def score(images):
        x = resize_uint8(images, 425)
        return two_way_identification(enc.encode_images(x, what=("pooled",))["pooled"], true)

    rows, times, imgs = {}, {}, {}

    def run(name, fn):
        t = time.time()
        out = fn()
        times[name] = time.time() - t
        rows[name] = score(out)
        imgs[name] = out
        print(f"  {name:<12} {rows[name]:.3f}   ({times[name]:.0f}s)", flush=True)

    print(f"{len(ids)} nsd-sim test images ({a.preset} world); decoder {dec.image_size}px, embed {dec.embed_dim}-d; "
          f"guidance {g}, {steps} steps, img2img strength {strength} from blur sigma {a.blur}")
    print("CLIP two-way identification (MindEye), images resized to 425 px:")
    blurred = blur(stim, a.blur)
    run("generated", lambda: dec.generate(true, **kw))
    run("img2img", lambda: dec.generate(true, blurred, strength=strength, **kw))
    run("blurred", lambda: blurred)
    perm = np.random.default_rng(a.seed).permutation(len(true))
    perm = np.where(perm == np.arange(len(true)), np.roll(perm, 1), perm)
    run("shuffled", lambda: dec.generate(true[perm], **kw))
    rnd = np.random.default_rng(a.seed + 1).normal(size=true.shape).astype(np.float32)
    run("random", lambda: dec.generate(rnd / np.linalg.norm(rnd, axis=1, keepdims=True), **kw))
    run("native", lambda: resize_uint8(stim, S))
    run("vae", lambda: _vae_roundtrip(dec, stim))
    if a.sweep:
        for gs in [float(v) for v in a.sweep.split(",")]:
            run(f"guidance={gs:g}", lambda gs=gs: dec.generate(true, **{**kw, "guidance_scale": gs}))
    print(f"target: generated >= 0.85; img2img should beat blurred ({time.time() - t0:.0f}s in all)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"n": int(len(ids)), "two_way": rows, "seconds": times, "guidance_scale": g,
                       "num_inference_steps": steps, "strength": strength, "blur": a.blur,
                       "decoder": dec.describe(), "clip": enc.describe()}, fh, indent=1, default=str)
    if a.grid:
        _grid(a.grid, [resize_uint8(stim[:8], 96), resize_uint8(blurred[:8], 96),
                       resize_uint8(imgs["generated"][:8], 96), resize_uint8(imgs["img2img"][:8], 96)])
    return 0


def _vae_roundtrip(dec, stim):
    import torch

    from braindecode_pkg.decoders.image_decoder import resize_uint8

    vae = dec.pipe.vae
    u8 = resize_uint8(stim, dec.image_size)
    out = []
    with torch.inference_mode():
        for a in range(0, len(u8), 64):
            x = torch.from_numpy(u8[a:a + 64]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            r = vae.decode(vae.encode(x).latent_dist.mean).sample
            out.append(np.round((r / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))
    return np.concatenate(out)


def _grid(path, rows):
    from PIL import Image

    h = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    Image.fromarray(h).save(path)
    print(f"grid (rows: stimulus, blurred, generated, img2img): {path}")


if __name__ == "__main__":
    sys.exit(main())
