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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import InputError

    try:
        return args.func(args)
    except InputError as e:
        print(f"braindecode-pkg {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
