"""The brain model's subcommands: ``train`` (pretrain, adapt, scratch), ``ridge`` and ``infer``."""

from __future__ import annotations

from ..command import Command
from ..errors import InputError


def prep_map(items) -> dict:
    """``SUBJECT=FILE`` options → ``{subject key: file}``."""
    from .model import subject_key

    out = {}
    for item in items or []:
        s, sep, path = str(item).partition("=")
        if not sep or not s.strip() or not path:
            raise InputError(f"--prep {item!r}: expected SUBJECT=FILE, e.g. 1=results/prep/subj01.h5")
        out[subject_key(s.strip())] = path
    return out


def _heads(text: str):
    return "available" if text == "available" else [h for h in text.split(",") if h]


def _train_arguments(s) -> None:
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
    s.add_argument("--validation", default=None, metavar="IMAGES[:SEED]",
                   help="leave this many training images of each subject out (seeded): the validation split")
    s.add_argument("--restart", action="store_true", help="ignore checkpoints in --out and start over")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_run(args) -> int:
    from .train import load_run_config, run_regime

    run = load_run_config(args.config, args.set or [])
    s = run_regime(args.regime, prep=prep_map(args.prep), embed=args.embed, out_dir=args.out, latent=args.latent,
                   init=args.init, sessions=args.sessions, heads=_heads(args.heads), run=run,
                   progress=not args.quiet, resume=not args.restart, validation=args.validation)
    print(f"{args.out}: {args.regime} {','.join(s['subjects'])} {s['steps']} steps ({s['epochs']:.1f} epochs) "
          f"in {s['seconds']:.0f}s, {s['samples_per_s']:.0f} samples/s; last loss {s['last'].get('loss', float('nan')):.4f}")
    return 0


def _ridge_arguments(s) -> None:
    s.add_argument("--prep", required=True, help="preprocessed subject file")
    s.add_argument("--subject", default=None, help="subject id (default: the file's)")
    s.add_argument("--embed", required=True, help="CLIP embeddings HDF5 of the embed stage")
    s.add_argument("--sessions", default="all", help="training sessions: 'all', 'first:K' or '1-3,5'")
    s.add_argument("--heads", default="available", help="'available' or e.g. 'pooled'")
    s.add_argument("--alpha-per-target", action="store_true", help="one penalty per output column")
    s.add_argument("--validation", default=None, metavar="IMAGES[:SEED]",
                   help="leave this many training images of each subject out (seeded): the validation split")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--out", required=True, help="output model directory (config.json + model.safetensors)")


def _ridge_run(args) -> int:
    from .ridge import fit_ridge_regime

    m = fit_ridge_regime(args.prep, args.subject, args.embed, args.out, sessions=args.sessions,
                         heads=_heads(args.heads), alpha_per_target=args.alpha_per_target, threads=args.threads,
                         validation=args.validation)
    alphas = {h: v["alpha"] for h, v in m.info["heads"].items()}
    print(f"{args.out}: ridge {m.subject} ({m.info['trials']} trials, {m.n_voxels} voxels), "
          f"leave-one-image-out penalty {alphas if args.alpha_per_target else {h: f'{a:g}' for h, a in alphas.items()}}")
    return 0


def _infer_arguments(s) -> None:
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
    s.add_argument("--split", default="test", choices=["test", "val"],
                   help="test: the shared test images; val: the validation images (--validation)")
    s.add_argument("--validation", default=None, metavar="IMAGES[:SEED]",
                   help="leave this many training images of each subject out (seeded): the validation split")
    s.add_argument("--prior", action="store_true", help="also sample the diffusion prior")
    s.add_argument("--prior-seed", type=int, default=0)
    s.add_argument("--prior-steps", type=int, default=None,
                   help="DDIM steps of the prior's sampling (default: the model's prior.sample_steps)")
    s.add_argument("--prior-guidance", type=float, default=None,
                   help="classifier-free guidance of the prior's sampling (default: the model's prior.guidance)")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--device", default="cpu", help="torch device of a brain model, e.g. cuda (default: cpu)")


def _infer_run(args) -> int:
    from .infer import infer, true_embedding

    protocols = [p for p in args.protocols.split(",") if p]
    if (args.model is None) == (args.true_embedding is None):
        raise InputError("give exactly one of --model (a brain or ridge model) and --true-embedding EMBED")
    if args.true_embedding is not None:
        print(true_embedding(args.prep, args.true_embedding, args.out, subject=args.subject, protocols=protocols,
                             latent=args.latent, split=args.split, validation=args.validation))
        return 0
    print(infer(args.model, args.prep, args.out, subject=args.subject, method=args.method,
                protocols=protocols, prior=args.prior, prior_seed=args.prior_seed,
                prior_sampling={"steps": args.prior_steps, "guidance": args.prior_guidance},
                batch_size=args.batch_size, threads=args.threads, device=args.device, split=args.split,
                validation=args.validation))
    return 0


COMMANDS = {
    "train": Command("train the brain model: pretrain (all subjects), adapt (a new subject) or scratch",
                     _train_arguments, _train_run),
    "ridge": Command("ridge regression voxels -> CLIP for one subject (leave-one-image-out CV)",
                     _ridge_arguments, _ridge_run),
    "infer": Command("brain embeddings of every test image of a subject (both protocols) -> HDF5",
                     _infer_arguments, _infer_run),
}
