"""nsd-sim's world subcommand: ``simulate`` (the recipes' subcommands are in :mod:`.recipes.commands`)."""

from __future__ import annotations

from ..command import Command, key_values


def _arguments(s) -> None:
    s.add_argument("--preset", default="default", help="tiny | default | bench (default: default)")
    s.add_argument("--seed", type=int, default=None, help="world seed (overrides the preset's)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a preset field; VALUE is YAML (repeatable)")
    s.add_argument("--out", required=True, help="output folder: OUT/nsd (NSD root) and OUT/sim_truth")


def _run(args) -> int:
    from . import world

    overrides = key_values(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    cfg = world.sim_config(args.preset, **overrides)
    print(world.simulate(cfg, args.out))
    return 0


COMMANDS = {
    "simulate": Command("write nsd-sim: a simulated NSD in the real layout, with its truth", _arguments, _run),
}
