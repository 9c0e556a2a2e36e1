"""The report of a workflow's results folder: gathers :func:`~.build.build_report`'s inputs from the
stage outputs (metrics, decode folders, stimuli, captions, brain models, training logs, checksums)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["report_from_results", "input_checksums", "read_parts_info"]


def input_checksums(preps: dict, embed, decode_dirs=(), parts: dict | None = None) -> dict[str, str]:
    """``{file: sha256}`` of what produced the numbers, as each stage recorded it: the raw inputs
    (preprocess), the CLIP's weights (embed), the image decoder's and captioner's weight files
    (decode.h5's ``models``) and the judge's (the evaluation parts' info); weights by path."""
    import h5py

    from ..embed.stimuli import clip_info

    out: dict[str, str] = {}
    for p in preps.values():
        with h5py.File(p, "r") as f:
            src = f.attrs.get("source_sha256")
        if src:
            out.update(json.loads(src))
    clip = clip_info(embed)
    cfg = clip.get("config", {})
    where = cfg.get("pretrained") or cfg.get("local_dir") or clip.get("model", "")
    if clip.get("weights_sha256"):
        out[f"CLIP weights: {where}"] = clip["weights_sha256"]
    for d in decode_dirs:
        with h5py.File(Path(d) / "decode.h5", "r") as f:
            models = json.loads(f.attrs.get("models", "{}") or "{}")
        for kind in ("image_decoder", "captioner"):
            for name, rec in ((models.get(kind) or {}).get("weights") or {}).items():
                out[f"{kind} {name}: {rec['path']}"] = rec["sha256"]
    for info in (parts or {}).values():
        judge = (info or {}).get("judge_clip") or {}
        if judge.get("weights_sha256"):
            out[f"judge CLIP: {judge.get('weights')}"] = judge["weights_sha256"]
    return dict(sorted(out.items()))


def read_parts_info(metrics_json) -> dict:
    """``metrics.json``'s ``parts``: ``{"method/subjAA": info}`` (what each row was scored with)."""
    p = Path(metrics_json)
    if not p.is_file():
        raise InputError(f"{p}: not found (`braindecode-pkg evaluate --collect ... --json` writes it)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: not readable JSON ({e})") from None
    parts = doc.get("parts") if isinstance(doc, dict) else None
    if not isinstance(parts, dict):
        raise InputError(f"{p}: no 'parts' object (the evaluation info of each row)")
    return parts


def report_from_results(out_html, *, metrics, decode_root, embed, nsd_root, preps: dict, brain_models,
                        heldout: str | None, config: dict, simulated: bool, max_grid: int = 12,
                        metrics_json=None) -> Path:
    """Build the report from a results layout: ``preps`` {"subjAA": prep file}; brain maps from the
    pretrained model (training subjects) and the adapted model of the most sessions (held-out);
    ``metrics_json`` (optional): the evaluation info of each row (protocol, judge, image chain)."""
    import h5py

    from ..data.layout import NSDPaths
    from .brainmaps import brain_map_entry
    from .build import build_report
    from .grid import find_decode_dirs

    decode_dirs = find_decode_dirs(decode_root)
    ids = set()
    for d in decode_dirs.values():
        with h5py.File(Path(d) / "decode.h5", "r") as f:
            ids |= set(f["nsd_id"][:].tolist())
    with h5py.File(embed, "r") as f:
        all_ids = f["nsd_id"][:]
        rows = np.searchsorted(all_ids, sorted(ids))
        caps, n_caps = f["captions"][:], f["n_captions"][:]
    true_captions = {int(all_ids[r]): [c.decode() if isinstance(c, bytes) else str(c) for c in caps[r][:n_caps[r]]]
                     for r in rows}
    models = Path(brain_models)
    maps, logs = {}, {}
    adapts = sorted(models.glob("adapt-k*"), key=lambda p: int(p.name.split("-k")[1]))
    for subj, prep in sorted(preps.items()):
        src = (adapts[-1] if adapts else None) if subj == heldout else models / "pretrain"
        if src is not None and (src / "model.safetensors").is_file():
            maps[f"{subj} ({src.name})"] = brain_map_entry(src, subj, prep)
    for d in sorted(models.iterdir()) if models.is_dir() else []:
        if (d / "train_log.tsv").is_file():
            logs[d.name] = d / "train_log.tsv"
    stimuli = NSDPaths(nsd_root).stimuli
    if not Path(stimuli).is_file():
        raise InputError(f"{stimuli}: stimulus images not found (NSD's nsd_stimuli.hdf5)")
    parts = None if metrics_json is None else read_parts_info(metrics_json)
    return build_report(out_html, metrics_tsv=metrics, decode_dirs=decode_dirs, stimuli=stimuli,
                        true_captions=true_captions, brain_maps=maps, train_logs=logs, config=config,
                        inputs=input_checksums(preps, embed, decode_dirs.values(), parts), max_grid=max_grid,
                        simulated=simulated, parts=parts)
