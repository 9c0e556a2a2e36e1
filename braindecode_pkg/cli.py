"""``braindecode-pkg``: one subcommand per pipeline stage.

This module is only the table; each stage defines its subcommands beside its code (a
:class:`~braindecode_pkg.command.Command` in the module named here) and each command imports
only what its stage needs (``preprocess`` never imports torch), so a stage's process starts
fast. ``main(argv)`` is callable from tests; bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: (subcommand, the module under braindecode_pkg that defines it), in the order of the data's path
TABLE = (
    ("simulate", "sim.commands"),
    ("nsd-placeholders", "data.commands"),
    ("preprocess", "preprocess"),
    ("embed", "embed.commands"),
    ("latents", "embed.commands"),
    ("train", "brain.commands"),
    ("ridge", "brain.commands"),
    ("infer", "brain.commands"),
    ("decode", "decode"),
    ("evaluate", "evaluate.commands"),
    ("report", "report.commands"),
    # nsd-sim's own models (sim/recipes): only whoever retrains the shipped weights runs these
    ("train-clip", "sim.recipes.commands"),
    ("train-image-decoder", "sim.recipes.commands"),
    ("train-captioner", "sim.recipes.commands"),
    ("train-sim-models", "sim.recipes.commands"),
)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="braindecode-pkg", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="STAGE")
    for name, module in TABLE:
        cmd = importlib.import_module(f"{__package__}.{module}").COMMANDS[name]
        s = sub.add_parser(name, help=cmd.help)
        cmd.arguments(s)
        s.set_defaults(func=cmd.run, **({"argv": None} if cmd.records_argv else {}))
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
