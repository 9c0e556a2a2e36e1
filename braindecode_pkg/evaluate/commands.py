"""The evaluate stage's subcommand: score a (method, subject), nsd-sim's oracle, or collect the parts."""

from __future__ import annotations

from ..command import Command, one_per, set_threads
from ..errors import InputError


def _arguments(s) -> None:
    s.add_argument("--brain", nargs="+", default=None,
                   help="the infer stage's HDF5 of a (method, subject); several (of one subject) share one process")
    s.add_argument("--decode", nargs="+", default=None, help="the decode folder of each --brain file")
    s.add_argument("--embed", default=None, help="the embed stage's HDF5 (true embeddings and captions)")
    s.add_argument("--nsd-root", default=None, help="NSD root (stimulus images)")
    s.add_argument("--truth", default=None, help="nsd-sim: the subject's sim_truth/subjAA.h5 (attributes, oracle)")
    s.add_argument("--oracle", default=None, metavar="PSC_PREP",
                   help="nsd-sim: score the oracle from this PSC preprocess file (with --truth) instead")
    s.add_argument("--judge-clip", default=None, metavar="SPEC",
                   help="the judge: CLIP config scoring two-way identification and CLIP-S, never the decoding CLIP "
                        "(sim: nsd-sim's judge CLIP; or JSON such as {\"arch\": \"ViT-L-14-quickgelu\", "
                        "\"pretrained\": FILE})")
    s.add_argument("--sim-judge-clip", default=None, metavar="DIR",
                   help="folder of the trained nsd-sim judge CLIP that --judge-clip sim refers to "
                        "(default: the shipped one)")
    s.add_argument("--image-protocol", default='{"base": null, "antialias": true}', metavar="JSON",
                   help="image chain of PixCorr, SSIM and the feature nets: {base: first resize side or null, "
                        "antialias: true|false}; MindEye's: {\"base\": 256, \"antialias\": false}")
    s.add_argument("--retrieval-head", nargs="+", default=["pooled"], choices=("pooled", "tokens"),
                   help="retrieve on the pooled embedding or the flattened tokens: one for every --brain file, "
                        "or one each")
    s.add_argument("--feature-weights", default="{}",
                   help="JSON {alexnet|inception|effnet|swav: local weights file}; absent nets are 'unavailable'")
    s.add_argument("--collect", nargs="+", default=None, metavar="PART",
                   help="collect part files into --out (metrics.tsv) and --json")
    s.add_argument("--json", default=None, help="with --collect: also write metrics.json")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--device", default="cpu", help="torch device of the judge and feature nets (default: cpu)")
    s.add_argument("--out", nargs="+", required=True,
                   help="a part file (.h5) per --brain file (or the oracle's) or, with --collect, metrics.tsv")


def _run(args) -> int:
    import json

    if args.collect:
        from . import collect

        rows = collect.collect(args.collect, args.out[0], args.json)
        print(f"{args.out[0]}: {len(rows)} rows")
        return 0
    from . import score

    set_threads(args.threads)
    if args.oracle:
        if not args.truth:
            raise InputError("--oracle needs --truth (the subject's sim_truth file)")
        s = score.score_oracle(args.truth, args.oracle)
        score.write_part(s, args.out[0])
        print(f"{args.out[0]}: oracle {s.subject}")
        return 0
    missing = [f"--{k.replace('_', '-')}" for k in ("brain", "decode", "embed", "nsd_root", "judge_clip")
               if not getattr(args, k)]
    if missing:
        raise InputError(f"evaluate needs {', '.join(missing)} (or --oracle, or --collect)")
    try:
        weights = json.loads(args.feature_weights)
    except ValueError as e:
        raise InputError(f"--feature-weights: not JSON ({e})") from None
    one_per("--brain", args.brain, "--decode", args.decode)
    one_per("--brain", args.brain, "--out", args.out)
    heads = args.retrieval_head * len(args.brain) if len(args.retrieval_head) == 1 else args.retrieval_head
    one_per("--brain", args.brain, "--retrieval-head", heads)
    with score.Scorer(embed=args.embed, nsd_root=args.nsd_root, judge_clip=args.judge_clip,
                      sim_judge_clip=args.sim_judge_clip, feature_weights=weights,
                      image_protocol=args.image_protocol, device=args.device) as scorer:
        for brain, dec, out, head in zip(args.brain, args.decode, args.out, heads):
            s = scorer.score(brain, dec, truth=args.truth, retrieval_head=head)
            score.write_part(s, out)
            print(f"{out}: {s.method} {s.subject}, {len(s.metrics)} metrics", flush=True)
    return 0


COMMANDS = {
    "evaluate": Command("score one (method, subject) -> a part file, or collect parts -> metrics.tsv", _arguments, _run),
}
