"""The report's subcommand: one self-contained HTML page from the results."""

from __future__ import annotations

from ..command import Command
from ..errors import InputError


def _arguments(s) -> None:
    s.add_argument("--metrics", required=True, help="results/eval/metrics.tsv")
    s.add_argument("--metrics-json", default=None,
                   help="results/eval/metrics.json: each row's evaluation protocol, image chain and judge CLIP")
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


def _run(args) -> int:
    import json

    from ..brain.commands import prep_map
    from .from_results import report_from_results

    try:
        config = json.loads(args.config) if args.config else {}
    except ValueError as e:
        raise InputError(f"--config: not JSON ({e})") from None
    out = report_from_results(args.out, metrics=args.metrics, decode_root=args.decode_root, embed=args.embed,
                              nsd_root=args.nsd_root, preps=prep_map(args.prep), brain_models=args.brain_models,
                              heldout=None if args.heldout is None else prep_map([f"{args.heldout}=x"]).popitem()[0],
                              config=config, simulated=args.simulated, max_grid=args.max_grid,
                              metrics_json=args.metrics_json)
    print(out)
    return 0


COMMANDS = {
    "report": Command("one self-contained HTML page: metrics, grids, brain maps, curves, provenance", _arguments, _run),
}
