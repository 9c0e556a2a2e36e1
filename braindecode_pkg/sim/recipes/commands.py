"""The recipes' subcommands: ``train-clip``, ``train-image-decoder``, ``train-captioner`` and
``train-sim-models`` (the chain of all three, as the shipped models were trained)."""

from __future__ import annotations

import sys

from ...command import Command, invocation
from ...errors import InputError
from .chain import KINDS, SCALES


def _cache(value):
    return False if value == "" else value


def _clip_arguments(s) -> None:
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


def _clip_run(args) -> int:
    import dataclasses

    from . import clip as train_clip

    recipe, model_cfg = train_clip.PRESETS[args.preset]
    if args.preset in train_clip.FINETUNE_PRESETS and args.init is None:
        raise InputError(f"--preset {args.preset} fine-tunes a CLIP: give the one to start from with --init "
                         f"(e.g. one trained with --preset {args.preset.removesuffix('-attr')})")
    fields = {"steps": args.steps, "threads": args.threads, "batch_size": args.batch_size,
              "eval_every": args.eval_every, "twin_fraction": args.twin_fraction, "lr": args.lr,
              "attr_weight": args.attr_weight, "attr_size": args.attr_size or None,
              "n_heldout": args.n_heldout}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in fields.items() if v is not None})
    if args.vision_width is not None:
        model_cfg = {**model_cfg, "vision_cfg": {**model_cfg["vision_cfg"], "width": args.vision_width}}
    summary = train_clip.train(
        args.out, seed=args.seed, recipe=recipe, model_cfg=model_cfg, minutes=args.minutes,
        cache_dir=_cache(args.cache), workers=args.workers, progress=not args.quiet, command=invocation(args),
        device=args.device, init=args.init,
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


def _chain_arguments(s) -> None:
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


def _chain_run(args) -> int:
    from . import chain

    try:
        chain.run(args.out, args.work, targets=args.only, scale=args.scale, threads=args.threads,
                  extra=("--quiet",) if args.quiet else (), clip=args.clip, dry_run=args.dry_run)
    except chain.StageFailed as e:
        print(f"braindecode-pkg train-sim-models: error: {e}", file=sys.stderr)
        return e.returncode
    return 0


def _captioner_arguments(s) -> None:
    s.add_argument("--out", required=True, help="output folder (config.json + model.safetensors of the mapper, lm/)")
    s.add_argument("--clip", default="sim",
                   help="CLIP whose embeddings of nsd-sim scenes are trained on (as for embed; default: sim)")
    s.add_argument("--sim-clip", default=None, help="folder of the trained nsd-sim CLIP that --clip sim refers to")
    s.add_argument("--pairs", default=None,
                   help="train on an embeddings HDF5 of the embed stage (image_pooled + captions) instead; needs --lm")
    s.add_argument("--lm", default=None, help="local language-model folder (e.g. GPT-2, safetensors) for --pairs")
    s.add_argument("--nsd-root", default=None,
                   help="with --pairs: never train on NSD's shared 1000 images (the brain test set); evaluate on them")
    s.add_argument("--heldout-ids", default=None, metavar="FILE",
                   help="with --pairs and data not from NSD: the 0-based nsd ids to hold out, one per line")
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


def _captioner_run(args) -> int:
    from . import captioner as tcap

    if args.pairs and args.n_train is not None:
        raise InputError(f"--n-train {args.n_train}: only for nsd-sim scenes; with --pairs every pair of "
                         f"{args.pairs} is trained on")
    preset = args.preset or ("gpt2" if args.lm else "default")
    recipe = tcap.recipe_from(tcap.PRESETS[preset], steps=args.steps, threads=args.threads,
                              batch_size=args.batch_size, eval_every=args.eval_every, n_train=args.n_train)
    exclude = tcap.shared1000_ids(args.nsd_root) if args.nsd_root else _ids_file(args.heldout_ids)
    summary = tcap.train(
        args.out, clip=args.clip, sim_clip=args.sim_clip, pairs=args.pairs, lm=args.lm, exclude_ids=exclude,
        seed=args.seed, recipe=recipe, minutes=args.minutes, cache_dir=_cache(args.cache),
        workers=args.workers, progress=not args.quiet, command=invocation(args), device=args.device,
    )
    h = summary["heldout"]
    a = h.get("attributes")
    print(f"{args.out}: {summary['steps_run']} steps in {summary['seconds']['train']:.0f}s; held-out loss "
          f"{h.get('loss', float('nan')):.3f}"
          + (f"; objects named right {a['objects']:.3f} (shape {a['shape']:.3f}, colour {a['colour']:.3f}, "
             f"n={a['n']})" if a else ""))
    return 0


def _ids_file(path):
    """The nsd ids of a text file, one per line (None without a file)."""
    if path is None:
        return None
    try:
        return [int(x) for x in open(path, encoding="utf-8").read().split()]
    except (OSError, ValueError) as e:
        raise InputError(f"--heldout-ids {path}: expected a text file of nsd ids, one per line ({e})") from None


def _image_decoder_arguments(s) -> None:
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


def _image_decoder_run(args) -> int:
    import dataclasses

    from . import image_decoder as tid

    recipe, vae_cfg, unet_cfg = tid.PRESETS[args.preset]
    fields = {"steps": args.steps, "vae_steps": args.vae_steps, "threads": args.threads, "batch_size": args.batch_size,
              "lr": args.lr, "guidance_scale": args.guidance, "n_train": args.n_train}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in fields.items() if v is not None})
    summary = tid.train(
        args.out, clip=args.clip, sim_clip_dir=args.sim_clip, seed=args.seed, recipe=recipe, vae_cfg=vae_cfg,
        unet_cfg=unet_cfg, minutes=args.minutes, cache_dir=_cache(args.cache), progress=not args.quiet,
        command=invocation(args), device=args.device, workers=args.workers, init=args.init,
    )
    h = summary["heldout"]
    print(f"{args.out}: VAE {summary['steps_run']['vae']} + UNet {summary['steps_run']['unet']} steps in "
          f"{summary['seconds']['train']:.0f}s on {summary['device']}; held-out CLIP two-way from true embeddings "
          f"{h.get('two_way_generated', float('nan')):.3f}, img2img from blurred {h.get('two_way_img2img', float('nan')):.3f} "
          f"(blurred alone {h.get('two_way_blurred', float('nan')):.3f}, n={h.get('n_heldout', 0)})")
    return 0


COMMANDS = {
    "train-clip": Command("train nsd-sim's own CLIP (open_clip) on procedural scenes and captions",
                          _clip_arguments, _clip_run, records_argv=True),
    "train-image-decoder": Command("train nsd-sim's image decoder: a tiny Stable unCLIP pipeline (diffusers VAE + UNet)",
                                   _image_decoder_arguments, _image_decoder_run, records_argv=True),
    "train-captioner": Command("train a caption decoder (ClipCap mapper; for nsd-sim also its GPT-2 and tokenizer)",
                               _captioner_arguments, _captioner_run, records_argv=True),
    "train-sim-models": Command("train nsd-sim's CLIP, image decoder and captioner as the shipped ones were: the "
                                "chain of train-clip / train-image-decoder / train-captioner runs, resuming where it stopped",
                                _chain_arguments, _chain_run),
}
