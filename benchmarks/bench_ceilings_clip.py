"""How well the nsd-sim CLIP sees the simulated world, on scenes it never trained on.

Held-out scenes come from the held-out stream of :mod:`braindecode_pkg.sim.recipes.clip`
(a random stream the training never draws from), rendered like nsd-sim renders its stimuli.

Printed:
  retrieval      top-1 image->caption and caption->image among 300 random held-out scenes (the
                 first caption of each), averaged over 30 draws: the field's protocol; issue #3
                 asks for image->caption >= 0.8
  ceilings       the top-1 a model reaches if it perceives exactly some attributes and matches
                 every candidate caption consistent with them (ties broken at random): colours +
                 background + count; + shapes; + size classes; + positions. Chance is 1/300.
  linear probes  logistic regression on the pooled embedding (fit on half the scenes, scored on
                 the other half) of the shape and colour of the object in one-object scenes and
                 of the background; baseline: the same probe on 16x16 RGB pixels

    python benchmarks/bench_ceilings_clip.py [--clip sim|DIR|JSON] [--n 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ceilings(attrs, rng, n_candidates=300, n_draws=30) -> dict:
    from braindecode_pkg.sim import scenes as sc

    n = len(attrs["background"])

    def key(i, lvl):
        objs = []
        for k in (1, 2):
            if attrs[f"shape{k}"][i] < 0:
                continue
            o = (int(attrs[f"colour{k}"][i]),)
            if lvl >= 2:
                o += (int(attrs[f"shape{k}"][i]),)
            if lvl >= 3:
                o += (int(attrs[f"size{k}"][i]),)
            if lvl >= 4:
                o += sc.position_words(float(attrs[f"x{k}"][i]), float(attrs[f"y{k}"][i]))
            objs.append(o)
        return int(attrs["background"][i]), tuple(sorted(objs))

    out = {}
    names = {1: "colours+background+count", 2: "+shapes", 3: "+sizes", 4: "+positions"}
    for lvl, name in names.items():
        keys = [key(i, lvl) for i in range(n)]
        acc = []
        for _ in range(n_draws):
            idx = rng.choice(n, min(n, n_candidates), replace=False)
            c = Counter(keys[i] for i in idx)
            acc.append(np.mean([1.0 / c[keys[i]] for i in idx]))
        out[name] = float(np.mean(acc))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default="sim", help="CLIP config (default: sim, the shipped nsd-sim CLIP)")
    p.add_argument("--n", type=int, default=2000, help="held-out scenes (default 2000)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the held-out stream (default: the model's training seed)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from braindecode_pkg.decoders import clip as mclip
    from braindecode_pkg.sim.recipes import clip as tc

    enc = mclip.ClipEncoder.load(args.clip)
    info = {}
    if enc.config.local_dir is not None:
        doc = json.loads((enc.config.local_dir / mclip.LOCAL_DIR_CONFIG).read_text())
        info = doc.get("braindecode", {})
    seed = args.seed if args.seed is not None else int(info.get("seed", 0))
    t0 = time.time()
    held = tc.scene_set(seed, tc._P_HELDOUT, args.n, 1, enc, cache_dir=None, progress=True)
    t_render = time.time() - t0
    t0 = time.time()
    m = tc.evaluate(enc, held)
    x = np.concatenate([
        enc.encode_pixels(enc.to_tensor(held["images"][a:a + 250]), what=("pooled",))["pooled"]
        for a in range(0, args.n, 250)
    ])
    t_embed = time.time() - t0
    attrs = held["attrs"]
    one = attrs["n_objects"] == 1
    from PIL import Image

    pix = np.stack([np.asarray(Image.fromarray(im).resize((16, 16), Image.BOX), np.float32).ravel()
                    for im in held["images"]])
    n_params = sum(p.numel() for p in enc.model.parameters())
    weights = enc.config.weights
    print(f"model        {enc.config.name}  ({n_params / 1e6:.2f} M parameters, {weights.stat().st_size / 2**20:.1f} MiB "
          f"{weights.name}; trained {info.get('steps_run', '?')} steps, seed {info.get('seed', '?')}, "
          f"{info.get('seconds', {}).get('train', '?')} s)")
    print(f"held-out     {args.n} scenes of stream [seed {seed}, purpose {tc._P_HELDOUT}] "
          f"(render {t_render:.0f} s, embed {t_embed:.0f} s)")
    print(f"retrieval    image->caption top-1 {m['image_to_caption_top1']:.3f}   caption->image top-1 "
          f"{m['caption_to_image_top1']:.3f}   ({m['n_candidates']}-way, {m['n_draws']} draws; chance "
          f"{1 / m['n_candidates']:.4f}; target image->caption >= 0.8)")
    ceil = ceilings(attrs, np.random.default_rng(1))
    print("ceilings     " + "   ".join(f"{k} {v:.3f}" for k, v in ceil.items()))
    print("linear probe               CLIP pooled   16x16 pixels   chance")
    for name, y, mask, n_cls in (
        ("shape (1 object)", attrs["shape1"], one, 8), ("colour (1 object)", attrs["colour1"], one, 8),
        ("background", attrs["background"], np.ones_like(one), 6),
    ):
        print(f"  {name:22s}   {tc.linear_probe(x[mask], y[mask]):11.3f}   {tc.linear_probe(pix[mask], y[mask]):12.3f}   {1 / n_cls:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
