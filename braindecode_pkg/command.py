"""One subcommand of ``braindecode-pkg``: its help, its arguments and what it runs.

Each stage defines its subcommands beside its code, as a ``COMMANDS`` dict of :class:`Command`
(in the stage's ``commands.py``, or in the stage module itself); :mod:`braindecode_pkg.cli` is
the table that puts them in one parser. Building the parser imports every module that defines a
command, so those modules import nothing heavy at their top (torch, diffusers, h5py): each
command's ``run`` imports what its stage needs.

The helpers below parse the argument forms several stages share.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from .errors import InputError

__all__ = ["Command", "yaml_value", "subject_list", "key_values", "one_per", "set_threads", "invocation"]


@dataclass(frozen=True)
class Command:
    """``help`` (one line), ``arguments(parser)`` adds the options, ``run(args)`` returns the exit
    status. ``records_argv``: ``args.argv`` holds the command line (trainers record it)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    records_argv: bool = False


def yaml_value(text: str):
    """A command-line value in YAML (``4``, ``null``, ``[1,2]``, ``"avg_betas"``)."""
    import yaml

    return yaml.safe_load(text)


def key_values(items, flag: str = "--set", known=None, example: str = "subjects=[1,2]") -> dict:
    """``KEY=VALUE`` options (VALUE in YAML) as a dict; ``known``: the accepted keys."""
    out = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or (known is not None and key not in known):
            accepted = f" with KEY one of {sorted(known)}" if known is not None else ""
            raise InputError(f"{flag} {item!r}: expected KEY=VALUE{accepted} (VALUE in YAML, e.g. {example})")
        out[key] = yaml_value(value)
    return out


def subject_list(text: str) -> list[int]:
    """``"1,2,5"`` → ``[1, 2, 5]``."""
    try:
        out = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(f"--subjects {text!r}: expected comma-separated subject ids, e.g. 1,2,3") from None
    if not out:
        raise InputError(f"--subjects {text!r}: no subject given")
    return out


def one_per(flag_a: str, a: list, flag_b: str, b: list) -> list[tuple]:
    """Pairs of two options given once per item each (``--brain X Y --out A B``)."""
    if len(a) != len(b):
        raise InputError(f"{len(a)} {flag_a} files for {len(b)} {flag_b}: give one {flag_b} per {flag_a}")
    return list(zip(a, b))


def set_threads(threads) -> None:
    """torch's CPU threads, when given."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def invocation(args) -> str:
    """The command line as the user typed it (recorded beside trained weights)."""
    import sys

    return "braindecode-pkg " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
