"""The embed stage's subcommands: ``embed`` (CLIP) and ``latents`` (the image decoder's VAE)."""

from __future__ import annotations

from ..command import Command, subject_list


def _embed_arguments(s) -> None:
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


def _embed_run(args) -> int:
    from .stimuli import embed_stimuli

    print(embed_stimuli(
        args.nsd_root, subject_list(args.subjects), args.clip, args.out, what=args.what,
        batch_size=args.batch_size, sessions=args.sessions, sim_dir=args.sim_clip,
        device=args.device, progress=not args.quiet, dtype=args.dtype,
    ))
    return 0


def _latents_arguments(s) -> None:
    s.add_argument("--nsd-root", required=True, help="NSD root")
    s.add_argument("--subjects", required=True, help="e.g. 1,2,5,7")
    s.add_argument("--sessions", default="all", help="as for embed")
    s.add_argument("--image-decoder", required=True,
                   help="image decoder config whose VAE encodes (sim: nsd-sim's; a folder or JSON)")
    s.add_argument("--sim-image-decoder", default=None, help="folder of the trained nsd-sim image decoder 'sim' refers to")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    s.add_argument("--out", required=True, help="output HDF5, e.g. results/embed/latent.h5")


def _latents_run(args) -> int:
    from .latents import embed_latents

    print(embed_latents(args.nsd_root, subject_list(args.subjects), args.out, image_decoder=args.image_decoder,
                        sim_dir=args.sim_image_decoder, sessions=args.sessions, batch_size=args.batch_size,
                        device=args.device))
    return 0


COMMANDS = {
    "embed": Command("CLIP embeddings of every shown image and its captions -> HDF5 keyed by nsd_id",
                     _embed_arguments, _embed_run),
    "latents": Command("VAE latents of every shown image (the brain model's low-level targets)",
                       _latents_arguments, _latents_run),
}
