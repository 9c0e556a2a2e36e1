"""The chain of training runs that makes nsd-sim's shipped models, each stage one command.

The shipped CLIP, image decoder and captioner are not each one run: the CLIP is trained, then
fine-tuned twice with the auxiliary (shape, colour, size) loss, and the image decoder follows it,
fine-tuned (``--init``) on each CLIP stage in turn; the captioner is trained on the last CLIP.
:func:`stages` lists those runs as ``braindecode-pkg`` command lines whose ``{name}`` fields
are other stages' folders, and :func:`run` runs the ones a target needs that are not there yet
(a stage's folder counts once its marker file, written last and atomically by its trainer,
exists; nothing compares it with the stage it started from, so to retrain a stage delete its
folder and those of the stages after it), each in its own process, exactly as a user would type
it. ``scale="tiny"`` is the same chain with the tiny presets and their step counts: seconds per
stage, for tests and smoke runs.

:func:`run` keeps ``stages.json`` (:data:`MANIFEST`) in the output folder up to date: for every
finished stage, from what its trainer recorded, its command, steps, minutes, the SHA-256 of the
weights it wrote, of those it started from and of the CLIP it read, and its held-out figures
(:func:`record`); :func:`lineage_errors` checks such a manifest against the chain. The shipped
models' ``stages.json`` has the same form.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ...errors import InputError
from ...io import atomic_path, lock_beside, sha256_file

__all__ = ["KINDS", "MANIFEST", "MARKER", "SCALES", "Stage", "StageFailed", "stages", "plan", "run", "record",
           "lineage_errors"]

#: the final models, one folder each under the output (``judge_clip``: a second CLIP, trained
#: alike from its own seed, that scores the reconstructions instead of the one that decodes them)
KINDS = ("clip", "image_decoder", "captioner", "judge_clip")
#: the file a trained model's folder is known by (its trainer writes it last)
MARKER = {"clip": "open_clip_config.json", "image_decoder": "model_index.json", "captioner": "config.json",
          "judge_clip": "open_clip_config.json"}
#: the judge's seed: its own initialisation, scenes and data order
JUDGE_SEED = 1
SCALES = ("default", "tiny")
#: the record of the chain's runs, in the output folder
MANIFEST = "stages.json"
#: where a kind's trainer records its run (file, and key within it), and its weights files
_RECORD = {"clip": (MARKER["clip"], "braindecode"), "image_decoder": ("braindecode.json", None),
           "captioner": (MARKER["captioner"], "braindecode")}
_WEIGHTS = {"clip": {"weights": "open_clip_model.safetensors"},
            "image_decoder": {"unet": "unet/diffusion_pytorch_model.safetensors",
                              "vae": "vae/diffusion_pytorch_model.safetensors"},
            "captioner": {"mapper": "model.safetensors"}}
_FIELD = re.compile(r"\{([a-z_0-9-]+)\}")


class StageFailed(RuntimeError):
    """A stage's command exited non-zero (its own message is above on stderr)."""

    def __init__(self, message: str, returncode: int):
        super().__init__(message)
        self.returncode = returncode


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training run: ``name`` is its folder (a kind's name for the final model)."""

    name: str
    kind: str
    args: tuple[str, ...]

    @property
    def needs(self) -> tuple[str, ...]:
        return tuple(m for a in self.args for m in _FIELD.findall(a))


def stages(scale: str = "default", clip: str | None = None) -> list[Stage]:
    """The chain, in an order that runs every stage after the ones it starts from.

    ``clip``: a CLIP config other than nsd-sim's own (as ``--clip`` takes it): then there is no
    CLIP chain for the decoders to follow, and each is trained in one stage on that CLIP."""
    if scale not in SCALES:
        raise InputError(f"sim chain scale {scale!r}: expected one of {', '.join(SCALES)}")
    tiny = scale == "tiny"
    clip0, attr = ("tiny", "tiny-attr") if tiny else ("default", "default-attr")
    dec = "tiny" if tiny else "default"

    def steps(n: int) -> list[str]:  # the tiny presets keep their own few steps
        return [] if tiny else ["--steps", str(n)]

    def captioner(*clip_args: str) -> Stage:  # three times the scenes of its recipe, twice the steps
        return Stage("captioner", "captioner", ("train-captioner", "--preset", dec, *clip_args, *steps(6000),
                                                *([] if tiny else ["--n-train", "60000"])))

    if clip is not None and clip != "sim":
        return [Stage("image_decoder", "image_decoder", ("train-image-decoder", "--preset", dec, "--clip", clip)),
                captioner("--clip", clip)]

    def clip_chain(name: str, seed: tuple[str, ...] = ()) -> list[Stage]:  # contrastive, then twice with attributes
        return [
            Stage(f"{name}-1", "clip", ("train-clip", "--preset", clip0, *seed,
                                        *([] if tiny else ["--eval-every", "400"]))),
            Stage(f"{name}-2", "clip", ("train-clip", "--preset", attr, *seed, "--init", f"{{{name}-1}}", "--attr-size",
                                        *steps(2000))),
            Stage(name, "clip", ("train-clip", "--preset", attr, *seed, "--init", f"{{{name}-2}}", "--attr-size",
                                 "--attr-weight", "2", "--lr", "5e-4", *steps(800), "--eval-every", "0")),
        ]

    finetune = ["--vae-steps", "0", "--lr", "1e-3"]  # the decoder keeps its VAE, the UNet moves on
    chain = [
        *clip_chain("clip"),
        Stage("image_decoder-1", "image_decoder", ("train-image-decoder", "--preset", dec, "--sim-clip", "{clip-1}")),
        Stage("image_decoder-2", "image_decoder", ("train-image-decoder", "--preset", dec, "--sim-clip", "{clip-2}",
                                                   "--init", "{image_decoder-1}", *finetune)),
        Stage("image_decoder-3", "image_decoder", ("train-image-decoder", "--preset", dec, "--sim-clip", "{clip-2}",
                                                   "--init", "{image_decoder-2}", *finetune, "--guidance", "8")),
    ]
    # then fine-tuned on the last CLIP, stage after stage (UNet steps; None: the recipe's 1,500)
    on_clip = [("image_decoder-4", None), ("image_decoder-5", 3000), ("image_decoder-6", 1500),
               ("image_decoder-7", 1500), ("image_decoder-8", 3000), ("image_decoder", 3000)]
    for (name, n), (prev, _) in zip(on_clip, [("image_decoder-3", None), *on_clip]):
        chain.append(Stage(name, "image_decoder", ("train-image-decoder", "--preset", dec, "--sim-clip", "{clip}",
                                                   "--init", "{" + prev + "}", *finetune,
                                                   *(steps(n) if n else []), "--guidance", "5")))
    return [*chain, captioner("--sim-clip", "{clip}"), *clip_chain("judge_clip", ("--seed", str(JUDGE_SEED)))]


def _dirs(out, work) -> tuple[Path, Path]:
    """The final models' folder and the intermediate stages' (default ``out/stages``)."""
    out = Path(out)
    return out, Path(work) if work is not None else out / "stages"


def _folder(stage: Stage, out: Path, work: Path) -> Path:
    return out / stage.name if stage.name in KINDS else work / stage.name


def _done(stage: Stage, out: Path, work: Path) -> bool:
    return (_folder(stage, out, work) / MARKER[stage.kind]).is_file()


def plan(out, work=None, targets=None, scale: str = "default", threads: int = 2,
         extra: tuple[str, ...] = (), clip: str | None = None) -> list[tuple[Stage, list[str]]]:
    """The stages ``targets`` need that are not trained yet, with their command lines (argv).

    ``out`` holds the final models (``clip/``, ``image_decoder/``, ``captioner/``), ``work`` the
    intermediate stages (default ``out/stages``). ``extra`` is appended to every command (e.g.
    ``--quiet``); ``clip`` as for :func:`stages`. ``targets`` default: every final model."""
    out, work = _dirs(out, work)
    chain = {s.name: s for s in stages(scale, clip)}
    targets = [k for k in KINDS if k in chain] if targets is None else list(targets)
    unknown = [t for t in targets if t not in chain or t not in KINDS]
    if unknown:
        raise InputError(f"sim chain target {unknown[0]!r}: expected one of "
                         f"{', '.join(k for k in KINDS if k in chain)}"
                         + (f" (the CLIP is {clip}, not trained here)" if "clip" not in chain else ""))
    wanted: set[str] = set()

    def need(name: str) -> None:
        if name in wanted or _done(chain[name], out, work):
            return
        wanted.add(name)
        for n in chain[name].needs:
            need(n)

    for t in targets:
        need(t)
    todo = []
    for s in chain.values():
        if s.name not in wanted:
            continue
        argv = [_FIELD.sub(lambda m: str(_folder(chain[m.group(1)], out, work)), a) for a in s.args]
        argv += ["--threads", str(threads), "--workers", str(threads), "--out", str(_folder(s, out, work)), *extra]
        todo.append((s, argv))
    return todo


def _arg(stage: Stage, flag: str) -> str | None:
    """The stage a ``{field}`` option names (``--init``, ``--sim-clip``), or None."""
    args = list(stage.args)
    if flag not in args:
        return None
    m = _FIELD.fullmatch(args[args.index(flag) + 1])
    return m.group(1) if m else None


def record(stage: Stage, folder) -> dict:
    """The manifest entry of a finished stage, from what its trainer wrote into ``folder``."""
    folder = Path(folder)
    name, key = _RECORD[stage.kind]
    meta = json.loads((folder / name).read_text())
    info = meta[key] if key else meta
    seconds = (info.get("seconds") or {}).get("total")
    entry = {"stage": stage.name, "kind": stage.kind, "command": info.get("command"),
             "steps_run": info.get("steps_run"), "minutes": None if seconds is None else round(seconds / 60, 1)}
    entry.update({f"{part}_sha256": sha256_file(folder / rel) for part, rel in _WEIGHTS[stage.kind].items()})
    init = info.get("init") or {}
    if stage.kind == "clip":
        entry["init_sha256"] = init.get("weights_sha256")
    elif stage.kind == "image_decoder":
        entry["init_unet_sha256"] = init.get("unet_sha256")
    read = _arg(stage, "--sim-clip")
    if read:
        entry["clip_stage"] = read
    clip = meta.get("clip") or {}  # the CLIP the decoder or captioner read
    if clip.get("weights_sha256"):
        entry["clip_sha256"] = clip["weights_sha256"]
    elif clip.get("weights") and Path(clip["weights"]).is_file():
        entry["clip_sha256"] = sha256_file(clip["weights"])
    held = info.get("heldout") or {}
    entry["heldout"] = {k: v for k, v in {**held, **(held.get("attributes") or {})}.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return entry


def lineage_errors(entries: list[dict], scale: str = "default", clip: str | None = None) -> list[str]:
    """What in a manifest contradicts the chain: stages missing or out of order, a fine-tune that
    did not start from its parent stage's weights, a decoder or captioner that read another CLIP.

    The stages expected are those the manifest's final models need (a workflow that trains only
    some of them records only their part of the chain)."""
    full = {s.name: s for s in stages(scale, clip)}
    wanted: set[str] = set()

    def need(name: str) -> None:
        if name in full and name not in wanted:
            wanted.add(name)
            for n in full[name].needs:
                need(n)

    for e in entries:
        if e["stage"] in KINDS:
            need(e["stage"])
    chain = [s for s in full.values() if s.name in wanted]
    if not chain or [e["stage"] for e in entries] != [s.name for s in chain]:
        return [f"stages {[e['stage'] for e in entries]}, expected {[s.name for s in chain]}"]
    by = {e["stage"]: e for e in entries}
    errors = []
    for s in chain:
        e, parent = by[s.name], _arg(s, "--init")
        if parent and s.kind == "clip" and e["init_sha256"] != by[parent]["weights_sha256"]:
            errors.append(f"{s.name} did not start from {parent}'s weights")
        if parent and s.kind == "image_decoder" and e["init_unet_sha256"] != by[parent]["unet_sha256"]:
            errors.append(f"{s.name} did not start from {parent}'s UNet")
        read = _arg(s, "--sim-clip")
        if read and e.get("clip_stage") != read:
            errors.append(f"{s.name} is recorded on CLIP stage {e.get('clip_stage')}, the chain's is {read}")
        if read and "clip_sha256" in e and e["clip_sha256"] != by[read]["weights_sha256"]:
            errors.append(f"{s.name} read a CLIP other than {read}'s weights")
    return errors


def _write_manifest(chain: list[Stage], out: Path, work: Path) -> None:
    """Every finished stage's :func:`record`, under a lock: the workflow trains the image decoder
    and the captioner side by side into one folder, and the later writer must see both."""
    with lock_beside(out / MANIFEST), atomic_path(out / MANIFEST) as tmp:
        entries = [record(s, _folder(s, out, work)) for s in chain if _done(s, out, work)]
        tmp.write_text(json.dumps({"about": "the chain of training runs that made these models (braindecode-pkg "
                                            "train-sim-models): commands as run, weights hashes, held-out figures",
                                   "stages": entries}, indent=1) + "\n")


def run(out, work=None, targets=None, scale: str = "default", threads: int = 2, extra: tuple[str, ...] = (),
        clip: str | None = None, dry_run: bool = False, log=print) -> list[tuple[Stage, list[str]]]:
    """Train what :func:`plan` lists, one ``python -m braindecode_pkg`` process per stage.

    A stage that fails stops the chain with :class:`StageFailed` naming it and its command
    (its trainer's own message is above it on stderr); the stages before it are kept, so a rerun
    resumes there."""
    todo = plan(out, work, targets, scale, threads, extra, clip)
    out, work = _dirs(out, work)
    chain = stages(scale, clip)
    for i, (stage, argv) in enumerate(todo, 1):
        line = "braindecode-pkg " + shlex.join(argv)
        log(f"[{i}/{len(todo)}] {stage.name}: {line}")
        if dry_run:
            continue
        t0 = time.time()
        rc = subprocess.run([sys.executable, "-m", "braindecode_pkg", *argv]).returncode
        if rc != 0:
            raise StageFailed(f"sim chain stage {stage.name} failed (exit {rc}); the stages before it are kept, "
                              f"rerun to resume: {line}", rc)
        log(f"[{i}/{len(todo)}] {stage.name}: done in {(time.time() - t0) / 60:.1f} min")
        _write_manifest(chain, out, work)
    return todo
