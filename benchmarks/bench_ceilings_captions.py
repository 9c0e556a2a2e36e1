"""Caption ceiling on nsd-sim: captions from TRUE CLIP embeddings of held-out scenes, against baselines.

The question: given the exact sim-CLIP embedding of an image (no brain in the loop), does the
caption decoder name what is in it? That is the ceiling of every brain -> CLIP -> caption
result. Held-out scenes are the captioner's recorded held-out stream (``braindecode.heldout_stream``
in its config.json), never trained on by the captioner nor by the CLIP (whose streams differ).

Score (:func:`braindecode_pkg.sim.attributes.sim_attribute_scores`): the objects a caption
names are its "colour shape" phrases ("a big red circle"); ``objects`` is the fraction of
images whose caption names exactly the true objects — each object's shape and colour, bound
together, both objects of two-object scenes (either order), and no other object. ``shape``,
``colour`` and ``count`` compare those parts alone; ``size`` is the fraction right among
correctly named objects given a size word; ``object_recall`` the fraction of true objects
named. 95% bootstrap intervals (images resampled, 2000 draws) on ``objects``.

Baselines, all measured in the same run on the same images:
  random-embedding   captions of Gaussian random embeddings (what the decoder says unprompted)
  shuffled           captions of another held-out image's true embedding (a derangement)
  most-frequent      the most frequent caption of the captioner's training captions, for every image
  nn-caption         retrieval: the first caption of the database scene (``--nn-db`` scenes of
                     the training stream) whose CLIP embedding is nearest (cosine)
  reference          each image's own first reference caption (checks the scorer: 1.0)

    python benchmarks/bench_ceilings_captions.py [--captioner sim] [--clip sim] [--n 1000] [--beams 1,3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

COLS = ("objects", "objects_1obj", "objects_2obj", "shape", "colour", "count", "size", "object_recall")


def bootstrap_ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    x = np.asarray(x, float)
    m = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    return float(np.quantile(m, 0.025)), float(np.quantile(m, 0.975))


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captioner", default="sim", help="captioner config (default: sim, the shipped weights)")
    ap.add_argument("--sim-captioner", default=None, help="folder that --captioner sim refers to")
    ap.add_argument("--clip", default=None, help="CLIP config (default: the one recorded by the captioner, else sim)")
    ap.add_argument("--sim-clip", default=None, help="folder that --clip sim refers to")
    ap.add_argument("--n", type=int, default=None, help="held-out scenes (default: the captioner's n_heldout)")
    ap.add_argument("--beams", default="1,3", help="beam widths to score, comma-separated (default: 1,3)")
    ap.add_argument("--nn-db", type=int, default=5000, help="database scenes of the nn-caption baseline (0: skip)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default=None, help="rendered-scene cache folder ('' disables)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from braindecode_pkg.sim.recipes import captioner as tcap
    from braindecode_pkg.decoders.captioner import Captioner
    from braindecode_pkg.sim.attributes import sim_attribute_scores
    from braindecode_pkg.decoders.clip import ClipEncoder

    t0 = time.time()
    cap = Captioner.load(args.captioner, sim_dir=args.sim_captioner)
    info = cap.meta.get("braindecode") or {}
    recorded_clip = (cap.meta.get("clip") or {}).get("config")
    clip_spec = args.clip or ("sim" if args.sim_clip or not recorded_clip else recorded_clip)
    enc = ClipEncoder.load(clip_spec, sim_dir=args.sim_clip)
    if enc.embed_dim != cap.clip_dim:
        sys.exit(f"CLIP {enc.config.name} gives {enc.embed_dim}-d embeddings; the captioner expects {cap.clip_dim}")
    from braindecode_pkg.io import sha256_file

    clip_sha = sha256_file(enc.config.weights)
    trained_sha = (cap.meta.get("clip") or {}).get("weights_sha256")
    clip_note = ("the CLIP the captioner was trained with" if clip_sha == trained_sha else
                 f"NOT the CLIP the captioner was trained with (sha256 {clip_sha[:12]} != {str(trained_sha)[:12]})")
    seed, purpose = info.get("heldout_stream", [0, tcap._P_HELDOUT])
    n = int(args.n or (info.get("recipe") or {}).get("n_heldout") or 1000)
    cache = False if args.cache == "" else args.cache
    held = tcap.sim_pairs(enc, seed, purpose, n, 1, cache_dir=cache)  # 1 caption: as in training (cache key)
    attrs, refs, emb = held["attrs"], held["captions"], held["embeds"]
    t_setup = time.time() - t0

    rows: dict[str, dict] = {}
    examples: dict[str, list] = {}

    def score(name, captions, seconds=None):
        s = sim_attribute_scores(captions, attrs, per_image=True)
        s["objects_ci95"] = bootstrap_ci(s.pop("rows")["objects"])
        if seconds is not None:
            s["seconds"] = round(seconds, 1)
        rows[name] = s
        examples[name] = list(captions[:3])

    beams = [int(b) for b in args.beams.split(",") if b.strip()]
    for b in beams:
        t = time.time()
        score(f"true-embedding (beams={b})", cap.generate(emb, num_beams=b), time.time() - t)
    b0 = beams[0]
    rng = np.random.default_rng(12345)
    t = time.time()
    score(f"random-embedding (beams={b0})",
          cap.generate(rng.normal(size=emb.shape).astype(np.float32), num_beams=b0), time.time() - t)
    perm = (np.arange(n) + 1 + rng.integers(0, n - 1)) % n  # a derangement: no image keeps its own
    t = time.time()
    score(f"shuffled (beams={b0})", cap.generate(emb[perm], num_beams=b0), time.time() - t)
    tr_seed, tr_purpose = info.get("train_stream", [seed, tcap._P_TRAIN])
    n_train = int((info.get("recipe") or {}).get("n_train") or 20000)
    from braindecode_pkg.sim.recipes.clip import draw_scenes

    _, train_caps = draw_scenes(tr_seed, tr_purpose, n_train, 5)
    mode, count = Counter(c for cs in train_caps for c in cs).most_common(1)[0]
    score("most-frequent", [mode] * n)
    if args.nn_db:
        t = time.time()
        db = tcap.sim_pairs(enc, tr_seed, tr_purpose, args.nn_db, 1, cache_dir=cache)
        sim = emb @ db["embeds"].T
        score(f"nn-caption ({args.nn_db} db)", [db["captions"][j][0] for j in sim.argmax(1)], time.time() - t)
    score("reference (scorer check)", [r[0] for r in refs])

    # ---------------------------------------------------------------------- report
    cfg_dir = cap.config.mapper_dir if cap.config else None
    sizes = {"mapper_bytes": (cfg_dir / "model.safetensors").stat().st_size if cfg_dir else None,
             "folder_bytes": dir_size(cfg_dir) if cfg_dir else None}
    print(f"captioner: {cfg_dir}  (lm {cap.config.lm_dir if cap.config else '?'})")
    print(f"  trained: {info.get('steps_run')} steps, seed {info.get('seed')}, seconds {info.get('seconds')}, "
          f"params {info.get('n_params')}")
    print(f"  size: mapper {sizes['mapper_bytes'] / 1e6:.2f} MB, folder {sizes['folder_bytes'] / 1e6:.2f} MB")
    print(f"clip: {enc.config.name} ({enc.embed_dim}-d, {enc.config.weights}): {clip_note}")
    print(f"  held-out stream {[seed, purpose]}, n={n} "
          f"({int((attrs['n_objects'] == 1).sum())} one-object, {int((attrs['n_objects'] == 2).sum())} two-object); "
          f"setup {t_setup:.0f}s")
    print(f"most frequent training caption ({count}x of {5 * n_train}): {mode!r}")
    w = max(len(k) for k in rows)
    print(f"\n{'method':<{w}}  " + "  ".join(f"{c:>13}" for c in COLS) + "  objects 95% CI")
    for name, s in rows.items():
        lo, hi = s["objects_ci95"]
        print(f"{name:<{w}}  " + "  ".join(f"{s[c]:>13.3f}" for c in COLS) + f"  [{lo:.3f}, {hi:.3f}]")
    print()
    for name in rows:
        print(f"{name}: " + " | ".join(examples[name][:2]))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "examples": examples, "n": n, "sizes": sizes,
                                               "trained": {k: info.get(k) for k in ("steps_run", "seed", "seconds",
                                                                                    "n_params", "command")}},
                                              indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
