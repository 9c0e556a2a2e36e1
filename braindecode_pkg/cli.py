"""``braindecode-pkg``: one subcommand per pipeline stage.

Each subcommand imports only what its stage needs (``preprocess`` never imports torch), so a
stage's process starts fast. ``main(argv)`` is callable from tests; bad input exits with status 2
and one line on stderr.
"""

from __future__ import annotations

import argparse
import sys


def _yaml_value(text: str):
    import yaml

    return yaml.safe_load(text)


def _cmd_simulate(args) -> int:
    from .data import sim

    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            from .errors import InputError

            raise InputError(f"--set {item!r}: expected KEY=VALUE (VALUE in YAML, e.g. subjects=[1,2])")
        overrides[key.strip()] = _yaml_value(value)
    if args.seed is not None:
        overrides["seed"] = args.seed
    cfg = sim.sim_config(args.preset, **overrides)
    manifest = sim.simulate(cfg, args.out)
    print(manifest)
    return 0


def _cmd_nsd_placeholders(args) -> int:
    from .data.placeholders import write_placeholders

    files = write_placeholders(args.out, _subject_list(args.subjects), sessions=args.sessions,
                               formats=tuple(args.formats.split(",")), beta_version=args.beta_version,
                               sized=args.sized)
    print(f"{len(files)} placeholder files under {args.out}")
    return 0


def _cmd_preprocess(args) -> int:
    from .preprocess import preprocess

    preprocess(
        args.nsd_root, args.subject, args.out, sessions=args.sessions, roi=args.roi,
        fmt=args.format, normalisation=args.normalisation, beta_version=args.beta_version,
        resolution=args.resolution, dtype=args.dtype,
        hash_cache=args.hash_cache if args.hash_cache is not None else "default",
        progress=not args.quiet,
    )
    return 0


def _subject_list(text: str) -> list[int]:
    from .errors import InputError

    try:
        out = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(f"--subjects {text!r}: expected comma-separated subject ids, e.g. 1,2,3") from None
    if not out:
        raise InputError(f"--subjects {text!r}: no subject given")
    return out


def _cmd_train_clip(args) -> int:
    import dataclasses

    from .models import train_clip

    recipe, model_cfg = train_clip.PRESETS[args.preset]
    if args.preset in train_clip.FINETUNE_PRESETS and args.init is None:
        from .errors import InputError

        raise InputError(f"--preset {args.preset} fine-tunes a CLIP: give the one to start from with --init "
                         f"(e.g. one trained with --preset {args.preset.removesuffix('-attr')})")
    fields = {"steps": args.steps, "threads": args.threads, "batch_size": args.batch_size,
              "eval_every": args.eval_every, "twin_fraction": args.twin_fraction, "lr": args.lr,
              "attr_weight": args.attr_weight, "attr_size": args.attr_size or None,
              "n_heldout": args.n_heldout}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in fields.items() if v is not None})
    if args.vision_width is not None:
        model_cfg = {**model_cfg, "vision_cfg": {**model_cfg["vision_cfg"], "width": args.vision_width}}
    command = "braindecode-pkg " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    summary = train_clip.train(
        args.out, seed=args.seed, recipe=recipe, model_cfg=model_cfg, minutes=args.minutes,
        cache_dir=False if args.cache == "" else args.cache, workers=args.workers,
        progress=not args.quiet, command=command, device=args.device, init=args.init,
    )
    h = summary["heldout"]
    probe = h.get("shape_probe_one_object")
    print(
        f"{args.out}: {summary['steps_run']} steps in {summary['seconds']['train']:.0f}s; held-out top-1 "
        f"image->caption {h['image_to_caption_top1']:.3f}, caption->image {h['caption_to_image_top1']:.3f} "
        f"({h['n_candidates']}-way, {h['n_draws']} draws)"
        + (f"; shape probe (one object) {probe:.3f}" if probe is not None else "")
    )
    return 0


def _cmd_train_sim_models(args) -> int:
    from .models import sim_chain

    try:
        sim_chain.run(args.out, args.work, targets=args.only, scale=args.scale,
                      threads=args.threads, extra=("--quiet",) if args.quiet else (), clip=args.clip,
                      dry_run=args.dry_run)
    except sim_chain.StageFailed as e:
        print(f"braindecode-pkg train-sim-models: error: {e}", file=sys.stderr)
        return e.returncode
    return 0


def _cmd_embed(args) -> int:
    from .embed import embed_stimuli

    out = embed_stimuli(
        args.nsd_root, _subject_list(args.subjects), args.clip, args.out, what=args.what,
        batch_size=args.batch_size, sessions=args.sessions, sim_dir=args.sim_clip,
        device=args.device, progress=not args.quiet, dtype=args.dtype,
    )
    print(out)
    return 0


def _cmd_latents(args) -> int:
    from .latents import embed_latents

    print(embed_latents(args.nsd_root, _subject_list(args.subjects), args.out, image_decoder=args.image_decoder,
                        sim_dir=args.sim_image_decoder, sessions=args.sessions, batch_size=args.batch_size))
    return 0


def _cmd_train_captioner(args) -> int:
    from .models import train_captioner as tcap

    if args.pairs and args.n_train is not None:
        from .errors import InputError

        raise InputError(f"--n-train {args.n_train}: only for nsd-sim scenes; with --pairs every pair of "
                         f"{args.pairs} is trained on")
    preset = args.preset or ("gpt2" if args.lm else "default")
    recipe = tcap.recipe_from(tcap.PRESETS[preset], steps=args.steps, threads=args.threads,
                              batch_size=args.batch_size, eval_every=args.eval_every, n_train=args.n_train)
    exclude = tcap.shared1000_ids(args.nsd_root) if args.nsd_root else None
    command = "braindecode-pkg " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    summary = tcap.train(
        args.out, clip=args.clip, sim_clip=args.sim_clip, pairs=args.pairs, lm=args.lm, exclude_ids=exclude,
        seed=args.seed, recipe=recipe, minutes=args.minutes, cache_dir=False if args.cache == "" else args.cache,
        workers=args.workers, progress=not args.quiet, command=command, device=args.device,
    )
    h = summary["heldout"]
    a = h.get("attributes")
    print(f"{args.out}: {summary['steps_run']} steps in {summary['seconds']['train']:.0f}s; held-out loss "
          f"{h.get('loss', float('nan')):.3f}"
          + (f"; objects named right {a['objects']:.3f} (shape {a['shape']:.3f}, colour {a['colour']:.3f}, "
             f"n={a['n']})" if a else ""))
    return 0


def _cmd_train_image_decoder(args) -> int:
    import dataclasses

    from .models import train_image_decoder as tid

    recipe, vae_cfg, unet_cfg = tid.PRESETS[args.preset]
    fields = {"steps": args.steps, "vae_steps": args.vae_steps, "threads": args.threads, "batch_size": args.batch_size,
              "lr": args.lr, "guidance_scale": args.guidance, "n_train": args.n_train}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in fields.items() if v is not None})
    command = "braindecode-pkg " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    summary = tid.train(
        args.out, clip=args.clip, sim_clip_dir=args.sim_clip, seed=args.seed, recipe=recipe, vae_cfg=vae_cfg,
        unet_cfg=unet_cfg, minutes=args.minutes, cache_dir=False if args.cache == "" else args.cache,
        progress=not args.quiet, command=command, device=args.device, workers=args.workers, init=args.init,
    )
    h = summary["heldout"]
    print(f"{args.out}: VAE {summary['steps_run']['vae']} + UNet {summary['steps_run']['unet']} steps in "
          f"{summary['seconds']['train']:.0f}s on {summary['device']}; held-out CLIP two-way from true embeddings "
          f"{h.get('two_way_generated', float('nan')):.3f}, img2img from blurred {h.get('two_way_img2img', float('nan')):.3f} "
          f"(blurred alone {h.get('two_way_blurred', float('nan')):.3f}, n={h.get('n_heldout', 0)})")
    return 0

def _prep_map(items) -> dict:
    from .errors import InputError

    out = {}
    for item in items or []:
        s, sep, path = str(item).partition("=")
        if not sep or not s.strip() or not path:
            raise InputError(f"--prep {item!r}: expected SUBJECT=FILE, e.g. 1=results/prep/subj01.h5")
        from .models.brain import subject_key

        out[subject_key(s.strip())] = path
    return out


def _heads(text: str):
    return "available" if text == "available" else [h for h in text.split(",") if h]


def _cmd_train(args) -> int:
    from .train import load_run_config, run_regime

    run = load_run_config(args.config, args.set or [])
    s = run_regime(args.regime, prep=_prep_map(args.prep), embed=args.embed, out_dir=args.out, latent=args.latent,
                   init=args.init, sessions=args.sessions, heads=_heads(args.heads), run=run,
                   progress=not args.quiet, resume=not args.restart)
    print(f"{args.out}: {args.regime} {','.join(s['subjects'])} {s['steps']} steps ({s['epochs']:.1f} epochs) "
          f"in {s['seconds']:.0f}s, {s['samples_per_s']:.0f} samples/s; last loss {s['last'].get('loss', float('nan')):.4f}")
    return 0


def _cmd_ridge(args) -> int:
    from .ridge import fit_ridge_regime

    m = fit_ridge_regime(args.prep, args.subject, args.embed, args.out, sessions=args.sessions,
                         heads=_heads(args.heads), alpha_per_target=args.alpha_per_target, threads=args.threads)
    alphas = {h: v["alpha"] for h, v in m.info["heads"].items()}
    print(f"{args.out}: ridge {m.subject} ({m.info['trials']} trials, {m.n_voxels} voxels), "
          f"leave-one-image-out penalty {alphas if args.alpha_per_target else {h: f'{a:g}' for h, a in alphas.items()}}")
    return 0


def _cmd_infer(args) -> int:
    from .errors import InputError
    from .infer import infer, true_embedding

    protocols = [p for p in args.protocols.split(",") if p]
    if (args.model is None) == (args.true_embedding is None):
        raise InputError("give exactly one of --model (a brain or ridge model) and --true-embedding EMBED")
    if args.true_embedding is not None:
        print(true_embedding(args.prep, args.true_embedding, args.out, subject=args.subject, protocols=protocols,
                             latent=args.latent))
        return 0
    out = infer(args.model, args.prep, args.out, subject=args.subject, method=args.method,
                protocols=protocols, prior=args.prior, prior_seed=args.prior_seed,
                batch_size=args.batch_size, threads=args.threads)
    print(out)
    return 0


def _pairs(flag_a, a, flag_b, b):
    from .errors import InputError

    if len(a) != len(b):
        raise InputError(f"{len(a)} {flag_a} files for {len(b)} {flag_b}: give one {flag_b} per {flag_a}")
    return list(zip(a, b))


def _cmd_decode(args) -> int:
    import dataclasses

    from .decode import Decoders, DecodeSettings, decode
    from .errors import InputError

    known = {f.name for f in dataclasses.fields(DecodeSettings)}
    values = {}
    for item in args.set or []:
        k, sep, v = item.partition("=")
        if not sep or k not in known:
            raise InputError(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
        values[k] = _yaml_value(v)
    settings = DecodeSettings(**values)
    pairs = _pairs("--brain", args.brain, "--out", args.out)
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    sims = {"clip": args.sim_clip, "image_decoder": args.sim_image_decoder, "captioner": args.sim_captioner}
    models = Decoders(args.image_decoder, args.captioner, args.clip, sims)
    for brain, out in pairs:
        print(decode(brain, out, embed=args.embed, settings=settings, decoders=models, progress=not args.quiet),
              flush=True)
    return 0


def _cmd_evaluate(args) -> int:
    import json

    from .errors import InputError
    from .evaluate import collect, score

    if args.collect:
        rows = collect.collect(args.collect, args.out[0], args.json)
        print(f"{args.out[0]}: {len(rows)} rows")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    if args.oracle:
        if not args.truth:
            raise InputError("--oracle needs --truth (the subject's sim_truth file)")
        s = score.score_oracle(args.truth, args.oracle)
        score.write_part(s, args.out[0])
        print(f"{args.out[0]}: oracle {s.subject}")
        return 0
    missing = [f"--{k.replace('_', '-')}" for k in ("brain", "decode", "embed", "nsd_root") if not getattr(args, k)]
    if missing:
        raise InputError(f"evaluate needs {', '.join(missing)} (or --oracle, or --collect)")
    try:
        weights = json.loads(args.feature_weights)
    except ValueError as e:
        raise InputError(f"--feature-weights: not JSON ({e})") from None
    _pairs("--brain", args.brain, "--decode", args.decode)
    _pairs("--brain", args.brain, "--out", args.out)
    pairs = list(zip(args.brain, args.decode, args.out))
    with score.Scorer(embed=args.embed, nsd_root=args.nsd_root, clip=args.clip, sim_clip=args.sim_clip,
                      feature_weights=weights) as scorer:
        for brain, dec, out in pairs:
            s = scorer.score(brain, dec, truth=args.truth)
            score.write_part(s, out)
            print(f"{out}: {s.method} {s.subject}, {len(s.metrics)} metrics", flush=True)
    return 0


def _cmd_report(args) -> int:
    import json

    from .errors import InputError
    from .report.from_results import report_from_results

    try:
        config = json.loads(args.config) if args.config else {}
    except ValueError as e:
        raise InputError(f"--config: not JSON ({e})") from None
    out = report_from_results(args.out, metrics=args.metrics, decode_root=args.decode_root, embed=args.embed,
                              nsd_root=args.nsd_root, preps=_prep_map(args.prep), brain_models=args.brain_models,
                              heldout=None if args.heldout is None else _prep_map([f"{args.heldout}=x"]).popitem()[0],
                              config=config, simulated=args.simulated, max_grid=args.max_grid)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="braindecode-pkg", description=__doc__.splitlines()[0])
    from . import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="STAGE")

    s = sub.add_parser("simulate", help="write nsd-sim: a simulated NSD in the real layout, with its truth")
    s.add_argument("--preset", default="default", help="tiny | default | bench (default: default)")
    s.add_argument("--seed", type=int, default=None, help="world seed (overrides the preset's)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a preset field; VALUE is YAML (repeatable)")
    s.add_argument("--out", required=True, help="output folder: OUT/nsd (NSD root) and OUT/sim_truth")
    s.set_defaults(func=_cmd_simulate)

    s = sub.add_parser("nsd-placeholders",
                       help="an NSD-shaped tree of empty files with the real names (to plan a real-NSD run)")
    s.add_argument("--out", required=True, help="folder to write the tree under (the nsd_root of a config)")
    s.add_argument("--subjects", default="1,2,3,4,5,6,7,8", help="NSD subjects (default: all 8)")
    s.add_argument("--sessions", default="all", choices=["all", "legacy"],
                   help="all: the 2023 release's 40/40/32/30/40/32/40/30; legacy: 37/37/29/27/37/29/37/27")
    s.add_argument("--formats", default="hdf5,nifti", help="beta formats: hdf5, nifti or both (default)")
    s.add_argument("--beta-version", default="betas_fithrf_GLMdenoise_RR")
    s.add_argument("--sized", action="store_true",
                   help="give files of known size (.hdf5 betas and stimuli) that apparent size (sparse files)")
    s.set_defaults(func=_cmd_nsd_placeholders)

    s = sub.add_parser("preprocess", help="ROI betas -> PSC -> per-session z-score -> results/prep/subjAA.h5")
    s.add_argument("--nsd-root", required=True, help="NSD root (real NSD or nsd-sim's OUT/nsd)")
    s.add_argument("--subject", type=int, required=True, help="1-based subject id")
    s.add_argument("--out", required=True, help="output HDF5 file")
    s.add_argument("--sessions", default="all", help="'all', 'legacy' (pre-2023 release) or e.g. '1-3,5'")
    s.add_argument("--roi", default="nsdgeneral", help="ROI name[:label,...], e.g. nsdgeneral, lh.nsdgeneral, prf-visualrois:1,2")
    s.add_argument("--format", default="hdf5", choices=["hdf5", "nifti"], help="which beta files to read")
    s.add_argument("--normalisation", default="session", choices=["session", "session-train", "none"])
    s.add_argument("--beta-version", default="betas_fithrf_GLMdenoise_RR")
    s.add_argument("--resolution", default="func1pt8mm", choices=["func1pt8mm", "func1mm"])
    s.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    s.add_argument("--hash-cache", default=None,
                   help="folder remembering input SHA-256 by file stat ('' disables; default ~/.cache/braindecode_pkg/sha256)")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=_cmd_preprocess)

    s = sub.add_parser("train-clip", help="train nsd-sim's own CLIP (open_clip) on procedural scenes and captions")
    s.add_argument("--out", required=True, help="output folder (open_clip local-dir: open_clip_config.json + safetensors)")
    s.add_argument("--preset", default="default", choices=["default", "default-attr", "tiny", "tiny-attr", "gpu"],
                   help="recipe and architecture (tiny: seconds; X-attr: fine-tune a CLIP of preset X, given "
                        "with --init, with the auxiliary shape loss; gpu: for one GPU)")
    s.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the recipe's)")
    s.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    s.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    s.add_argument("--twin-fraction", type=float, default=None,
                   help="fraction of each batch that is scene/shape-twin pairs (default: the recipe's)")
    s.add_argument("--attr-weight", type=float, default=None,
                   help="weight of the auxiliary (shape, colour) loss on the image embedding (default: the recipe's)")
    s.add_argument("--attr-size", action="store_true",
                   help="the auxiliary loss's targets are (shape, colour, size) triples (default: the recipe's)")
    s.add_argument("--vision-width", type=int, default=None, help="image tower width (default: the architecture's)")
    s.add_argument("--init", default=None, help="open_clip local-dir of the same architecture to fine-tune (e.g. 'sim')")
    s.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    s.add_argument("--n-heldout", type=int, default=None, help="held-out scenes scored (default: the recipe's)")
    s.add_argument("--minutes", type=float, default=None,
                   help="time budget: shorten the run to fit after timing the warm-up (steps run are recorded)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the recipe's)")
    s.add_argument("--batch-size", type=int, default=None, help="images per step (default: the recipe's)")
    s.add_argument("--eval-every", type=int, default=None,
                   help="record the held-out top-1 every N steps (default: only at the end)")
    s.add_argument("--workers", type=int, default=1, help="processes rendering the scenes (default: 1)")
    s.add_argument("--cache", default=None,
                   help="folder caching rendered scenes ('' disables; default ~/.cache/braindecode_pkg/sim_clip_data)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_train_clip, argv=None)

    from .models.sim_chain import KINDS, SCALES

    s = sub.add_parser("train-sim-models",
                       help="train nsd-sim's CLIP, image decoder and captioner as the shipped ones were: the "
                            "chain of train-clip / train-image-decoder / train-captioner runs, resuming where it stopped")
    s.add_argument("--out", required=True, help="folder of the final models: clip/, image_decoder/, captioner/")
    s.add_argument("--work", default=None, help="folder of the intermediate stages (default: OUT/stages)")
    s.add_argument("--only", nargs="+", default=None, choices=KINDS,
                   help="train these models and the stages they start from (default: all three)")
    s.add_argument("--scale", default="default", choices=SCALES,
                   help="default: the shipped models' recipes (hours on 2 cores); tiny: the same chain in seconds")
    s.add_argument("--threads", type=int, default=2, help="torch threads and rendering workers per stage (default: 2)")
    s.add_argument("--clip", default=None,
                   help="train the decoders on this CLIP (as for embed) instead of nsd-sim's own: one stage each")
    s.add_argument("--dry-run", action="store_true", help="print the stages' commands, train nothing")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_train_sim_models)

    s = sub.add_parser("embed", help="CLIP embeddings of every shown image and its captions -> HDF5 keyed by nsd_id")
    s.add_argument("--nsd-root", required=True, help="NSD root (real NSD or nsd-sim's OUT/nsd)")
    s.add_argument("--subjects", required=True, help="comma-separated subject ids whose shown images to embed, e.g. 1,2,3")
    s.add_argument("--clip", required=True,
                   help='CLIP config: JSON (e.g. \'{"arch": "ViT-H-14", "pretrained": "/w/open_clip_pytorch_model.bin"}\'), '
                        "a JSON/YAML file, an open_clip local-dir folder, or 'sim'")
    s.add_argument("--out", required=True, help="output HDF5 file, e.g. results/embed/clip.h5")
    s.add_argument("--what", default="both", choices=["pooled", "tokens", "both"], help="image embeddings to store")
    s.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="storage of the embeddings (float16: half the disk and memory; default: float32)")
    s.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    s.add_argument("--sessions", default="all", help="sessions whose images to embed: 'all', 'legacy' or e.g. '1-3'")
    s.add_argument("--sim-clip", default=None, help="folder of the trained nsd-sim CLIP that --clip sim refers to")
    s.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_embed)
    s = sub.add_parser("train-captioner",
                       help="train a caption decoder (ClipCap mapper; for nsd-sim also its GPT-2 and tokenizer)")
    s.add_argument("--out", required=True, help="output folder (config.json + model.safetensors of the mapper, lm/)")
    s.add_argument("--clip", default="sim",
                   help="CLIP whose embeddings of nsd-sim scenes are trained on (as for embed; default: sim)")
    s.add_argument("--sim-clip", default=None, help="folder of the trained nsd-sim CLIP that --clip sim refers to")
    s.add_argument("--pairs", default=None,
                   help="train on an embeddings HDF5 of the embed stage (image_pooled + captions) instead; needs --lm")
    s.add_argument("--lm", default=None, help="local language-model folder (e.g. GPT-2, safetensors) for --pairs")
    s.add_argument("--nsd-root", default=None,
                   help="with --pairs: never train on NSD's shared 1000 images (the brain test set); evaluate on them")
    s.add_argument("--preset", default=None, choices=["default", "tiny", "gpu", "gpt2"],
                   help="recipe: default (nsd-sim), tiny (seconds, tests), gpu (nsd-sim, the shipped captioner's, "
                        "for one GPU) or gpt2 (frozen GPT-2; default with --lm)")
    s.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    s.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the recipe's)")
    s.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    s.add_argument("--minutes", type=float, default=None,
                   help="time budget: shorten the run to fit after timing the warm-up (steps run are recorded)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the recipe's)")
    s.add_argument("--batch-size", type=int, default=None, help="captions per step (default: the recipe's)")
    s.add_argument("--n-train", type=int, default=None,
                   help="nsd-sim training scenes, 5 captions each (default: the recipe's; not with --pairs)")
    s.add_argument("--eval-every", type=int, default=None,
                   help="score 300 held-out images every N steps (recorded as a curve; training unchanged)")
    s.add_argument("--workers", type=int, default=1, help="processes rendering the scenes (default: 1)")
    s.add_argument("--cache", default=None,
                   help="folder caching rendered scenes ('' disables; default ~/.cache/braindecode_pkg/sim_clip_data)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_train_captioner, argv=None)

    s = sub.add_parser("train-image-decoder",
                       help="train nsd-sim's image decoder: a tiny Stable unCLIP pipeline (diffusers VAE + UNet)")
    s.add_argument("--out", required=True, help="output folder (a diffusers StableUnCLIPImg2ImgPipeline directory)")
    s.add_argument("--clip", default="sim", help="CLIP whose image embeddings condition the decoder (as for embed; default: sim)")
    s.add_argument("--sim-clip", default=None, help="folder of the trained nsd-sim CLIP that --clip sim refers to")
    s.add_argument("--preset", default="default", choices=["default", "tiny", "gpu"],
                   help="recipe and architecture (tiny: seconds; gpu: the default architecture, sized for one H200)")
    s.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    s.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    s.add_argument("--minutes", type=float, default=None,
                   help="time budget: each phase is shortened to fit after timing its first steps (steps run are recorded)")
    s.add_argument("--steps", type=int, default=None, help="UNet optimisation steps (default: the recipe's)")
    s.add_argument("--vae-steps", type=int, default=None, help="VAE optimisation steps (default: the recipe's)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the recipe's)")
    s.add_argument("--batch-size", type=int, default=None, help="UNet images per step (default: the recipe's)")
    s.add_argument("--n-train", type=int, default=None, help="nsd-sim training scenes (default: the recipe's)")
    s.add_argument("--lr", type=float, default=None, help="UNet peak learning rate (default: the recipe's)")
    s.add_argument("--guidance", type=float, default=None,
                   help="guidance scale recorded as the decoder's default and evaluated (default: the recipe's)")
    s.add_argument("--init", default=None,
                   help="image decoder (sim or a pipeline folder) whose VAE and UNet to start from; "
                        "with --vae-steps 0 its VAE is kept")
    s.add_argument("--cache", default=None,
                   help="folder caching rendered scenes and embeddings ('' disables; default "
                        "~/.cache/braindecode_pkg/sim_image_decoder_data)")
    s.add_argument("--workers", type=int, default=1, help="processes rendering the scenes (default: 1)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_train_image_decoder, argv=None)
    s = sub.add_parser("latents", help="VAE latents of every shown image (the brain model's low-level targets)")
    s.add_argument("--nsd-root", required=True, help="NSD root")
    s.add_argument("--subjects", required=True, help="e.g. 1,2,5,7")
    s.add_argument("--sessions", default="all", help="as for embed")
    s.add_argument("--image-decoder", default="sim", help="image decoder config whose VAE encodes (sim, a folder or JSON)")
    s.add_argument("--sim-image-decoder", default=None, help="folder of the trained nsd-sim image decoder 'sim' refers to")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--out", required=True, help="output HDF5, e.g. results/embed/latent.h5")
    s.set_defaults(func=_cmd_latents)

    s = sub.add_parser("train", help="train the brain model: pretrain (all subjects), adapt (a new subject) or scratch")
    s.add_argument("--regime", required=True, choices=["pretrain", "adapt", "scratch"])
    s.add_argument("--prep", nargs="+", required=True, metavar="SUBJECT=FILE",
                   help="preprocessed subject files, e.g. 1=results/prep/subj01.h5 2=results/prep/subj02.h5")
    s.add_argument("--embed", required=True, help="CLIP embeddings HDF5 of the embed stage (the targets)")
    s.add_argument("--latent", default=None, help="HDF5 of VAE latents (nsd_id, latent) for the low-level head")
    s.add_argument("--init", default=None, help="adapt: the pretrained model directory")
    s.add_argument("--sessions", default="all", help="training sessions: 'all', 'first:K' (K=1 ≈ one hour) or '1-3,5'")
    s.add_argument("--heads", default="available",
                   help="CLIP heads: 'available' (what the embed file holds) or e.g. 'pooled' or 'pooled,tokens'")
    s.add_argument("--config", default=None, help="YAML/JSON with sections model, loss, train")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value (YAML), e.g. train.steps=2000 (repeatable)")
    s.add_argument("--out", required=True, help="output model directory (config.json + model.safetensors, log)")
    s.add_argument("--restart", action="store_true", help="ignore checkpoints in --out and start over")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("ridge", help="ridge regression voxels -> CLIP for one subject (leave-one-image-out CV)")
    s.add_argument("--prep", required=True, help="preprocessed subject file")
    s.add_argument("--subject", default=None, help="subject id (default: the file's)")
    s.add_argument("--embed", required=True, help="CLIP embeddings HDF5 of the embed stage")
    s.add_argument("--sessions", default="all", help="training sessions: 'all', 'first:K' or '1-3,5'")
    s.add_argument("--heads", default="available", help="'available' or e.g. 'pooled'")
    s.add_argument("--alpha-per-target", action="store_true", help="one penalty per output column")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--out", required=True, help="output model directory (config.json + model.safetensors)")
    s.set_defaults(func=_cmd_ridge)

    s = sub.add_parser("infer", help="brain embeddings of every test image of a subject (both protocols) -> HDF5")
    s.add_argument("--model", default=None, help="a brain or ridge model directory")
    s.add_argument("--true-embedding", default=None, metavar="EMBED",
                   help="instead of a model: write the true CLIP embeddings of the embed file EMBED "
                        "(method true_embedding, the decoders' ceiling)")
    s.add_argument("--latent", default=None, help="with --true-embedding: also the true VAE latents of this file")
    s.add_argument("--prep", required=True, help="the subject's preprocessed file")
    s.add_argument("--subject", default=None, help="subject id (default: the file's)")
    s.add_argument("--out", required=True, help="output HDF5, e.g. results/brain/adapt-k1/subj05.h5")
    s.add_argument("--method", default=None, help="method name recorded in the file (default: the model folder's name)")
    s.add_argument("--protocols", default="avg_betas,avg_outputs", help="avg_betas and/or avg_outputs")
    s.add_argument("--prior", action="store_true", help="also sample the diffusion prior")
    s.add_argument("--prior-seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.set_defaults(func=_cmd_infer)

    s = sub.add_parser("decode", help="brain embeddings -> retrieved images, reconstructions (PNG), captions (TSV)")
    s.add_argument("--brain", nargs="+", required=True,
                   help="the infer stage's HDF5 of a (method, subject); several are decoded in one process")
    s.add_argument("--embed", required=True, help="the embed stage's HDF5 (the retrieval candidates)")
    s.add_argument("--image-decoder", default="sim", help="image decoder config: sim, a pipeline folder or JSON")
    s.add_argument("--captioner", default="sim", help="caption decoder config: sim, a folder or JSON")
    s.add_argument("--clip", default="sim", help="CLIP config (best-of-n ranks samples with it)")
    for kind in ("clip", "image-decoder", "captioner"):
        s.add_argument(f"--sim-{kind}", default=None, help=f"folder of the trained nsd-sim {kind} that 'sim' refers to")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a decode setting (YAML value), e.g. n_samples=4 or num_inference_steps=10 (repeatable)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--out", nargs="+", required=True,
                   help="output folder per --brain file, e.g. results/decode/adapt-k1/subj04")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_decode)

    s = sub.add_parser("evaluate", help="score one (method, subject) -> a part file, or collect parts -> metrics.tsv")
    s.add_argument("--brain", nargs="+", default=None,
                   help="the infer stage's HDF5 of a (method, subject); several (of one subject) share one process")
    s.add_argument("--decode", nargs="+", default=None, help="the decode folder of each --brain file")
    s.add_argument("--embed", default=None, help="the embed stage's HDF5 (true embeddings and captions)")
    s.add_argument("--nsd-root", default=None, help="NSD root (stimulus images)")
    s.add_argument("--truth", default=None, help="nsd-sim: the subject's sim_truth/subjAA.h5 (attributes, oracle)")
    s.add_argument("--oracle", default=None, metavar="PSC_PREP",
                   help="nsd-sim: score the oracle from this PSC preprocess file (with --truth) instead")
    s.add_argument("--clip", default="sim", help="CLIP config (two-way identification, CLIP-S)")
    s.add_argument("--sim-clip", default=None, help="folder of the trained nsd-sim CLIP that 'sim' refers to")
    s.add_argument("--feature-weights", default="{}",
                   help="JSON {alexnet|inception|effnet|swav: local weights file}; absent nets are 'unavailable'")
    s.add_argument("--collect", nargs="+", default=None, metavar="PART",
                   help="collect part files into --out (metrics.tsv) and --json")
    s.add_argument("--json", default=None, help="with --collect: also write metrics.json")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--out", nargs="+", required=True,
                   help="a part file (.h5) per --brain file (or the oracle's) or, with --collect, metrics.tsv")
    s.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("report", help="one self-contained HTML page: metrics, grids, brain maps, curves, provenance")
    s.add_argument("--metrics", required=True, help="results/eval/metrics.tsv")
    s.add_argument("--decode-root", required=True, help="results/decode (one folder per method and subject)")
    s.add_argument("--embed", required=True, help="the embed stage's HDF5 (true captions, CLIP checksum)")
    s.add_argument("--nsd-root", required=True, help="NSD root (stimulus images)")
    s.add_argument("--prep", nargs="+", required=True, metavar="SUBJECT=FILE", help="preprocessed subject files")
    s.add_argument("--brain-models", required=True, help="results/models/brain (adapter maps, training curves)")
    s.add_argument("--heldout", default=None, help="the held-out subject (mapped with its adapted model)")
    s.add_argument("--config", default=None, help="the run's config as JSON (provenance)")
    s.add_argument("--simulated", action="store_true", help="nsd-sim: label published rows as not comparable")
    s.add_argument("--max-grid", type=int, default=12, help="test images per method in the grid")
    s.add_argument("--out", required=True, help="results/report/index.html")
    s.set_defaults(func=_cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "argv"):
        args.argv = list(sys.argv[1:] if argv is None else argv)
    from .errors import InputError

    try:
        return args.func(args)
    except InputError as e:
        print(f"braindecode-pkg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not _disk_full(e):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"braindecode-pkg {args.command}: error: no space left on the device{where} ({e}); "
              "nothing half-written was kept under an output's name; free space and rerun",
              file=sys.stderr)
        return 1


def _disk_full(e: OSError) -> bool:
    """A full disk or an exceeded quota (h5py reports HDF5's write errors without errno)."""
    import errno

    return e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e) \
        or "Disk quota exceeded" in str(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
