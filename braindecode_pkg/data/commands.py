"""The data layer's subcommand: ``nsd-placeholders``."""

from __future__ import annotations

from ..command import Command, subject_list


def _arguments(s) -> None:
    s.add_argument("--out", required=True, help="folder to write the tree under (the nsd_root of a config)")
    s.add_argument("--subjects", default="1,2,3,4,5,6,7,8", help="NSD subjects (default: all 8)")
    s.add_argument("--sessions", default="all", choices=["all", "legacy"],
                   help="all: the 2023 release's 40/40/32/30/40/32/40/30; legacy: 37/37/29/27/37/29/37/27")
    s.add_argument("--formats", default="hdf5,nifti", help="beta formats: hdf5, nifti or both (default)")
    s.add_argument("--beta-version", default="betas_fithrf_GLMdenoise_RR")
    s.add_argument("--sized", action="store_true",
                   help="give files of known size (.hdf5 betas and stimuli) that apparent size (sparse files)")


def _run(args) -> int:
    from .placeholders import write_placeholders

    files = write_placeholders(args.out, subject_list(args.subjects), sessions=args.sessions,
                               formats=tuple(args.formats.split(",")), beta_version=args.beta_version,
                               sized=args.sized)
    print(f"{len(files)} placeholder files under {args.out}")
    return 0


COMMANDS = {
    "nsd-placeholders": Command("an NSD-shaped tree of empty files with the real names (to plan a real-NSD run)",
                                _arguments, _run),
}
